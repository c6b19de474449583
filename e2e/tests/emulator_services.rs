//! Services: clusterIP allocation per IP family with ipFamilies / ipFamilyPolicy defaulting,
//! allocation conflicts, immutability, node ports, and the Service status subresource.

mod emulator_common;

use std::net::IpAddr;

use emulator_common::{status, Env};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

fn service(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn family(ip: &str) -> &'static str {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// clusterIPs and ipFamilies agree, element by element.
fn families_match(svc: &Service) -> Vec<String> {
    let spec = svc.spec.as_ref().unwrap();
    let ips = spec.cluster_ips.clone().unwrap();
    let families = spec.ip_families.clone().unwrap();
    assert_eq!(ips.len(), families.len(), "{ips:?} vs {families:?}");
    for (ip, f) in ips.iter().zip(&families) {
        assert_eq!(family(ip), f);
    }
    assert_eq!(spec.cluster_ip.as_deref(), Some(ips[0].as_str()));
    families
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_follow_the_family_policy() {
    let env = Env::start("emu-svc-").await;
    let api: Api<Service> = env.typed();
    let plain = api
        .create(&PostParams::default(), &service("plain", json!({})))
        .await
        .unwrap();
    let spec = plain.spec.as_ref().unwrap();
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert!(port.target_port.is_some());
    assert_eq!(families_match(&plain).len(), 1);
    let by_type = api
        .list(&kube::api::ListParams::default().fields("spec.type=ClusterIP"))
        .await
        .unwrap();
    assert_eq!(by_type.items.len(), 1);

    let prefer = api
        .create(
            &PostParams::default(),
            &service("prefer", json!({"ipFamilyPolicy": "PreferDualStack"})),
        )
        .await
        .unwrap();
    let prefer_families = families_match(&prefer);
    if let Some(_emulator) = env.cluster.emulator() {
        // The default emulator is dual-stack, IPv4 first.
        assert_eq!(prefer_families, ["IPv4", "IPv6"]);
        let v6 = api
            .create(
                &PostParams::default(),
                &service("v6", json!({"ipFamilies": ["IPv6"]})),
            )
            .await
            .unwrap();
        assert_eq!(families_match(&v6), ["IPv6"]);
        let require = api
            .create(
                &PostParams::default(),
                &service(
                    "require",
                    json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
                ),
            )
            .await
            .unwrap();
        assert_eq!(families_match(&require), ["IPv6", "IPv4"]);
    }

    // Two families without a dual-stack policy are refused.
    let bad = status(
        api.create(
            &PostParams::default(),
            &service("two", json!({"ipFamilies": ["IPv4", "IPv6"]})),
        )
        .await,
    );
    assert_eq!(bad.code, 422, "{bad:?}");
    assert!(
        bad.message.contains("spec.ipFamilyPolicy"),
        "{}",
        bad.message
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocated_ips_are_exclusive_immutable_and_released() {
    let env = Env::start("emu-svcalloc-").await;
    let api: Api<Service> = env.typed();
    let a = api
        .create(&PostParams::default(), &service("a", json!({})))
        .await
        .unwrap();
    let ip = a.spec.as_ref().unwrap().cluster_ip.clone().unwrap();

    let taken = status(
        api.create(
            &PostParams::default(),
            &service("b", json!({"clusterIP": ip})),
        )
        .await,
    );
    assert_eq!(taken.code, 422, "{taken:?}");
    assert!(
        taken.message.contains("already allocated"),
        "{}",
        taken.message
    );

    let change = status(
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"clusterIP": "198.51.100.250", "clusterIPs": ["198.51.100.250"]}}),
            ),
        )
        .await,
    );
    assert_eq!(change.code, 422, "{change:?}");

    api.delete("a", &DeleteParams::default()).await.unwrap();
    // Released: the address can be asked for explicitly now (a real allocator may need a moment).
    let mut reused = None;
    for _ in 0..50 {
        match api
            .create(
                &PostParams::default(),
                &service("b", json!({"clusterIP": ip})),
            )
            .await
        {
            Ok(s) => {
                reused = Some(s);
                break;
            }
            Err(kube::Error::Api(s)) if s.code == 422 => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        reused.expect("address reused").spec.unwrap().cluster_ip,
        Some(ip)
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_node_ports_and_a_separate_status() {
    let env = Env::start("emu-svclb-").await;
    let api: Api<Service> = env.typed();
    let lb = api
        .create(
            &PostParams::default(),
            &service(
                "lb",
                json!({"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}),
            ),
        )
        .await
        .unwrap();
    let ports = lb.spec.as_ref().unwrap().ports.clone().unwrap();
    let node_ports: Vec<i32> = ports
        .iter()
        .map(|p| p.node_port.expect("node port allocated"))
        .collect();
    assert_ne!(node_ports[0], node_ports[1]);
    assert!(node_ports.iter().all(|p| (30000..=32767).contains(p)));
    assert_eq!(
        lb.spec.as_ref().unwrap().external_traffic_policy.as_deref(),
        Some("Cluster")
    );

    // What a load-balancer controller writes: status only, through the subresource.
    let ingress = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}});
    let with_ip = api
        .patch_status("lb", &PatchParams::default(), &Patch::Merge(ingress))
        .await
        .unwrap();
    let got = with_ip
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap();
    assert_eq!(got[0].ip.as_deref(), Some("192.0.2.10"));

    // A spec write cannot touch status.
    let spec_write = api
        .patch("lb", &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": null}}, "metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert!(spec_write
        .status
        .clone()
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .is_some());
    // Node ports survive an update that does not mention them.
    let mut replaced = spec_write.clone();
    for p in replaced.spec.as_mut().unwrap().ports.as_mut().unwrap() {
        p.node_port = None;
    }
    let kept = api
        .replace("lb", &PostParams::default(), &replaced)
        .await
        .unwrap();
    let kept_ports: Vec<i32> = kept
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .filter_map(|p| p.node_port)
        .collect();
    assert_eq!(kept_ports, node_ports);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_tables_show_the_service_columns() {
    use axum::http::Request;
    let env = Env::start("emu-svctable-").await;
    let api: Api<Service> = env.typed();
    api.create(
        &PostParams::default(),
        &service("tabled", json!({"type": "LoadBalancer"})),
    )
    .await
    .unwrap();
    let request = Request::get(format!("/api/v1/namespaces/{}/services", env.ns))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: Value =
        serde_json::from_str(&env.client().request_text(request).await.unwrap()).unwrap();
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for wanted in [
        "Name",
        "Type",
        "Cluster-IP",
        "External-IP",
        "Port(s)",
        "Age",
    ] {
        assert!(columns.contains(&wanted), "{wanted} not in {columns:?}");
    }
    assert_eq!(table["rows"][0]["cells"][0], "tabled");
    assert_eq!(table["rows"][0]["cells"][1], "LoadBalancer");
    env.finish().await;
}
