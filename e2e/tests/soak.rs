//! The soak's CI variant: `ferrolb-lab soak --minutes 2` (see `ferrolb_e2e::soak`), the real
//! controller and speakers in a three-node lab of network namespaces with an FRR router, two
//! minutes of churn and failures with the invariants checked throughout. Fails on any violation; the report is
//! printed either way (and kept in /tmp/ferrolb-lab/soak-sk/). `FERROLB_SOAK_MINUTES` runs it
//! longer.
//!
//! Against a real cluster (FERROLB_E2E_KUBECONFIG) it is skipped: the soak restarts the API
//! server, which a test cannot do to a real control plane.

use ferrolb_e2e::emulator::harness::KUBECONFIG_ENV;
use ferrolb_e2e::lab::l2::{controller_binary, skip_reason, speaker_binary};
use std::process::Command;

#[test]
fn two_minutes_of_churn_and_failures_break_no_invariant() {
    if std::env::var_os(KUBECONFIG_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("SKIP: the soak restarts the API server, which it cannot do to a real cluster");
        return;
    }
    // Root, ip and tcpdump for the lab; FRR for its router.
    if let Some(why) = skip_reason().or_else(ferrolb_e2e::lab::skip_reason) {
        eprintln!("SKIP: soak {why}");
        return;
    }
    let minutes = ferrolb_e2e::lab::env_number("FERROLB_SOAK_MINUTES", 2.0_f64).to_string();
    let speaker = speaker_binary().unwrap();
    let controller = controller_binary().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-lab"))
        .args(["soak", "--minutes", &minutes, "--tag", "sk"])
        .arg("--speaker")
        .arg(&speaker)
        .arg("--controller")
        .arg(&controller)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the soak failed:\n{text}");
    assert!(text.contains("SOAK REPORT:"), "no report:\n{text}");
    assert!(text.contains(", 0 violations"), "{text}");
}
