//! The controller at scale, measured by hand (ignored in CI; about a minute for 10,000):
//!
//! ```sh
//! cargo test -p ferrolb-controller --test controller_scale -- --ignored --nocapture
//! ```
//!
//! FERROLB_SCALE_SERVICES Services (default 10,000) are created at once through the API
//! emulator while the real `ferrolb-controller` runs: the time until every one has its address
//! in its status, against the time the API took to create them, and the controller's CPU time
//! and memory (the split between the API and FerroLB). Then the controller is SIGKILLed and
//! started again with every address allocated: its time to ready, the API writes it makes and
//! the addresses it changes (none).
//!
//! Addresses come from 198.18.0.0/17 and cluster IPs from 198.19.0.0/16 (RFC 2544's
//! benchmarking range; nothing here touches a network).

use ferrolb_e2e::emulator::harness::{
    free_port, ingress_ips, LbTestSpace, TestCluster, TestProcess,
};
use ferrolb_e2e::emulator::EmulatorConfig;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const CONTROLLER: &str = env!("CARGO_BIN_EXE_ferrolb-controller");

use ferrolb_e2e::lab::process_usage as usage;

fn http_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200")
}

fn start(cluster: &TestCluster, space: &LbTestSpace, port: u16) -> TestProcess {
    let metrics = format!("127.0.0.1:{port}");
    cluster
        .spawn(
            Path::new(CONTROLLER),
            &[
                "run",
                "--namespace",
                &space.system,
                "--lb-class",
                &space.class,
                "--metrics-addr",
                &metrics,
                "--identity",
                "scale",
                "--lease-duration-seconds",
                "3",
                "--lease-grace-seconds",
                "1",
                "--log-filter",
                "warn",
                "--ignore-objects-elsewhere",
            ],
        )
        .expect("spawn the controller")
}

/// Every Service's addresses, by name.
async fn addresses(api: &Api<Service>) -> BTreeMap<String, Vec<String>> {
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap_or_default(), ingress_ips(&s)))
        .collect()
}

async fn wait_ready(port: u16, limit: Duration) -> Duration {
    let t = Instant::now();
    while !http_ready(port) {
        assert!(
            t.elapsed() < limit,
            "the controller not ready within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measured by hand: creates 10,000 Services (about a minute)"]
async fn ten_thousand_services_created_at_once_measured() {
    let count: usize = ferrolb_e2e::lab::env_number("FERROLB_SCALE_SERVICES", 10_000);
    let cluster = TestCluster::start_with(EmulatorConfig {
        service_cidrs: vec![
            "198.19.0.0/16".parse().unwrap(),
            "2001:db8:5e7::/112".parse().unwrap(),
        ],
        // A real API server keeps minutes of history; enough that no watcher falls behind it.
        history_limit: 200_000,
        ..EmulatorConfig::default()
    })
    .await
    .expect("cluster");
    if cluster.is_real_cluster() {
        eprintln!("SKIP: creates {count} Services; not on a real cluster");
        return;
    }
    let space = cluster
        .lb_test_space("ctl-scale-")
        .await
        .expect("CRDs and namespaces");
    cluster
        .apply_yaml(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: scale}\nspec: {addresses: [198.18.0.0/17]}\n",
            Some(&space.system),
        )
        .await
        .expect("pool");
    let port = free_port();
    let mut controller = start(&cluster, &space, port);
    wait_ready(port, Duration::from_secs(30)).await;
    let (cpu_idle, rss_idle) = usage(controller.pid());
    let services: Api<Service> = Api::namespaced(cluster.client(), &space.apps);

    // All at once, 32 requests in flight (kubectl apply of a large manifest sends one at a time).
    let t0 = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |i| {
            let services = services.clone();
            let class = space.class.clone();
            async move {
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("svc-{i:05}")},
                    "spec": {
                        "type": "LoadBalancer",
                        "loadBalancerClass": class,
                        "allocateLoadBalancerNodePorts": false,
                        "ports": [{"port": 80, "protocol": "TCP"}],
                    }
                }))
                .unwrap();
                services
                    .create(&PostParams::default(), &svc)
                    .await
                    .expect("create Service");
            }
        })
        .await;
    let created = t0.elapsed();
    let mut all = Duration::ZERO;
    loop {
        let ips = addresses(&services).await;
        if ips.len() == count && ips.values().all(|v| v.len() == 1) {
            all = all.max(t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "not every Service addressed in 10 minutes: {} of {count}\n{}",
            ips.values().filter(|v| !v.is_empty()).count(),
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cpu_busy, rss_busy) = usage(controller.pid());
    let before = addresses(&services).await;
    let distinct: std::collections::BTreeSet<&String> = before.values().flatten().collect();
    assert_eq!(distinct.len(), count, "every Service its own address");
    eprintln!(
        "RESULT controller, {count} Services created at once: created through the API in {:.1} s; every one addressed {:.1} s after the first create ({:.1} s after the last); controller CPU {:.1} s for it; resident {:.0} MiB before, {:.0} MiB after",
        created.as_secs_f64(),
        all.as_secs_f64(),
        all.saturating_sub(created).as_secs_f64(),
        cpu_busy - cpu_idle,
        rss_idle,
        rss_busy
    );

    // Restart with every address allocated: nothing may change.
    controller.kill();
    let writes_before = cluster
        .emulator()
        .map(|e| e.resource_version())
        .unwrap_or(0);
    let t1 = Instant::now();
    let controller = start(&cluster, &space, port);
    let ready = wait_ready(port, Duration::from_secs(120)).await;
    // Serving again: a Service created now gets its address once the new controller holds the
    // Lease and has loaded every allocation.
    let fresh: Service = serde_json::from_value(json!({
        "metadata": {"name": "after-restart"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": space.class, "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &fresh)
        .await
        .expect("create Service");
    let serving = loop {
        let s = services.get("after-restart").await.expect("get Service");
        if !ingress_ips(&s).is_empty() {
            break t1.elapsed();
        }
        assert!(
            t1.elapsed() < Duration::from_secs(120),
            "no address after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // What it would rewrite: give it time to act.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut after = addresses(&services).await;
    after.remove("after-restart");
    let changed = before
        .iter()
        .filter(|(name, ips)| after.get(*name) != Some(*ips))
        .count();
    let writes = cluster
        .emulator()
        .map(|e| e.resource_version())
        .unwrap_or(0)
        - writes_before;
    let (cpu, rss) = usage(controller.pid());
    eprintln!(
        "RESULT controller restart with {count} allocated (SIGKILL, started again): /readyz in {:.2} s, a new Service addressed {:.2} s after the start (the same identity takes its Lease back at once, as a restarted container does), {changed} addresses changed, {writes} API writes from the start to 10 s later, CPU {:.1} s, resident {:.0} MiB",
        ready.as_secs_f64(),
        serving.as_secs_f64(),
        cpu,
        rss
    );
    assert_eq!(changed, 0, "a restart changed addresses");
}
