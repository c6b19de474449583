//! A UDP probe stream for the labs: `ferrolb-lab-probe ADDR:PORT INTERVAL_MS DURATION_MS`
//! sends a numbered datagram every INTERVAL_MS for DURATION_MS to an echo
//! (`ferrolb-lab-echo serve`), waits a second for late answers, and prints one JSON line:
//! `{"sent":N,"received":M,"lost":L,"max_gap_ms":G,"answered_by":{"node-1":K,...}}`, where
//! G is the longest time without an answer while probing. The echo answers with its name only,
//! so answers are counted, not matched. Prints `started` on stderr once the first probe is out.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Answers {
    count: u64,
    last: Option<Instant>,
    max_gap: Duration,
    by: BTreeMap<String, u64>,
}

fn probe(addr: &str, interval_ms: &str, duration_ms: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let interval = Duration::from_millis(interval_ms.parse().map_err(|e| format!("{e}"))?);
    let duration = Duration::from_millis(duration_ms.parse().map_err(|e| format!("{e}"))?);
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().map_err(|e| e.to_string())?;
        let answers = answers.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let name = String::from_utf8_lossy(&buf[..n]).into_owned();
                let now = Instant::now();
                let mut a = answers.lock().unwrap_or_else(|e| e.into_inner());
                let gap = now - a.last.unwrap_or(start);
                a.max_gap = a.max_gap.max(gap);
                a.last = Some(now);
                a.count += 1;
                *a.by.entry(name).or_default() += 1;
            }
        })
    };
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let _ = socket.send(&sent.to_be_bytes());
        if sent == 0 {
            eprintln!("started");
        }
        sent += 1;
        let next = start + interval * sent as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = receiver.join();
    let a = answers.lock().unwrap_or_else(|e| e.into_inner());
    let by: Vec<String> = a.by.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    Ok(format!(
        "{{\"sent\":{sent},\"received\":{},\"lost\":{},\"max_gap_ms\":{},\"answered_by\":{{{}}}}}",
        a.count,
        sent.saturating_sub(a.count),
        a.max_gap.as_millis(),
        by.join(",")
    ))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [addr, interval, duration] => probe(addr, interval, duration),
        _ => Err("usage: ferrolb-lab-probe ADDR:PORT INTERVAL_MS DURATION_MS".into()),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrolb-lab-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
