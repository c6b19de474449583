//! The soak's cluster: the API emulator (in this process, in the client's namespace, so the
//! nodes reach it over the lab's bridge), the controller beside it, a speaker in every node's
//! namespace, and what kills and restarts them. Each process's resident memory is sampled for
//! as long as it lives.

use crate::emulator::harness::{LbTestSpace, TestCluster};
use crate::emulator::EmulatorConfig;
use crate::lab::kube_setup::{controller_args, create_nodes, membership_secret_yaml, speaker_args};
use crate::lab::l2::{node_name, L2Lab, LabProcess, CLIENT_V4, ROUTER_V4};
use crate::lab::l2_scenario::link_up;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The pool every Service draws from (both families: a dual-stack Service takes both of its
/// addresses from one pool, as in MetalLB), and the spare one the churn adds and deletes.
pub const POOL_V4: &str = "192.0.2.64/28";
pub const POOL_V6: &str = "2001:db8::1:0/124";
pub const POOL_SPARE: &str = "192.0.2.112/29";
/// A pool that overlaps POOL_V4: valid for the schema, refused by the configuration.
pub const POOL_OVERLAPPING: &str = "192.0.2.72/29";
/// The pool announced by BGP to the router (and not by L2).
pub const POOL_BGP: &str = "203.0.113.0/28";
/// The router's and the speakers' AS numbers.
pub const ROUTER_AS: u32 = 64500;
pub const NODES_AS: u32 = 64512;

/// The router's BGP configuration for `nodes` speakers: eBGP from every node, ECMP over all of
/// them, short timers (a node lost is dropped within 3 s, a returning one reconnects at once).
pub fn router_bgp_config(nodes: usize) -> String {
    let mut c = format!(
        "router bgp {ROUTER_AS}\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n neighbor nodes peer-group\n neighbor nodes remote-as {NODES_AS}\n neighbor nodes timers 1 3\n neighbor nodes timers connect 1\n"
    );
    for i in 1..=nodes {
        c.push_str(&format!(" neighbor 192.0.2.{i} peer-group nodes\n"));
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 16\n exit-address-family\n!\n");
    c
}

/// One run of a process (a restart is a new incarnation) and its memory over time.
pub struct Incarnation {
    pub name: String,
    pub process: LabProcess,
    pub started: Instant,
    /// (seconds since start, resident KiB).
    pub rss: Vec<(f64, u64)>,
}

impl Incarnation {
    fn new(name: String, process: LabProcess) -> Incarnation {
        Incarnation {
            name,
            process,
            started: Instant::now(),
            rss: Vec::new(),
        }
    }

    fn sample(&mut self) {
        let Some(pid) = self.process.pid() else {
            return;
        };
        if let Some(kib) = resident_kib(pid) {
            self.rss.push((self.started.elapsed().as_secs_f64(), kib));
        }
    }
}

/// VmRSS of `pid`, in KiB.
fn resident_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub struct World {
    pub cluster: TestCluster,
    pub space: LbTestSpace,
    pub lab: L2Lab,
    pub nodes: usize,
    logs: PathBuf,
    speaker_bin: PathBuf,
    controller_bin: PathBuf,
    short: String,
    pub controller: Option<Incarnation>,
    pub speakers: Vec<Option<Incarnation>>,
    /// Nodes whose link is down (a node lost, not only its speaker).
    pub links_down: Vec<usize>,
    /// Every incarnation that ended, for the memory report.
    pub ended: Vec<Incarnation>,
    started: usize,
}

impl World {
    /// The emulator, the test's namespaces and class, the Nodes, the membership Secret, the
    /// pools and an L2Advertisement; then the controller and a speaker per node.
    pub async fn start(
        tag: &str,
        nodes: usize,
        speaker_bin: &Path,
        controller_bin: &Path,
        logs: &Path,
    ) -> Result<World, String> {
        let cluster = TestCluster::start_with(EmulatorConfig {
            listen: format!("{CLIENT_V4}:0").parse().map_err(|_| "CLIENT_V4")?,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the API emulator: {e}"))?;
        let short = format!("soak-{tag}");
        let space = cluster
            .lb_test_space(&format!("flb-{short}-"))
            .await
            .map_err(|e| format!("CRDs and namespaces: {e}"))?;
        let addressed: Vec<(String, String)> = (1..=nodes)
            .map(|i| (node_name(i), format!("192.0.2.{i}")))
            .collect();
        create_nodes(&cluster.client(), &addressed)
            .await
            .map_err(|e| format!("Nodes: {e}"))?;
        let mut world = World {
            lab: L2Lab::existing(tag, nodes, true)?,
            cluster,
            space,
            nodes,
            logs: logs.to_owned(),
            speaker_bin: speaker_bin.to_owned(),
            controller_bin: controller_bin.to_owned(),
            short,
            controller: None,
            speakers: (0..nodes).map(|_| None).collect(),
            links_down: Vec::new(),
            ended: Vec::new(),
            started: 0,
        };
        let system = world.space.system.clone();
        world
            .apply(&membership_secret_yaml(&world.short), &system)
            .await?;
        world
            .apply(
                &format!("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: soak-main}}\nspec: {{addresses: [\"{POOL_V4}\", \"{POOL_V6}\"]}}\n"),
                &system,
            )
            .await?;
        // L2 for the segment's pools, BGP to the router for its own.
        world
            .apply(
                &format!(
                    "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: soak}}\nspec: {{ipAddressPools: [soak-main, soak-spare]}}\n---\n\
                     {}---\n\
                     apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: {NODES_AS}, peerASN: {ROUTER_AS}, peerAddress: {ROUTER_V4}, holdTime: 3s, keepaliveTime: 1s, connectTime: 1s}}\n---\n\
                     apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: soak}}\nspec: {{ipAddressPools: [soak-bgp]}}\n",
                    pool_yaml("soak-bgp", POOL_BGP, false)
                ),
                &system,
            )
            .await?;
        world.start_controller()?;
        for i in 1..=nodes {
            world.start_speaker(i)?;
        }
        Ok(world)
    }

    /// Server-side applies `yaml` in namespace `ns`; the API server's refusal as the error.
    pub async fn apply(&self, yaml: &str, ns: &str) -> Result<(), String> {
        self.cluster
            .apply_yaml(yaml, Some(ns))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn log_path(&mut self, what: &str) -> PathBuf {
        self.started += 1;
        self.logs.join(format!("{:03}-{what}.log", self.started))
    }

    pub fn start_controller(&mut self) -> Result<(), String> {
        let kubeconfig = self.cluster.kubeconfig().to_string_lossy().into_owned();
        let args = controller_args(
            &self.space.system,
            &self.space.class,
            &format!("{}-controller", self.short),
            None,
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.log_path("controller");
        let p = LabProcess::start_in(
            self.lab.client.name(),
            &self.controller_bin,
            &args,
            &[("KUBECONFIG", &kubeconfig), ("RUST_LOG", "info")],
            &log,
        )?;
        self.controller = Some(Incarnation::new("controller".into(), p));
        Ok(())
    }

    /// SIGKILL of the controller (nothing graceful: its Lease stays until it lapses).
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.process.kill();
            self.ended.push(c);
        }
    }

    pub fn start_speaker(&mut self, i: usize) -> Result<(), String> {
        if self.links_down.contains(&i) {
            link_up(&self.lab, i)?;
            self.links_down.retain(|&n| n != i);
        }
        let kubeconfig = self.cluster.kubeconfig().to_string_lossy().into_owned();
        let args = speaker_args(&self.space.system, &self.space.class, None);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = node_name(i);
        let log = self.log_path(&format!("speaker-{name}"));
        let p = LabProcess::start_in(
            self.lab.node(i).name(),
            &self.speaker_bin,
            &args,
            &[
                ("KUBECONFIG", &kubeconfig),
                ("NODE_NAME", &name),
                ("RUST_LOG", "info"),
            ],
            &log,
        )?;
        self.speakers[i - 1] = Some(Incarnation::new(format!("speaker {name}"), p));
        Ok(())
    }

    /// SIGKILL of node `i`'s speaker; with `link_down`, the node is lost (its link goes down
    /// first, so it falls silent at one instant).
    pub fn kill_speaker(&mut self, i: usize, link_down: bool) -> Result<(), String> {
        if link_down {
            self.lab.node(i).ip(&["link", "set", "eth0", "down"])?;
            self.links_down.push(i);
        }
        if let Some(mut s) = self.speakers[i - 1].take() {
            s.process.kill();
            self.ended.push(s);
        }
        Ok(())
    }

    /// Samples every running process's memory; the names of those that ended by themselves
    /// (a crash: the soak never stops one without taking it out of the running set first).
    pub fn sample(&mut self) -> Vec<String> {
        let mut crashed = Vec::new();
        let running = self
            .controller
            .iter_mut()
            .chain(self.speakers.iter_mut().flatten());
        for p in running {
            if let Some(status) = p.process.exited() {
                crashed.push(format!(
                    "{} ended by itself ({status}); log {}",
                    p.name,
                    p.process.log_path().display()
                ));
                continue;
            }
            p.sample();
        }
        crashed
    }

    /// Every incarnation, ended and running.
    pub fn incarnations(&self) -> impl Iterator<Item = &Incarnation> {
        self.ended
            .iter()
            .chain(self.controller.iter())
            .chain(self.speakers.iter().flatten())
    }

    /// Stops everything the soak started (by PID), the links back up.
    pub fn stop(&mut self) {
        self.kill_controller();
        for i in 1..=self.nodes {
            let _ = self.kill_speaker(i, false);
        }
        for i in std::mem::take(&mut self.links_down) {
            let _ = link_up(&self.lab, i);
        }
    }
}

/// An IPAddressPool; `auto_assign` false: only Services that ask for it by name get its
/// addresses.
pub fn pool_yaml(name: &str, addresses: &str, auto_assign: bool) -> String {
    format!("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec: {{addresses: [\"{addresses}\"], autoAssign: {auto_assign}}}\n")
}
