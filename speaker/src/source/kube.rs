//! `kube`: the cluster as its watches see it. Services and EndpointSlices (only those naming a
//! Service) everywhere, reduced as they arrive to what the planner reads ([`ServiceIndex`]);
//! Nodes everywhere and the FerroLB objects and Secrets in the speaker's namespace, through
//! kube-runtime reflectors. Every change, after a short quiet period that folds bursts (a
//! `kubectl apply` of ten objects, a rollout updating many EndpointSlices) into one, rebuilds
//! the snapshot (only the views of the Services that changed are new); it is published only
//! when different. An invalid object is reported and left out,
//! or keeps its last valid version in force; everything else applies (as in the controller).
//!
//! Namespaces are not watched: nothing the speaker decides depends on namespace labels (the
//! pools' namespaceSelectors are the controller's business).
//!
//! The API server is never on the takeover path: the stores keep their last content while the
//! watches fail and retry, so with the API down the speaker keeps announcing what it last knew,
//! and membership alone moves addresses between nodes.

use super::index::ServiceIndex;
use super::{assemble, node_ips, Snapshot};
use ferrolb_config::Resources;
use ferrolb_kube::reflect::{follow, keep, reflect};
use ferrolb_kube::{ConfigApi, ConfigWatch};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::Resource;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

/// The label an EndpointSlice carries naming its Service; slices without it are not ours.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Whether the speaker accepted the configuration, for its ConfigurationState.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigReport {
    /// The caches are not filled yet.
    Unknown,
    Valid,
    /// Every problem, one line each (`Kind/name: field: message`).
    Invalid(Vec<String>),
}

/// What membership needs, available as soon as the caches are filled, whether or not the
/// configuration is valid.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInfo {
    /// Each Node's InternalIP.
    pub node_ips: BTreeMap<String, IpAddr>,
    /// Secrets in the speaker's namespace (the membership key among them).
    pub secrets: Vec<Secret>,
}

/// The outputs of a running [`KubeSource`].
#[derive(Debug)]
pub struct KubeFeeds {
    /// The last valid snapshot (`None` until there is one), as in file mode.
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// Nodes' addresses and Secrets (`None` until the caches are filled).
    pub cluster: watch::Receiver<Option<Arc<ClusterInfo>>>,
    /// Whether the current configuration is valid.
    pub config: watch::Receiver<ConfigReport>,
}

/// Settings of the kube source.
#[derive(Clone, Debug)]
pub struct KubeSource {
    /// Where the FerroLB objects and the membership Secret live.
    pub namespace: String,
    /// MetalLB-compatible mode: MetalLB's objects (metallb.io) are read in this namespace
    /// instead of FerroLB's in `namespace`.
    pub metallb_namespace: Option<String>,
    /// Serve only Services of this class (`None`: those without one).
    pub lb_class: Option<String>,
    /// A change is taken once nothing else changed for this long...
    pub quiet: Duration,
    /// ...or at the latest this long after it, however busy the cluster is.
    pub max_delay: Duration,
}

impl KubeSource {
    pub fn new(namespace: &str, lb_class: Option<String>) -> KubeSource {
        KubeSource {
            namespace: namespace.into(),
            metallb_namespace: None,
            lb_class,
            quiet: Duration::from_millis(30),
            max_delay: Duration::from_millis(300),
        }
    }
}

fn objects<K: Clone + Resource + 'static>(store: &Store<K>) -> Vec<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    let mut v: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    v.sort_by(|a, b| {
        (a.meta().namespace.as_deref(), a.meta().name.as_deref())
            .cmp(&(b.meta().namespace.as_deref(), b.meta().name.as_deref()))
    });
    v
}

struct Stores {
    /// Services and EndpointSlices, reduced (fed by their watch tasks).
    index: Arc<Mutex<ServiceIndex>>,
    nodes: Store<Node>,
    /// The configuration kinds and their Secrets, FerroLB's or MetalLB's.
    config: ConfigWatch,
    /// Secrets of the speaker's own namespace (the membership key), when the configuration is
    /// read elsewhere.
    own_secrets: Option<Store<Secret>>,
    _tasks: AbortOnDrop,
}

/// Stops the watches when the source goes.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Stores {
    fn start(client: &kube::Client, source: &KubeSource, changed: &Arc<Notify>) -> Stores {
        let all = watcher::Config::default;
        let c = || client.clone();
        let n = || changed.clone();
        // A Node's image list is often most of its size.
        fn trim_node(node: &mut Node) {
            if let Some(status) = node.status.as_mut() {
                status.images = None;
            }
        }
        let mut tasks = Vec::new();
        let index = Arc::new(Mutex::new(ServiceIndex::new(source.lb_class.clone())));
        let ix = index.clone();
        tasks.push(follow(Api::<Service>::all(c()), all(), n(), move |e| {
            lock(&ix).service_event(e)
        }));
        let ix = index.clone();
        tasks.push(follow(
            Api::<EndpointSlice>::all(c()),
            all().labels(SERVICE_NAME_LABEL),
            n(),
            move |e| lock(&ix).slice_event(e),
        ));
        let (nodes, task) = reflect(Api::<Node>::all(c()), (), all(), n(), trim_node);
        tasks.push(task);
        let (config_namespace, api) = match &source.metallb_namespace {
            Some(ns) => (ns.as_str(), ConfigApi::MetalLb),
            None => (source.namespace.as_str(), ConfigApi::FerroLb),
        };
        let own_secrets = (config_namespace != source.namespace).then(|| {
            let (store, task) = reflect(
                Api::<Secret>::namespaced(c(), &source.namespace),
                (),
                all(),
                n(),
                keep,
            );
            tasks.push(task);
            store
        });
        Stores {
            index,
            nodes,
            config: ConfigWatch::start(client, config_namespace, api, changed),
            own_secrets,
            _tasks: AbortOnDrop(tasks),
        }
    }

    /// Only one task may wait on a store (kube-runtime wakes a single waiter): this one. The
    /// index is ready once both its watches have listed (each wakes `changed` then).
    async fn wait_until_ready(&self, changed: &Notify) {
        let own = async {
            if let Some(s) = &self.own_secrets {
                let _ = s.wait_until_ready().await;
            }
        };
        let index = async {
            while !lock(&self.index).ready() {
                changed.notified().await;
            }
        };
        let _ = futures::join!(
            index,
            self.nodes.wait_until_ready(),
            self.config.wait_until_ready(),
            own,
        );
    }

    /// Secrets in the speaker's namespace (membership key).
    fn own_secrets(&self) -> Vec<Secret> {
        match &self.own_secrets {
            Some(store) => objects(store),
            None => self.config.secrets(),
        }
    }
}

impl KubeSource {
    /// Starts the watches and the task that turns them into snapshots.
    pub fn spawn(self, client: kube::Client) -> KubeFeeds {
        let (snapshot_tx, snapshots) = watch::channel(None);
        let (cluster_tx, cluster) = watch::channel(None);
        let (config_tx, config) = watch::channel(ConfigReport::Unknown);
        let changed = Arc::new(Notify::new());
        let stores = Stores::start(&client, &self, &changed);
        tokio::spawn(async move {
            stores.wait_until_ready(&changed).await;
            info!(namespace = %self.namespace, "caches filled");
            // The objects in force: an object that turns invalid keeps this version.
            let mut in_force = Resources::default();
            loop {
                if snapshot_tx.is_closed() && cluster_tx.is_closed() && config_tx.is_closed() {
                    return;
                }
                self.rebuild(
                    &stores,
                    &mut in_force,
                    &snapshot_tx,
                    &cluster_tx,
                    &config_tx,
                );
                settle(&changed, self.quiet, self.max_delay).await;
            }
        });
        KubeFeeds {
            snapshots,
            cluster,
            config,
        }
    }

    fn rebuild(
        &self,
        stores: &Stores,
        in_force: &mut Resources,
        snapshot_tx: &watch::Sender<Option<Arc<Snapshot>>>,
        cluster_tx: &watch::Sender<Option<Arc<ClusterInfo>>>,
        config_tx: &watch::Sender<ConfigReport>,
    ) {
        let nodes = objects(&stores.nodes);
        let config = stores.config.objects();
        let resources = config.resources;
        let info = ClusterInfo {
            node_ips: node_ips(&nodes),
            secrets: stores.own_secrets(),
        };
        let info_secrets = info.secrets.clone();
        cluster_tx.send_if_modified(|old| {
            let changed = old.as_deref() != Some(&info);
            if changed {
                *old = Some(Arc::new(info));
            }
            changed
        });
        let services = lock(&stores.index).views();
        let publish = |snapshot: Snapshot| {
            snapshot_tx.send_if_modified(|old| {
                let changed = old.as_deref() != Some(&snapshot);
                if changed {
                    info!(
                        nodes = snapshot.nodes.len(),
                        services = snapshot.services.len(),
                        "snapshot updated"
                    );
                    *old = Some(Arc::new(snapshot));
                }
                changed
            });
        };
        let assembled = assemble(&resources, in_force, &config.unreadable, services, &nodes);
        *in_force = assembled.in_force;
        let mut snapshot = assembled.snapshot;
        // The membership key lives in the speaker's own namespace, whatever the configuration's.
        snapshot.secrets = info_secrets;
        publish(snapshot);
        let mut problems: Vec<String> = config.problems.iter().map(ToString::to_string).collect();
        problems.extend(assembled.problems);
        let report = if problems.is_empty() {
            ConfigReport::Valid
        } else {
            ConfigReport::Invalid(problems)
        };
        let fresh = config_tx.send_if_modified(|r| replace(r, report.clone()));
        if let (true, ConfigReport::Invalid(problems)) = (fresh, &report) {
            for p in problems {
                warn!(namespace = %self.namespace, "invalid configuration: {p}");
            }
            warn!(
                problems = problems.len(),
                "invalid objects left out or kept at their last valid version; the rest is in force"
            );
        }
    }
}

/// The index, even after a task panicked holding it (a bug): the speaker keeps announcing
/// what it knows rather than stopping.
fn lock(index: &Mutex<ServiceIndex>) -> std::sync::MutexGuard<'_, ServiceIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    if *slot == value {
        return false;
    }
    *slot = value;
    true
}

/// Waits for a change, then until no further change came for `quiet` (at most `max_delay`).
async fn settle(changed: &Notify, quiet: Duration, max_delay: Duration) {
    changed.notified().await;
    let deadline = Instant::now() + max_delay;
    loop {
        let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            return;
        }
        if tokio::time::timeout(wait, changed.notified())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_taken_once_it_is_quiet_or_at_the_latest_after_max_delay() {
        let changed = Arc::new(Notify::new());
        let quiet = Duration::from_millis(30);
        let max = Duration::from_millis(300);

        // One change: taken `quiet` after it.
        changed.notify_one();
        let start = Instant::now();
        settle(&changed, quiet, max).await;
        assert_eq!(start.elapsed(), quiet);

        // A change every 10 ms for a second: taken at max_delay, not at its end.
        let noisy = changed.clone();
        let burst = tokio::spawn(async move {
            for _ in 0..100 {
                noisy.notify_one();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let start = Instant::now();
        settle(&changed, quiet, max).await;
        let waited = start.elapsed();
        assert!(
            waited >= max - Duration::from_millis(1) && waited <= max,
            "{waited:?}"
        );
        burst.abort();
    }
}
