//! A tiny UDP echo for the L2 lab: `serve NAME ADDR:PORT...` answers every datagram with NAME
//! from the address it was sent to (so the client sees which node holds a VIP), followed by the
//! datagram's text when it is a probe (`seq N`); `ask ADDR:PORT TIMEOUT_MS` sends one datagram
//! and prints the answer (exit 1 on timeout); `probe ADDR:PORT INTERVAL_US DURATION_MS` sends
//! sequence-numbered probes on a fixed schedule and prints, at the end, one line per answer
//! (see `ferrolb_e2e::lab::probe` for the format and the analysis); `spread ADDR:PORT FLOWS
//! TIMEOUT_MS` asks once from each of FLOWS fresh source ports and prints how many answers
//! each node gave (`NAME COUNT` lines; `none COUNT` for unanswered), to see how a router's
//! ECMP hash splits flows.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

fn serve(name: &str, addrs: &[String]) -> Result<(), String> {
    let mut threads = Vec::new();
    for a in addrs {
        let addr: SocketAddr = a.parse().map_err(|e| format!("{a}: {e}"))?;
        let socket = UdpSocket::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let name = name.as_bytes().to_vec();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if buf[..n].starts_with(b"seq ") {
                    let mut reply = name.clone();
                    reply.push(b' ');
                    reply.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&reply, from);
                } else {
                    let _ = socket.send_to(&name, from);
                }
            }
        }));
    }
    eprintln!("serving on {}", addrs.join(" "));
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn ask(addr: &str, timeout_ms: &str) -> Result<String, String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let timeout = Duration::from_millis(timeout_ms.parse().map_err(|e| format!("{e}"))?);
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket.send(b"who").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("no answer: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn spread(addr: &str, flows: &str, timeout_ms: &str) -> Result<String, String> {
    let flows: usize = flows.parse().map_err(|e| format!("{flows}: {e}"))?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for _ in 0..flows {
        let who = ask(addr, timeout_ms).unwrap_or_else(|_| "none".into());
        *counts.entry(who.trim().to_string()).or_default() += 1;
    }
    Ok(counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn probe(addr: &str, interval_us: &str, duration_ms: &str) -> Result<String, String> {
    use std::fmt::Write;
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let interval = Duration::from_micros(interval_us.parse().map_err(|e| format!("{e}"))?);
    let duration = Duration::from_millis(duration_ms.parse().map_err(|e| format!("{e}"))?);
    if interval.is_zero() {
        return Err("the interval must be positive".into());
    }
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(addr).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let receiver = socket.try_clone().map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_rx = stop.clone();
    // Answers: (receive time, text).
    let collect = std::thread::spawn(move || {
        let mut got: Vec<(u128, String)> = Vec::new();
        let mut buf = [0u8; 1500];
        while !stop_rx.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = receiver.recv(&mut buf) {
                got.push((unix_ns(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
        }
        got
    });
    let start = std::time::Instant::now();
    let start_ns = unix_ns();
    let mut sent = Vec::new();
    let mut seq: u64 = 0;
    while start.elapsed() < duration {
        // A fixed schedule: a late send does not shift the ones after it.
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        sent.push(unix_ns());
        // Unreachable errors (ICMP) while nobody answers are expected; keep sending.
        let _ = socket.send(format!("seq {seq}").as_bytes());
        seq += 1;
    }
    // Late answers still count.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answers = collect.join().map_err(|_| "receiver panicked")?;
    let mut out = format!("SENT {} {start_ns} {}\n", sent.len(), interval.as_micros());
    for (recv_ns, text) in answers {
        // "NODE seq N"
        let mut words = text.split_whitespace();
        let (Some(node), Some("seq"), Some(n)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        let Some(sent_ns) = sent.get(n) else { continue };
        let _ = writeln!(out, "A {n} {sent_ns} {recv_ns} {node}");
    }
    Ok(out.trim_end().to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 3 => serve(&args[1], &args[2..]).map(|()| String::new()),
        Some("ask") if args.len() == 3 => ask(&args[1], &args[2]),
        Some("probe") if args.len() == 4 => probe(&args[1], &args[2], &args[3]),
        Some("spread") if args.len() == 4 => spread(&args[1], &args[2], &args[3]),
        _ => Err(
            "usage: serve NAME ADDR:PORT... | ask ADDR:PORT TIMEOUT_MS | probe ADDR:PORT INTERVAL_US DURATION_MS | spread ADDR:PORT FLOWS TIMEOUT_MS"
                .into(),
        ),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ferrolb-lab-echo: {e}");
            ExitCode::FAILURE
        }
    }
}
