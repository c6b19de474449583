//! A watch into a store, for a component's whole life or until aborted.

use futures::{StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Watches `api` into a store, waking `changed` on every change, in a task (abort it to stop).
/// Managed fields are dropped (nothing reads them) and `trim` drops more of what is large and
/// unused. While the watch fails the store keeps what it had and the watcher retries.
pub fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    config: watcher::Config,
    changed: Arc<Notify>,
    trim: fn(&mut K),
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let kind = K::kind(&dyntype).to_string();
    let writer = Writer::new(dyntype);
    let reader = writer.as_reader();
    let stream = crate::reconnect::watch(api, config)
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            trim(o);
        })
        .reflect(writer)
        .touched_objects();
    let task = tokio::spawn(drive(kind, stream.map_ok(|_| ()), changed));
    (reader, task)
}

/// Watches `api`, handing every event to `sink` (which keeps what it needs of the object, so
/// nothing holds the objects whole) and waking `changed` after it, in a task (abort it to
/// stop). While the watch fails, `sink` hears nothing and the watcher retries; a relist comes
/// as `Init`, the objects, `InitDone`.
pub fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    sink: impl FnMut(watcher::Event<K>) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let stream = crate::reconnect::watch(api, config).map_ok(sink);
    tokio::spawn(drive(kind, stream, changed))
}

/// Runs a watch stream to its end, waking `changed` on every event and logging failures once
/// per outage.
async fn drive(
    kind: String,
    stream: impl futures::Stream<Item = Result<(), watcher::Error>>,
    changed: Arc<Notify>,
) {
    futures::pin_mut!(stream);
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(()) => {
                if std::mem::take(&mut failing) {
                    info!(%kind, "watch restored");
                }
                changed.notify_one();
            }
            Err(e) => {
                if !failing {
                    warn!(%kind, error = %e, "watch failed; keeping the last known objects");
                } else {
                    debug!(%kind, error = %e, "watch still failing");
                }
                failing = true;
            }
        }
    }
}

/// Leaves an object as it is.
pub fn keep<K>(_: &mut K) {}
