//! One speaker in kube mode at scale, measured by hand (ignored in CI):
//!
//! ```sh
//! cargo test --release -p ferrolb-speaker --test speaker_scale -- --ignored --nocapture
//! ```
//!
//! The API emulator holds 100 Nodes, 10 pools (five announced by L2, five by BGP) and
//! FERROLB_SCALE_SERVICES Services (default 10,000), each with its address in its status and an
//! EndpointSlice serving on three nodes. The real `ferrolb-speaker --source kube` runs for
//! node-1 with every node live (`--live`), on no interface (`--exclude-interfaces .*`) and with
//! its BGP peer on a closed loopback port, so nothing leaves the host. Measured: the time from
//! its start to its first whole plan and its resident memory then; for one Service added and
//! for one Node deleted, the time until the speaker's plan has it and the CPU the speaker spent
//! (reflectors, snapshot, plan, data plane: everything a change costs); a restart (SIGKILL and
//! start) to the whole plan again.
//!
//! Addresses come from 198.18.0.0/16 (RFC 2544's benchmarking range); nothing here touches a
//! network.

use ferrolb_e2e::emulator::harness::{free_port, TestCluster, TestProcess};
use ferrolb_e2e::emulator::EmulatorConfig;
use ferrolb_e2e::lab::kube_setup::{create_nodes, speaker_args};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const SPEAKER: &str = env!("CARGO_BIN_EXE_ferrolb-speaker");
const NODES: usize = 100;

use ferrolb_e2e::lab::process_usage as usage;

/// Service `i`'s address: pool i % 10, the k-th address of it.
fn address(i: usize) -> String {
    let (pool, k) = (i % 10, i / 10 + 1);
    format!("198.18.{}.{}", pool * 16 + k / 256, k % 256)
}

fn pools_yaml() -> String {
    let mut y = String::new();
    for p in 0..10 {
        y.push_str(&format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool{p}}}\nspec: {{addresses: [198.18.{}.0/20]}}\n---\n",
            p * 16
        ));
    }
    // The peer is a closed port on loopback: its session never comes up, nothing leaves.
    y.push_str("apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [pool0, pool1, pool2, pool3, pool4]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 127.0.0.1, peerPort: 1, connectTime: 5s}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [pool5, pool6, pool7, pool8, pool9]}\n");
    y
}

/// Creates Service `i` of `class` with its address in its status, and its EndpointSlice with
/// ready endpoints on three nodes.
async fn create_service(cluster: &TestCluster, ns: &str, class: &str, i: usize) {
    let services: Api<Service> = Api::namespaced(cluster.client(), ns);
    let name = format!("s{i:05}");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": class, "allocateLoadBalancerNodePorts": false,
                 "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create Service");
    services
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": address(i)}]}}})),
        )
        .await
        .expect("Service status");
    let endpoints: Vec<serde_json::Value> = (0..3)
        .map(|k| {
            let n = (i + k * 37) % NODES + 1;
            json!({"addresses": [format!("198.19.{}.{}", n / 250, n % 250 + 1)], "nodeName": format!("node-{n}"), "conditions": {"ready": true}})
        })
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 80, "protocol": "TCP"}],
    });
    cluster
        .apply_yaml(&serde_yaml::to_string(&slice).unwrap(), Some(ns))
        .await
        .expect("EndpointSlice");
}

/// The speaker's "plan computed" lines, colours taken out.
fn plans(speaker: &TestProcess) -> Vec<String> {
    let log = speaker.log();
    log.lines()
        .filter(|l| l.contains("plan computed"))
        .map(|l| {
            let mut out = String::with_capacity(l.len());
            let mut escape = false;
            for c in l.chars() {
                match (escape, c) {
                    (false, '\u{1b}') => escape = true,
                    (true, 'm') => escape = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        })
        .collect()
}

/// A microsecond field (`took_us`: plan and apply, wall clock; `cpu_us`: their CPU) of each of
/// the speaker's plan `lines`, in milliseconds.
fn field_ms(lines: &[String], field: &str) -> Vec<f64> {
    let prefix = format!("{field}=");
    lines
        .iter()
        .filter_map(|l| {
            let w = l.split_whitespace().find(|w| w.starts_with(&prefix))?;
            Some(w[prefix.len()..].parse::<f64>().ok()? / 1000.0)
        })
        .collect()
}

/// Waits until the speaker has written its status objects (its log's "status written" lines
/// stop growing for a second), so that a change's CPU is the change's alone.
async fn wait_status_written(speaker: &TestProcess, limit: Duration) {
    let t = Instant::now();
    let written = || speaker.log().matches("status written").count();
    let mut last = (written(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        assert!(
            t.elapsed() < limit,
            "status writes still going after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = written();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    eprintln!(
        "{} status objects written {:.1} s after the first plan",
        last.0,
        t.elapsed().as_secs_f64()
    );
}

/// Waits until the speaker logs a plan with `l2` L2 decisions; the time it took.
async fn wait_plan(speaker: &TestProcess, l2: usize, limit: Duration) -> Duration {
    let t = Instant::now();
    let want = format!("l2={l2}");
    loop {
        let planned = plans(speaker)
            .iter()
            .rev()
            .take(50)
            .any(|l| l.split_whitespace().any(|w| w == want));
        if planned {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "no plan with {want} within {limit:?}:\n{}",
            speaker
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measured by hand: 10,000 Services and 100 Nodes in the emulator (minutes)"]
async fn ten_thousand_services_on_a_hundred_nodes_measured() {
    let count: usize = ferrolb_e2e::lab::env_number("FERROLB_SCALE_SERVICES", 10_000);
    let cluster = TestCluster::start_with(EmulatorConfig {
        service_cidrs: vec!["198.19.0.0/16".parse().unwrap()],
        history_limit: 200_000,
        ..EmulatorConfig::default()
    })
    .await
    .expect("cluster");
    if cluster.is_real_cluster() {
        eprintln!("SKIP: creates {count} Services and 100 Nodes; not on a real cluster");
        return;
    }
    let space = cluster
        .lb_test_space("spk-scale-")
        .await
        .expect("CRDs and namespaces");
    let nodes: Vec<(String, String)> = (1..=NODES)
        .map(|i| {
            (
                format!("node-{i}"),
                format!("127.0.{}.{}", i / 250, i % 250 + 1),
            )
        })
        .collect();
    create_nodes(&cluster.client(), &nodes)
        .await
        .expect("Nodes");
    cluster
        .apply_yaml(&pools_yaml(), Some(&space.system))
        .await
        .expect("pools");
    let t0 = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(32, |i| {
            create_service(&cluster, &space.apps, &space.class, i)
        })
        .await;
    eprintln!(
        "{count} Services with their status and EndpointSlice created in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let live: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let live = live.join(",");
    let port = free_port().to_string();
    let metrics = format!("127.0.0.1:{port}");
    let mut args = speaker_args(&space.system, &space.class, None);
    args.extend(
        [
            "--node-name",
            "node-1",
            "--live",
            &live,
            "--exclude-interfaces",
            ".*",
            "--metrics-addr",
            &metrics,
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let l2 = count / 2;
    // FERROLB_SCALE_SPEAKER: another command in its place (a wrapper that `exec`s the speaker
    // under a profiler, by hand).
    let binary = std::env::var("FERROLB_SCALE_SPEAKER").unwrap_or_else(|_| SPEAKER.into());
    let start = |cluster: &TestCluster| cluster.spawn(Path::new(&binary), &args).unwrap();
    let mut speaker = start(&cluster);
    let first = wait_plan(&speaker, l2, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_status_written(&speaker, Duration::from_secs(300)).await;
    let (cpu_start, rss_first) = usage(speaker.pid());
    eprintln!(
        "RESULT speaker, {count} Services on {NODES} Nodes (kube mode): first whole plan {:.2} s after start, CPU {cpu_start:.1} s, resident {rss_first:.0} MiB",
        first.as_secs_f64()
    );

    // FERROLB_SCALE_PERF=FILE: `perf record` the speaker over the changes below (by hand,
    // to see where a change's CPU goes).
    let perf = std::env::var("FERROLB_SCALE_PERF").ok().map(|out| {
        std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "1000",
                "--call-graph",
                "dwarf,16384",
                "-o",
                &out,
                "-p",
            ])
            .arg(speaker.pid().to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("perf")
    });

    // One Service added, ten times: until the plan has it, and the CPU it cost.
    let mut added = Vec::new();
    // Plan and apply in the run loop, per change (its plans summed: the three writes of a
    // Service may come as two or three snapshots), and each plan.
    let (mut loop_ms, mut loop_cpu_ms): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    let mut each_ms: Vec<f64> = Vec::new();
    for k in 0..10 {
        let before = plans(&speaker).len();
        let (cpu0, _) = usage(speaker.pid());
        let t = Instant::now();
        // An L2 one (pool 0): the case the 10 ms target is about.
        create_service(&cluster, &space.apps, &space.class, count + 10 * k).await;
        let seen = wait_plan(&speaker, l2 + k + 1, Duration::from_secs(30)).await;
        let _ = seen;
        let elapsed = t.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (cpu1, _) = usage(speaker.pid());
        added.push((elapsed, cpu1 - cpu0));
        let lines = &plans(&speaker)[before..];
        let took = field_ms(lines, "took_us");
        loop_ms.push(took.iter().sum());
        loop_cpu_ms.push(field_ms(lines, "cpu_us").iter().sum());
        each_ms.extend(took);
    }
    loop_ms.sort_by(f64::total_cmp);
    loop_cpu_ms.sort_by(f64::total_cmp);
    each_ms.sort_by(f64::total_cmp);
    eprintln!(
        "RESULT speaker, one Service added: plan + apply in the run loop {:.1} ms per change, {:.1} ms of CPU (medians; {} plans in 10 changes, each {:.1} ms median, {:.1} ms max)",
        loop_ms[loop_ms.len() / 2],
        loop_cpu_ms[loop_cpu_ms.len() / 2],
        each_ms.len(),
        each_ms[each_ms.len() / 2],
        each_ms.last().copied().unwrap_or(0.0),
    );
    let (_, rss_added) = usage(speaker.pid());
    let ms = |v: &[(Duration, f64)]| -> (f64, f64) {
        let mut t: Vec<f64> = v.iter().map(|(d, _)| d.as_secs_f64() * 1000.0).collect();
        let mut c: Vec<f64> = v.iter().map(|(_, c)| c * 1000.0).collect();
        t.sort_by(f64::total_cmp);
        c.sort_by(f64::total_cmp);
        (t[t.len() / 2], c[c.len() / 2])
    };
    let (t_add, cpu_add) = ms(&added);
    eprintln!(
        "RESULT speaker, one Service added (10 times): in the plan {t_add:.0} ms after the create (median, API write included), speaker CPU {cpu_add:.0} ms per change (median, in 10 ms ticks); resident {rss_added:.0} MiB"
    );

    // One Node deleted: it leaves every ranking.
    let (cpu0, _) = usage(speaker.pid());
    let plans_before = plans(&speaker).len();
    let t = Instant::now();
    let node_api: Api<Node> = Api::all(cluster.client());
    node_api
        .delete("node-100", &DeleteParams::default())
        .await
        .expect("delete Node");
    let limit = Instant::now() + Duration::from_secs(30);
    while plans(&speaker).len() == plans_before {
        assert!(Instant::now() < limit, "no plan after the Node went");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let node_gone = t.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = &plans(&speaker)[plans_before..];
    let node_took: f64 = field_ms(lines, "took_us").iter().sum();
    let node_cpu: f64 = field_ms(lines, "cpu_us").iter().sum();
    eprintln!("RESULT speaker, one Node deleted: plan + apply in the run loop {node_took:.1} ms, {node_cpu:.1} ms of CPU");
    let (cpu1, rss_node) = usage(speaker.pid());
    eprintln!(
        "RESULT speaker, one Node deleted: replanned {:.0} ms after the delete, speaker CPU {:.0} ms; resident {rss_node:.0} MiB",
        node_gone.as_secs_f64() * 1000.0,
        (cpu1 - cpu0) * 1000.0
    );

    if let Some(mut perf) = perf {
        // perf writes its file on SIGINT.
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }

    // A restart: the whole plan again from a fresh list.
    speaker.kill();
    let mut speaker = start(&cluster);
    let again = wait_plan(&speaker, l2 + 10, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu, rss) = usage(speaker.pid());
    eprintln!(
        "RESULT speaker restart: whole plan {:.2} s after start, CPU {cpu:.1} s, resident {rss:.0} MiB",
        again.as_secs_f64()
    );
    speaker.kill();
}
