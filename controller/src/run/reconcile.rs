//! Reconciling one Service: ask the [`Engine`](super::engine::Engine) for its decision, then make
//! the Service show it (status, annotation) and tell the user (Events).

use super::Shared;
use crate::allocator::service::is_ours;
use crate::allocator::{service_info, AllocError, Assignment, ServiceKey};
use ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The field manager of every write of the controller.
pub const FIELD_MANAGER: &str = "ferrolb-controller";

/// Parameters of every patch the controller makes (JSON merge patches, named manager).
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// What reconciles share.
pub struct Context {
    pub client: kube::Client,
    pub shared: Arc<Shared>,
    pub recorder: Recorder,
    pub lb_class: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("writing Service {key}: {source}")]
    Write {
        key: ServiceKey,
        #[source]
        source: kube::Error,
    },
}

/// What a Service should show.
#[derive(Debug)]
enum Decision {
    /// Not ours and never was: leave it alone.
    Ignore,
    /// Addresses from a pool.
    Assigned(Assignment),
    /// No address, with the reason (AllocationFailed).
    Failed(String),
    /// No longer ours: take back what it shows, with the reason (ClearAssignment).
    Clear(String),
    /// Its addresses came from a pool left out as invalid: they stay as shown (AllocationHeld).
    Held(String),
}

fn status_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn pool_annotation(svc: &Service) -> Option<&String> {
    svc.annotations().get(IP_ALLOCATED_FROM_POOL)
}

fn decide(svc: &Service, ctx: &Context) -> Option<(Decision, Vec<ServiceKey>)> {
    let key = ServiceKey::of(svc);
    let uid = svc.uid().unwrap_or_default();
    let mut guard = ctx.shared.engine.lock().unwrap_or_else(|e| e.into_inner());
    let engine = guard.as_mut()?;
    if !is_ours(svc, ctx.lb_class.as_deref()) {
        let (released, retried) = engine.forget(&key, None);
        let shows_ours = pool_annotation(svc).is_some() && !status_ips(svc).is_empty();
        let decision = if released.is_some() || shows_ours {
            Decision::Clear(
                "the Service is no longer a LoadBalancer of this controller's class".into(),
            )
        } else {
            Decision::Ignore
        };
        return Some((decision, retried));
    }
    match service_info(svc) {
        Err(errors) => {
            let (_, retried) = engine.forget(&key, None);
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Some((Decision::Failed(text.join("; ")), retried))
        }
        Ok(info) => {
            let outcome = engine.observe(info, &uid);
            let decision = match outcome.result {
                Ok(a) => Decision::Assigned(a),
                Err(e @ (AllocError::PoolWithheld(_) | AllocError::NoPoolInForce)) => {
                    Decision::Held(e.to_string())
                }
                Err(e) => Decision::Failed(e.to_string()),
            };
            Some((decision, outcome.retried))
        }
    }
}

/// Reconciles one Service. Before the state is loaded (no valid configuration yet, or still
/// reading the cluster) nothing is written: it comes back later.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let key = ServiceKey::of(&svc);
    if svc.metadata.deletion_timestamp.is_some() {
        // Being deleted: it keeps its addresses until it is gone.
        return Ok(Action::await_change());
    }
    let Some((decision, retried)) = decide(&svc, &ctx) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    for other in retried {
        let _ = ctx
            .shared
            .triggers
            .unbounded_send(ObjectRef::new(&other.name).within(&other.namespace));
    }
    ctx.shared.usage_changed.notify_one();
    let current = status_ips(&svc);
    match decision {
        Decision::Ignore => {}
        Decision::Assigned(a) => {
            let ips: Vec<String> = a.ips.iter().map(ToString::to_string).collect();
            let changed = write(&svc, &ctx, &key, &ips, Some(&a.pool)).await?;
            if changed {
                info!(service = %key, ips = ?ips, pool = %a.pool, "assigned");
                publish(
                    &ctx,
                    &svc,
                    EventType::Normal,
                    "IPAllocated",
                    format!("Assigned IP {ips:?} from IPAddressPool {}", a.pool),
                )
                .await;
            }
        }
        Decision::Failed(reason) => {
            if !current.is_empty() {
                info!(service = %key, ips = ?current, reason = %reason, "withdrawn");
            }
            write(&svc, &ctx, &key, &[], None).await?;
            debug!(service = %key, reason = %reason, "no address");
            publish(
                &ctx,
                &svc,
                EventType::Warning,
                "AllocationFailed",
                format!("Failed to allocate IP for \"{key}\": {reason}"),
            )
            .await;
        }
        Decision::Held(reason) => {
            // Nothing is written: the addresses stay where they are.
            warn!(service = %key, ips = ?current, reason = %reason, "addresses held");
            publish(
                &ctx,
                &svc,
                EventType::Warning,
                "AllocationHeld",
                format!("Kept IP {current:?} as it is: {reason}"),
            )
            .await;
        }
        Decision::Clear(reason) => {
            if write(&svc, &ctx, &key, &[], None).await? {
                info!(service = %key, ips = ?current, "cleared");
                publish(
                    &ctx,
                    &svc,
                    EventType::Normal,
                    "ClearAssignment",
                    format!("Cleared IP {current:?}: {reason}"),
                )
                .await;
            }
        }
    }
    Ok(Action::await_change())
}

/// Makes the Service show `ips` and `pool`; returns whether anything had to change.
async fn write(
    svc: &Service,
    ctx: &Context,
    key: &ServiceKey,
    ips: &[String],
    pool: Option<&String>,
) -> Result<bool, ReconcileError> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let params = patch_params();
    let err = |source| ReconcileError::Write {
        key: key.clone(),
        source,
    };
    let mut changed = false;
    if status_ips(svc) != ips {
        let ingress = if ips.is_empty() {
            serde_json::Value::Null
        } else {
            json!(ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>())
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        api.patch_status(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(err)?;
        changed = true;
    }
    if pool_annotation(svc) != pool {
        let patch = json!({"metadata": {"annotations": {IP_ALLOCATED_FROM_POOL: pool}}});
        api.patch(&key.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(err)?;
        changed = true;
    }
    Ok(changed)
}

async fn publish(ctx: &Context, svc: &Service, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Allocate".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &svc.object_ref(&())).await {
        // An Event is a courtesy to the user; failing to write one must not fail the reconcile.
        warn!(service = %ServiceKey::of(svc), error = %e, "cannot publish event");
    }
}

/// A failed write is retried after a pause; the decision itself is kept by the engine.
pub fn error_policy(svc: Arc<Service>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    warn!(service = %ServiceKey::of(&svc), error = %error, "reconcile failed, retrying");
    Action::requeue(Duration::from_secs(2))
}
