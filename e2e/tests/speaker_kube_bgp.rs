//! BGP mode in kube mode: the real `ferrolb-controller` and three `ferrolb-speaker run --source
//! kube` against the API emulator, the speakers in the node namespaces of the BGP lab
//! (`lab::bgp_lab`), FRR in the router namespace as the judge, a client behind the router.
//!
//! IPAddressPool + BGPPeer (MD5 password from a Secret) + BGPAdvertisement (with a community),
//! then a LoadBalancer Service with an EndpointSlice on every node -> the controller allocates
//! -> FRR holds the /32 with the three nodes as ECMP next hops and the community, in its table
//! and in the kernel; every node has a ServiceBGPStatus naming the peer, has put a
//! `nodeAssigned` Event on the Service, and its ConfigurationState is Valid. One speaker stopped
//! (SIGTERM) withdraws its next hop and deletes its ServiceBGPStatus. externalTrafficPolicy
//! Local with the endpoint on one node -> only that node's next hop and ServiceBGPStatus remain.
//! The Service deleted -> the route is withdrawn and the ServiceBGPStatus objects are gone.
//! Every request a speaker sent is one
//! `ferrolb_speaker::api_calls::API_CALLS` declares (so the RBAC grants it).
//!
//! The lab is built by the test (root); everything touching the API runs in a child process in
//! the client namespace, where the emulator listens on the client's address, which the nodes
//! reach through the router. With FERROLB_E2E_KUBECONFIG the network part is skipped: the
//! controller allocates, and a speaker for the cluster's first Node (with a fixed live set)
//! reports its ConfigurationState and ServiceBGPStatus.

mod kube_common;

use ferrolb_crds::{ConfigurationResult, ConfigurationState, ServiceBGPStatus};
use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_e2e::emulator::EmulatorConfig;
use ferrolb_e2e::lab::bgp_lab::{node_name, node_v4, BgpLab, CLIENT_V4, ROUTER_V4};
use ferrolb_e2e::lab::bgp_router_view::RouterView;
use ferrolb_e2e::lab::l2::LabProcess;
use ferrolb_e2e::lab::{child, run};
use ferrolb_speaker::status::{configuration_state_name, SERVICE_NAME_LABEL, TAKEOVER_REASON};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube_common::{built, logged_api_calls, parent_builds_lab, Env};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TEST: &str = "kube_mode_bgp_route_at_frr_follows_the_service";
/// Lab tag: namespaces flb-kg-{r,c,n1,n2,n3}, FRR instance flb-kg.
const TAG: &str = "kg";
const NODES: usize = 3;
const VIP: &str = "203.0.113.10";
const PREFIX: &str = "203.0.113.10/32";
const COMMUNITY: &str = "64512:100";
const PASSWORD: &str = "kg-md5-from-the-Secret";
const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");

#[test]
fn kube_mode_bgp_route_at_frr_follows_the_service() {
    let real_leaves_out = "the network-namespace part (FRR, BGP sessions, routes) needs the emulator; checking allocation, ConfigurationState and ServiceBGPStatus on the cluster";
    // Three workers: the emulator serves from this process while the test body polls FRR.
    if !parent_builds_lab(TEST, 3, lab_scenario, real_leaves_out, |s, c| async move {
        real_cluster_scenario(&s, &c).await
    }) {
        return;
    }
    let started = Instant::now();
    let mut lab = BgpLab::new(TAG, NODES).unwrap();
    lab.start_frr(&frr_conf()).unwrap();
    lab.serve_echo(&[VIP], Path::new(ECHO)).unwrap();
    let result = child::run_in_netns(&lab.client, TEST, Duration::from_secs(90));
    match result {
        Ok(out) => eprintln!("{out}\n{TEST}: {:?}", started.elapsed()),
        Err(e) => panic!("{e}\n{}", lab.frr().log("bgpd")),
    }
    drop(lab);
}

/// The router: AS 64500, eBGP to every node (AS 64512) with the MD5 password, ECMP.
fn frr_conf() -> String {
    let mut neighbors = String::new();
    let mut activate = String::new();
    for i in 1..=NODES {
        let a = node_v4(i);
        neighbors.push_str(&format!(
            " neighbor {a} remote-as 64512\n neighbor {a} password {PASSWORD}\n neighbor {a} timers connect 1\n"
        ));
        activate.push_str(&format!("  neighbor {a} activate\n"));
    }
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n{neighbors} address-family ipv4 unicast\n  maximum-paths 8\n{activate} exit-address-family\n!\n"
    )
}

impl Env {
    /// Pool, password Secret, BGPPeer and BGPAdvertisement (with a community).
    async fn bgp_config(&self) {
        self.apply(
            &format!(
                "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public}}\nspec: {{addresses: [{PREFIX}]}}\n---\n\
                 apiVersion: v1\nkind: Secret\nmetadata: {{name: router-md5}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: {PASSWORD}}}\n---\n\
                 apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s, holdTime: 9s, passwordSecret: {{name: router-md5}}}}\n---\n\
                 apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public}}\nspec: {{ipAddressPools: [public], communities: [\"{COMMUNITY}\"]}}\n"
            ),
            &self.system,
        )
        .await;
    }

    /// A LoadBalancer Service of the test's class with an EndpointSlice serving on `nodes`
    /// (the emulator runs no endpoint controller).
    async fn service(&self, name: &str, policy: &str, nodes: &[String]) {
        let spec = format!("externalTrafficPolicy: {policy}, ");
        self.service_on(name, &spec, nodes, 101).await;
    }

    /// Waits until `check` (blocking: vtysh, ip) holds, off the runtime's workers so the
    /// emulator in this process keeps serving; at most `limit`. The time it took.
    async fn wait_router(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Duration {
        let check = std::sync::Arc::new(check);
        let start = Instant::now();
        self.wait(what, limit, || {
            let check = check.clone();
            async move {
                tokio::task::spawn_blocking(move || check())
                    .await
                    .unwrap()
                    .then_some(())
            }
        })
        .await;
        start.elapsed()
    }

    /// This Service's ServiceBGPStatus objects: (node, peers) of each.
    async fn bgp_statuses(&self, service: &str) -> BTreeSet<(String, Vec<String>)> {
        let api: Api<ServiceBGPStatus> = Api::namespaced(self.cluster.client(), &self.system);
        api.list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                let status = s.status?;
                (status.service_name.as_deref() == Some(service)
                    && status.service_namespace.as_deref() == Some(self.apps.as_str()))
                .then_some((status.node?, status.peers))
            })
            .collect()
    }

    /// Notes of the `nodeAssigned` Events on `service`.
    async fn assigned_events(&self, service: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.cluster.client(), &self.apps);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service)
                    && e.reason.as_deref() == Some(TAKEOVER_REASON)
            })
            .filter_map(|e| e.note)
            .collect()
    }

    async fn configuration_summary(&self, node: &str) -> Option<String> {
        let api: Api<ConfigurationState> = Api::namespaced(self.cluster.client(), &self.system);
        api.get_opt(&configuration_state_name(node))
            .await
            .ok()??
            .status?
            .error_summary
    }

    async fn configuration(&self, node: &str) -> Option<ConfigurationResult> {
        let api: Api<ConfigurationState> = Api::namespaced(self.cluster.client(), &self.system);
        api.get_opt(&configuration_state_name(node))
            .await
            .ok()??
            .status?
            .result
    }
}

/// Sends one datagram to the echo at the Service address (we run in the client namespace):
/// the name of the node that answered.
fn ask_echo() -> Result<String, String> {
    run(ECHO, &["ask", &format!("{VIP}:7"), "1000"]).map(|s| s.trim().to_string())
}

fn statuses_on(nodes: &[String]) -> BTreeSet<(String, Vec<String>)> {
    nodes
        .iter()
        .map(|n| (n.clone(), vec!["router".to_string()]))
        .collect()
}

async fn lab_scenario() {
    let speaker = built("ferrolb-speaker");
    let controller = built("ferrolb-controller");
    let router = RouterView::of(TAG);
    let cluster = TestCluster::start_with(EmulatorConfig {
        listen: format!("{CLIENT_V4}:0").parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let env = Env::start(cluster, "kg", &format!("flb-{TAG}-kube")).await;
    let nodes: Vec<String> = (1..=NODES).map(node_name).collect();
    let hops: Vec<String> = (1..=NODES).map(node_v4).collect();
    // The Nodes, with the InternalIPs membership listens on (and the default router IDs).
    let addressed: Vec<(String, String)> =
        (1..=NODES).map(|i| (node_name(i), node_v4(i))).collect();
    env.create_nodes(&addressed).await;
    env.membership_secret().await;
    env.bgp_config().await;

    let _controller = env.start_controller(&format!("flb-{TAG}-c"), &controller);
    let in_netns: Vec<(String, String)> = (1..=NODES)
        .map(|i| (node_name(i), format!("flb-{TAG}-n{i}")))
        .collect();
    let mut speakers = env.start_speakers(&speaker, &in_netns);

    // The sessions come up from the BGPPeer alone (signed with the Secret's password), and the
    // speakers know each other, before there is any Service.
    for hop in &hops {
        let (router, hop) = (router.clone(), hop.clone());
        env.wait_router(
            "every node's session Established (MD5 from the Secret)",
            Duration::from_secs(20),
            move || router.neighbor_state(&hop).as_deref() == Some("Established"),
        )
        .await;
    }
    for (i, s) in speakers.iter().enumerate() {
        for other in nodes.iter().filter(|n| **n != node_name(i + 1)) {
            env.wait(
                "membership among the speakers",
                Duration::from_secs(10),
                || async {
                    s.log()
                        .contains(&format!("speaker up node={other}"))
                        .then_some(())
                },
            )
            .await;
        }
    }
    assert!(router.rib_next_hops("ipv4", PREFIX).is_empty());

    // 1. The Service (traffic policy Cluster, endpoints everywhere): the controller allocates,
    //    FRR holds the /32 with the three ECMP next hops and the community.
    let t0 = Instant::now();
    env.service("vip", "Cluster", &nodes).await;
    let ips = env
        .wait(
            "the controller allocates the address",
            Duration::from_secs(10),
            || async {
                let ips = env.ips("vip").await;
                (!ips.is_empty()).then_some(ips)
            },
        )
        .await;
    let allocated = t0.elapsed();
    assert_eq!(ips, vec![VIP.parse::<IpAddr>().unwrap()]);
    {
        let (r, want) = (router.clone(), hops.clone());
        env.wait_router(
            "FRR and the kernel route the /32 over the three nodes",
            Duration::from_secs(10),
            move || r.next_hops_are("ipv4", PREFIX, &want),
        )
        .await;
    }
    let routed = t0.elapsed();
    eprintln!(
        "kube mode: Service applied -> address allocated in {allocated:?} -> FRR and the router's kernel hold {PREFIX} via 3 ECMP next hops in {routed:?}"
    );
    let path = router.best_path("ipv4", PREFIX).unwrap();
    assert_eq!(path["community"]["string"], COMMUNITY, "{path}");
    assert_eq!(path["aspath"]["string"], "64512", "{path}");
    let mut answered = BTreeSet::new();
    for _ in 0..9 {
        answered.insert(ask_echo().unwrap_or_else(|e| panic!("{VIP}: {e}")));
    }
    assert!(
        answered.iter().all(|n| nodes.contains(n)),
        "answers from {answered:?}"
    );
    env.wait(
        "a ServiceBGPStatus per node naming the peer",
        Duration::from_secs(10),
        || async { (env.bgp_statuses("vip").await == statuses_on(&nodes)).then_some(()) },
    )
    .await;
    let expected_notes: BTreeSet<String> = nodes
        .iter()
        .map(|n| format!("announcing from node \"{n}\" with protocol \"bgp\": {PREFIX}"))
        .collect();
    env.wait(
        "a nodeAssigned Event from every announcing node",
        Duration::from_secs(10),
        || async {
            let notes: BTreeSet<String> = env.assigned_events("vip").await.into_iter().collect();
            (notes == expected_notes).then_some(())
        },
    )
    .await;
    for node in &nodes {
        env.wait(
            "ConfigurationState Valid",
            Duration::from_secs(10),
            || async {
                (env.configuration(node).await? == ConfigurationResult::Valid).then_some(())
            },
        )
        .await;
    }

    // A second BGPPeer in a VRF no node has: the configuration is valid, but every node's
    // ConfigurationState names the peer and field it cannot set up; the running sessions and
    // routes are untouched. Deleted: Valid again.
    env.apply(
        &format!("apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router-red}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, vrf: red}}\n"),
        &env.system,
    )
    .await;
    for node in &nodes {
        env.wait(
            "ConfigurationState naming the missing VRF",
            Duration::from_secs(10),
            || async {
                env.configuration_summary(node)
                    .await?
                    .contains("BGPPeer/router-red: spec.vrf: no VRF device red on this node")
                    .then_some(())
            },
        )
        .await;
    }
    assert!(router.next_hops_are("ipv4", PREFIX, &hops));
    let peers: Api<ferrolb_crds::BGPPeer> = Api::namespaced(env.cluster.client(), &env.system);
    peers
        .delete("router-red", &DeleteParams::default())
        .await
        .expect("delete router-red");
    for node in &nodes {
        env.wait(
            "ConfigurationState Valid again",
            Duration::from_secs(10),
            || async {
                (env.configuration(node).await? == ConfigurationResult::Valid).then_some(())
            },
        )
        .await;
    }

    // 2. Node 3's speaker stops (SIGTERM): it withdraws its next hop and deletes its
    //    ServiceBGPStatus on the way out; the other two stay.
    let t_stop = Instant::now();
    let code = speakers[2].terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", speakers[2].log());
    {
        let (r, want) = (router.clone(), hops[..2].to_vec());
        env.wait_router(
            "node-3's next hop withdrawn",
            Duration::from_secs(10),
            move || r.next_hops_are("ipv4", PREFIX, &want),
        )
        .await;
    }
    eprintln!(
        "kube mode: node-3's speaker stopped (SIGTERM) -> its next hop gone in {:?}",
        t_stop.elapsed()
    );
    env.wait(
        "node-3's ServiceBGPStatus deleted on stop",
        Duration::from_secs(10),
        || async { (env.bgp_statuses("vip").await == statuses_on(&nodes[..2])).then_some(()) },
    )
    .await;

    // 3. Traffic policy Local with the only endpoint on node 2: only its next hop stays.
    let local = vec![node_name(2)];
    let t1 = Instant::now();
    env.service("vip", "Local", &local).await;
    {
        let (r, want) = (router.clone(), vec![node_v4(2)]);
        env.wait_router(
            "only node-2 routes the /32",
            Duration::from_secs(10),
            move || r.next_hops_are("ipv4", PREFIX, &want),
        )
        .await;
    }
    eprintln!(
        "kube mode: externalTrafficPolicy Local applied -> next hops narrowed to node-2 in {:?}",
        t1.elapsed()
    );
    for _ in 0..3 {
        assert_eq!(ask_echo().as_deref(), Ok("node-2"));
    }
    env.wait(
        "ServiceBGPStatus of node-2 alone",
        Duration::from_secs(10),
        || async { (env.bgp_statuses("vip").await == statuses_on(&local)).then_some(()) },
    )
    .await;

    // 4. The Service deleted: the route is withdrawn, the status objects go.
    let t2 = Instant::now();
    env.services()
        .delete("vip", &DeleteParams::default())
        .await
        .unwrap();
    {
        let r = router.clone();
        env.wait_router(
            "the /32 withdrawn from FRR and the kernel",
            Duration::from_secs(10),
            move || r.next_hops_are("ipv4", PREFIX, &[]),
        )
        .await;
    }
    eprintln!(
        "kube mode: Service deleted -> {PREFIX} withdrawn in {:?}",
        t2.elapsed()
    );
    env.wait(
        "ServiceBGPStatus deleted",
        Duration::from_secs(10),
        || async { env.bgp_statuses("vip").await.is_empty().then_some(()) },
    )
    .await;
    // The running speakers' sessions never flapped along the way.
    for hop in &hops[..2] {
        let v = router
            .json(&format!("show bgp neighbors {hop} json"))
            .unwrap();
        assert_eq!(v[hop]["connectionsEstablished"], 1, "{hop}: {}", v[hop]);
    }

    // 5. Every request the speakers sent is declared (and so granted by the RBAC).
    for s in &mut speakers[..2] {
        assert_eq!(s.terminate(Duration::from_secs(5)), Some(0), "{}", s.log());
    }
    let logs: Vec<String> = speakers.iter().map(LabProcess::log).collect();
    check_api_calls(&logs, &env.system);
}

/// Every request in the speakers' logs must be declared in API_CALLS.
fn check_api_calls(logs: &[String], system: &str) {
    let calls = logged_api_calls(logs, system);
    let seen = &calls.seen;
    assert!(
        seen.iter().any(|c| c.2 == "servicebgpstatuses"),
        "no ServiceBGPStatus request logged: {seen:?}"
    );
    calls.assert_all_declared();
}

/// Against a real cluster: no namespaces, no FRR. The controller allocates; a speaker for the
/// cluster's first Node (its BGP session to the documentation address never comes up) reports
/// Valid and a ServiceBGPStatus naming the peer, which goes with the Service.
async fn real_cluster_scenario(speaker: &Path, controller: &Path) {
    let cluster = TestCluster::start().await.unwrap();
    let env = Env::start(cluster, "kg", &format!("flb-{TAG}-kube")).await;
    let node = env.first_node().await;
    env.bgp_config().await;
    let controller_args = env.controller_args();
    let controller_args: Vec<&str> = controller_args.iter().map(String::as_str).collect();
    let _controller = env.cluster.spawn(controller, &controller_args).unwrap();
    let mut args = env.speaker_args();
    args.extend(["--node-name", &node, "--live", &node].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut speaker = env.cluster.spawn(speaker, &args).unwrap();
    env.service("vip", "Cluster", std::slice::from_ref(&node))
        .await;
    env.wait(
        "the controller allocates",
        Duration::from_secs(30),
        || async { (env.ips("vip").await == vec![VIP.parse::<IpAddr>().unwrap()]).then_some(()) },
    )
    .await;
    env.wait(
        "ConfigurationState Valid",
        Duration::from_secs(30),
        || async { (env.configuration(&node).await? == ConfigurationResult::Valid).then_some(()) },
    )
    .await;
    let expected = statuses_on(std::slice::from_ref(&node));
    env.wait(
        "the node's ServiceBGPStatus naming the peer",
        Duration::from_secs(30),
        || async { (env.bgp_statuses("vip").await == expected).then_some(()) },
    )
    .await;
    env.services()
        .delete("vip", &DeleteParams::default())
        .await
        .unwrap();
    env.wait(
        "ServiceBGPStatus deleted",
        Duration::from_secs(30),
        || async { env.bgp_statuses("vip").await.is_empty().then_some(()) },
    )
    .await;
    assert!(speaker.is_running(), "{}", speaker.log());
    env.delete_namespaces().await;
}
