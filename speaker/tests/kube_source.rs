//! The kube source against the API emulator (or the cluster named by FERROLB_E2E_KUBECONFIG):
//! the snapshot follows the cluster; an invalid configuration is reported line by line and the
//! last valid one stays in force while Services still come and go; with the API server gone
//! the last snapshot stays.

use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_speaker::source::{ConfigReport, KubeSource, Snapshot};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(10);

async fn next_snapshot(
    rx: &mut watch::Receiver<Option<Arc<Snapshot>>>,
    what: &str,
    check: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let found = tokio::time::timeout(LIMIT, rx.wait_for(|s| s.as_deref().is_some_and(&check)))
        .await
        .unwrap_or_else(|_| panic!("no snapshot with {what} within {LIMIT:?}"))
        .unwrap()
        .clone();
    found.unwrap()
}

async fn report(
    rx: &mut watch::Receiver<ConfigReport>,
    what: &str,
    check: impl Fn(&ConfigReport) -> bool,
) -> ConfigReport {
    let found = tokio::time::timeout(LIMIT, rx.wait_for(|r| check(r)))
        .await
        .map(|r| r.unwrap().clone());
    found.unwrap_or_else(|_| panic!("no report {what} within {LIMIT:?}: {:?}", rx.borrow()))
}

fn service(name: &str, ip: &str, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{ip}\"}}\nspec: {{type: LoadBalancer, loadBalancerClass: \"{class}\", ports: [{{port: 80, protocol: TCP}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [192.0.2.1], nodeName: node-a}}]\nports: [{{port: 80, protocol: TCP}}]\n"
    )
}

/// FerroLB's CRDs, a fresh namespace with the pool `lan`, its L2Advertisement and the Service
/// `web` of the namespace's class: (namespace, class).
async fn lan_with_web(cluster: &TestCluster, prefix: &str) -> (String, String) {
    cluster.apply_ferrolb_crds().await.unwrap();
    let system = cluster.create_namespace(prefix).await.unwrap();
    let class = format!("ferrolb.io/test-{system}");
    cluster
        .apply_yaml(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/26]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n",
            Some(&system),
        )
        .await
        .unwrap();
    cluster
        .apply_yaml(&service("web", "192.0.2.10", &class), Some(&system))
        .await
        .unwrap();
    // The address the controller would give it: only an address in the status is announced.
    let services: Api<Service> = Api::namespaced(cluster.client(), &system);
    let status = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    services
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    (system, class)
}

#[tokio::test]
async fn the_snapshot_follows_the_cluster_and_outlives_bad_edits_and_the_api_server() {
    let mut cluster = TestCluster::start().await.unwrap();
    let (system, class) = lan_with_web(&cluster, "flb-kb-src-").await;

    let feeds = KubeSource::new(&system, Some(class.clone())).spawn(cluster.client());
    let (mut snapshots, mut config) = (feeds.snapshots, feeds.config);
    let first = next_snapshot(&mut snapshots, "the Service", |s| s.services.len() == 1).await;
    let web = &first.services[0];
    assert_eq!(web.key, format!("{system}/web"));
    assert_eq!(web.ips, vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
    assert!(
        web.serving.on("node-a") && !web.serving.on("node-b"),
        "{web:?}"
    );
    assert_eq!(
        report(&mut config, "Valid", |r| *r == ConfigReport::Valid).await,
        ConfigReport::Valid
    );
    assert!(feeds.cluster.borrow().is_some());

    // A bad edit: reported with every problem; no snapshot published, the last one stays.
    cluster
        .apply_yaml(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: overlapping}\nspec: {addresses: [192.0.2.32/27]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: dangling}\nspec: {ipAddressPools: [missing]}\n",
            Some(&system),
        )
        .await
        .unwrap();
    let ConfigReport::Invalid(problems) = report(&mut config, "Invalid", |r| {
        matches!(r, ConfigReport::Invalid(_))
    })
    .await
    else {
        unreachable!()
    };
    assert!(problems.len() >= 2, "{problems:?}");
    assert!(
        problems.iter().any(|p| p.contains("overlap")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("L2Advertisement/dangling")),
        "{problems:?}"
    );
    // The last valid configuration stays in force, and the objects still follow the cluster:
    // a new Service arrives under it.
    cluster
        .apply_yaml(&service("db", "192.0.2.11", &class), Some(&system))
        .await
        .unwrap();
    let under_old =
        next_snapshot(&mut snapshots, "the new Service", |s| s.services.len() == 2).await;
    // The overlapping pool is left out. The advertisement naming a pool that does not exist is
    // reported but in force, selecting nothing (as MetalLB ignores the name); the rest is as
    // it was.
    let dangling = &under_old.config.l2_advertisements["dangling"];
    assert!(dangling.pools.is_empty(), "{dangling:?}");
    let mut expected = first.config.clone();
    expected
        .l2_advertisements
        .insert("dangling".into(), dangling.clone());
    assert_eq!(
        under_old.config, expected,
        "the configuration changed beyond the empty advertisement"
    );
    assert!(matches!(*config.borrow(), ConfigReport::Invalid(_)));

    // Fixed: valid again, and the new Service arrives.
    let pools: kube::Api<ferrolb_crds::IPAddressPool> =
        kube::Api::namespaced(cluster.client(), &system);
    pools
        .delete("overlapping", &Default::default())
        .await
        .unwrap();
    let ads: kube::Api<ferrolb_crds::L2Advertisement> =
        kube::Api::namespaced(cluster.client(), &system);
    ads.delete("dangling", &Default::default()).await.unwrap();
    report(&mut config, "Valid again", |r| *r == ConfigReport::Valid).await;
    let both = next_snapshot(&mut snapshots, "both Services", |s| s.services.len() == 2).await;
    assert_eq!(
        both.config, first.config,
        "the same configuration as before the bad edit"
    );

    if cluster.is_real_cluster() {
        eprintln!("SKIP: stopping the API server needs the emulator");
        let _ = cluster.delete_namespace(&system).await;
        return;
    }
    // The API server goes away: the last snapshot stays; nothing is withdrawn.
    cluster.stop_emulator().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !snapshots.has_changed().unwrap(),
        "nothing is published while the API is down"
    );
    assert_eq!(snapshots.borrow().as_deref(), Some(&*both));
    assert_eq!(*config.borrow(), ConfigReport::Valid);
}

/// After the API server was down for `down` and came back (objects kept, watch history gone,
/// so every resumed watch gets 410 Gone), a new Service reaches the snapshot within 5 s.
async fn sees_changes_soon_after_an_api_server_restart(down: Duration) {
    let mut cluster = TestCluster::start().await.unwrap();
    if cluster.is_real_cluster() {
        eprintln!("SKIP: restarting the API server needs the emulator");
        return;
    }
    let (system, class) = lan_with_web(&cluster, "flb-kb-restart-").await;
    let feeds = KubeSource::new(&system, Some(class.clone())).spawn(cluster.client());
    let mut snapshots = feeds.snapshots;
    next_snapshot(&mut snapshots, "the Service", |s| s.services.len() == 1).await;

    assert!(cluster.restart_emulator(down).await);
    let back = std::time::Instant::now();
    // The test's own client may first meet a connection the restart closed: a few tries.
    let mut tries = 0;
    while let Err(e) = cluster
        .apply_yaml(&service("db", "192.0.2.11", &class), Some(&system))
        .await
    {
        tries += 1;
        assert!(tries < 10, "cannot create a Service after the restart: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    next_snapshot(
        &mut snapshots,
        "the Service created after the restart",
        |s| s.services.len() == 2,
    )
    .await;
    let took = back.elapsed();
    eprintln!("API server down {down:?}: a new Service reached the speaker's snapshot {took:?} after it was back");
    assert!(
        took < Duration::from_secs(5),
        "the speaker saw the new Service only {took:?} after the API server was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sees_changes_within_5_s_of_the_api_server_back_after_15_s_down() {
    sees_changes_soon_after_an_api_server_restart(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sees_changes_within_5_s_of_the_api_server_back_after_60_s_down() {
    sees_changes_soon_after_an_api_server_restart(Duration::from_secs(60)).await;
}
