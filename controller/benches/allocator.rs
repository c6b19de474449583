//! Allocation cost: 1,000 to 100,000 Services over several pools, one of them an IPv6 /64.
//! Target: 100,000 allocated in under 1 s, and the time per allocation flat with the count.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrolb_config::addresses::Family;
use ferrolb_config::manifest::Manifests;
use ferrolb_config::service::ServiceRequest;
use ferrolb_controller::allocator::{plan, FamilyPolicy, ServiceInfo, ServiceKey};
use std::collections::BTreeMap;

fn config() -> ferrolb_config::Config {
    let yaml = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: a-v4}\nspec: {addresses: [10.0.0.0/16]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: b-v4}\nspec: {addresses: [10.1.0.0/16], avoidBuggyIPs: true}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: c-v6}\nspec: {addresses: [2001:db8::/64]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: d-pinned}\nspec:\n  addresses: [10.2.0.0/16]\n  serviceAllocation: {priority: 1, namespaces: [pinned]}\n";
    let mut m = Manifests::default();
    assert!(m.add_yaml(yaml, "bench").is_empty());
    ferrolb_config::build(&m.resources).unwrap()
}

/// A mix: half IPv4, a quarter IPv6 only, a quarter dual-stack, a tenth in a pinned namespace.
fn services(n: usize) -> Vec<ServiceInfo> {
    (0..n)
        .map(|i| {
            let (families, policy) = match i % 4 {
                0 | 1 => (vec![Family::V4], FamilyPolicy::SingleStack),
                2 => (vec![Family::V6], FamilyPolicy::SingleStack),
                _ => (vec![Family::V4, Family::V6], FamilyPolicy::PreferDualStack),
            };
            let namespace = if i % 10 == 0 { "pinned" } else { "apps" };
            ServiceInfo {
                key: ServiceKey::new(namespace, format!("svc-{i:06}")),
                labels: BTreeMap::new(),
                request: ServiceRequest::default(),
                families,
                policy,
                ports: vec![("TCP".into(), 443)],
                local_traffic: false,
                selector: BTreeMap::new(),
                current_ips: vec![],
                allocated_from: None,
                created: String::new(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let config = config();
    let mut group = c.benchmark_group("allocate");
    group.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let svcs = services(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &svcs, |b, svcs| {
            b.iter(|| {
                let (_, p) = plan(&config, &BTreeMap::new(), svcs);
                assert!(p.results.values().all(Result::is_ok));
            })
        });
    }
    // Restart: every Service already has its addresses in status.
    let svcs = services(100_000);
    let (_, first) = plan(&config, &BTreeMap::new(), &svcs);
    let restarted: Vec<ServiceInfo> = svcs
        .into_iter()
        .map(|mut s| {
            s.current_ips = first.results[&s.key].as_ref().unwrap().ips.clone();
            s
        })
        .collect();
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("restart-100000", |b| {
        b.iter(|| plan(&config, &BTreeMap::new(), &restarted))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
