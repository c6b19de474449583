//! deploy/monitoring: the alerting rules pass promtool's checks and unit tests
//! (rules_test.yaml), the PrometheusRule carries exactly the rules file's groups, the
//! kustomizations build, and every metric the dashboard and the alerts query is really exported:
//! scraped from a running `ferrolb-controller` (against the API emulator) and a running
//! `ferrolb-speaker` with a BGP session, a BFD session and a layer 2 address (real FRR in a
//! network namespace; root-only: otherwise only the controller's names are checked, and the
//! test says so).

use ferrolb_e2e::emulator::harness::{free_port, TestCluster};
use ferrolb_e2e::lab::bgp_lab::{metric, node_v4, nodes_yaml, BgpLab, ROUTER_V4};
use ferrolb_e2e::lab::l2::{controller_binary, skip_reason};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn monitoring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    let v: serde_yaml::Value = serde_yaml::from_str(&read(path)).unwrap();
    serde_json::to_value(v).unwrap()
}

fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring_dir())
        .output()
        .ok()?;
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn alerting_rules_pass_promtool_checks_and_unit_tests() {
    let Some((ok, out)) = promtool(&["check", "rules", "rules.yaml"]) else {
        eprintln!(
            "SKIP: promtool is not installed (Debian package prometheus; .ci/test installs it)"
        );
        return;
    };
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "rules_test.yaml"]).unwrap();
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let rules = yaml(&monitoring_dir().join("rules.yaml"));
    let alerts: BTreeSet<String> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let tests = yaml(&monitoring_dir().join("rules_test.yaml"));
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                firing.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for alert in &alerts {
        assert!(firing.contains(alert), "{alert}: no case where it fires");
        assert!(
            silent.contains(alert),
            "{alert}: no case where it stays silent"
        );
    }
}

#[test]
fn the_prometheus_rule_carries_exactly_the_rules_file() {
    let rules = yaml(&monitoring_dir().join("rules.yaml"));
    let object = yaml(&monitoring_dir().join("component/prometheusrule.yaml"));
    assert_eq!(object["kind"], "PrometheusRule");
    assert_eq!(object["spec"]["groups"], rules["groups"]);
}

/// Runs `kubectl kustomize` on `dir`; `None` where kubectl is missing.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| {
                let v = <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap();
                serde_json::to_value(v).unwrap()
            })
            .collect(),
    )
}

#[test]
fn the_monitoring_kustomization_builds_with_the_dashboard_configmap() {
    let dashboard: Value =
        serde_json::from_str(&read(&monitoring_dir().join("component/dashboard.json")))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "ferrolb");
    let Some(objects) = kustomize(&monitoring_dir()) else {
        eprintln!("SKIP: kubectl is not installed; the kustomization is not built");
        return;
    };
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "PrometheusRule/ferrolb",
        "PodMonitor/ferrolb-controller",
        "PodMonitor/ferrolb-speaker",
        "ConfigMap/ferrolb-grafana-dashboard",
    ] {
        assert!(kinds.contains(want), "{want} missing from {kinds:?}");
    }
    let map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let embedded: Value =
        serde_json::from_str(map["data"]["ferrolb.json"].as_str().unwrap()).unwrap();
    assert_eq!(embedded, dashboard);
}

/// Every PromQL expression of the rules and the dashboard (panels' targets and template
/// variables' queries).
fn queries() -> Vec<String> {
    let mut out = Vec::new();
    let rules = yaml(&monitoring_dir().join("rules.yaml"));
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            out.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read(&monitoring_dir().join("component/dashboard.json"))).unwrap();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if matches!(k.as_str(), "expr" | "query" | "definition") {
                        if let Some(s) = v.as_str() {
                            out.push(s.to_owned());
                        } else if let Some(s) = v.get("query").and_then(Value::as_str) {
                            out.push(s.to_owned());
                        }
                    }
                    walk(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut out);
    out
}

/// The metric names the queries use: FerroLB's own, and `up`.
fn used_names() -> BTreeSet<String> {
    let re = regex::Regex::new(r"\b(ferrolb_[a-z0-9_]+)").unwrap();
    queries()
        .iter()
        .flat_map(|q| {
            re.captures_iter(q)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Names of the series in a /metrics text.
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
        .collect()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// The controller's /metrics once its pool gauges are there (a pool and a Service in the
/// emulator).
async fn controller_scrape() -> String {
    let cluster = TestCluster::start().await.expect("cluster");
    let space = cluster.lb_test_space("mon-").await.expect("space");
    cluster
        .apply_yaml(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/30, \"2001:db8::/126\"]}\n",
            Some(&space.system),
        )
        .await
        .unwrap();
    cluster
        .apply_yaml(
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{type: LoadBalancer, loadBalancerClass: {}, ports: [{{port: 80}}]}}\n", space.class),
            Some(&space.apps),
        )
        .await
        .unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let binary = controller_binary().expect("ferrolb-controller builds");
    let process = cluster
        .spawn(
            &binary,
            &[
                "run",
                "--namespace",
                &space.system,
                "--lb-class",
                &space.class,
                "--metrics-addr",
                &metrics,
                "--identity",
                "monitoring-test",
                "--ignore-objects-elsewhere",
            ],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(text) = http_get(port, "/metrics") {
            if metric(
                &text,
                "ferrolb_allocator_services_allocated_total{pool=\"lan\"}",
            ) == Some(1.0)
                && metric(&text, "ferrolb_controller_leader") == Some(1.0)
            {
                if cluster.is_real_cluster() {
                    let _ = cluster.delete_namespace(&space.apps).await;
                    let _ = cluster.delete_namespace(&space.system).await;
                }
                drop(process);
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "controller metrics incomplete after 30 s:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A speaker's /metrics with a BGP session and a BFD session up and a layer 2 address owned.
fn speaker_scrape() -> String {
    let mut lab = BgpLab::new("mon", 1).unwrap();
    let a = node_v4(1);
    lab.start_frr(&format!(
        "frr defaults datacenter\nhostname router\n!\nbfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n !\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n neighbor {a} remote-as 64512\n neighbor {a} timers connect 1\n neighbor {a} bfd\n neighbor {a} bfd profile fast\n!\n"
    ))
    .unwrap();
    lab.frr
        .as_mut()
        .expect("FRR started")
        .start_bfdd()
        .unwrap_or_else(|e| panic!("bfdd: {e}"));
    lab.write_manifests(&format!(
        "{}apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: fast, namespace: ferrolb-system}}\nspec: {{receiveInterval: 100, transmitInterval: 100}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s, bfdProfile: fast}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.0/24]}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [public]}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{addresses: [192.0.2.200/32]}}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [lan]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: 203.0.113.10}}\nspec: {{type: LoadBalancer, ports: [{{port: 7, protocol: UDP}}]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: lan\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: 192.0.2.200}}\nspec: {{type: LoadBalancer, ports: [{{port: 7, protocol: UDP}}]}}\n",
        nodes_yaml(1, |_| String::new())
    ));
    lab.start_speaker(1).unwrap();
    let peer = ROUTER_V4;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = lab.scrape(1) {
            let bgp_up = metric(&text, &format!("ferrolb_bgp_session_up{{peer=\"{peer}\"}}"));
            let bfd_up = metric(&text, &format!("ferrolb_bfd_session_up{{peer=\"{peer}\"}}"));
            if bgp_up == Some(1.0)
                && bfd_up == Some(1.0)
                && text.contains("ferrolb_speaker_announced{")
                && text.contains("protocol=\"layer2\"")
            {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "speaker metrics incomplete after 30 s:\n{}\n{}",
            lab.scrape(1).unwrap_or_default(),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Names the controller exports (the rest are the speaker's).
fn controllers(name: &str) -> bool {
    ["ferrolb_allocator_", "ferrolb_controller_"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let used = used_names();
    assert!(used.len() > 20, "{used:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let controller = runtime.block_on(controller_scrape());
    let mut all = exported(&controller);
    let speaker = match skip_reason() {
        Some(why) => {
            eprintln!("SKIP: the speaker's half of the metric-name test {why} (the speaker runs with FRR in network namespaces); the controller's half runs");
            None
        }
        None => Some(speaker_scrape()),
    };
    if let Some(text) = &speaker {
        all.extend(exported(text));
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !all.contains(*n))
        .filter(|n| speaker.is_some() || controllers(n))
        .collect();
    assert!(
        missing.is_empty(),
        "queried by deploy/monitoring but not exported: {missing:?}\ncontroller:\n{controller}\nspeaker:\n{}",
        speaker.unwrap_or_default()
    );
}
