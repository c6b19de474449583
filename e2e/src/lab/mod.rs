//! Lab building blocks: network namespaces, veth links, and routing daemons (FRR, BIRD) run as test peers.
//!
//! Everything here bounds its waits, cleans up in `Drop` and stops processes by PID.
//! A test that needs the lab calls [`skip_reason`] first and returns early (with a visible
//! `SKIP:` line) when it cannot run: not root, or FRR not installed.
//!
//! Sockets belong to the network namespace of the thread that creates them, and entering a
//! namespace needs `setns(2)`, so code that must run *inside* a namespace (our BGP engine)
//! runs in a child process: [`child::run_in_netns`] re-executes the current test binary under
//! `ip netns exec`, filtered to one test, which then sees [`child::is_child`] and runs its body.

pub mod bgp_lab;
pub mod bgp_router_view;
pub mod bird;
pub mod capture;
pub mod child;
pub mod frr;
pub mod keepalived;
pub mod kube_setup;
pub mod l2;
pub mod l2_scenario;
pub mod netns;
pub mod probe;

pub use bird::Bird;
pub use capture::Capture;
pub use child::{is_child, run_in_netns};
pub use frr::{Frr, FrrDaemons};
pub use netns::{NetNs, VethPair};

use std::path::Path;
use std::time::{Duration, Instant};

/// A number from environment variable `name` (how the measured tests take their run counts
/// and durations), `default` when unset or not a number.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) and resident MiB of process `pid` (zeros if it is gone).
pub fn process_usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

/// Why lab tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("needs root (network namespaces)".into());
    }
    if !Path::new(frr::BGPD).exists() || !Path::new(frr::ZEBRA).exists() {
        return Some("needs FRR (apt-get install -y frr)".into());
    }
    None
}

/// Whether lab test `test` must be skipped here; if so, says why on stderr with a `SKIP:` line.
pub fn skip(test: &str) -> bool {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {test}: {why}");
        return true;
    }
    false
}

/// Polls `f` every `every` until it returns `Some`, or gives up after `limit`.
pub fn wait_for<T>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Runs a command to completion (bounded by the command itself); error with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth: `speaker` (192.0.2.1/24, 2001:db8::1/64) for our engine
/// and `router` (192.0.2.2/24, 2001:db8::2/64) for the daemon under test. Names derive from
/// `tag` (unique per test) so a child process can find them.
#[derive(Debug)]
pub struct TwoNodeLab {
    pub speaker: NetNs,
    pub router: NetNs,
    pub link: VethPair,
}

pub const SPEAKER_V4: &str = "192.0.2.1";
pub const ROUTER_V4: &str = "192.0.2.2";
pub const SPEAKER_V6: &str = "2001:db8::1";
pub const ROUTER_V6: &str = "2001:db8::2";

impl TwoNodeLab {
    pub fn speaker_ns(tag: &str) -> String {
        format!("flb-{tag}-s")
    }

    pub fn router_ns(tag: &str) -> String {
        format!("flb-{tag}-r")
    }

    pub fn new(tag: &str) -> Result<TwoNodeLab, String> {
        let speaker = NetNs::new(&Self::speaker_ns(tag))?;
        let router = NetNs::new(&Self::router_ns(tag))?;
        let link = VethPair::new(&speaker, "eth-s", &router, "eth-r")?;
        speaker.add_addr("eth-s", &format!("{SPEAKER_V4}/24"))?;
        speaker.add_addr("eth-s", &format!("{SPEAKER_V6}/64"))?;
        router.add_addr("eth-r", &format!("{ROUTER_V4}/24"))?;
        router.add_addr("eth-r", &format!("{ROUTER_V6}/64"))?;
        Ok(TwoNodeLab {
            speaker,
            router,
            link,
        })
    }
}
