//! Prometheus metrics (MetalLB's allocator gauges under the `ferrolb_` prefix) and the HTTP
//! endpoints `/metrics`, `/healthz`, `/readyz`.

use crate::allocator::PoolCounts;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    pub pool: String,
}

/// A float gauge: an IPv6 pool's size does not fit an i64 (Prometheus values are floats anyway).
type FloatGauge = Gauge<f64, AtomicU64>;
type PerPool = Family<PoolLabel, FloatGauge>;

/// The allocator gauges, per pool.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    addresses_total: PerPool,
    addresses_in_use_total: PerPool,
    ipv4_addresses_total: PerPool,
    ipv4_addresses_in_use_total: PerPool,
    ipv6_addresses_total: PerPool,
    ipv6_addresses_in_use_total: PerPool,
    services_allocated_total: PerPool,
    pools: Mutex<BTreeSet<String>>,
    services_pending: Gauge,
    leader: Gauge,
    config_loaded: Gauge,
    config_problems: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("ferrolb"),
            ..Self::default()
        };
        let gauges: [(&str, &str, PerPool); 7] = [
            (
                "allocator_addresses_total",
                "Number of usable IP addresses, per pool",
                m.addresses_total.clone(),
            ),
            (
                "allocator_addresses_in_use_total",
                "Number of IP addresses in use, per pool",
                m.addresses_in_use_total.clone(),
            ),
            (
                "allocator_ipv4_addresses_total",
                "Number of usable IPv4 addresses, per pool",
                m.ipv4_addresses_total.clone(),
            ),
            (
                "allocator_ipv4_addresses_in_use_total",
                "Number of IPv4 addresses in use, per pool",
                m.ipv4_addresses_in_use_total.clone(),
            ),
            (
                "allocator_ipv6_addresses_total",
                "Number of usable IPv6 addresses, per pool",
                m.ipv6_addresses_total.clone(),
            ),
            (
                "allocator_ipv6_addresses_in_use_total",
                "Number of IPv6 addresses in use, per pool",
                m.ipv6_addresses_in_use_total.clone(),
            ),
            (
                "allocator_services_allocated_total",
                "Number of services allocated, per pool",
                m.services_allocated_total.clone(),
            ),
        ];
        for (name, help, family) in gauges {
            m.registry.register(name, help, family);
        }
        let plain: [(&str, &str, Gauge); 4] = [
            (
                "allocator_services_pending",
                "LoadBalancer Services waiting for an address (allocation failed; retried when addresses free up)",
                m.services_pending.clone(),
            ),
            (
                "controller_leader",
                "1 on the replica that acts (holds the leader lease), 0 on one standing by",
                m.leader.clone(),
            ),
            (
                "config_loaded",
                "1 once a configuration is in force (the leader only: a standby loads none)",
                m.config_loaded.clone(),
            ),
            (
                "config_problems",
                "Problems in the configuration, as listed in the ConfigurationState (0: valid)",
                m.config_problems.clone(),
            ),
        ];
        for (name, help, gauge) in plain {
            m.registry.register(name, help, gauge);
        }
        m
    }

    pub fn set_pending(&self, services: usize) {
        self.services_pending.set(services as i64);
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if !leading {
            self.config_loaded.set(0);
            self.config_problems.set(0);
        }
    }

    pub fn set_config(&self, problems: usize) {
        self.config_loaded.set(1);
        self.config_problems.set(problems as i64);
    }

    /// Sets every gauge from the allocator's exact counts; pools no longer configured vanish.
    pub fn set_pools(&self, usage: &[(String, PoolCounts, usize)]) {
        let mut known = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let now: BTreeSet<String> = usage.iter().map(|(n, _, _)| n.clone()).collect();
        for gone in known.difference(&now) {
            let label = PoolLabel { pool: gone.clone() };
            for family in self.families() {
                family.remove(&label);
            }
        }
        *known = now;
        for (pool, c, services) in usage {
            let label = PoolLabel { pool: pool.clone() };
            let set = |family: &PerPool, value: u128| {
                family.get_or_create(&label).set(value as f64);
            };
            let size_v4 = c.assigned_v4 + c.available_v4;
            let size_v6 = c.assigned_v6 + c.available_v6;
            set(&self.addresses_total, size_v4.saturating_add(size_v6));
            set(
                &self.addresses_in_use_total,
                c.assigned_v4.saturating_add(c.assigned_v6),
            );
            set(&self.ipv4_addresses_total, size_v4);
            set(&self.ipv4_addresses_in_use_total, c.assigned_v4);
            set(&self.ipv6_addresses_total, size_v6);
            set(&self.ipv6_addresses_in_use_total, c.assigned_v6);
            set(&self.services_allocated_total, *services as u128);
        }
    }

    fn families(&self) -> [&PerPool; 7] {
        [
            &self.addresses_total,
            &self.addresses_in_use_total,
            &self.ipv4_addresses_total,
            &self.ipv4_addresses_in_use_total,
            &self.ipv6_addresses_total,
            &self.ipv6_addresses_in_use_total,
            &self.services_allocated_total,
        ]
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP endpoints read.
pub struct Health {
    pub metrics: Metrics,
    /// Set once this replica is doing its job: standing by, or leading with its state loaded.
    pub ready: AtomicBool,
}

impl Health {
    pub fn new() -> Self {
        Self {
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
        }
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if h.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_exact_for_a_slash_64_and_vanish_with_their_pool() {
        let m = Metrics::new();
        let v6 = PoolCounts {
            assigned_v4: 0,
            available_v4: 0,
            assigned_v6: 3,
            available_v6: (1u128 << 64) - 3,
        };
        let v4 = PoolCounts {
            assigned_v4: 2,
            available_v4: 254,
            ..PoolCounts::default()
        };
        m.set_pools(&[("big".into(), v6, 3), ("small".into(), v4, 1)]);
        let text = m.encode();
        let value = |series: &str| -> f64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("no {series} in {text}"));
            line[series.len()..].trim().parse().unwrap()
        };
        assert_eq!(
            value("ferrolb_allocator_ipv6_addresses_total{pool=\"big\"}"),
            (1u128 << 64) as f64
        );
        assert_eq!(
            value("ferrolb_allocator_addresses_in_use_total{pool=\"small\"}"),
            2.0
        );
        assert_eq!(
            value("ferrolb_allocator_services_allocated_total{pool=\"big\"}"),
            3.0
        );
        m.set_pools(&[("small".into(), v4, 1)]);
        assert!(!m.encode().contains("pool=\"big\""));
    }
}
