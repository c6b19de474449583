//! `ferrolb-controller run`: the live controller.
//!
//! One replica at a time is active ([`leader`]). The active one watches Services, the FerroLB
//! objects, Secrets and Namespaces; once every cache is filled and a valid configuration exists
//! it loads every Service's current addresses from status before deciding anything new
//! ([`engine::Engine::load`]), so a restart or a takeover changes no assignment. Then Services
//! are reconciled with kube-runtime ([`reconcile`]); pool counts and metrics follow
//! ([`pool_status`], [`metrics`]); the configuration is reported in a ConfigurationState
//! ([`config`]).

pub mod api_calls;
pub mod config;
pub mod engine;
pub mod leader;
pub mod metrics;
pub mod pool_status;
pub mod reconcile;

use crate::allocator::ServiceKey;
use engine::Engine;
use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use metrics::Health;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

/// The controller's name: Event reporter, field manager, Lease and ConfigurationState names.
pub const CONTROLLER_NAME: &str = "ferrolb-controller";

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where the FerroLB objects, the Lease and the ConfigurationState live.
    pub namespace: String,
    /// Serve only Services of this `spec.loadBalancerClass` (`None`: those without one).
    pub lb_class: Option<String>,
    pub metrics_addr: SocketAddr,
    /// This replica's name in the Lease and in Events (the Pod name).
    pub identity: String,
    pub lease_name: String,
    pub lease_duration_seconds: u64,
    pub lease_grace_seconds: u64,
    /// Name of this controller's ConfigurationState.
    pub configuration_state: String,
    /// MetalLB-compatible mode: read MetalLB's objects (metallb.io) in this namespace instead of
    /// FerroLB's in `namespace`.
    pub metallb_namespace: Option<String>,
    /// Report configuration objects found in other namespaces (where they are ignored) in the
    /// ConfigurationState. Off where several FerroLB installations share a cluster.
    pub report_objects_elsewhere: bool,
}

impl Options {
    /// Where the configuration is read, and in which API group.
    pub fn config_source(&self) -> (&str, ferrolb_kube::ConfigApi) {
        match &self.metallb_namespace {
            Some(ns) => (ns, ferrolb_kube::ConfigApi::MetalLb),
            None => (&self.namespace, ferrolb_kube::ConfigApi::FerroLb),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that no two replicas act at once")]
    LostLease,
}

/// What the active replica's tasks share.
pub struct Shared {
    /// `None` until the state is loaded from the cluster.
    pub engine: Mutex<Option<Engine>>,
    /// Services to reconcile because another Service's change decided for them.
    pub triggers: mpsc::UnboundedSender<ObjectRef<Service>>,
    /// Allocation changed: pool status and metrics to update.
    pub usage_changed: Notify,
    pub health: Arc<Health>,
}

/// A shutdown signal many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (tokio::sync::watch::Sender<bool>, Self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        (tx, Self(rx))
    }

    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Runs until `shutdown`, or fails (losing the lease is a failure: the process exits and comes
/// back as a standby).
pub async fn run(client: kube::Client, opts: Options, shutdown: Shutdown) -> Result<(), RunError> {
    let health = Arc::new(Health::new());
    let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: opts.metrics_addr,
            source,
        })?;
    info!(addr = %listener.local_addr().unwrap_or(opts.metrics_addr), "serving /metrics, /healthz, /readyz");
    let server = {
        let router = metrics::router(health.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.wait())
                .await;
        })
    };
    let result = leader::run_when_leader(&client, &opts, health.clone(), shutdown, |stop| {
        lead(client.clone(), opts.clone(), health.clone(), stop)
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    result
}

/// Why a Service watch event matters beyond the reconcile.
enum ServiceNote {
    Deleted(ServiceKey, String),
    Relisted,
}

/// Shows this replica as the leader in the metrics while it lives (also when leading is cut
/// short).
struct Leading(Arc<Health>);

impl Leading {
    fn start(health: Arc<Health>) -> Self {
        health.metrics.set_leader(true);
        Self(health)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.metrics.set_leader(false);
    }
}

/// The active replica: runs until `stop` resolves.
async fn lead(
    client: kube::Client,
    opts: Options,
    health: Arc<Health>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    info!(identity = %opts.identity, "leading");
    health.ready.store(false, Ordering::SeqCst);
    let _leading = Leading::start(health.clone());
    let (triggers, trigger_rx) = mpsc::unbounded();
    let shared = Arc::new(Shared {
        engine: Mutex::new(None),
        triggers,
        usage_changed: Notify::new(),
        health: health.clone(),
    });
    let changed = Arc::new(Notify::new());
    // Aborted when leading ends, also when it is cut short by a lost lease.
    let mut tasks = AbortOnDrop(Vec::new());
    let (config_namespace, config_api) = opts.config_source();
    info!(namespace = %config_namespace, group = %config_api.group(), "reading the configuration");
    let stores = config::ConfigStores::start(
        &client,
        config_namespace,
        config_api,
        opts.report_objects_elsewhere,
        &changed,
        &mut tasks.0,
    );

    let (services, writer) = reflector::store::<Service>();
    let (notes, note_rx) = mpsc::unbounded();
    let (listed, services_listed) = tokio::sync::watch::channel(false);
    let service_stream = ferrolb_kube::reconnect::watch(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .reflect(writer)
    .inspect_ok(move |event| {
        let note = match event {
            watcher::Event::Delete(svc) => {
                ServiceNote::Deleted(ServiceKey::of(svc), svc.uid().unwrap_or_default())
            }
            watcher::Event::InitDone => {
                // The reflector has filled the store before passing the event on.
                let _ = listed.send(true);
                ServiceNote::Relisted
            }
            _ => return,
        };
        let _ = notes.unbounded_send(note);
    })
    .applied_objects();
    // The watch runs in a task of its own and hands the Services over: inside the Controller's
    // stream its retry timer was not always woken on time, and after an API server outage the
    // watch resumed up to tens of seconds late (seen in the restart tests).
    let (service_tx, service_rx) = mpsc::unbounded::<Result<Service, watcher::Error>>();
    let mut service_watch = tokio::spawn(async move {
        futures::pin_mut!(service_stream);
        let mut failing = false;
        while let Some(item) = service_stream.next().await {
            match item {
                Ok(svc) => {
                    if std::mem::take(&mut failing) {
                        info!("Service watch restored");
                    }
                    if service_tx.unbounded_send(Ok(svc)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "Service watch failed; retrying");
                    }
                    failing = true;
                }
            }
        }
    });

    tasks.0.push(tokio::spawn(config::config_loop(
        shared.clone(),
        stores.clone(),
        services.clone(),
        services_listed,
        changed,
        config::StateWriter::new(
            client.clone(),
            &opts.namespace,
            &opts.configuration_state,
            Recorder::new(
                client.clone(),
                Reporter {
                    controller: CONTROLLER_NAME.into(),
                    instance: Some(opts.identity.clone()),
                },
            ),
        ),
        opts.lb_class.clone(),
    )));
    tasks.0.push(tokio::spawn(service_notes(
        shared.clone(),
        note_rx,
        services.clone(),
    )));
    let pool_resource = config_api
        .resource("IPAddressPool")
        .expect("IPAddressPool is a configuration kind");
    tasks.0.push(tokio::spawn(pool_status::pool_status_loop(
        shared.clone(),
        health,
        stores.config.clone(),
        Api::namespaced_with(client.clone(), config_namespace, &pool_resource),
    )));

    let context = Arc::new(reconcile::Context {
        client: client.clone(),
        shared,
        recorder: Recorder::new(
            client,
            Reporter {
                controller: CONTROLLER_NAME.into(),
                instance: Some(opts.identity.clone()),
            },
        ),
        lb_class: opts.lb_class.clone(),
    });
    let controller = Controller::for_stream(service_rx, services)
        .reconcile_on(trigger_rx)
        .graceful_shutdown_on(stop)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                debug!(error = %e, "reconcile");
            }
            futures::future::ready(())
        });
    tokio::select! {
        () = controller => {}
        // The watch never ends on its own: if it does (a panic), the store is frozen, and
        // leading on would serve stale Services; the process ends and starts afresh.
        ended = &mut service_watch => {
            tracing::error!(outcome = ?ended, "the Service watch ended; stopping");
        }
    }
    service_watch.abort();
    drop(tasks);
    info!("stopped leading");
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Frees the addresses of deleted Services (and, after a relist, of those deleted while the
/// watch was down), serving waiting Services in their place.
async fn service_notes(
    shared: Arc<Shared>,
    mut notes: mpsc::UnboundedReceiver<ServiceNote>,
    services: Store<Service>,
) {
    while let Some(note) = notes.next().await {
        let gone: Vec<(ServiceKey, String)> = match note {
            ServiceNote::Deleted(key, uid) => vec![(key, uid)],
            ServiceNote::Relisted => {
                let present = config::present(&services);
                let guard = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
                let Some(engine) = guard.as_ref() else {
                    continue;
                };
                engine
                    .tracked()
                    .filter(|(k, uid)| present.get(*k).map(String::as_str) != Some(*uid))
                    .map(|(k, uid)| (k.clone(), uid.to_string()))
                    .collect()
            }
        };
        let mut retried = Vec::new();
        {
            let mut guard = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
            let Some(engine) = guard.as_mut() else {
                continue;
            };
            for (key, uid) in gone {
                let (released, served) = engine.forget(&key, Some(&uid));
                if let Some(a) = released {
                    info!(service = %key, ips = ?a.ips, pool = %a.pool, "released: Service deleted");
                }
                retried.extend(served);
            }
        }
        for key in retried {
            let _ = shared
                .triggers
                .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
        }
        shared.usage_changed.notify_one();
    }
}
