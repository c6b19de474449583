//! Running a test body inside a network namespace, in a child process.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::NetNs;

/// Set in the child's environment; its value is the test name.
pub const CHILD_ENV: &str = "FERROLB_LAB_CHILD";

/// True in the child started by [`run_in_netns`] for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
}

/// Runs test `test` of the current test binary inside `ns` (`ip netns exec`), with
/// `--exact --nocapture`, and waits at most `limit`. Returns the child's output on success; on
/// failure or timeout (the child is then killed by PID) an error with the output.
pub fn run_in_netns(ns: &NetNs, test: &str, limit: Duration) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(&exe)
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(CHILD_ENV, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Drain both pipes in threads so the child never blocks on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = so.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(p) = se.as_mut() {
            let _ = p.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = format!(
        "{}{}",
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default()
    );
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(format!("child {test} failed ({st}):\n{out}")),
        None => Err(format!("child {test} killed after {limit:?}:\n{out}")),
    }
}
