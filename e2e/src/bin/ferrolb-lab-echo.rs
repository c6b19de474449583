//! A tiny UDP echo for the L2 lab: `serve NAME ADDR:PORT...` answers every datagram with NAME
//! from the address it was sent to (so the client sees which node holds a VIP);
//! `ask ADDR:PORT TIMEOUT_MS` sends one datagram and prints the answer (exit 1 on timeout).

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
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&name, from);
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 3 => serve(&args[1], &args[2..]).map(|()| String::new()),
        Some("ask") if args.len() == 3 => ask(&args[1], &args[2]),
        _ => Err("usage: serve NAME ADDR:PORT... | ask ADDR:PORT TIMEOUT_MS".into()),
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
