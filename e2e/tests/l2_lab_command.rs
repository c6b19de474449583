//! `ferrolb-lab up | demo | down` (the README's "run the main job"), under its own tag so it
//! never meets a lab someone brought up by hand: `up` brings a reachable lab, `demo` shows a
//! failover and a harmless return, `down` leaves nothing behind (no namespace, no process, no
//! file) and can be repeated.

use ferrolb_e2e::lab::l2::{skip_reason, speaker_binary};
use ferrolb_e2e::lab::wait_for;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LAB: &str = env!("CARGO_BIN_EXE_ferrolb-lab");
const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
const TAG: &str = "lm-cmd";

fn lab(speaker: &Path, step: &str) -> (bool, String) {
    let out = Command::new(LAB)
        .args([step, "--tag", TAG, "--echo", ECHO, "--speaker"])
        .arg(speaker)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- ferrolb-lab {step}\n{text}");
    (out.status.success(), text)
}

fn namespaces() -> Vec<String> {
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("flb-{TAG}-")))
        .map(str::to_owned)
        .collect()
}

/// PIDs of every process in the lab's namespaces.
fn lab_pids() -> Vec<String> {
    namespaces()
        .iter()
        .flat_map(|ns| {
            let out = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn lab_up_demo_down_leaves_nothing_behind() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: lab command test {why}");
        return;
    }
    if !Path::new(ferrolb_e2e::lab::frr::ZEBRA).exists() {
        eprintln!("SKIP: lab command test needs FRR (apt-get install -y frr)");
        return;
    }
    let speaker = speaker_binary().unwrap();
    let (ok, up) = lab(&speaker, "up");
    let pids = lab_pids();
    // Before any assertion: whatever happens, take it down at the end.
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = lab(self.0, "down");
        }
    }
    let _down = Down(&speaker);
    assert!(ok, "up failed");
    assert_eq!(namespaces().len(), 7, "{:?}", namespaces());
    // 3 speakers, 3 echoes, zebra.
    assert!(pids.len() >= 7, "{pids:?}");
    assert_eq!(up.matches("answered by node-").count(), 4, "{up}");

    let (ok, demo) = lab(&speaker, "demo");
    assert!(ok, "demo failed");
    // Both VIPs moved, as both clients saw; no question went unanswered.
    assert_eq!(demo.matches("ms without answers").count(), 4, "{demo}");
    assert!(
        !demo.contains("no answer") && !demo.contains("no move"),
        "{demo}"
    );
    // The return of the killed node(s) costs nothing, seen from both clients.
    assert_eq!(demo.matches(" 0 of ").count(), 4, "{demo}");

    let (ok, down) = lab(&speaker, "down");
    assert!(ok && down.contains("Removed"), "{down}");
    assert!(namespaces().is_empty(), "{:?}", namespaces());
    for pid in &pids {
        // Gone, or dead and waiting for init to reap it (a killed orphan).
        let dead = || {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map_or(true, |s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'))
                })
                .then_some(())
        };
        assert!(
            wait_for(Duration::from_secs(5), Duration::from_millis(20), dead).is_some(),
            "process {pid} survived down"
        );
    }
    for dir in [
        format!("/tmp/ferrolb-lab/cmd-{TAG}"),
        format!("/tmp/ferrolb-lab/flb-{TAG}-r"),
        format!("/etc/frr/flb-{TAG}-r"),
        format!("/var/run/frr/flb-{TAG}-r"),
    ] {
        assert!(!Path::new(&dir).exists(), "{dir} left behind");
    }
    let (ok, again) = lab(&speaker, "down");
    assert!(ok && again.contains("Nothing to remove"), "{again}");
    let (ok, _) = lab(&speaker, "demo");
    assert!(!ok, "demo without a lab fails cleanly");
}
