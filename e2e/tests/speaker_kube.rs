//! The speaker in kube mode announces what the controller allocated: the real
//! `ferrolb-controller` and `ferrolb-speaker` binaries against the API emulator, the speakers in
//! node network namespaces of the L2 lab, the client's kernel as the judge.
//!
//! Pool + L2Advertisement + Service + EndpointSlice applied -> the controller writes the
//! addresses -> the owner the planner ranks first answers ARP / Neighbor Solicitations (the
//! client's neighbour table holds its MAC and the client's datagrams reach its echo), a
//! ServiceL2Status names it and an Event on the Service says it took over. An overlapping pool
//! makes every speaker's ConfigurationState Invalid (every error line) while the addresses stay
//! answered; deleting the Service deletes the ServiceL2Status and ends the answers; with the API
//! server stopped, a Service announced before is still answered. Every request a speaker sent is
//! one `ferrolb_speaker::api_calls::API_CALLS` declares (so the RBAC grants it). One speaker
//! of two left is a tie for the L2 quorum: the survivor takes over through the tie-breaker
//! Lease; the API server is stopped only once both speakers are back (a majority).
//!
//! The lab's namespaces are made by the test (root); everything touching the API runs in a
//! child process inside the client namespace, where the emulator listens on the client's
//! address so that the node namespaces reach it over the lab's bridge. With
//! FERROLB_E2E_KUBECONFIG the test runs against that cluster instead, without network
//! namespaces: the controller allocates, a speaker with no interface to announce on (and a
//! fixed live set, the cluster's first Node) reports its ConfigurationState, Valid then Invalid.

mod kube_common;

use ferrolb_crds::{ConfigurationResult, ConfigurationState, ServiceL2Status};
use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_e2e::emulator::EmulatorConfig;
use ferrolb_e2e::lab::l2::{node_mac, node_name, L2Lab, LabProcess, CLIENT_V4};
use ferrolb_e2e::lab::{child, l2_scenario, run, wait_for};
use ferrolb_speaker::status::{configuration_state_name, SERVICE_NAME_LABEL, TAKEOVER_REASON};
use ferrolb_speaker::tiebreak::LEASE_NAME;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube_common::{built, logged_api_calls, parent_builds_lab, Env};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TEST: &str = "speaker_in_kube_mode_announces_what_the_controller_allocated";
/// Lab tag: namespaces flb-kb1-{sw,c,n1,n2}.
const TAG: &str = "kb1";
const NODES: usize = 2;
const VIP4: &str = l2_scenario::VIP4;
const VIP6: &str = l2_scenario::VIP6;
const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");

#[test]
fn speaker_in_kube_mode_announces_what_the_controller_allocated() {
    let real_leaves_out = "the network-namespace part (ARP, status objects of announcing nodes) needs the emulator; checking allocation and ConfigurationState on the cluster";
    if !parent_builds_lab(TEST, 2, lab_scenario, real_leaves_out, |s, c| async move {
        real_cluster_scenario(&s, &c).await
    }) {
        return;
    }
    let lab = L2Lab::new(TAG, NODES).unwrap();
    lab.add_vip(&format!("{VIP4}/32")).unwrap();
    lab.add_vip(&format!("{VIP6}/128")).unwrap();
    let started = Instant::now();
    let result = child::run_in_netns(&lab.client, TEST, Duration::from_secs(150));
    match result {
        Ok(out) => eprintln!("{out}\n{TEST}: {:?}", started.elapsed()),
        Err(e) => panic!("{e}"),
    }
    drop(lab);
}

impl Env {
    async fn pool(&self, name: &str, addresses: &str) {
        self.apply(
            &format!("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec: {{addresses: [{addresses}]}}\n"),
            &self.system,
        )
        .await;
    }

    /// A dual-stack LoadBalancer Service of the test's class, with an EndpointSlice serving on
    /// `nodes` (the emulator runs no endpoint controller; on a real cluster a Service without
    /// a selector keeps hand-made slices).
    async fn service(&self, name: &str, nodes: &[String], dual_stack: bool) {
        let families = if dual_stack {
            "ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], "
        } else {
            ""
        };
        self.service_on(name, families, nodes, 1).await;
    }

    async fn l2_statuses(&self, service: &str) -> Vec<ServiceL2Status> {
        let api: Api<ServiceL2Status> = Api::namespaced(self.cluster.client(), &self.system);
        api.list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={service}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    async fn configuration(&self, node: &str) -> Option<(ConfigurationResult, String)> {
        let api: Api<ConfigurationState> = Api::namespaced(self.cluster.client(), &self.system);
        let status = api
            .get_opt(&configuration_state_name(node))
            .await
            .ok()??
            .status?;
        Some((status.result?, status.error_summary.unwrap_or_default()))
    }

    async fn events(&self, service: &str) -> Vec<(String, String)> {
        let api: Api<Event> = Api::namespaced(self.cluster.client(), &self.apps);
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(service))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

/// The owner of `ip` among `nodes`, as every speaker ranks them (no preferences configured).
fn expected_owner(ip: IpAddr, nodes: &[String]) -> String {
    nodes
        .iter()
        .min_by_key(|n| ferrolb_speaker::planner::rank_key(n, ip))
        .unwrap()
        .clone()
}

/// The client's neighbour entry for `ip`: its MAC, if it has one (we run in the client's
/// namespace).
fn neighbour_mac(ip: &str) -> Option<String> {
    let out = run("ip", &["neigh", "show", ip, "dev", "eth0"]).ok()?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    Some(words.get(at + 1)?.to_string())
}

/// Forgets `ip`'s neighbour entry, sends one datagram to its echo; the answering node's name,
/// or why not.
fn ask_fresh(ip: &str) -> Result<String, String> {
    let _ = run("ip", &["neigh", "flush", "to", ip, "dev", "eth0"]);
    let addr = if ip.contains(':') {
        format!("[{ip}]:7")
    } else {
        format!("{ip}:7")
    };
    run(ECHO, &["ask", &addr, "1000"]).map(|s| s.trim().to_string())
}

/// Asserts, for a bounded time, that `ip` is answered by `owner` alone: the datagram reaches
/// its echo and the neighbour entry holds its MAC.
fn assert_answered_by(ip: &str, owner: &str, limit: Duration) {
    let index: usize = owner.trim_start_matches("node-").parse().unwrap();
    let answered = wait_for(limit, Duration::from_millis(100), || {
        (ask_fresh(ip).ok()? == owner).then_some(())
    });
    assert!(
        answered.is_some(),
        "{ip}: no answer from {owner} within {limit:?}"
    );
    assert_eq!(
        neighbour_mac(ip).as_deref(),
        Some(node_mac(index).as_str()),
        "{ip} must resolve to {owner}'s MAC"
    );
}

async fn lab_scenario() {
    let speaker = built("ferrolb-speaker");
    let controller = built("ferrolb-controller");
    let cluster = TestCluster::start_with(EmulatorConfig {
        listen: format!("{CLIENT_V4}:0").parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut env = Env::start(cluster, "kb", TAG).await;
    let nodes: Vec<String> = (1..=NODES).map(node_name).collect();
    // The Nodes, with the InternalIPs membership listens on; the membership key.
    let addressed: Vec<(String, String)> = (1..=NODES)
        .map(|i| (node_name(i), format!("192.0.2.{i}")))
        .collect();
    env.create_nodes(&addressed).await;
    env.membership_secret().await;
    env.pool("lan", &format!("{VIP4}/32, \"{VIP6}/128\"")).await;
    env.apply(
        "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
        &env.system,
    )
    .await;

    let logs = env.logs.clone();
    let _echoes: Vec<LabProcess> = (1..=NODES)
        .map(|i| {
            // Bound to VIP4 and VIP6, which are l2_scenario's too.
            l2_scenario::start_echo_in(&format!("flb-{TAG}-n{i}"), Path::new(ECHO), i, &logs)
                .unwrap()
        })
        .collect();
    let _controller = env.start_controller(&format!("flb-{TAG}-c"), &controller);
    let in_netns: Vec<(String, String)> = (1..=NODES)
        .map(|i| (node_name(i), format!("flb-{TAG}-n{i}")))
        .collect();
    let speakers = env.start_speakers(&speaker, &in_netns);

    // Membership first: a speaker that starts alone announces everything until it hears of
    // the others (milliseconds); the Service comes once they know each other.
    for (i, s) in speakers.iter().enumerate() {
        let other = node_name(NODES - i);
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

    // 1. The controller allocates; the owner answers; its status object and Event appear.
    let t0 = Instant::now();
    env.service("vip", &nodes, true).await;
    let ips = env
        .wait(
            "the controller allocates both addresses",
            Duration::from_secs(20),
            || async {
                let ips = env.ips("vip").await;
                (ips.len() == 2).then_some(ips)
            },
        )
        .await;
    let (v4, v6): (IpAddr, IpAddr) = (VIP4.parse().unwrap(), VIP6.parse().unwrap());
    assert_eq!(
        ips.iter().copied().collect::<BTreeSet<_>>(),
        [v4, v6].into()
    );
    let owners: BTreeMap<IpAddr, String> = [v4, v6]
        .iter()
        .map(|ip| (*ip, expected_owner(*ip, &nodes)))
        .collect();
    for (ip, owner) in &owners {
        assert_answered_by(&ip.to_string(), owner, Duration::from_secs(15));
    }
    eprintln!(
        "Service applied -> both addresses answered by their owners in {:?}",
        t0.elapsed()
    );
    let expected_nodes: BTreeSet<String> = owners.values().cloned().collect();
    let statuses = env
        .wait(
            "ServiceL2Status of the owners",
            Duration::from_secs(10),
            || async {
                let found = env.l2_statuses("vip").await;
                let by_node: BTreeSet<String> = found
                    .iter()
                    .filter_map(|s| s.status.as_ref()?.node.clone())
                    .collect();
                (by_node == expected_nodes).then_some(found)
            },
        )
        .await;
    for s in &statuses {
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.service_name.as_deref(), Some("vip"));
        assert_eq!(status.service_namespace.as_deref(), Some(env.apps.as_str()));
        assert_eq!(
            status
                .interfaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>(),
            vec!["eth0"],
            "{s:?}"
        );
    }
    env.wait(
        "a takeover Event naming each owner",
        Duration::from_secs(10),
        || async {
            let events = env.events("vip").await;
            expected_nodes
                .iter()
                .all(|n| {
                    events.iter().any(|(reason, note)| {
                        reason == TAKEOVER_REASON && note.contains(&format!("\"{n}\""))
                    })
                })
                .then_some(())
        },
    )
    .await;
    for node in &nodes {
        env.wait(
            "ConfigurationState Valid",
            Duration::from_secs(10),
            || async {
                (env.configuration(node).await?.0 == ConfigurationResult::Valid).then_some(())
            },
        )
        .await;
    }

    // 2. An invalid configuration: every speaker says so, every line; the addresses stay.
    env.pool("overlapping", "192.0.2.192/26").await;
    for node in &nodes {
        let summary = env
            .wait(
                "ConfigurationState Invalid",
                Duration::from_secs(10),
                || async {
                    let (result, summary) = env.configuration(node).await?;
                    (result == ConfigurationResult::Invalid).then_some(summary)
                },
            )
            .await;
        assert!(summary.contains("IPAddressPool/"), "{summary}");
        assert!(summary.contains("overlap"), "{summary}");
    }
    for (ip, owner) in &owners {
        assert_answered_by(&ip.to_string(), owner, Duration::from_secs(5));
    }
    let pools: Api<ferrolb_crds::IPAddressPool> =
        Api::namespaced(env.cluster.client(), &env.system);
    pools
        .delete("overlapping", &DeleteParams::default())
        .await
        .unwrap();
    for node in &nodes {
        env.wait(
            "ConfigurationState Valid again",
            Duration::from_secs(10),
            || async {
                (env.configuration(node).await?.0 == ConfigurationResult::Valid).then_some(())
            },
        )
        .await;
    }

    // 3. The Service deleted: its status objects go, and nobody answers any more.
    env.services()
        .delete("vip", &DeleteParams::default())
        .await
        .unwrap();
    env.wait(
        "ServiceL2Status deleted",
        Duration::from_secs(10),
        || async { env.l2_statuses("vip").await.is_empty().then_some(()) },
    )
    .await;
    for ip in owners.keys() {
        let silent = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
            ask_fresh(&ip.to_string()).is_err().then_some(())
        });
        assert!(
            silent.is_some(),
            "{ip} still answered after the Service was deleted"
        );
        assert_eq!(neighbour_mac(&ip.to_string()), None, "{ip} still resolves");
    }

    // 4. Announced again; its owner stops (SIGTERM): its status object goes, the other node
    //    takes over and says so; then the API server stops and the new owner keeps answering.
    let mut speakers = speakers;
    env.service("again", &nodes, false).await;
    let first_owner = expected_owner(v4, &nodes);
    assert_answered_by(VIP4, &first_owner, Duration::from_secs(15));
    let node_set =
        |names: &[&String]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
    let l2_nodes = |service: &'static str| {
        let env = &env;
        async move {
            env.l2_statuses(service)
                .await
                .iter()
                .filter_map(|s| s.status.as_ref()?.node.clone())
                .collect::<BTreeSet<String>>()
        }
    };
    env.wait(
        "ServiceL2Status of the first owner",
        Duration::from_secs(10),
        || async { (l2_nodes("again").await == node_set(&[&first_owner])).then_some(()) },
    )
    .await;
    let index: usize = first_owner.trim_start_matches("node-").parse().unwrap();
    let code = speakers[index - 1].terminate(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", speakers[index - 1].log());
    let owner = nodes.iter().find(|n| **n != first_owner).unwrap().clone();
    assert_answered_by(VIP4, &owner, Duration::from_secs(5));
    env.wait(
        "ServiceL2Status moved to the new owner",
        Duration::from_secs(10),
        || async { (l2_nodes("again").await == node_set(&[&owner])).then_some(()) },
    )
    .await;
    env.wait(
        "a takeover Event naming the new owner",
        Duration::from_secs(10),
        || async {
            env.events("again")
                .await
                .iter()
                .any(|(reason, note)| {
                    reason == TAKEOVER_REASON && note.contains(&format!("\"{owner}\""))
                })
                .then_some(())
        },
    )
    .await;
    // One speaker of two is a tie (L2 quorum): the survivor took over through the tie-breaker
    // Lease.
    let leases: Api<Lease> = Api::namespaced(env.cluster.client(), &env.system);
    env.wait(
        "the survivor holds the tie-breaker Lease",
        Duration::from_secs(10),
        || async {
            let holder = leases
                .get_opt(LEASE_NAME)
                .await
                .ok()??
                .spec?
                .holder_identity?;
            (holder == owner).then_some(())
        },
    )
    .await;
    // Both speakers again before the API server goes: a lone survivor of two counts on the
    // Lease by design (docs/operating.md); two live speakers are a majority and need no API
    // server. After its rejoin hold-down the returning speaker takes its address back.
    let returned = env.start_speaker(
        &speaker,
        &first_owner,
        &format!("flb-{TAG}-n{index}"),
        "speaker-returned.log",
    );
    let survivor_log = || speakers[nodes.iter().position(|n| *n == owner).unwrap()].log();
    env.wait(
        "the survivor sees a majority again",
        Duration::from_secs(15),
        || async {
            survivor_log()
                .contains("L2 quorum: announcing again standing=\"majority\"")
                .then_some(())
        },
    )
    .await;
    assert_answered_by(VIP4, &first_owner, Duration::from_secs(10));
    env.cluster.stop_emulator().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Longer than the Lease would be counted on (3 s): nothing here depends on it.
    for _ in 0..10 {
        assert_answered_by(VIP4, &first_owner, Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for survivor in [
        &speakers[nodes.iter().position(|n| *n == owner).unwrap()],
        &returned,
    ] {
        assert!(
            survivor.pid().is_some_and(running) && !survivor.log().contains("ferrolb-speaker: "),
            "a speaker stopped without its API server:\n{}",
            survivor.log()
        );
    }

    // 5. Every request the speakers sent is declared (and so granted by the RBAC).
    speakers.push(returned);
    let logs: Vec<String> = speakers.iter().map(LabProcess::log).collect();
    check_api_calls(&logs, &env.system);
    for s in &mut speakers {
        s.terminate(Duration::from_secs(3));
    }
}

/// Whether process `pid` runs (exists and is no zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Every request in the speakers' logs must be declared in API_CALLS.
fn check_api_calls(logs: &[String], system: &str) {
    let calls = logged_api_calls(logs, system);
    let seen = &calls.seen;
    assert!(
        seen.len() > 10,
        "only {} kinds of API requests logged: {seen:?}",
        seen.len()
    );
    calls.assert_all_declared();
}

/// Against a real cluster: no namespaces, no ARP. The controller allocates; a speaker for the
/// cluster's first Node, with no interface to announce on, reports Valid, then Invalid with
/// every line for an overlapping pool, then Valid again.
async fn real_cluster_scenario(speaker: &Path, controller: &Path) {
    let cluster = TestCluster::start().await.unwrap();
    let env = Env::start(cluster, "kb", TAG).await;
    let node = env.first_node().await;
    env.pool("lan", &format!("{VIP4}/32")).await;
    env.apply(
        "apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
        &env.system,
    )
    .await;
    let controller_args = env.controller_args();
    let controller_args: Vec<&str> = controller_args.iter().map(String::as_str).collect();
    let _controller = env.cluster.spawn(controller, &controller_args).unwrap();
    let mut args = env.speaker_args();
    args.extend(
        [
            "--node-name",
            &node,
            "--live",
            &node,
            "--exclude-interfaces",
            ".*",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut speaker = env.cluster.spawn(speaker, &args).unwrap();
    env.service("vip", std::slice::from_ref(&node), false).await;
    env.wait(
        "the controller allocates",
        Duration::from_secs(30),
        || async { (env.ips("vip").await == vec![VIP4.parse::<IpAddr>().unwrap()]).then_some(()) },
    )
    .await;
    env.wait(
        "ConfigurationState Valid",
        Duration::from_secs(30),
        || async {
            (env.configuration(&node).await?.0 == ConfigurationResult::Valid).then_some(())
        },
    )
    .await;
    env.pool("overlapping", "192.0.2.192/26").await;
    let summary = env
        .wait(
            "ConfigurationState Invalid",
            Duration::from_secs(30),
            || async {
                let (result, summary) = env.configuration(&node).await?;
                (result == ConfigurationResult::Invalid).then_some(summary)
            },
        )
        .await;
    assert!(summary.contains("overlap"), "{summary}");
    assert!(speaker.is_running(), "{}", speaker.log());
    env.delete_namespaces().await;
}
