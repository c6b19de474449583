//! Shared set-up of the kube-mode speaker tests (`speaker_kube`, `speaker_kube_bgp`): the
//! test's namespaces and load-balancer class on the API emulator (or a real cluster), the Node
//! objects, the controller and speakers started in the lab's namespaces, bounded waits on
//! objects, and the check of the speakers' API requests against
//! `ferrolb_speaker::api_calls::API_CALLS`. It needs speaker types (a dev-dependency only), so
//! it is a test module (`mod kube_common;`), not part of the e2e library. Each test adds the
//! methods only it needs to [`Env`] in its own file.
#![allow(dead_code)]

use ferrolb_e2e::api_requests::from_text_log;
use ferrolb_e2e::emulator::harness::{LbTestSpace, TestCluster, KUBECONFIG_ENV};
use ferrolb_e2e::lab::l2::{controller_binary, speaker_binary, LabProcess};
use ferrolb_e2e::lab::{child, kube_setup, skip_reason};
use ferrolb_speaker::api_calls::{declared, Scope};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often [`Env::wait`] polls.
pub const POLL: Duration = Duration::from_millis(20);

/// The test's cluster objects: its two namespaces, its class, and where the logs go.
pub struct Env {
    pub cluster: TestCluster,
    /// Where the controller and the speakers run (their own namespace).
    pub system: String,
    /// Where the Services live.
    pub apps: String,
    pub class: String,
    pub logs: PathBuf,
    /// MetalLB-compatible mode: the namespace of MetalLB's objects (the controller and the
    /// speakers get `--metallb-namespace`).
    pub metallb: Option<String>,
    /// The test's short name: namespace prefixes, controller identity, membership key.
    short: String,
}

/// The runtime a test body runs on, with `workers` threads (the emulator serves from the
/// same process while the body waits).
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Whether FERROLB_E2E_KUBECONFIG names a real cluster to run against instead of the lab.
pub fn on_real_cluster() -> bool {
    std::env::var_os(KUBECONFIG_ENV).is_some_and(|v| !v.is_empty())
}

/// The parts of a kube-mode lab test that need no lab of their own. In the child process (the
/// test re-run inside the client namespace) runs `lab_body`; against a real cluster
/// (FERROLB_E2E_KUBECONFIG) says with a `SKIP:` line what is left out (`real_leaves_out`) and
/// runs `real_body` with the speaker and controller binaries; where the lab cannot run, says
/// why. True when none of these applies: the caller builds the lab and runs the child.
pub fn parent_builds_lab<L, LF, R, RF>(
    test: &str,
    workers: usize,
    lab_body: L,
    real_leaves_out: &str,
    real_body: R,
) -> bool
where
    L: FnOnce() -> LF,
    LF: std::future::Future<Output = ()>,
    R: FnOnce(PathBuf, PathBuf) -> RF,
    RF: std::future::Future<Output = ()>,
{
    if child::is_child(test) {
        runtime(workers).block_on(lab_body());
        return false;
    }
    let binaries = (speaker_binary().unwrap(), controller_binary().unwrap());
    if on_real_cluster() {
        eprintln!("SKIP: {real_leaves_out}");
        runtime(workers).block_on(real_body(binaries.0, binaries.1));
        return false;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {test} {why}");
        return false;
    }
    true
}

/// Where a test's process logs go, emptied first (kept after the test for a look).
pub fn logs_dir(name: &str) -> PathBuf {
    let d = PathBuf::from("/tmp/ferrolb-lab").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A binary the parent process built (next to this test's target directory); the child does
/// not run cargo itself.
pub fn built(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join(name)
}

impl Env {
    /// Applies the ferrolb CRDs and makes the namespaces `flb-<short>-sys-*` and
    /// `flb-<short>-app-*`; the class is the test's own; logs go to [`logs_dir`]`(logs)`.
    pub async fn start(cluster: TestCluster, short: &str, logs: &str) -> Env {
        let LbTestSpace {
            system,
            apps,
            class,
        } = cluster
            .lb_test_space(&format!("flb-{short}-"))
            .await
            .expect("CRDs and the test's namespaces");
        Env {
            class,
            cluster,
            system,
            apps,
            logs: logs_dir(logs),
            metallb: None,
            short: short.to_owned(),
        }
    }

    pub async fn apply(&self, yaml: &str, ns: &str) {
        self.cluster
            .apply_yaml(yaml, Some(ns))
            .await
            .unwrap_or_else(|e| panic!("apply: {e}\n{yaml}"));
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.cluster.client(), &self.apps)
    }

    /// The addresses in Service `name`'s status (none if it has none or is gone).
    pub async fn ips(&self, name: &str) -> Vec<IpAddr> {
        let Ok(svc) = self.services().get(name).await else {
            return vec![];
        };
        svc.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip?.parse().ok())
            .collect()
    }

    /// Waits until `check` gives a value, at most `limit`.
    pub async fn wait<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?}: {what}\nlogs in {}",
                self.logs.display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Applies a LoadBalancer Service `name` of the test's class, UDP port 7, with `spec` (more
    /// fields of its spec, each ending in ", "), and an EndpointSlice with one ready endpoint
    /// on each of `nodes`, the first at 192.0.2.`first_host` (the emulator runs no endpoint
    /// controller; on a real cluster a Service without a selector keeps hand-made slices).
    pub async fn service_on(&self, name: &str, spec: &str, nodes: &[String], first_host: usize) {
        self.apply(
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer, loadBalancerClass: \"{}\", {spec}ports: [{{port: 7, protocol: UDP}}]}}\n", self.class),
            &self.apps,
        )
        .await;
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| json!({"addresses": [format!("192.0.2.{}", first_host + i)], "nodeName": n, "conditions": {"ready": true}}))
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"port": 7, "protocol": "UDP"}],
        });
        self.apply(&serde_yaml::to_string(&slice).unwrap(), &self.apps)
            .await;
    }

    /// Creates the Nodes `(name, InternalIP)` ([`kube_setup::create_nodes`]).
    pub async fn create_nodes(&self, nodes: &[(String, String)]) {
        kube_setup::create_nodes(&self.cluster.client(), nodes)
            .await
            .unwrap();
    }

    /// The Secret with the speakers' membership key.
    pub async fn membership_secret(&self) {
        self.apply(
            &kube_setup::membership_secret_yaml(&self.short),
            &self.system,
        )
        .await;
    }

    /// The name of the cluster's first Node (on a real cluster).
    pub async fn first_node(&self) -> String {
        Api::<Node>::all(self.cluster.client())
            .list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
            .and_then(|n| n.metadata.name)
            .expect("the cluster has a Node")
    }

    /// Deletes the test's namespaces (on a real cluster), ignoring errors.
    pub async fn delete_namespaces(&self) {
        let _ = self.cluster.delete_namespace(&self.apps).await;
        let _ = self.cluster.delete_namespace(&self.system).await;
        if let Some(ns) = &self.metallb {
            let _ = self.cluster.delete_namespace(ns).await;
        }
    }

    pub fn controller_args(&self) -> Vec<String> {
        kube_setup::controller_args(
            &self.system,
            &self.class,
            &format!("{}-controller", self.short),
            self.metallb.as_deref(),
        )
    }

    pub fn speaker_args(&self) -> Vec<String> {
        kube_setup::speaker_args(&self.system, &self.class, self.metallb.as_deref())
    }

    /// Starts the controller in network namespace `netns`, on this cluster's kubeconfig.
    pub fn start_controller(&self, netns: &str, binary: &Path) -> LabProcess {
        let kubeconfig = self.cluster.kubeconfig().to_string_lossy().into_owned();
        let args = self.controller_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LabProcess::start_in(
            netns,
            binary,
            &args,
            &[("KUBECONFIG", &kubeconfig), ("RUST_LOG", "info")],
            &self.logs.join("controller.log"),
        )
        .unwrap()
    }

    /// Starts a speaker for each of `nodes` (name, network namespace), every API request
    /// logged so that [`logged_api_calls`] can read them.
    pub fn start_speakers(&self, binary: &Path, nodes: &[(String, String)]) -> Vec<LabProcess> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, (name, netns))| {
                self.start_speaker(binary, name, netns, &format!("speaker-{}.log", i + 1))
            })
            .collect()
    }

    /// One speaker for Node `name` in namespace `netns`, its output in `log` (under the logs).
    pub fn start_speaker(&self, binary: &Path, name: &str, netns: &str, log: &str) -> LabProcess {
        let kubeconfig = self.cluster.kubeconfig().to_string_lossy().into_owned();
        let args = self.speaker_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LabProcess::start_in(
            netns,
            binary,
            &args,
            &[
                ("KUBECONFIG", &kubeconfig),
                ("NODE_NAME", name),
                // Every API request is logged, to check it against API_CALLS.
                (
                    "RUST_LOG",
                    "info,ferrolb_speaker=debug,kube_client::client::builder=debug",
                ),
            ],
            &self.logs.join(log),
        )
        .unwrap()
    }
}

/// One kind of API request: scope, API group, resource, verb.
pub type ApiCall = (Scope, String, String, &'static str);

/// The kinds of API requests in the speakers' logs, and those API_CALLS does not declare.
pub struct LoggedCalls {
    pub seen: BTreeSet<ApiCall>,
    undeclared: BTreeSet<String>,
}

/// Reads every request in the speakers' `logs`; one in namespace `system` is scoped to the
/// speaker's own namespace.
pub fn logged_api_calls(logs: &[String], system: &str) -> LoggedCalls {
    logged_api_calls_with(logs, system, None)
}

/// [`logged_api_calls`], with requests in `metallb` (MetalLB-compatible mode) scoped to it.
pub fn logged_api_calls_with(logs: &[String], system: &str, metallb: Option<&str>) -> LoggedCalls {
    let mut seen = BTreeSet::new();
    let mut undeclared = BTreeSet::new();
    for request in logs.iter().flat_map(|l| from_text_log(l)) {
        let scope = match request.namespace.as_deref() {
            Some(ns) if ns == system => Scope::OwnNamespace,
            Some(ns) if Some(ns) == metallb => Scope::MetallbNamespace,
            _ => Scope::Cluster,
        };
        let call = (scope, request.group, request.resource, request.verb);
        if !declared(call.0, &call.1, &call.2, call.3) {
            undeclared.insert(format!("{call:?} ({} {})", request.method, request.url));
        }
        seen.insert(call);
    }
    LoggedCalls { seen, undeclared }
}

impl LoggedCalls {
    /// Every request must be declared in API_CALLS (and so granted by the RBAC).
    pub fn assert_all_declared(&self) {
        assert!(
            self.undeclared.is_empty(),
            "API requests missing from ferrolb_speaker::api_calls::API_CALLS (and the RBAC):\n{}",
            self.undeclared
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
