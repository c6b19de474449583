//! The L2 lab: node namespaces and a client namespace on one bridge (in a switch namespace of
//! its own, so nothing touches the host's namespace), speakers run as processes by PID.
//!
//! How a node accepts traffic for a VIP without the kernel answering ARP for it: the VIPs sit on
//! an interface of their own, `vips`, with ARP off (so the speaker never uses it; a `dummy`
//! interface in spirit, made of a veth since not every kernel has the dummy module; its peer is named veth-* so the
//! default exclusions skip it) and the node's Ethernet interface
//! has `arp_ignore=1` (answer ARP only for addresses of the receiving interface) and
//! `arp_announce=2` (never use the VIP as an ARP source), as kube-proxy's IPVS mode with
//! strictARP does. IPv6 needs nothing: Linux answers Neighbor Solicitations only for addresses of
//! the receiving interface. So the only answers for a VIP on the segment are the speaker's, and
//! packets that reach a node are delivered to the echo bound to the VIP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::frr::Frr;
use super::netns::{NetNs, VethPair};
use super::{run, wait_for};

/// Why L2 lab tests cannot run here, if they cannot (they need root, `ip` and `tcpdump`).
pub fn skip_reason() -> Option<String> {
    let uid = fs::read_to_string("/proc/self/status")
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
    for tool in ["ip", "tcpdump"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

/// The client's addresses.
pub const CLIENT_V4: &str = "192.0.2.100";
/// The client's MAC on the segment.
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x64];
pub const CLIENT_V6: &str = "2001:db8::100";

/// Node `i` (from 1): its MAC, so tests can read neighbour tables at a glance.
pub fn node_mac(i: usize) -> String {
    format!("02:00:00:00:00:{i:02x}")
}

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

/// The router's addresses on the segment (the nodes' default gateway).
pub const ROUTER_V4: &str = "192.0.2.254";
pub const ROUTER_V6: &str = "2001:db8::fe";
/// The client behind the router, on its own network.
pub const FAR_CLIENT_V4: &str = "198.51.100.100";
pub const FAR_CLIENT_V6: &str = "2001:db8:100::100";

/// A router on the segment (FRR zebra; connected routes are all L2 mode needs) and a client
/// behind it, on 198.51.100.0/24 and 2001:db8:100::/64.
#[derive(Debug)]
pub struct Routed {
    /// `None` in a lab found by [`L2Lab::existing`] (its zebra is not ours to stop).
    pub frr: Option<Frr>,
    pub far_client: NetNs,
    pub router: NetNs,
}

/// A switch (bridge), `n` nodes and a client on it, optionally a router with a client behind.
#[derive(Debug)]
pub struct L2Lab {
    pub tag: String,
    pub client: NetNs,
    pub nodes: Vec<NetNs>,
    pub routed: Option<Routed>,
    /// The client on the second segment ([`L2Lab::add_second_segment`]).
    pub client2: Option<NetNs>,
    // Dropped last: deleting it removes the bridge and every switch-side veth end.
    pub switch: NetNs,
}

impl L2Lab {
    pub fn new(tag: &str, n: usize) -> Result<L2Lab, String> {
        let switch = NetNs::new(&format!("flb-{tag}-sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let client = NetNs::new(&format!("flb-{tag}-c"))?;
        attach(&switch, &client, "pc", &mac_text(CLIENT_MAC))?;
        client.add_addr("eth0", &format!("{CLIENT_V4}/24"))?;
        client.add_addr("eth0", &format!("{CLIENT_V6}/64"))?;
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = NetNs::new(&format!("flb-{tag}-n{i}"))?;
            attach(&switch, &ns, &format!("p{i}"), &node_mac(i))?;
            ns.add_addr("eth0", &format!("192.0.2.{i}/24"))?;
            ns.add_addr("eth0", &format!("2001:db8::{i}/64"))?;
            for key in [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.eth0.arp_ignore=1",
                "net.ipv4.conf.eth0.arp_announce=2",
            ] {
                ns.exec("sysctl", &["-q", "-w", key])?;
            }
            // A dummy interface would do, but not every kernel has the module: a veth pair
            // whose other end goes nowhere, with ARP off, holds the VIPs just as well.
            ns.ip(&[
                "link",
                "add",
                "vips",
                "type",
                "veth",
                "peer",
                "name",
                "veth-vips",
            ])?;
            ns.ip(&["link", "set", "vips", "arp", "off"])?;
            ns.ip(&["link", "set", "veth-vips", "up"])?;
            ns.ip(&["link", "set", "vips", "up"])?;
            nodes.push(ns);
        }
        Ok(L2Lab {
            tag: tag.to_owned(),
            client,
            nodes,
            routed: None,
            client2: None,
            switch,
        })
    }

    /// A second segment (bridge `br1`, 203.0.113.0/24 and 2001:db8:2::/64): every node's
    /// `eth1` (MAC 02:00:00:00:01:i, 203.0.113.i) and a client (203.0.113.100) on it.
    pub fn add_second_segment(&mut self) -> Result<(), String> {
        self.switch.ip(&["link", "add", "br1", "type", "bridge"])?;
        self.switch.ip(&["link", "set", "br1", "up"])?;
        let client = NetNs::new(&format!("flb-{}-c2", self.tag))?;
        attach_to(
            &self.switch,
            "br1",
            &client,
            "eth0",
            "qc",
            "02:00:00:00:01:64",
        )?;
        client.add_addr("eth0", "203.0.113.100/24")?;
        client.add_addr("eth0", "2001:db8:2::100/64")?;
        for (n, ns) in self.nodes.iter().enumerate() {
            let i = n + 1;
            attach_to(
                &self.switch,
                "br1",
                ns,
                "eth1",
                &format!("q{i}"),
                &format!("02:00:00:00:01:{i:02x}"),
            )?;
            ns.add_addr("eth1", &format!("203.0.113.{i}/24"))?;
            ns.add_addr("eth1", &format!("2001:db8:2::{i}/64"))?;
        }
        self.client2 = Some(client);
        Ok(())
    }

    /// [`L2Lab::new`] plus a router on the segment running FRR zebra, a client behind it, and
    /// the router as every node's default gateway.
    pub fn with_router(tag: &str, n: usize) -> Result<L2Lab, String> {
        Self::with_router_running(tag, n, None)
    }

    /// [`L2Lab::with_router`] with bgpd beside zebra, `bgp` the router's BGP configuration
    /// (appended to the forwarding lines). Its FRR is named after the router's namespace:
    /// [`RouterView::at`](super::bgp_router_view::RouterView::at) reads it.
    pub fn with_bgp_router(tag: &str, n: usize, bgp: &str) -> Result<L2Lab, String> {
        Self::with_router_running(tag, n, Some(bgp))
    }

    fn with_router_running(tag: &str, n: usize, bgp: Option<&str>) -> Result<L2Lab, String> {
        let mut lab = Self::new(tag, n)?;
        let router = NetNs::new(&format!("flb-{tag}-r"))?;
        attach(&lab.switch, &router, "pr", "02:00:00:00:00:fe")?;
        router.add_addr("eth0", &format!("{ROUTER_V4}/24"))?;
        router.add_addr("eth0", &format!("{ROUTER_V6}/64"))?;
        let far_client = NetNs::new(&format!("flb-{tag}-fc"))?;
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            far_client.exec("sysctl", &["-q", "-w", key])?;
        }
        VethPair::new(&far_client, "eth0", &router, "eth1")?;
        router.add_addr("eth1", "198.51.100.1/24")?;
        router.add_addr("eth1", "2001:db8:100::1/64")?;
        far_client.add_addr("eth0", &format!("{FAR_CLIENT_V4}/24"))?;
        far_client.add_addr("eth0", &format!("{FAR_CLIENT_V6}/64"))?;
        far_client.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        far_client.ip(&["-6", "route", "add", "default", "via", "2001:db8:100::1"])?;
        for ns in &lab.nodes {
            ns.ip(&["route", "add", "default", "via", ROUTER_V4])?;
            ns.ip(&["-6", "route", "add", "default", "via", ROUTER_V6])?;
        }
        // zebra turns forwarding on (as on a real router) and owns the routing table.
        let forwarding = "frr defaults traditional\nip forwarding\nipv6 forwarding\n!\n";
        let frr = match bgp {
            None => Frr::start_zebra(router.name(), router.name(), forwarding)?,
            Some(bgp) => Frr::start(router.name(), router.name(), &format!("{forwarding}{bgp}"))?,
        };
        wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            let v4 = router.exec("sysctl", &["-n", "net.ipv4.ip_forward"]).ok()?;
            let v6 = router
                .exec("sysctl", &["-n", "net.ipv6.conf.all.forwarding"])
                .ok()?;
            (v4.trim() == "1" && v6.trim() == "1").then_some(())
        })
        .ok_or("zebra did not turn forwarding on in 5 s")?;
        lab.routed = Some(Routed {
            frr: Some(frr),
            far_client,
            router,
        });
        Ok(lab)
    }

    /// A lab built earlier (by another process) with [`L2Lab::with_router`] or
    /// [`L2Lab::new`]: its namespaces by name, used but never deleted on drop.
    pub fn existing(tag: &str, n: usize, router: bool) -> Result<L2Lab, String> {
        let ns = |suffix: &str| NetNs::existing(&format!("flb-{tag}-{suffix}"));
        let nodes = (1..=n)
            .map(|i| ns(&format!("n{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let routed = if router {
            Some(Routed {
                frr: None,
                far_client: ns("fc")?,
                router: ns("r")?,
            })
        } else {
            None
        };
        Ok(L2Lab {
            tag: tag.to_owned(),
            client: ns("c")?,
            nodes,
            routed,
            client2: None,
            switch: ns("sw")?,
        })
    }

    /// The router's namespace (panics without one: a test bug).
    pub fn router(&self) -> &NetNs {
        &self.routed.as_ref().expect("a lab with a router").router
    }

    /// The client behind the router (panics without one: a test bug).
    pub fn far_client(&self) -> &NetNs {
        &self
            .routed
            .as_ref()
            .expect("a lab with a router")
            .far_client
    }

    /// Every namespace of the lab, by name.
    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.switch.name().to_owned(), self.client.name().to_owned()];
        out.extend(self.nodes.iter().map(|n| n.name().to_owned()));
        if let Some(r) = &self.routed {
            out.push(r.router.name().to_owned());
            out.push(r.far_client.name().to_owned());
        }
        out
    }

    /// Node `i` (from 1).
    pub fn node(&self, i: usize) -> &NetNs {
        &self.nodes[i - 1]
    }

    /// Puts `cidr` on every node's `vips` interface (see the module comment).
    pub fn add_vip(&self, cidr: &str) -> Result<(), String> {
        for ns in &self.nodes {
            ns.add_addr("vips", cidr)?;
        }
        Ok(())
    }

    /// The client's neighbour entry for `ip`: (MAC, state), if it has a MAC.
    pub fn client_neighbour(&self, ip: &str) -> Option<(String, String)> {
        neighbour(&self.client, ip)
    }

    /// The router's neighbour entry for `ip` on the segment: (MAC, state), if it has a MAC.
    pub fn router_neighbour(&self, ip: &str) -> Option<(String, String)> {
        neighbour(self.router(), ip)
    }
}

/// `ns`'s neighbour entry for `ip` on its eth0: (MAC, state), if it has a MAC.
pub fn neighbour(ns: &NetNs, ip: &str) -> Option<(String, String)> {
    let out = ns.ip(&["neigh", "show", ip, "dev", "eth0"]).ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    Some((words.get(at + 1)?.to_string(), words.last()?.to_string()))
}

/// A veth from `ns` (named eth0, with `mac`) to the bridge (port `port`).
fn attach(switch: &NetNs, ns: &NetNs, port: &str, mac: &str) -> Result<(), String> {
    attach_to(switch, "br0", ns, "eth0", port, mac)
}

/// A veth from `ns` (named `ifname`, with `mac`) to bridge `bridge` (port `port`).
fn attach_to(
    switch: &NetNs,
    bridge: &str,
    ns: &NetNs,
    ifname: &str,
    port: &str,
    mac: &str,
) -> Result<(), String> {
    // Without duplicate address detection, link-local addresses are usable at once: a node
    // still in DAD delays its first Neighbor Solicitation (and so its first reply) by a second.
    for key in [
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
    ] {
        ns.exec("sysctl", &["-q", "-w", key])?;
    }
    VethPair::new(ns, ifname, switch, port)?;
    ns.ip(&["link", "set", ifname, "down"])?;
    ns.ip(&["link", "set", ifname, "address", mac])?;
    ns.ip(&["link", "set", ifname, "up"])?;
    switch.ip(&["link", "set", port, "master", bridge])?;
    Ok(())
}

/// A process started in a namespace, killed by PID on drop; output goes to a log file.
#[derive(Debug)]
pub struct LabProcess {
    child: Option<Child>,
    log_path: PathBuf,
}

impl LabProcess {
    /// Starts `binary args` in `ns` (`ip netns exec` execs it, so the PID is the program's).
    pub fn start(
        ns: &NetNs,
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_path: &Path,
    ) -> Result<LabProcess, String> {
        Self::start_in(ns.name(), binary, args, envs, log_path)
    }

    /// [`LabProcess::start`] in a namespace known by name (e.g. from a child process that does
    /// not own the lab).
    pub fn start_in(
        ns: &str,
        binary: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        log_path: &Path,
    ) -> Result<LabProcess, String> {
        let log = fs::File::create(log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(binary)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        Ok(LabProcess {
            child: Some(child),
            log_path: log_path.to_owned(),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `text`.
    pub fn wait_log(&self, text: &str, limit: Duration) -> Result<(), String> {
        wait_for(limit, Duration::from_millis(20), || {
            self.log().contains(text).then_some(())
        })
        .ok_or_else(|| format!("no {text:?} in the log within {limit:?}:\n{}", self.log()))
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has ended (by itself or killed): its exit status then.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGTERM, then waits at most `limit` for the exit; SIGKILL after that. The exit code if
    /// it exited by itself in time.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = run("kill", &["-TERM", &c.id().to_string()]);
        let status = wait_for(limit, Duration::from_millis(10), || {
            c.try_wait().ok().flatten()
        });
        if status.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        status.and_then(|s| s.code())
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Builds `ferrolb-speaker` (tests of the e2e crate cannot depend on another crate's binary)
/// and returns its path, next to the running test's target directory.
pub fn speaker_binary() -> Result<PathBuf, String> {
    workspace_binary("speaker", "ferrolb-speaker")
}

/// Builds `ferrolb-controller`, as [`speaker_binary`] does the speaker.
pub fn controller_binary() -> Result<PathBuf, String> {
    workspace_binary("controller", "ferrolb-controller")
}

/// Builds binary `bin` of the workspace crate in directory `krate`; returns its path.
fn workspace_binary(krate: &str, bin: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test> -> target/<profile>/ferrolb-speaker
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("no target directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{krate}/Cargo.toml"));
    let mut args = vec![
        "build".to_string(),
        "--quiet".into(),
        "--manifest-path".into(),
        manifest.to_string_lossy().into_owned(),
        "--bin".into(),
        bin.into(),
    ];
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        args.push("--release".into());
    }
    // Without the variables `cargo test` sets for the running test: build scripts (ring's)
    // track some of them, and a different value rebuilds half the dependency tree on every
    // alternation between this build and one from a shell.
    let mut command = Command::new(&cargo);
    command.args(&args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name);
        if set_by_cargo_test {
            command.env_remove(&*name);
        }
    }
    let out = command.output().map_err(|e| format!("{cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let binary = profile_dir.join(bin);
    binary
        .exists()
        .then_some(binary.clone())
        .ok_or_else(|| format!("{} was not built", binary.display()))
}

/// Packets seen by a capture, as `tcpdump -e -n` prints them, one line each.
pub fn capture_lines(pcap: &Path) -> Vec<String> {
    run(
        "tcpdump",
        &["-r", &pcap.to_string_lossy(), "-e", "-n", "-tt"],
    )
    .map(|out| out.lines().map(str::to_owned).collect())
    .unwrap_or_default()
}

pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The index of interface `name` in this process's network namespace (for a packet socket).
pub fn ifindex(name: &str) -> Result<u32, String> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{path}: {text:?} is not an index"))
}

/// A broadcast ARP request from the client (its MAC and [`CLIENT_V4`]) for `target`, as a whole
/// Ethernet frame.
pub fn client_arp_request(target: std::net::Ipv4Addr) -> Vec<u8> {
    let sender: std::net::Ipv4Addr = CLIENT_V4.parse().expect("literal");
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// A Neighbor Solicitation from the client for `target`, to its solicited-node group, with a
/// Hop-by-Hop and a Destination Options header (PadN) before the ICMPv6 message when
/// `extension_headers`.
pub fn client_solicitation(target: std::net::Ipv6Addr, extension_headers: bool) -> Vec<u8> {
    let source: std::net::Ipv6Addr = CLIENT_V6.parse().unwrap();
    let destination = ferrolb_speaker::l2::packet::solicited_node_group(target);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&CLIENT_MAC);
    let sum = ferrolb_speaker::l2::packet::checksum(source, destination, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let chain: Vec<u8> = if extension_headers {
        // Hop-by-Hop (next: Destination Options), PadN 4; Destination Options (next: ICMPv6).
        vec![60, 0, 1, 4, 0, 0, 0, 0, 58, 0, 1, 4, 0, 0, 0, 0]
    } else {
        vec![]
    };
    let mut frame = ferrolb_speaker::l2::packet::MacAddr::ipv6_multicast(destination)
        .0
        .to_vec();
    frame.extend_from_slice(&CLIENT_MAC);
    frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    frame.extend_from_slice(&((chain.len() + icmp.len()) as u16).to_be_bytes());
    frame.push(if extension_headers { 0 } else { 58 });
    frame.push(255);
    frame.extend_from_slice(&source.octets());
    frame.extend_from_slice(&destination.octets());
    frame.extend_from_slice(&chain);
    frame.extend_from_slice(&icmp);
    frame
}
