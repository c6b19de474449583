//! The status writer against the API emulator (or the cluster named by FERROLB_E2E_KUBECONFIG):
//! objects of an earlier run of this node are adopted or deleted, other nodes' are left alone,
//! what is announced is written once, a takeover gives an Event, the ConfigurationState follows
//! the report, and stopping deletes this node's objects. The sweeper deletes the objects of
//! speakers out of the live set, and only theirs.

use ferrolb_crds::{ConfigurationState, ServiceBGPStatus, ServiceL2Status};
use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_speaker::planner::{L2Decision, NodePlan};
use ferrolb_speaker::source::ConfigReport;
use ferrolb_speaker::status::writer::StatusWriter;
use ferrolb_speaker::status::{object_name, Announced, Protocol, TAKEOVER_REASON};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The names of the ServiceL2Status objects `api` lists, sorted.
async fn sorted_names(api: &Api<ServiceL2Status>) -> Vec<String> {
    let mut v: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    v.sort();
    v
}

fn stale(name: &str, node: &str) -> String {
    format!("apiVersion: ferrolb.io/v1beta1\nkind: ServiceL2Status\nmetadata:\n  name: {name}\n  labels: {{ferrolb.io/node: {node}, ferrolb.io/service-name: old, ferrolb.io/service-namespace: apps}}\n")
}

#[tokio::test]
async fn writes_what_is_announced_adopts_or_deletes_leftovers_and_cleans_up_on_stop() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.apply_ferrolb_crds().await.unwrap();
    let system = cluster.create_namespace("flb-kb-st-").await.unwrap();
    let apps = cluster.create_namespace("flb-kb-sa-").await.unwrap();
    let web = format!("{apps}/web");
    cluster
        .apply_yaml(
            &format!(
                "{}---\n{}---\n{}",
                stale("l2-left-by-an-earlier-run", "node-a"),
                stale("l2-of-another-node", "node-b"),
                stale("bgp-left-by-an-earlier-run", "node-a")
                    .replace("ServiceL2Status", "ServiceBGPStatus")
            ),
            Some(&system),
        )
        .await
        .unwrap();

    let (announced_tx, announced) = watch::channel(Announced::default());
    let (config_tx, config) = watch::channel(ConfigReport::Unknown);
    let mut writer = StatusWriter::new(&system, "node-a");
    writer.coalesce = Duration::from_millis(10);
    let task = writer.spawn(cluster.client(), announced, config);

    let plan = NodePlan {
        l2: vec![L2Decision {
            service: web.clone(),
            ip: "192.0.2.10".parse().unwrap(),
            ranking: vec!["node-a".into(), "node-b".into()],
            interfaces: vec![],
            virtual_mac: false,
        }],
        ..Default::default()
    };
    announced_tx.send_replace(Announced {
        l2: [("192.0.2.10".parse().unwrap(), "eth0".to_string())].into(),
        plan: plan.into(),
        ..Default::default()
    });
    config_tx.send_replace(ConfigReport::Valid);

    let statuses: Api<ServiceL2Status> = Api::namespaced(cluster.client(), &system);
    let names = || sorted_names(&statuses);
    let ours = object_name(Protocol::Layer2, "node-a", &web);
    let mut expected = vec![ours.clone(), "l2-of-another-node".to_string()];
    expected.sort();
    wait_until("our object written, the leftover deleted", || async {
        names().await == expected
    })
    .await;
    let bgp: Api<ServiceBGPStatus> = Api::namespaced(cluster.client(), &system);
    wait_until("the BGP leftover deleted", || async {
        bgp.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    let status = statuses.get(&ours).await.unwrap().status.unwrap();
    assert_eq!(status.node.as_deref(), Some("node-a"));
    assert_eq!(status.service_name.as_deref(), Some("web"));
    assert_eq!(status.service_namespace.as_deref(), Some(apps.as_str()));
    assert_eq!(status.interfaces[0].name, "eth0");

    let events: Api<Event> = Api::namespaced(cluster.client(), &apps);
    wait_until("the takeover Event", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(TAKEOVER_REASON)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                    && e.note.as_deref().is_some_and(|n| n.contains("\"node-a\""))
            })
    })
    .await;

    let states: Api<ConfigurationState> = Api::namespaced(cluster.client(), &system);
    let result = || async {
        let s = states.get_opt("speaker-node-a").await.unwrap()?.status?;
        Some((
            format!("{:?}", s.result?),
            s.error_summary.unwrap_or_default(),
        ))
    };
    wait_until("Valid", || async {
        result().await.is_some_and(|r| r.0 == "Valid")
    })
    .await;
    config_tx.send_replace(ConfigReport::Invalid(vec![
        "IPAddressPool/a: spec.addresses[0]: overlaps".into(),
        "IPAddressPool/b: spec.addresses[0]: overlaps".into(),
    ]));
    wait_until("Invalid with both lines", || async {
        result()
            .await
            .is_some_and(|(r, summary)| r == "Invalid" && summary.lines().count() == 2)
    })
    .await;

    // Stopping: the run loop sends an empty state and goes; the writer deletes ours and ends.
    announced_tx.send_replace(Announced::default());
    drop(announced_tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the writer ends once the run loop is gone")
        .unwrap();
    assert_eq!(names().await, vec!["l2-of-another-node".to_string()]);
    let _ = cluster.delete_namespace(&system).await;
    let _ = cluster.delete_namespace(&apps).await;
}

/// A ServiceL2Status of `node` for Service apps/`service`, status included (as its speaker
/// writes it).
async fn status_of(
    api: &Api<ServiceL2Status>,
    cluster: &TestCluster,
    ns: &str,
    node: &str,
    service: &str,
) -> String {
    let name = format!("l2-{node}-{service}");
    cluster
        .apply_yaml(
            &format!("apiVersion: ferrolb.io/v1beta1\nkind: ServiceL2Status\nmetadata:\n  name: {name}\n  labels: {{ferrolb.io/node: {node}, ferrolb.io/service-name: {service}, ferrolb.io/service-namespace: apps}}\n"),
            Some(ns),
        )
        .await
        .unwrap();
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"node": node, "serviceName": service, "serviceNamespace": "apps"}})),
    )
    .await
    .unwrap();
    name
}

#[tokio::test]
async fn the_sweeper_deletes_the_objects_of_dead_speakers_and_no_others() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.apply_ferrolb_crds().await.unwrap();
    let system = cluster.create_namespace("flb-kb-sw-").await.unwrap();
    let statuses: Api<ServiceL2Status> = Api::namespaced(cluster.client(), &system);
    let of_live = status_of(&statuses, &cluster, &system, "node-b", "web").await;
    let of_dead = status_of(&statuses, &cluster, &system, "node-c", "web").await;
    // Its speaker was killed between the object and its status: found by its label.
    cluster
        .apply_yaml(&stale("l2-node-c-unwritten", "node-c"), Some(&system))
        .await
        .unwrap();
    let names = || sorted_names(&statuses);

    let (announced_tx, announced) = watch::channel(Announced::default());
    let (_config_tx, config) = watch::channel(ConfigReport::Unknown);
    let mut writer = StatusWriter::new(&system, "node-a");
    writer.coalesce = Duration::from_millis(10);
    let task = writer.spawn(cluster.client(), announced, config);
    let live: std::collections::BTreeSet<String> =
        ["node-a", "node-b"].iter().map(|s| s.to_string()).collect();

    // Not the sweeper (a minority, or not first by name): nothing of others is touched.
    announced_tx.send_replace(Announced {
        live: live.clone(),
        sweeps: false,
        ..Default::default()
    });
    tokio::time::sleep(ferrolb_speaker::status::DEAD_FOR + Duration::from_secs(1)).await;
    let mut all = vec![
        of_live.clone(),
        of_dead.clone(),
        "l2-node-c-unwritten".to_string(),
    ];
    all.sort();
    assert_eq!(names().await, all);

    // The sweeper: node-c's object goes once node-c has been out for DEAD_FOR, not before.
    let start = Instant::now();
    announced_tx.send_replace(Announced {
        live,
        sweeps: true,
        ..Default::default()
    });
    wait_until("the dead speaker's objects deleted", || async {
        names().await == vec![of_live.clone()]
    })
    .await;
    assert!(
        start.elapsed() >= ferrolb_speaker::status::DEAD_FOR - Duration::from_millis(100),
        "deleted after {:?}, before DEAD_FOR",
        start.elapsed()
    );
    drop(announced_tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the writer ends once the run loop is gone")
        .unwrap();
    assert_eq!(names().await, vec![of_live]);
    let _ = cluster.delete_namespace(&system).await;
}
