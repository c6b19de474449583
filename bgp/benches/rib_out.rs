//! Adj-RIB-Out: building the initial table of N /32s (set_desired + drain into packed UPDATEs),
//! and withdrawing it.

use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferrolb_bgp::packet::{DecodeContext, Family};
use ferrolb_bgp::rib_out::{AdjRibOut, RouteAttributes, SessionParams};
use ipnet::IpNet;

fn params() -> SessionParams {
    SessionParams {
        ctx: DecodeContext {
            four_octet_asn: true,
            extended_messages: true,
            ibgp: false,
        },
        local_asn: 64512,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
        next_hop_v6: None,
        next_hop_link_local: None,
        ipv4_with_ipv6_next_hop: false,
        enhanced_route_refresh: false,
    }
}

fn routes(n: u32) -> Vec<(IpNet, RouteAttributes)> {
    (0..n)
        .map(|i| {
            let a = Ipv4Addr::from(0x6440_0000u32 + i);
            (
                IpNet::new(IpAddr::V4(a), 32).unwrap(),
                RouteAttributes::default(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let p = params();
    let mut g = c.benchmark_group("rib_out");
    for n in [10_000u32, 100_000] {
        let r = routes(n);
        g.bench_with_input(BenchmarkId::new("announce", n), &r, |b, r| {
            b.iter(|| {
                let mut rib = AdjRibOut::new();
                rib.set_desired(r.clone());
                let mut out = Vec::with_capacity(n as usize * 6);
                rib.drain(&p, &mut out);
                out
            })
        });
        g.bench_with_input(BenchmarkId::new("withdraw", n), &r, |b, r| {
            b.iter_batched(
                || {
                    let mut rib = AdjRibOut::new();
                    rib.set_desired(r.clone());
                    rib.drain(&p, &mut Vec::new());
                    rib
                },
                |mut rib| {
                    rib.set_desired(Vec::new());
                    let mut out = Vec::new();
                    rib.drain(&p, &mut out);
                    out
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
