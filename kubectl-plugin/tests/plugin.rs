//! `kubectl-ferrolb` as a process against the API emulator (or the cluster named by
//! FERROLB_E2E_KUBECONFIG), with the real `ferrolb-controller` allocating: `status` and `why`
//! for Services that are announced (L2 and BGP), pending for each kind of reason, allocated but
//! not announced, and not FerroLB's; and every request the plugin makes is one its ClusterRole
//! grants.
//!
//! The speakers' status objects (ServiceL2Status, ServiceBGPStatus, ConfigurationState
//! speaker-<node>) are written by the test as a speaker writes them: the plugin only reads them,
//! and the speakers' writing is tested with real speakers in e2e/tests/speaker_kube*.rs.

use ferrolb_e2e::api_requests::from_text_log;
use ferrolb_e2e::emulator::harness::{LbTestSpace, TestCluster, TestProcess};
use ferrolb_e2e::lab::l2::controller_binary;
use ferrolb_e2e::rbac::grants;
use ferrolb_kube::api_calls::{single_grants, Scope};
use ferrolb_kubectl::snapshot::API_CALLS;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-ferrolb");

struct Env {
    cluster: TestCluster,
    space: LbTestSpace,
    nodes: Vec<String>,
}

impl Env {
    fn plugin(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(PLUGIN)
            .args(args)
            .args([
                "--system-namespace",
                &self.space.system,
                "--lb-class",
                &self.space.class,
            ])
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env("RUST_LOG", "warn,kube_client::client::builder=debug")
            .output()
            .expect("run kubectl-ferrolb");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (code, out, err) = self.plugin(&all);
        assert_eq!(code, 0, "kubectl-ferrolb {args:?} failed:\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn why(&self, service: &str) -> Value {
        self.json(&["why", service, "-n", &self.space.apps])
    }
}

/// The Services of the test, by what each shows.
fn services(class: &str) -> String {
    let svc = |name: &str, annotations: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec: {{type: LoadBalancer, loadBalancerClass: {class}, ports: [{{port: 80, protocol: TCP}}]{extra}}}\n---\n"
        )
    };
    let mut out = String::new();
    // Announced in layer 2 (its status object is written below) and not.
    out.push_str(&svc("web", "ferrolb.io/loadBalancerIPs: 192.0.2.1", ""));
    out.push_str(&svc("quiet", "ferrolb.io/loadBalancerIPs: 192.0.2.2", ""));
    // No endpoint at all (the others get one below).
    out.push_str(&svc("idle", "ferrolb.io/loadBalancerIPs: 192.0.2.3", ""));
    // Announced by BGP from two nodes.
    out.push_str(&svc("api", "ferrolb.io/address-pool: fabric", ""));
    // From a pool that no advertisement selects.
    out.push_str(&svc("lonely", "ferrolb.io/address-pool: orphan", ""));
    // Pending, each for its own reason.
    out.push_str(&svc("no-such-pool", "ferrolb.io/address-pool: nosuch", ""));
    out.push_str(&svc(
        "outside",
        "ferrolb.io/loadBalancerIPs: 203.0.113.200",
        "",
    ));
    out.push_str(&svc("garbage", "ferrolb.io/loadBalancerIPs: not-an-ip", ""));
    // Not FerroLB's.
    out.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: internal}\nspec: {ports: [{port: 80}]}\n",
    );
    out
}

fn config() -> String {
    "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/30], autoAssign: false}\n---\n\
     apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: fabric}\nspec: {addresses: [203.0.113.0/29], autoAssign: false}\n---\n\
     apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: orphan}\nspec: {addresses: [198.51.100.0/30], autoAssign: false}\n---\n\
     apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\nspec: {ipAddressPools: [lan]}\n---\n\
     apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: fabric}\nspec: {ipAddressPools: [fabric]}\n---\n\
     apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 198.51.100.254, passwordSecret: {name: tor-password}}\n---\n\
     apiVersion: v1\nkind: Secret\nmetadata: {name: tor-password}\ntype: kubernetes.io/basic-auth\nstringData: {password: s3cret}\n"
        .to_string()
}

async fn start() -> Env {
    let cluster = TestCluster::start().await.expect("cluster");
    let space = cluster.lb_test_space("plug-").await.expect("test space");
    let node_api: Api<Node> = Api::all(cluster.client());
    if !cluster.is_real_cluster() {
        for name in ["plug-node-a", "plug-node-b"] {
            let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            node_api
                .create(&PostParams::default(), &node)
                .await
                .unwrap();
        }
    }
    let mut nodes: Vec<String> = node_api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    nodes.sort();
    nodes.truncate(2);
    cluster
        .apply_yaml(&config(), Some(&space.system))
        .await
        .expect("configuration");
    Env {
        cluster,
        space,
        nodes,
    }
}

fn controller(env: &Env) -> TestProcess {
    let binary = controller_binary().expect("ferrolb-controller builds");
    env.cluster
        .spawn(
            &binary,
            &[
                "run",
                "--namespace",
                &env.space.system,
                "--lb-class",
                &env.space.class,
                "--metrics-addr",
                "127.0.0.1:0",
                "--identity",
                "plugin-test",
                "--lease-duration-seconds",
                "3",
                "--lease-grace-seconds",
                "1",
                "--ignore-objects-elsewhere",
            ],
        )
        .expect("spawn the controller")
}

/// Writes a status object as a speaker does: create, then its status.
async fn speaker_object(env: &Env, plural: &str, kind: &str, name: &str, status: Value) {
    let gvk = kube::api::GroupVersionKind::gvk("ferrolb.io", "v1beta1", kind);
    let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(env.cluster.client(), &env.space.system, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1", "kind": kind,
        "metadata": {"name": name}, "spec": {},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

async fn wait_for_addresses(env: &Env, names: &[&str], controller: &TestProcess) {
    let api: Api<Service> = Api::namespaced(env.cluster.client(), &env.space.apps);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut missing = Vec::new();
        for name in names {
            let svc = api.get(name).await.unwrap();
            let has = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .is_some_and(|i| !i.is_empty());
            if !has {
                missing.push(*name);
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no address for {missing:?} after 30 s; controller log:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JSON string as it is; anything else as JSON text.
fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_why_tell_what_is_announced_pending_and_why() {
    let env = start().await;
    let controller = controller(&env);
    env.cluster
        .apply_yaml(&services(&env.space.class), Some(&env.space.apps))
        .await
        .expect("Services");
    wait_for_addresses(
        &env,
        &["web", "quiet", "idle", "api", "lonely"],
        &controller,
    )
    .await;
    let (a, b) = (env.nodes[0].clone(), env.nodes[env.nodes.len() - 1].clone());
    // A ready endpoint on the first node for each Service but `idle` (the Services have no
    // selector, so a real cluster leaves these hand-made slices alone).
    for (i, name) in ["web", "quiet", "api", "lonely"].into_iter().enumerate() {
        env.cluster
            .apply_yaml(
                &format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [198.51.100.{}], conditions: {{ready: true, serving: true}}, nodeName: {a}}}]\nports: [{{port: 80, protocol: TCP}}]\n", 10 + i),
                Some(&env.space.apps),
            )
            .await
            .expect("EndpointSlice");
    }
    // Wants an address another Service already has (and shares with nobody).
    env.cluster
        .apply_yaml(
            &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: taken\n  annotations: {{ferrolb.io/loadBalancerIPs: 192.0.2.1}}\nspec: {{type: LoadBalancer, loadBalancerClass: {}, ports: [{{port: 80, protocol: TCP}}]}}\n", env.space.class),
            Some(&env.space.apps),
        )
        .await
        .expect("Service taken");
    for node in [&a, &b] {
        speaker_object(
            &env,
            "configurationstates",
            "ConfigurationState",
            &format!("speaker-{node}"),
            json!({"result": "Valid"}),
        )
        .await;
    }
    let apps = env.space.apps.clone();
    speaker_object(
        &env,
        "servicel2statuses",
        "ServiceL2Status",
        "l2-web",
        json!({"node": a, "serviceName": "web", "serviceNamespace": apps, "interfaces": [{"name": "eth0"}]}),
    )
    .await;
    for (i, node) in [&a, &b].into_iter().enumerate() {
        speaker_object(
            &env,
            "servicebgpstatuses",
            "ServiceBGPStatus",
            &format!("bgp-api-{i}"),
            json!({"node": node, "serviceName": "api", "serviceNamespace": apps, "peers": ["tor"]}),
        )
        .await;
    }
    // The controller writes the pools' status after it allocated.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // status: pools, Services, components.
    let status = env.json(&["status"]);
    let pool = |name: &str| {
        status["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("pool {name} in {status:#}"))
    };
    assert_eq!(
        pool("lan")["ipv4"],
        json!({"used": 3, "free": 1}),
        "{status:#}"
    );
    assert_eq!(pool("fabric")["ipv4"]["used"], 1, "{status:#}");
    assert_eq!(pool("orphan")["ipv4"]["used"], 1, "{status:#}");
    let service = |name: &str| {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("Service {name} in {status:#}"))
    };
    let web = service("web");
    assert_eq!(web["addresses"], json!(["192.0.2.1"]));
    assert_eq!(web["pool"], "lan");
    assert_eq!(
        web["announced"]["layer2"],
        json!([{"node": a, "interfaces": ["eth0"]}])
    );
    assert!(web["problem"].is_null(), "{web:#}");
    let api = service("api");
    assert_eq!(
        api["announced"]["bgp"].as_array().unwrap().len(),
        2 - usize::from(a == b)
    );
    assert!(
        text(&service("quiet")["problem"]).contains("should announce it"),
        "{status:#}"
    );
    assert!(
        text(&service("no-such-pool")["problem"]).contains("nosuch"),
        "{status:#}"
    );
    assert!(
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "internal"),
        "a ClusterIP Service is not listed"
    );
    assert!(
        status["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "controller" && c["result"] == "Valid"),
        "{status:#}"
    );
    // The table says the same.
    let (code, table, _) = env.plugin(&["status"]);
    assert_eq!(code, 0);
    println!("kubectl ferrolb status:\n{table}");
    for name in [
        "web",
        "api",
        "quiet",
        "idle",
        "lonely",
        "garbage",
        "no-such-pool",
    ] {
        let (_, out, _) = env.plugin(&["why", name, "-n", &env.space.apps]);
        println!("kubectl ferrolb why {name}:\n{out}");
    }
    assert!(table.contains("L2 ") && table.contains("eth0"), "{table}");
    assert!(table.contains("BGP ") && table.contains("tor"), "{table}");

    // why: announced.
    let why = env.why("web");
    assert!(
        text(&why["verdict"]).starts_with("announced: L2"),
        "{why:#}"
    );
    let why = env.why(&format!("{apps}/api"));
    assert!(text(&why["verdict"]).contains("BGP"), "{why:#}");

    // why: an address but nobody announces it, for each reason.
    let why = env.why("quiet");
    assert!(text(&why["verdict"]).contains("not announced"), "{why:#}");
    assert!(
        text(&why["reasons"]).contains("L2: ") && text(&why["reasons"]).contains("ServiceL2Status"),
        "{why:#}"
    );
    let why = env.why("idle");
    assert!(
        text(&why["reasons"]).contains("no endpoint of the Service is serving"),
        "{why:#}"
    );
    let why = env.why("lonely");
    assert!(
        text(&why["reasons"])
            .contains("no L2Advertisement or BGPAdvertisement selects pool orphan"),
        "{why:#}"
    );

    // why: no address, in the allocator's words, with what the controller said.
    let plan_words = |name: &str, words: &str| {
        let why = env.why(name);
        assert!(
            text(&why["verdict"]).starts_with("no address"),
            "{name}: {why:#}"
        );
        assert!(text(&why["verdict"]).contains(words), "{name}: {why:#}");
        why
    };
    plan_words("no-such-pool", "nosuch");
    plan_words("outside", "203.0.113.200");
    plan_words("garbage", "not-an-ip");
    // The controller's own Event is quoted (it may come a moment after the decision).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let why = plan_words("taken", "192.0.2.1");
        if text(&why["reasons"]).contains("the controller said (AllocationFailed)") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Event quoted after 15 s: {why:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let why = env.why("internal");
    assert_eq!(why["verdict"], "not served by FerroLB", "{why:#}");
    assert!(text(&why["reasons"]).contains("ClusterIP"), "{why:#}");
    let (code, _, err) = env.plugin(&["why", "nobody", "-n", &apps]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = env.plugin(&["why", "taken", "-n", &apps]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("Service {apps}/taken: no address")),
        "{out}"
    );

    // Every request was a `list` its ClusterRole grants.
    let (_, _, log) = env.plugin(&["why", "web", "-n", &apps]);
    let requests = from_text_log(&log);
    assert!(!requests.is_empty(), "the request log is read: {log}");
    let granted = cluster_role_grants();
    for r in requests {
        let grant = (
            Scope::Cluster,
            r.group.clone(),
            r.resource.clone(),
            r.verb.to_string(),
        );
        assert!(
            granted.contains(&grant),
            "{r:?} is not granted by the plugin's ClusterRole"
        );
    }

    drop(controller);
    if env.cluster.is_real_cluster() {
        let _ = env.cluster.delete_namespace(&env.space.apps).await;
        let _ = env.cluster.delete_namespace(&env.space.system).await;
    }
}

fn cluster_role_grants() -> BTreeSet<(Scope, String, String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubectl-plugin/clusterrole.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let role: ClusterRole = serde_yaml::from_str(&text).unwrap();
    grants(&role.rules.unwrap_or_default(), Scope::Cluster)
}

#[test]
fn the_cluster_role_grants_exactly_the_declared_calls() {
    let declared: BTreeSet<(Scope, String, String, String)> = single_grants(API_CALLS);
    assert_eq!(cluster_role_grants(), declared);
}

/// MetalLB-compatible mode: the configuration is MetalLB's own objects in their namespace. Without
/// `--metallb-namespace` the plugin says where they are; with it, it reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_metallbs_objects_in_compatible_mode_and_says_where_they_are() {
    let cluster = TestCluster::start().await.expect("cluster");
    let space = cluster.lb_test_space("plugm-").await.expect("test space");
    cluster.apply_metallb_crds().await.expect("MetalLB's CRDs");
    let metallb = cluster
        .create_namespace("plugm-metallb-")
        .await
        .expect("namespace");
    cluster
        .apply_yaml(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/30]}\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
            Some(&metallb),
        )
        .await
        .expect("MetalLB's configuration");
    if !cluster.is_real_cluster() {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "plugm-node"}})).unwrap();
        Api::<Node>::all(cluster.client())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
    }
    // A Service as MetalLB left it: an address in its status, no endpoint yet.
    cluster
        .apply_yaml(
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{type: LoadBalancer, loadBalancerClass: {}, ports: [{{port: 80, protocol: TCP}}]}}\n", space.class),
            Some(&space.apps),
        )
        .await
        .unwrap();
    let services: Api<Service> = Api::namespaced(cluster.client(), &space.apps);
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}})),
        )
        .await
        .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(PLUGIN)
            .args(extra)
            .args([
                "--system-namespace",
                &space.system,
                "--lb-class",
                &space.class,
                "-o",
                "json",
            ])
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, note) = run(&["status"]);
    assert!(status["pools"].as_array().unwrap().is_empty(), "{status:#}");
    assert!(
        note.contains(&format!("--metallb-namespace {metallb}")),
        "says where MetalLB's pools are: {note}"
    );
    let (status, _) = run(&["status", "--metallb-namespace", &metallb]);
    assert_eq!(status["pools"][0]["name"], "lan", "{status:#}");
    let (why, _) = run(&[
        "why",
        "web",
        "-n",
        &space.apps,
        "--metallb-namespace",
        &metallb,
    ]);
    assert!(
        text(&why["reasons"]).contains("no endpoint of the Service is serving"),
        "{why:#}"
    );
    assert!(
        !text(&why["reasons"]).contains("in no IPAddressPool"),
        "{why:#}"
    );
    if cluster.is_real_cluster() {
        for ns in [&space.apps, &space.system, &metallb] {
            let _ = cluster.delete_namespace(ns).await;
        }
    }
}
