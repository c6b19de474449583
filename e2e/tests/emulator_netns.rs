//! The emulator binary reached across network namespaces, as the controller and speaker reach
//! it in the lab: server in one namespace on a documentation address, client in another.

use std::process::Command;

use ferrolb_e2e::emulator::harness::EmulatorProcess;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip runs");
    assert!(status.success(), "ip {args:?} failed");
}

/// Two namespaces joined by a veth pair; removed (with the pair) on drop.
struct Namespaces {
    server: String,
    client: String,
}

impl Namespaces {
    fn create() -> Self {
        let id = std::process::id();
        let ns = Namespaces {
            server: format!("emu-srv-{id}"),
            client: format!("emu-cli-{id}"),
        };
        ip(&["netns", "add", &ns.server]);
        ip(&["netns", "add", &ns.client]);
        let (a, b) = (format!("emus{id}"), format!("emuc{id}"));
        ip(&[
            "link", "add", &a, "netns", &ns.server, "type", "veth", "peer", "name", &b, "netns",
            &ns.client,
        ]);
        for (netns, link, addr) in [
            (&ns.server, &a, "203.0.113.1/24"),
            (&ns.client, &b, "203.0.113.2/24"),
        ] {
            ip(&["-n", netns, "addr", "add", addr, "dev", link]);
            ip(&["-n", netns, "link", "set", link, "up"]);
            ip(&["-n", netns, "link", "set", "lo", "up"]);
        }
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn emulator_in_one_namespace_serves_a_client_in_another() {
    if !is_root() {
        eprintln!("SKIP: emulator_in_one_namespace_serves_a_client_in_another needs root");
        return;
    }
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("SKIP: curl is not installed");
        return;
    }
    let namespaces = Namespaces::create();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferrolb-apiserver-emulator"));
    let wrapper = ["ip", "netns", "exec", namespaces.server.as_str()];
    let emulator = EmulatorProcess::spawn(
        binary,
        &wrapper,
        "203.0.113.1:0".parse().unwrap(),
        &kubeconfig,
    )
    .unwrap();
    assert!(
        emulator.url().starts_with("http://203.0.113.1:"),
        "{}",
        emulator.url()
    );
    let written = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(written.contains(emulator.url()), "{written}");

    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &namespaces.client,
            "curl",
            "-sS",
            "--max-time",
            "5",
        ])
        .arg(format!("{}/api/v1/namespaces", emulator.url()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["kind"], "NamespaceList");
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["metadata"]["name"] == "default"));
    drop(emulator);
    drop(namespaces);
}
