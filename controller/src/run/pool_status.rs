//! Keeps every IPAddressPool's status counts (and the metrics) equal to the allocator's exact
//! counts. Runs after allocation changes, batched, so a burst of Services costs one write per
//! pool.

use super::metrics::Health;
use super::reconcile::patch_params;
use super::Shared;
use ferrolb_crds::IPAddressPoolStatus;
use ferrolb_kube::{ConfigApi, ConfigWatch};
use kube::api::{Api, DynamicObject, Patch};
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// A count as MetalLB's pool status holds it (int64; an IPv6 /64 saturates, as in MetalLB).
fn int64(count: u128) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

pub async fn pool_status_loop(
    shared: Arc<Shared>,
    health: Arc<Health>,
    config: Arc<ConfigWatch>,
    api: Api<DynamicObject>,
) {
    // What was last written, by pool name and uid (a pool deleted and created again needs it
    // written again).
    let mut written: BTreeMap<(String, String), serde_json::Value> = BTreeMap::new();
    loop {
        shared.usage_changed.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (usage, pending) = {
            let guard = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(engine) => (engine.pool_usage(), engine.pending_count()),
                None => continue,
            }
        };
        health.metrics.set_pools(&usage);
        health.metrics.set_pending(pending);
        let mut failed = false;
        let pools = config.objects().resources.pools;
        for (name, counts, _) in &usage {
            let Some(object) = pools.iter().find(|p| p.name_any() == *name) else {
                continue;
            };
            let id = (name.clone(), object.uid().unwrap_or_default());
            let wanted = match config.api() {
                ConfigApi::FerroLb => json!(IPAddressPoolStatus {
                    assigned_ipv4: counts.assigned_v4.into(),
                    assigned_ipv6: counts.assigned_v6.into(),
                    available_ipv4: counts.available_v4.into(),
                    available_ipv6: counts.available_v6.into(),
                }),
                ConfigApi::MetalLb => json!({
                    "assignedIPv4": int64(counts.assigned_v4),
                    "assignedIPv6": int64(counts.assigned_v6),
                    "availableIPv4": int64(counts.available_v4),
                    "availableIPv6": int64(counts.available_v6),
                }),
            };
            if written.get(&id) == Some(&wanted) {
                continue;
            }
            let patch = json!({ "status": wanted });
            match api
                .patch_status(name, &patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    written.insert(id, wanted);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    warn!(pool = %name, error = %e, "cannot write pool status; retrying");
                    failed = true;
                }
            }
        }
        written.retain(|(name, _), _| usage.iter().any(|(n, _, _)| n == name));
        if failed {
            tokio::time::sleep(Duration::from_secs(1)).await;
            shared.usage_changed.notify_one();
        }
    }
}
