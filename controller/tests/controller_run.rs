//! The real `ferrolb-controller run` binary, as a process, against the Kubernetes API emulator
//! (or the cluster named by FERROLB_E2E_KUBECONFIG): allocation, reuse after delete, restart and
//! leader failover without change, an invalid configuration changing nothing, pool deletion.
//!
//! Every test works in its own namespaces and with its own load balancer class, so it can share
//! a real cluster with other workloads and with the other tests. Every wait is bounded; every
//! process is killed by PID when its handle drops.

use ferrolb_controller::run::api_calls::{api_calls, metallb_compat_calls, Scope};
use ferrolb_crds::{ConfigurationResult, ConfigurationState, IPAddressPool};
use ferrolb_e2e::emulator::harness::{
    free_port, ingress_ips, LbTestSpace, TestCluster, TestProcess,
};
use ferrolb_e2e::emulator::EmulatorConfig;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_ferrolb-controller");
const POLL: Duration = Duration::from_millis(10);

struct Env {
    cluster: TestCluster,
    /// Where the FerroLB objects, the Lease and the ConfigurationState live.
    system: String,
    /// Where the Services live.
    apps: String,
    class: String,
    /// MetalLB-compatible mode: the namespace of MetalLB's objects.
    metallb: Option<String>,
    /// Whether controllers report objects in other namespaces (off by default here: on a real
    /// cluster the other tests' objects are elsewhere).
    report_elsewhere: bool,
    /// Logs of the controllers started, shown when a wait fails.
    logs: std::sync::Mutex<Vec<std::path::PathBuf>>,
}

/// An emulator with room for a thousand Services' cluster IPs: an RFC 2544 range, which never
/// leaves the emulator's memory (a real cluster has its own service CIDR).
fn room_for_a_thousand_services() -> EmulatorConfig {
    EmulatorConfig {
        service_cidrs: vec![
            "198.18.0.0/21".parse().unwrap(),
            "2001:db8:5e7::/112".parse().unwrap(),
        ],
        ..EmulatorConfig::default()
    }
}

impl Env {
    async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, EmulatorConfig::default()).await
    }

    async fn start_with(prefix: &str, config: EmulatorConfig) -> Self {
        let cluster = TestCluster::start_with(config).await.expect("cluster");
        let LbTestSpace {
            system,
            apps,
            class,
        } = cluster
            .lb_test_space(prefix)
            .await
            .expect("CRDs and the test's namespaces");
        Self {
            cluster,
            system,
            apps,
            class,
            metallb: None,
            report_elsewhere: false,
            logs: Default::default(),
        }
    }

    /// Like [`Env::start`], with a namespace for MetalLB's objects and MetalLB's CRDs (its own
    /// on a real cluster that has them, FerroLB's stand-ins otherwise); controllers started
    /// from it run in MetalLB-compatible mode.
    async fn start_metallb(prefix: &str) -> Self {
        let config = room_for_a_thousand_services();
        let mut env = Self::start_with(prefix, config).await;
        env.cluster
            .apply_metallb_crds()
            .await
            .expect("MetalLB's CRDs");
        let ns = env
            .cluster
            .create_namespace(&format!("{prefix}metallb-"))
            .await
            .expect("namespace");
        env.metallb = Some(ns);
        env
    }

    /// Starts a controller replica.
    fn controller(&self, identity: &str, metrics_port: u16) -> TestProcess {
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "run",
            "--namespace",
            &self.system,
            "--lb-class",
            &self.class,
            "--metrics-addr",
            &metrics,
            "--identity",
            identity,
            "--lease-duration-seconds",
            "3",
            "--lease-grace-seconds",
            "1",
            // Every API request is logged, to check it against the RBAC.
            "--log-format",
            "json",
            "--log-filter",
            "info,kube_client::client::builder=debug",
        ];
        if let Some(ns) = &self.metallb {
            args.extend(["--metallb-namespace", ns.as_str()]);
        }
        if !self.report_elsewhere {
            args.push("--ignore-objects-elsewhere");
        }
        let process = self
            .cluster
            .spawn(Path::new(CONTROLLER), &args)
            .expect("spawn the controller");
        self.logs
            .lock()
            .unwrap()
            .push(process.log_path().to_path_buf());
        process
    }

    /// What the controllers logged, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for path in self.logs.lock().unwrap().iter() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("\n--- {}\n{text}", path.display()));
        }
        out
    }

    async fn apply(&self, yaml: &str) {
        self.cluster
            .apply_yaml(yaml, Some(&self.system))
            .await
            .expect("apply");
    }

    async fn pool(&self, name: &str, addresses: &str) {
        self.apply(&format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{addresses}]\n"
        ))
        .await;
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.cluster.client(), &self.apps)
    }

    async fn service(&self, name: &str, annotations: &[(&str, &str)]) {
        let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": self.class,
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        }))
        .unwrap();
        self.services()
            .create(&PostParams::default(), &svc)
            .await
            .expect("create Service");
    }

    async fn delete_service(&self, name: &str) {
        self.services()
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete Service");
    }

    async fn ips(&self, name: &str) -> Vec<String> {
        ingress_ips(&self.services().get(name).await.expect("get Service"))
    }

    /// Waits (at most `limit`) until the Service shows addresses; returns them and the time.
    async fn wait_ips(&self, name: &str, limit: Duration) -> (Vec<String>, Duration) {
        let start = Instant::now();
        loop {
            let ips = self.ips(name).await;
            if !ips.is_empty() {
                return (ips, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "Service {name} got no address within {limit:?}{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `check` holds, at most `limit`.
    async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?}: {what}{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn configuration_state(&self) -> Option<ConfigurationState> {
        let api: Api<ConfigurationState> = Api::namespaced(self.cluster.client(), &self.system);
        api.get_opt("controller").await.unwrap()
    }

    async fn wait_config(&self, result: ConfigurationResult) -> ConfigurationState {
        let start = Instant::now();
        loop {
            if let Some(state) = self.configuration_state().await {
                if state.status.as_ref().and_then(|s| s.result) == Some(result) {
                    return state;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "ConfigurationState never became {result:?}: {:?}{}",
                self.configuration_state().await,
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn events(&self, service: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.cluster.client(), &self.apps);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    async fn lease_holder(&self) -> Option<String> {
        let api: Api<Lease> = Api::namespaced(self.cluster.client(), &self.system);
        api.get_opt("ferrolb-controller")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    /// Every API request the controllers made must be one `run::api_calls::API_CALLS`
    /// declares, hence one the RBAC in deploy/ grants (tests/deploy_manifests.rs).
    fn check_api_calls(&self) {
        let mut seen = 0;
        let mut undeclared = BTreeSet::new();
        for path in self.logs.lock().unwrap().iter() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if entry["fields"]["message"] != "requesting" {
                    continue;
                }
                let method = entry["span"]["http.method"].as_str().unwrap_or_default();
                let url = entry["span"]["http.url"].as_str().unwrap_or_default();
                let Some(call) = classify(method, url, &self.system, self.metallb.as_deref())
                else {
                    continue;
                };
                seen += 1;
                if !declared(&call) {
                    undeclared.insert(format!("{call:?} ({method} {url})"));
                }
            }
        }
        assert!(seen > 5, "only {seen} API requests logged{}", self.logs());
        assert!(
            undeclared.is_empty(),
            "API requests missing from run::api_calls::API_CALLS (and the RBAC):\n{}",
            undeclared.into_iter().collect::<Vec<_>>().join("\n")
        );
    }

    async fn finish(self) {
        self.check_api_calls();
        let _ = self.cluster.delete_namespace(&self.apps).await;
        let _ = self.cluster.delete_namespace(&self.system).await;
        if let Some(ns) = &self.metallb {
            let _ = self.cluster.delete_namespace(ns).await;
        }
    }
}

type Call = (Scope, String, String, &'static str);

/// (scope, API group, resource[/subresource], verb) of one request, as RBAC sees it (the e2e
/// crate's classifier, with the namespace folded into a [`Scope`]); `None` for discovery and
/// other non-resource paths.
fn classify(method: &str, url: &str, system: &str, metallb: Option<&str>) -> Option<Call> {
    let r = ferrolb_e2e::api_requests::classify(method, url)?;
    let scope = match r.namespace.as_deref() {
        Some(ns) if ns == system => Scope::OwnNamespace,
        Some(ns) if Some(ns) == metallb => Scope::MetallbNamespace,
        _ => Scope::Cluster,
    };
    Some((scope, r.group, r.resource, r.verb))
}

/// Whether the declared calls (with MetalLB-compatible mode's) cover `call`.
fn declared(call: &Call) -> bool {
    let calls: Vec<_> = api_calls()
        .into_iter()
        .chain(metallb_compat_calls())
        .collect();
    ferrolb_kube::api_calls::declared(&calls, call.0, &call.1, &call.2, call.3)
}

#[test]
fn requests_are_classified_as_rbac_sees_them() {
    let c = |m, u| classify(m, u, "sys", None).unwrap();
    assert_eq!(
        c(
            "GET",
            "http://h:1/api/v1/services?&watch=true&resourceVersion=1"
        ),
        (Scope::Cluster, "".into(), "services".into(), "watch")
    );
    assert_eq!(
        c(
            "PATCH",
            "http://h:1/api/v1/namespaces/app/services/web/status?"
        ),
        (Scope::Cluster, "".into(), "services/status".into(), "patch")
    );
    assert_eq!(
        c(
            "GET",
            "http://h:1/apis/coordination.k8s.io/v1/namespaces/sys/leases/l"
        ),
        (
            Scope::OwnNamespace,
            "coordination.k8s.io".into(),
            "leases".into(),
            "get"
        )
    );
    assert_eq!(
        c("GET", "http://h:1/api/v1/namespaces?limit=500"),
        (Scope::Cluster, "".into(), "namespaces".into(), "list")
    );
    assert!(classify("GET", "http://h:1/apis", "sys", None).is_none());
    assert!(!declared(&c(
        "DELETE",
        "http://h:1/api/v1/namespaces/app/services/web"
    )));
}

/// All Services' addresses, by name.
async fn snapshot(env: &Env, names: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for name in names {
        out.insert(name.to_string(), env.ips(name).await);
    }
    out
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_within_a_second_and_reuses_a_deleted_services_address() {
    let env = Env::start("ctl-alloc-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.12").await;
    let port = free_port();
    let controller = env.controller("only", port);
    env.wait_config(ConfigurationResult::Valid).await;

    env.service("first", &[]).await;
    let (ips, took) = env.wait_ips("first", Duration::from_secs(10)).await;
    assert_eq!(ips, ["192.0.2.10"]);
    assert!(
        took < Duration::from_secs(1),
        "the first address took {took:?}"
    );
    for name in ["second", "third"] {
        env.service(name, &[]).await;
        env.wait_ips(name, Duration::from_secs(5)).await;
    }
    assert_eq!(env.ips("third").await, ["192.0.2.12"]);
    let svc = env.services().get("first").await.unwrap();
    assert_eq!(
        svc.metadata
            .annotations
            .unwrap_or_default()
            .get("ferrolb.io/ip-allocated-from-pool")
            .map(String::as_str),
        Some("pool-a")
    );

    // The pool is full: the fourth waits, and says why.
    env.service("fourth", &[]).await;
    env.wait_until(
        "an AllocationFailed Event for fourth",
        Duration::from_secs(5),
        || async {
            env.events("fourth")
                .await
                .iter()
                .any(|(reason, _)| reason == "AllocationFailed")
        },
    )
    .await;
    let events = env.events("fourth").await;
    let (_, note) = events
        .iter()
        .find(|(reason, _)| reason == "AllocationFailed")
        .unwrap();
    assert!(
        note.contains(
            "no IPAddressPool serving this Service has a free IPv4 address (tried pool-a)"
        ),
        "{note}"
    );
    assert!(env.ips("fourth").await.is_empty());
    assert!(env
        .events("first")
        .await
        .iter()
        .any(|(reason, note)| reason == "IPAllocated" && note.contains("192.0.2.10")));

    // Pool status and metrics count exactly.
    let pools: Api<IPAddressPool> = Api::namespaced(env.cluster.client(), &env.system);
    env.wait_until("pool status 3 assigned", Duration::from_secs(5), || async {
        pools
            .get("pool-a")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.assigned_ipv4.0 == 3 && s.available_ipv4.0 == 0)
    })
    .await;
    let (code, text) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let series = |name: &str| format!("ferrolb_{name}{{pool=\"pool-a\"}}");
    assert_eq!(
        metric(&text, &series("allocator_addresses_in_use_total")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, &series("allocator_addresses_total")),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, &series("allocator_services_allocated_total")),
        Some(3.0)
    );
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);

    // Deleting a Service frees its address for the one waiting.
    env.delete_service("first").await;
    let (ips, _) = env.wait_ips("fourth", Duration::from_secs(5)).await;
    assert_eq!(ips, ["192.0.2.10"]);
    assert_eq!(env.ips("second").await, ["192.0.2.11"]);
    drop(controller);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_changes_nothing_even_with_changes_while_down() {
    let env = Env::start("ctl-restart-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    let mut controller = env.controller("first-run", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    for name in ["m-one", "m-two", "m-three"] {
        env.service(name, &[]).await;
        env.wait_ips(name, Duration::from_secs(5)).await;
    }
    let before = snapshot(&env, &["m-one", "m-two", "m-three"]).await;
    controller.kill();

    // While it is down: a Service that sorts (and would be served) before every existing one is
    // created, and one is deleted. MetalLB #1774: a new Service processed first steals an
    // address that an existing one shows.
    env.service("a-new", &[]).await;
    env.delete_service("m-two").await;
    let _controller = env.controller("second-run", free_port());
    env.wait_ips("a-new", Duration::from_secs(20)).await;
    let after = snapshot(&env, &["m-one", "m-three"]).await;
    assert_eq!(after["m-one"], before["m-one"]);
    assert_eq!(after["m-three"], before["m-three"]);
    // The new Service gets the lowest free address: the one m-two gave back.
    assert_eq!(env.ips("a-new").await, before["m-two"]);
    // Nothing else moves afterwards either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(snapshot(&env, &["m-one", "m-three"]).await, after);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_killed_leader_without_change() {
    let env = Env::start("ctl-ha-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.20").await;
    let mut replicas = [
        Some(env.controller("replica-a", free_port())),
        Some(env.controller("replica-b", free_port())),
    ];
    env.wait_config(ConfigurationResult::Valid).await;
    let names = ["s-1", "s-2", "s-3"];
    for name in names {
        env.service(name, &[]).await;
        env.wait_ips(name, Duration::from_secs(5)).await;
    }
    let leader = env.lease_holder().await.expect("a lease holder");
    let (index, standby) = match leader.as_str() {
        "replica-a" => (0, "replica-b"),
        "replica-b" => (1, "replica-a"),
        other => panic!("unexpected holder {other}"),
    };
    let before = snapshot(&env, &names).await;

    // SIGKILL by PID: no chance to release the lease.
    let mut killed = replicas[index].take().unwrap();
    killed.kill();
    assert!(!killed.is_running());
    let orphan_created = Instant::now();
    env.service("s-new", &[]).await;
    // The lease lasts 3 s; the standby checks when it expires.
    let (ips, _) = env.wait_ips("s-new", Duration::from_secs(20)).await;
    eprintln!(
        "takeover: a Service created right after the kill got {ips:?} after {:?}",
        orphan_created.elapsed()
    );
    assert_eq!(env.lease_holder().await.as_deref(), Some(standby));
    assert_eq!(snapshot(&env, &names).await, before);
    let taken: Vec<&String> = before.values().flatten().collect();
    assert!(!taken.contains(&&ips[0]), "{ips:?} was already in use");

    // The standby is the only writer: the survivor still runs and keeps serving.
    let survivor = replicas[1 - index].as_mut().unwrap();
    assert!(survivor.is_running());
    env.delete_service("s-1").await;
    env.service("s-after", &[]).await;
    let (ips, _) = env.wait_ips("s-after", Duration::from_secs(5)).await;
    assert_eq!(ips, before["s-1"]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_object_is_left_out_or_kept_and_the_rest_works() {
    let env = Env::start("ctl-invalid-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    let _controller = env.controller("only", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    env.service("kept", &[]).await;
    let (ips, _) = env.wait_ips("kept", Duration::from_secs(5)).await;
    assert_eq!(ips, ["192.0.2.10"]);

    // A pool edited into garbage (the schema cannot refuse every mistake): its last valid
    // version stays in force, so nothing it handed out moves, and it still serves.
    env.pool("pool-a", "192.0.2.14-192.0.2.10").await;
    let state = env.wait_config(ConfigurationResult::Invalid).await;
    let status = state.status.unwrap();
    let summary = status.error_summary.unwrap_or_default();
    assert!(
        summary.contains("IPAddressPool/pool-a: spec.addresses[0]: "),
        "{summary}"
    );
    assert!(
        summary.contains("IPAddressPool/pool-a: invalid; its last valid version stays in force"),
        "{summary}"
    );
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "IPAddressPool.pool-a")
        .unwrap_or_else(|| panic!("{:?}", status.conditions));
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "LastValidKept")
    );
    // And on the object itself, where `kubectl describe` shows it.
    env.wait_until(
        "a Warning Event on IPAddressPool/pool-a",
        Duration::from_secs(5),
        || async {
            let api: Api<Event> = Api::namespaced(env.cluster.client(), &env.system);
            api.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("InvalidConfiguration")
                        && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                            == Some("IPAddressPool")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("pool-a")
                        && e.note
                            .as_deref()
                            .is_some_and(|n| n.contains("last valid version"))
                })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.ips("kept").await, ips);
    let svc = env.services().get("kept").await.unwrap();
    assert!(svc
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("ferrolb.io/ip-allocated-from-pool"));
    env.service("new", &[]).await;
    let (new_ips, _) = env.wait_ips("new", Duration::from_secs(5)).await;
    assert_eq!(new_ips, ["192.0.2.11"]);

    // A newcomer overlapping a pool in force is left out; the pool in force is untouched.
    env.pool("pool-overlap", "192.0.2.12/30").await;
    env.wait_until(
        "pool-overlap reported as left out",
        Duration::from_secs(5),
        || async {
            let state = env.configuration_state().await;
            let summary = state
                .and_then(|s| s.status)
                .and_then(|s| s.error_summary)
                .unwrap_or_default();
            summary.contains("IPAddressPool/pool-overlap: left out of the configuration")
                && summary.contains("overlap")
        },
    )
    .await;
    assert_eq!(env.ips("kept").await, ips);

    // Fixed, and the newcomer deleted: the edit applies and only now does `kept` move.
    let pools: Api<IPAddressPool> = Api::namespaced(env.cluster.client(), &env.system);
    pools
        .delete("pool-overlap", &DeleteParams::default())
        .await
        .unwrap();
    env.pool("pool-a", "192.0.2.13-192.0.2.14").await;
    env.wait_config(ConfigurationResult::Valid).await;
    env.wait_until(
        "kept and new move into the edited pool",
        Duration::from_secs(5),
        || async {
            let a = env.ips("kept").await;
            let b = env.ips("new").await;
            a == ["192.0.2.13"] && b == ["192.0.2.14"]
        },
    )
    .await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_pool_on_a_fresh_start_stops_nothing_and_takes_nothing_away() {
    let env = Env::start("ctl-garbage-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    env.pool("pool-g", "198.51.100.10-198.51.100.11").await;
    let mut controller = env.controller("first-run", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    env.service("old", &[("ferrolb.io/address-pool", "pool-a")])
        .await;
    let (old_ips, _) = env.wait_ips("old", Duration::from_secs(5)).await;
    assert_eq!(old_ips, ["192.0.2.10"]);
    controller.kill();

    // While the controller is down, pool-a is edited into garbage: the next controller starts
    // with no valid version of it at all.
    // (Past the schema's pattern: a reversed range only the configuration can refuse.)
    env.pool("pool-a", "192.0.2.30-192.0.2.20").await;
    let _controller = env.controller("second-run", free_port());
    let state = env.wait_config(ConfigurationResult::Invalid).await;
    let summary = state.status.unwrap().error_summary.unwrap_or_default();
    assert!(
        summary.contains("IPAddressPool/pool-a: left out of the configuration"),
        "{summary}"
    );
    // Every other pool still allocates...
    env.service("fresh", &[]).await;
    let (fresh_ips, _) = env.wait_ips("fresh", Duration::from_secs(10)).await;
    assert_eq!(fresh_ips, ["198.51.100.10"]);
    // ...and what pool-a handed out stays where it is, with a Warning saying why.
    assert_eq!(env.ips("old").await, old_ips);
    env.wait_until(
        "an AllocationHeld Event",
        Duration::from_secs(5),
        || async {
            env.events("old")
                .await
                .iter()
                .any(|(reason, _)| reason == "AllocationHeld")
        },
    )
    .await;

    // Fixed: the Service keeps exactly its address.
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    env.wait_config(ConfigurationResult::Valid).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.ips("old").await, old_ips);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_moves_only_its_services() {
    let env = Env::start("ctl-pooldel-").await;
    env.pool("pool-a", "192.0.2.10-192.0.2.11").await;
    env.pool("pool-b", "198.51.100.10-198.51.100.13").await;
    let _controller = env.controller("only", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    // One at a time: Services created together are served in the order their reconciles run.
    for (name, annotations) in [
        ("in-a", vec![]),
        ("in-b", vec![("ferrolb.io/address-pool", "pool-b")]),
        ("pinned-a", vec![("ferrolb.io/address-pool", "pool-a")]),
    ] {
        env.service(name, &annotations).await;
        env.wait_ips(name, Duration::from_secs(5)).await;
    }
    assert_eq!(env.ips("in-a").await, ["192.0.2.10"]);
    let in_b = env.ips("in-b").await;
    assert_eq!(in_b, ["198.51.100.10"]);

    let pools: Api<IPAddressPool> = Api::namespaced(env.cluster.client(), &env.system);
    pools
        .delete("pool-a", &DeleteParams::default())
        .await
        .unwrap();
    // in-a moves to pool-b; pinned-a has nowhere to go and shows no address; in-b is untouched.
    env.wait_until(
        "in-a moves to pool-b and pinned-a is cleared",
        Duration::from_secs(5),
        || async {
            env.ips("in-a").await == ["198.51.100.11"] && env.ips("pinned-a").await.is_empty()
        },
    )
    .await;
    assert_eq!(env.ips("in-b").await, in_b);
    env.wait_until(
        "an AllocationFailed Event naming the missing pool",
        Duration::from_secs(5),
        || async {
            env.events("pinned-a").await.iter().any(|(reason, note)| {
                reason == "AllocationFailed" && note.contains("IPAddressPool/pool-a does not exist")
            })
        },
    )
    .await;
    // The pool comes back: the pinned Service is served again.
    env.pool("pool-a", "192.0.2.10-192.0.2.11").await;
    let (ips, _) = env.wait_ips("pinned-a", Duration::from_secs(5)).await;
    assert_eq!(ips, ["192.0.2.10"]);
    assert_eq!(env.ips("in-a").await, ["198.51.100.11"]);
    env.finish().await;
}

/// Every Service's addresses, by name, from one list.
async fn all_ips(env: &Env) -> BTreeMap<String, Vec<String>> {
    env.services()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress_ips(&s)))
        .collect()
}

/// A Service as MetalLB left it: its address and annotations.
struct MetallbService {
    name: String,
    ip: String,
    annotations: Vec<(String, String)>,
}

/// MetalLB's addresses for the cutover: `count` Services (a multiple of 4, at most 1,000): a
/// quarter in each of pool-a and pool-b, half in pool-c in pairs sharing one address under a
/// sharing key. Addresses are scattered across each pool (not lowest first), so a controller
/// that re-allocated would be caught.
fn metallb_assignments(count: usize) -> Vec<MetallbService> {
    let quarter = count / 4;
    let mut out = Vec::new();
    for i in 0..count {
        let name = format!("svc-{i:04}");
        let (pool, prefix, slot) = if i < quarter {
            ("pool-a", "192.0.2", i)
        } else if i < 2 * quarter {
            ("pool-b", "198.51.100", i - quarter)
        } else {
            ("pool-c", "203.0.113", (i - 2 * quarter) / 2)
        };
        // A permutation of 0..=255 (167 is prime to 256).
        let host = (slot * 167 + 11) % 256;
        let ip = format!("{prefix}.{host}");
        // Both annotation spellings MetalLB has written over the years.
        let pool_key = if i % 2 == 0 {
            "metallb.universe.tf/ip-allocated-from-pool"
        } else {
            "metallb.io/ip-allocated-from-pool"
        };
        let mut annotations = vec![(pool_key.to_string(), pool.to_string())];
        if pool == "pool-c" {
            annotations.push((
                "metallb.universe.tf/allow-shared-ip".into(),
                format!("key-{slot}"),
            ));
        } else if i % 10 == 3 {
            annotations.push(("metallb.io/loadBalancerIPs".into(), ip.clone()));
        }
        out.push(MetallbService {
            name,
            ip,
            annotations,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_cutover_keeps_every_address_of_a_thousand_services() {
    cutover(true).await;
}

/// The same Services after a conversion (`migrate`): FerroLB's own pools of the same names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converted_cutover_keeps_every_address_of_a_thousand_services() {
    cutover(false).await;
}

/// MetalLB's Services, then FerroLB's controller: in MetalLB-compatible mode on MetalLB's own
/// pools (`compat`), or on FerroLB's pools of the same names.
async fn cutover(compat: bool) {
    use futures::StreamExt;
    const COUNT: usize = 1_000;
    let env = if compat {
        Env::start_metallb("ctl-mlb-").await
    } else {
        Env::start_with("ctl-conv-", room_for_a_thousand_services()).await
    };
    let (pool_namespace, group, api) = if compat {
        (
            env.metallb.clone().unwrap(),
            "metallb.io",
            ferrolb_kube::ConfigApi::MetalLb,
        )
    } else {
        (
            env.system.clone(),
            "ferrolb.io",
            ferrolb_kube::ConfigApi::FerroLb,
        )
    };
    let pools = "apiVersion: GROUP/v1beta1\nkind: IPAddressPool\nmetadata: {name: pool-a}\nspec: {addresses: [192.0.2.0/24]}\n---\napiVersion: GROUP/v1beta1\nkind: IPAddressPool\nmetadata: {name: pool-b}\nspec: {addresses: [198.51.100.0/24]}\n---\napiVersion: GROUP/v1beta1\nkind: IPAddressPool\nmetadata: {name: pool-c}\nspec: {addresses: [203.0.113.0/24], autoAssign: false}\n---\napiVersion: GROUP/v1beta1\nkind: L2Advertisement\nmetadata: {name: all}\n"
        .replace("GROUP", group);
    env.cluster
        .apply_yaml(&pools, Some(&pool_namespace))
        .await
        .expect("pools");

    // The Services MetalLB served: created with MetalLB's status and annotations.
    let assignments = metallb_assignments(COUNT);
    let started = Instant::now();
    futures::stream::iter(assignments.iter().enumerate())
        .for_each_concurrent(
            16,
            |(
                i,
                MetallbService {
                    name,
                    ip,
                    annotations,
                },
            )| {
                let env = &env;
                async move {
                    let annotations: BTreeMap<&str, &str> = annotations
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    // Services sharing an address use different ports.
                    let port = 80 + (i % 2) as i32;
                    let svc: Service = serde_json::from_value(json!({
                        "metadata": {"name": name, "annotations": annotations},
                        "spec": {
                            "type": "LoadBalancer",
                            "loadBalancerClass": env.class,
                            "ports": [{"port": port, "protocol": "TCP"}],
                        }
                    }))
                    .unwrap();
                    let api = env.services();
                    api.create(&PostParams::default(), &svc)
                        .await
                        .expect("create Service");
                    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
                    api.patch_status(
                        name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&status),
                    )
                    .await
                    .expect("MetalLB's status");
                }
            },
        )
        .await;
    let before = all_ips(&env).await;
    assert_eq!(before.len(), COUNT);
    eprintln!(
        "{COUNT} Services with MetalLB's status in {:?}",
        started.elapsed()
    );

    // FerroLB's controller replaces MetalLB's: nothing changes.
    let t0 = Instant::now();
    let _controller = env.controller("cutover", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    let pool_api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.cluster.client(),
        &pool_namespace,
        &api.resource("IPAddressPool").unwrap(),
    );
    // The controller has served every Service once it writes their pools' counts.
    env.wait_until(
        "address counts in the pools",
        Duration::from_secs(60),
        || async {
            let mut assigned = BTreeMap::new();
            for p in pool_api.list(&ListParams::default()).await.unwrap().items {
                assigned.insert(
                    p.metadata.name.clone().unwrap_or_default(),
                    p.data["status"]["assignedIPv4"].as_i64().unwrap_or(-1),
                );
            }
            let quarter = (COUNT / 4) as i64;
            assigned.get("pool-a") == Some(&quarter)
                && assigned.get("pool-b") == Some(&quarter)
                && assigned.get("pool-c") == Some(&quarter)
        },
    )
    .await;
    let served = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = all_ips(&env).await;
    let changed: Vec<&String> = before
        .iter()
        .filter(|(name, ips)| after.get(*name) != Some(ips))
        .map(|(name, _)| name)
        .collect();
    assert!(
        changed.is_empty(),
        "{} of {COUNT} Services changed address, e.g. {:?}",
        changed.len(),
        changed.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "cutover ({}): 0 of {COUNT} addresses changed; every pool's count written {served:?} after the controller started",
        if compat { "MetalLB's objects in place" } else { "converted" }
    );

    // A new Service gets an address no other Service holds.
    env.service("newcomer", &[]).await;
    let (ips, _) = env.wait_ips("newcomer", Duration::from_secs(10)).await;
    let held: BTreeSet<&String> = after.values().flatten().collect();
    assert!(!held.contains(&ips[0]), "{ips:?} was already held");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_where_it_is_not_read_is_reported_not_ignored() {
    let mut env = Env::start("ctl-stray-").await;
    env.report_elsewhere = true;
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    // Left behind where FerroLB does not read: MetalLB's namespace, say (here the apps one).
    env.cluster
        .apply_yaml(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: left-behind}\nspec: {addresses: [198.51.100.0/28]}\n",
            Some(&env.apps),
        )
        .await
        .unwrap();
    let _controller = env.controller("only", free_port());
    let line = format!(
        "IPAddressPool/{apps}/left-behind: metadata.namespace: {apps}: ferrolb.io objects are read in {sys}; this one is ignored",
        apps = env.apps,
        sys = env.system
    );
    env.wait_until(
        "the object elsewhere reported",
        Duration::from_secs(10),
        || async {
            env.configuration_state()
                .await
                .and_then(|s| s.status)
                .and_then(|s| s.error_summary)
                .is_some_and(|summary| summary.lines().any(|l| l == line))
        },
    )
    .await;
    // Everything in force still works.
    env.service("served", &[]).await;
    let (ips, _) = env.wait_ips("served", Duration::from_secs(5)).await;
    assert_eq!(ips, ["192.0.2.10"]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_started_before_its_configuration_takes_no_address_away() {
    let env = Env::start("ctl-nopool-").await;
    // A Service with an address from before (MetalLB's, say); no pool applied yet.
    env.service("old", &[]).await;
    env.services()
        .patch_status(
            "old",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.12"}]}}}),
            ),
        )
        .await
        .unwrap();
    let _controller = env.controller("early", free_port());
    env.wait_until(
        "an AllocationHeld Event",
        Duration::from_secs(10),
        || async {
            env.events("old")
                .await
                .iter()
                .any(|(reason, _)| reason == "AllocationHeld")
        },
    )
    .await;
    assert_eq!(env.ips("old").await, ["192.0.2.12"]);
    // The configuration arrives: the Service keeps exactly its address.
    env.pool("pool-a", "192.0.2.10-192.0.2.14").await;
    env.wait_until(
        "the pool annotation written",
        Duration::from_secs(10),
        || async {
            env.services()
                .get("old")
                .await
                .unwrap()
                .metadata
                .annotations
                .unwrap_or_default()
                .get("ferrolb.io/ip-allocated-from-pool")
                .is_some_and(|p| p == "pool-a")
        },
    )
    .await;
    assert_eq!(env.ips("old").await, ["192.0.2.12"]);
    env.finish().await;
}

/// Two replicas; the API server goes down for `down` and comes back with every object but no
/// watch history (every resumed watch gets 410 Gone), and the lease expired meanwhile: a
/// Service created then gets its address within 5 s, and no address changes.
async fn allocates_soon_after_an_api_server_restart(down: Duration) {
    let mut env = Env::start("ctl-apirestart-").await;
    if env.cluster.is_real_cluster() {
        eprintln!("SKIP: restarting the API server needs the emulator");
        env.finish().await;
        return;
    }
    env.pool("pool-a", "192.0.2.10-192.0.2.19").await;
    let a = env.controller("a", free_port());
    env.wait_config(ConfigurationResult::Valid).await;
    let b = env.controller("b", free_port());
    env.service("before", &[]).await;
    let (before, _) = env.wait_ips("before", Duration::from_secs(10)).await;

    assert!(env.cluster.restart_emulator(down).await);
    let back = Instant::now();
    let mut tries = 0;
    loop {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "after"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": env.class, "ports": [{"port": 80}]},
        }))
        .unwrap();
        match env.services().create(&PostParams::default(), &svc).await {
            Ok(_) => break,
            Err(e) => {
                tries += 1;
                assert!(tries < 10, "cannot create a Service after the restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let created = back.elapsed();
    env.wait_ips("after", Duration::from_secs(30)).await;
    let took = back.elapsed();
    eprintln!("the Service was created {created:?} after the API server was back");
    eprintln!(
        "API server down {down:?}: a new Service had its address {took:?} after it was back (leader now {:?})",
        env.lease_holder().await
    );
    assert!(
        took < Duration::from_secs(5),
        "the address came {took:?} after the API server was back:\n{}",
        env.logs()
    );
    assert_eq!(env.ips("before").await, before, "no address changed");
    drop((a, b));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_within_5_s_of_the_api_server_back_after_15_s_down() {
    allocates_soon_after_an_api_server_restart(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_within_5_s_of_the_api_server_back_after_60_s_down() {
    allocates_soon_after_an_api_server_restart(Duration::from_secs(60)).await;
}
