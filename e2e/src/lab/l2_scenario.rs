//! The pieces of an L2 failover scenario shared by the tests and the `ferrolb-lab` command:
//! the manifests (Nodes with InternalIPs, one dual-stack Service with two VIPs), speakers and
//! echoes started in the node namespaces, who owns what according to `ferrolb-speaker plan`,
//! and the hard kill.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::l2::{node_name, L2Lab, LabProcess};

pub const VIP4: &str = "192.0.2.200";
pub const VIP6: &str = "2001:db8::200";

/// Nodes `nodes` (192.0.2.i), the pool with both VIPs, an L2Advertisement for it, and a
/// dual-stack Service asking for both VIPs, echo on UDP port 7.
pub fn manifests(nodes: &[usize]) -> String {
    manifests_with(nodes, None)
}

/// [`manifests`]; with `Some(endpoints)` the Service has externalTrafficPolicy Local and an
/// EndpointSlice with one serving endpoint on each of those nodes.
pub fn manifests_with(nodes: &[usize], local_endpoints: Option<&[usize]>) -> String {
    let mut out = String::new();
    for i in nodes {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.{}}}]}}\n---\n",
            node_name(*i),
            i
        ));
    }
    out.push_str(&format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{addresses: [{VIP4}/32, \"{VIP6}/128\"]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan, namespace: ferrolb-system}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vip\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP4},{VIP6}\"}}\nspec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: 7, protocol: UDP}}]{policy}}}\n",
        policy = if local_endpoints.is_some() { ", externalTrafficPolicy: Local" } else { "" }
    ));
    if let Some(endpoints) = local_endpoints {
        out.push_str("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: vip-1, namespace: default, labels: {kubernetes.io/service-name: vip}}\naddressType: IPv4\nports: [{port: 7, protocol: UDP}]\nendpoints:\n");
        for i in endpoints {
            out.push_str(&format!(
                "- {{addresses: [203.0.113.{i}], conditions: {{ready: true, serving: true}}, nodeName: {}}}\n",
                node_name(*i)
            ));
        }
        if endpoints.is_empty() {
            out.push_str("  []\n");
        }
    }
    out
}

/// Nodes 1..=`nodes` (192.0.2.i), a pool of the contiguous IPv4 addresses `vips`, its
/// L2Advertisement, and a Service `s<i>` (UDP port 7) for each address.
pub fn vip_services_manifests(nodes: usize, vips: &[std::net::Ipv4Addr]) -> String {
    let mut out = String::new();
    for i in 1..=nodes {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.{i}}}]}}\n---\n",
            node_name(i)
        ));
    }
    let (first, last) = (vips.first(), vips.last());
    if let (Some(first), Some(last)) = (first, last) {
        out.push_str(&format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{addresses: [{first}-{last}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan, namespace: ferrolb-system}}\n"
        ));
    }
    for (i, vip) in vips.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{vip}\"}}\nspec: {{type: LoadBalancer, ports: [{{port: 7, protocol: UDP}}]}}\n"
        ));
    }
    out
}

/// Replaces the lab's manifest atomically (a speaker never reads half a file).
pub fn write_manifests(dir: &Path, nodes: &[usize]) -> Result<(), String> {
    write_manifest_text(dir, &manifests(nodes))
}

/// Replaces the lab's manifest with `text`, atomically.
pub fn write_manifest_text(dir: &Path, text: &str) -> Result<(), String> {
    let tmp = dir.join(".lab.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("lab.yaml")).map_err(|e| e.to_string())
}

/// `ferrolb-speaker run` on node `i` with membership (unauthenticated: a lab), reading `dir`.
pub fn start_speaker(
    lab: &L2Lab,
    speaker: &Path,
    dir: &Path,
    i: usize,
    logs: &Path,
    extra: &[&str],
) -> Result<LabProcess, String> {
    let source = format!("file:{}", dir.display());
    let mut args = vec![
        "run",
        "--source",
        &source,
        "--poll-ms",
        "50",
        "--insecure-membership",
    ];
    args.extend_from_slice(extra);
    LabProcess::start(
        lab.node(i),
        speaker,
        &args,
        &[("NODE_NAME", &node_name(i)), ("RUST_LOG", "info")],
        &logs.join(format!("speaker-{i}.log")),
    )
}

/// The UDP echo on node `i`, bound to both VIPs, port 7.
pub fn start_echo(lab: &L2Lab, echo: &Path, i: usize, logs: &Path) -> Result<LabProcess, String> {
    start_echo_in(lab.node(i).name(), echo, i, logs)
}

/// [`start_echo`] in node `i`'s namespace known by name `netns` (from a child process that
/// does not own the lab).
pub fn start_echo_in(
    netns: &str,
    echo: &Path,
    i: usize,
    logs: &Path,
) -> Result<LabProcess, String> {
    let p = LabProcess::start_in(
        netns,
        echo,
        &[
            "serve",
            &node_name(i),
            &format!("{VIP4}:7"),
            &format!("[{VIP6}]:7"),
        ],
        &[],
        &logs.join(format!("echo-{i}.log")),
    )?;
    p.wait_log("serving", Duration::from_secs(5))?;
    Ok(p)
}

/// The owner (node number) of each VIP as the planner ranks it with the speakers of `alive`
/// live, from `ferrolb-speaker plan` on the same files.
pub fn owners(
    speaker: &Path,
    dir: &Path,
    alive: &[usize],
) -> Result<BTreeMap<String, usize>, String> {
    let live: Vec<String> = alive.iter().map(|&i| node_name(i)).collect();
    let first = alive.first().ok_or("no node alive")?;
    let out = std::process::Command::new(speaker)
        .args(["plan", "-f", &dir.to_string_lossy(), "--node"])
        .arg(node_name(*first))
        .args(["--live", &live.join(",")])
        .args(["-o", "json"])
        .output()
        .map_err(|e| format!("{}: {e}", speaker.display()))?;
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("plan: {e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    let mut owners = BTreeMap::new();
    for d in plan["l2"].as_array().ok_or("plan without l2")? {
        let (Some(ip), Some(owner)) = (d["ip"].as_str(), d["owner"].as_str()) else {
            continue;
        };
        let n = owner
            .trim_start_matches("node-")
            .parse()
            .map_err(|_| format!("owner {owner}"))?;
        owners.insert(ip.to_owned(), n);
    }
    Ok(owners)
}

/// Node `i` back after a hard kill: its link up, then its speaker started again.
pub fn revive(
    lab: &L2Lab,
    speaker: &Path,
    dir: &Path,
    i: usize,
    logs: &Path,
) -> Result<LabProcess, String> {
    link_up(lab, i)?;
    start_speaker(lab, speaker, dir, i, logs, &[])
}

/// A hard kill of node `i`: its link down, then its speaker SIGKILLed, nothing graceful. The
/// link goes first so the node falls silent at one instant, for the clients and the speakers
/// alike (the other way round, its echo kept answering while `ip` started, and the outage the
/// clients saw left out however long that took).
pub fn kill_hard(lab: &L2Lab, speaker: &mut LabProcess, i: usize) -> Result<(), String> {
    let down = lab.node(i).ip(&["link", "set", "eth0", "down"]).map(|_| ());
    speaker.kill();
    down
}

/// Node `i`'s link up again (before its speaker restarts), with its default routes back when
/// the lab has a router (taking a link down deletes the routes through it, as on a real node).
pub fn link_up(lab: &L2Lab, i: usize) -> Result<(), String> {
    let ns = lab.node(i);
    ns.ip(&["link", "set", "eth0", "up"])?;
    // Linux drops IPv6 addresses of a link taken down (keep_addr_on_down=0).
    ns.ip(&[
        "-6",
        "addr",
        "replace",
        &format!("2001:db8::{i}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    if lab.routed.is_some() {
        ns.ip(&["route", "replace", "default", "via", super::l2::ROUTER_V4])?;
        super::wait_for(Duration::from_secs(2), Duration::from_millis(10), || {
            ns.ip(&[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                super::l2::ROUTER_V6,
            ])
            .ok()
        })
        .ok_or_else(|| format!("{}: no IPv6 default route after link up", ns.name()))?;
    }
    Ok(())
}

/// Asks the VIP's echo once from `ns`: the node that answered.
pub fn ask(ns: &super::NetNs, echo: &Path, vip: &str) -> Result<String, String> {
    let addr = if vip.contains(':') {
        format!("[{vip}]:7")
    } else {
        format!("{vip}:7")
    };
    ns.exec(&echo.to_string_lossy(), &["ask", &addr, "1000"])
        .map(|s| s.trim().to_string())
}

/// 1% loss on the egress of `ns`'s eth0: tc netem where the kernel has it, else the iptables
/// statistic match. Returns how.
pub fn add_loss(namespaces: &[&super::NetNs]) -> Result<&'static str, String> {
    let netem = namespaces.iter().all(|ns| {
        ns.exec(
            "tc",
            &["qdisc", "add", "dev", "eth0", "root", "netem", "loss", "1%"],
        )
        .is_ok()
    });
    if netem {
        return Ok("tc netem loss 1%");
    }
    for ns in namespaces {
        let _ = ns.exec("tc", &["qdisc", "del", "dev", "eth0", "root"]);
        for tool in ["iptables-legacy", "ip6tables-legacy"] {
            ns.exec(
                tool,
                &[
                    "-A",
                    "OUTPUT",
                    "-o",
                    "eth0",
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    "0.01",
                    "-j",
                    "DROP",
                ],
            )
            .map_err(|e| format!("neither netem nor the {tool} statistic match: {e}"))?;
        }
    }
    Ok("ip(6)tables -m statistic --probability 0.01 -j DROP (no netem in this kernel)")
}

/// Processes spinning on every core, stopped by PID on drop.
#[derive(Debug)]
pub struct BusyCpu(Vec<std::process::Child>);

impl BusyCpu {
    pub fn start() -> Result<BusyCpu, String> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut children = Vec::new();
        for _ in 0..cores {
            children.push(
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(BusyCpu(children))
    }
}

impl Drop for BusyCpu {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
