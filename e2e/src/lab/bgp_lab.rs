//! The BGP-mode lab: a router namespace running FRR (zebra + bgpd), `n` node namespaces on a
//! bridge inside the router namespace, each running the real `ferrolb-speaker` in file mode,
//! and a client namespace behind the router.
//!
//! ```text
//!  client (198.51.100.2, 2001:db8:c::2)
//!     | c0: 198.51.100.1, 2001:db8:c::1
//!  router (FRR, AS chosen per test) br0: 192.0.2.254, 2001:db8::fe
//!     | n1 | n2 | n3 (bridge ports)
//!  node-i eth0: 192.0.2.i, 2001:db8::i; Service addresses on lo, echo servers bound to them
//! ```
//!
//! Nodes route everything else through the router, so answers reach the client. The router
//! hashes flows over ECMP next hops by layer-4 ports. Every name starts with `flb-<tag>`;
//! processes are stopped by PID and namespaces removed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bgp_router_view::RouterView;
use super::frr::{self, Frr};
use super::l2::{speaker_binary, LabProcess};
use super::netns::{NetNs, VethPair};
use super::wait_for;

pub const ROUTER_V4: &str = "192.0.2.254";
pub const ROUTER_V6: &str = "2001:db8::fe";
pub const CLIENT_V4: &str = "198.51.100.2";
pub const CLIENT_V6: &str = "2001:db8:c::2";

pub fn node_name(i: usize) -> String {
    format!("node-{i}")
}

pub fn node_v4(i: usize) -> String {
    format!("192.0.2.{i}")
}

pub fn node_v6(i: usize) -> String {
    format!("2001:db8::{i}")
}

/// The IPv4 addresses of `nodes` (1-based indices), in that order.
pub fn node_v4s(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|&i| node_v4(i)).collect()
}

/// Node manifests for nodes 1..=`n` with their InternalIPs (the default router ID) and
/// `labels(i)` as the inside of each one's labels mapping.
pub fn nodes_yaml(n: usize, labels: impl Fn(usize) -> String) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {}, labels: {{{}}}}}\nstatus: {{addresses: [{{type: InternalIP, address: {}}}]}}\n---\n",
                node_name(i),
                labels(i),
                node_v4(i)
            )
        })
        .collect()
}

/// The value of `series` (name and labels exactly as exposed) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The lab; see the module comment.
#[derive(Debug)]
pub struct BgpLab {
    pub tag: String,
    /// Manifests the speakers read (`file:` source) and the processes' logs.
    pub dir: PathBuf,
    pub speaker: PathBuf,
    pub frr: Option<Frr>,
    pub speakers: Vec<Option<LabProcess>>,
    /// Extra arguments of every speaker started from now on (e.g. a flag under test).
    pub speaker_args: Vec<String>,
    pub echoes: Vec<LabProcess>,
    pub client: NetNs,
    pub nodes: Vec<NetNs>,
    // Dropped last: the bridge and every router-side veth end go with it.
    pub router: NetNs,
}

fn sysctl(ns: &NetNs, keys: &[&str]) -> Result<(), String> {
    for key in keys {
        ns.exec("sysctl", &["-q", "-w", key])?;
    }
    Ok(())
}

const NO_DAD: [&str; 2] = [
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
];

impl BgpLab {
    /// Builds the namespaces and links of `n` nodes (FRR and speakers start separately).
    pub fn new(tag: &str, n: usize) -> Result<BgpLab, String> {
        let speaker = speaker_binary()?;
        let dir = Path::new("/tmp/ferrolb-lab").join(format!("flb-{tag}-files"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

        let router = NetNs::new(&format!("flb-{tag}-r"))?;
        sysctl(&router, &NO_DAD)?;
        sysctl(
            &router,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ],
        )?;
        router.ip(&["link", "add", "br0", "type", "bridge"])?;
        router.ip(&["link", "set", "br0", "up"])?;
        router.add_addr("br0", &format!("{ROUTER_V4}/24"))?;
        router.add_addr("br0", &format!("{ROUTER_V6}/64"))?;

        let client = NetNs::new(&format!("flb-{tag}-c"))?;
        sysctl(&client, &NO_DAD)?;
        VethPair::new(&client, "eth0", &router, "c0")?;
        router.add_addr("c0", "198.51.100.1/24")?;
        router.add_addr("c0", "2001:db8:c::1/64")?;
        client.add_addr("eth0", &format!("{CLIENT_V4}/24"))?;
        client.add_addr("eth0", &format!("{CLIENT_V6}/64"))?;
        client.ip(&["route", "add", "default", "via", "198.51.100.1"])?;
        client.ip(&["-6", "route", "add", "default", "via", "2001:db8:c::1"])?;

        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = NetNs::new(&format!("flb-{tag}-n{i}"))?;
            sysctl(&ns, &NO_DAD)?;
            let port = format!("n{i}");
            VethPair::new(&ns, "eth0", &router, &port)?;
            router.ip(&["link", "set", &port, "master", "br0"])?;
            ns.add_addr("eth0", &format!("{}/24", node_v4(i)))?;
            ns.add_addr("eth0", &format!("{}/64", node_v6(i)))?;
            ns.ip(&["route", "add", "default", "via", ROUTER_V4])?;
            ns.ip(&["-6", "route", "add", "default", "via", ROUTER_V6])?;
            nodes.push(ns);
        }
        Ok(BgpLab {
            tag: tag.to_owned(),
            dir,
            speaker,
            frr: None,
            speakers: (0..n).map(|_| None).collect(),
            speaker_args: Vec::new(),
            echoes: Vec::new(),
            client,
            nodes,
            router,
        })
    }

    pub fn node(&self, i: usize) -> &NetNs {
        &self.nodes[i - 1]
    }

    /// Starts FRR in the router namespace with `config` (an frr.conf).
    pub fn start_frr(&mut self, config: &str) -> Result<(), String> {
        let name = format!("flb-{}", self.tag);
        self.frr = Some(Frr::start(self.router.name(), &name, config)?);
        Ok(())
    }

    pub fn frr(&self) -> &Frr {
        self.frr.as_ref().expect("FRR started")
    }

    /// Replaces the manifests atomically (a speaker never reads half a file).
    pub fn write_manifests(&self, yaml: &str) {
        let tmp = self.dir.join(".lab.tmp");
        std::fs::write(&tmp, yaml).expect("write manifests");
        std::fs::rename(&tmp, self.dir.join("lab.yaml")).expect("rename manifests");
    }

    /// Starts node `i`'s speaker (`run --source file:DIR`, every node's speaker counted live).
    pub fn start_speaker(&mut self, i: usize) -> Result<(), String> {
        let source = format!("file:{}", self.dir.display());
        let live: Vec<String> = (1..=self.nodes.len()).map(node_name).collect();
        let log = self.dir.join(format!("speaker-{i}.log"));
        // Keep earlier runs' output: a restarted speaker appends to a new file.
        let log = if log.exists() {
            self.dir
                .join(format!("speaker-{i}-{}.log", std::process::id()))
        } else {
            log
        };
        let live = live.join(",");
        let mut args = vec![
            "run",
            "--source",
            &source,
            "--poll-ms",
            "50",
            "--live",
            &live,
        ];
        args.extend(self.speaker_args.iter().map(String::as_str));
        let p = LabProcess::start(
            &self.nodes[i - 1],
            &self.speaker,
            &args,
            &[("NODE_NAME", &node_name(i)), ("RUST_LOG", "info")],
            &log,
        )?;
        self.speakers[i - 1] = Some(p);
        Ok(())
    }

    pub fn speaker_proc(&mut self, i: usize) -> Option<&mut LabProcess> {
        self.speakers[i - 1].as_mut()
    }

    /// Adds `addrs` (Service addresses) to every node's loopback and serves the echo on them,
    /// answering with the node's name.
    pub fn serve_echo(&mut self, addrs: &[&str], echo: &Path) -> Result<(), String> {
        for i in 1..=self.nodes.len() {
            let mut binds = Vec::new();
            for a in addrs {
                let (cidr, bind) = if a.contains(':') {
                    (format!("{a}/128"), format!("[{a}]:7"))
                } else {
                    (format!("{a}/32"), format!("{a}:7"))
                };
                self.nodes[i - 1].add_addr("lo", &cidr)?;
                binds.push(bind);
            }
            let mut args = vec!["serve".to_string(), node_name(i)];
            args.extend(binds);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let p = LabProcess::start(
                &self.nodes[i - 1],
                echo,
                &args,
                &[],
                &self.dir.join(format!("echo-{i}.log")),
            )?;
            p.wait_log("serving", Duration::from_secs(5))?;
            self.echoes.push(p);
        }
        Ok(())
    }

    /// A read-only view of this lab's router (FRR's tables and the kernel's routes); the
    /// next-hop readers live there so that a child process without the lab reads the same way.
    pub fn router_view(&self) -> RouterView {
        RouterView::of(&self.tag)
    }

    /// The next hops FRR's BGP table uses for `prefix` (multipath), sorted.
    pub fn rib_next_hops(&self, afi: &str, prefix: &str) -> Vec<String> {
        self.router_view().rib_next_hops(afi, prefix)
    }

    /// The gateways of the router's kernel route for `prefix`, sorted (`ip route`, resolving
    /// a nexthop group when zebra installed one).
    pub fn fib_next_hops(&self, prefix: &str) -> Vec<String> {
        self.router_view().fib_next_hops(prefix)
    }

    /// Waits until FRR's session with every one of `neighbors` is Established, at most
    /// `limit` each; a test helper, so it panics with the lab's logs when one is not.
    pub fn wait_established(&self, neighbors: &[String], limit: Duration) {
        for n in neighbors {
            self.frr()
                .wait_state(n, "Established", limit)
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        }
    }

    /// Waits until both FRR's table and the kernel use exactly `want` as next hops of
    /// `prefix`.
    pub fn wait_next_hops(
        &self,
        afi: &str,
        prefix: &str,
        want: &[String],
        limit: Duration,
    ) -> Result<(), String> {
        let view = self.router_view();
        let mut want = want.to_vec();
        want.sort();
        wait_for(limit, Duration::from_millis(50), || {
            view.next_hops_are(afi, prefix, &want).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "{prefix}: want next hops {want:?}; RIB has {:?}, kernel has {:?}\n{}",
                self.rib_next_hops(afi, prefix),
                self.fib_next_hops(prefix),
                self.logs()
            )
        })
    }

    /// Waits until neither FRR's table nor the kernel uses `hop` for `prefix` any more.
    pub fn wait_next_hop_gone(
        &self,
        afi: &str,
        prefix: &str,
        hop: &str,
        limit: Duration,
    ) -> Result<(), String> {
        let hop = hop.to_owned();
        wait_for(limit, Duration::from_millis(10), || {
            (!self.rib_next_hops(afi, prefix).contains(&hop)
                && !self.fib_next_hops(prefix).contains(&hop))
            .then_some(())
        })
        .ok_or_else(|| {
            format!(
                "{prefix}: {hop} still a next hop after {limit:?}; RIB has {:?}, kernel has {:?}\n{}",
                self.rib_next_hops(afi, prefix),
                self.fib_next_hops(prefix),
                self.logs()
            )
        })
    }

    /// Node `i`'s speaker's `/metrics` text (its default address, port 7472 in the node's
    /// namespace; HTTP/1.0 through bash, so the lab needs no HTTP client).
    pub fn scrape(&self, i: usize) -> Result<String, String> {
        let script = "exec 3<>/dev/tcp/127.0.0.1/7472 && printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
        let out = self.nodes[i - 1].exec("bash", &["-c", script])?;
        match out.split_once("\r\n\r\n") {
            Some((head, body)) if head.split_whitespace().nth(1) == Some("200") => {
                Ok(body.to_owned())
            }
            _ => Err(format!("node-{i} /metrics: {out}")),
        }
    }

    /// Every speaker's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    out.push_str(&format!("--- {}\n", p.display()));
                    for l in tail.into_iter().rev() {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

impl Drop for BgpLab {
    fn drop(&mut self) {
        for s in self.speakers.iter_mut().flatten() {
            s.kill();
        }
        self.echoes.clear();
        if let Some(mut f) = self.frr.take() {
            f.kill();
        }
        frr::kill_leftovers(&format!("flb-{}", self.tag));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
