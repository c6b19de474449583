//! The thin side of [`super`]: applies the desired status objects, deletes those this node no
//! longer wants, publishes takeover Events and the ConfigurationState. Runs as its own task
//! fed by `watch` channels, so the data plane never waits for it: changes are coalesced
//! (only the latest state is written), and while the API server is unreachable it retries with
//! backoff and catches up with whatever is current when it comes back.

use super::{
    configuration_state_name, configuration_status, dead_objects, desired, label_value,
    owned_projection, projection, same_projection, takeovers, Announced, OwnedProjection, Protocol,
    StatusObject, Takeover, FIELD_MANAGER, NODE_LABEL, REPORTER, TAKEOVER_REASON,
};
use crate::source::ConfigReport;
use ferrolb_crds::{ConfigurationState, ServiceBGPStatus, ServiceL2Status};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Takeover Events kept while the API server is unreachable; older ones are dropped.
const MAX_PENDING_EVENTS: usize = 64;
/// How often this node's status objects are listed again, to repair what others changed or
/// deleted (only objects that differ are written).
const RESYNC: Duration = Duration::from_secs(300);
/// How often the sweeper lists every ServiceL2Status, besides when the live set changes.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A failed sweep is tried again after this long.
const SWEEP_RETRY: Duration = Duration::from_secs(5);

/// The Pod the status objects belong to, so that deleting the Pod (e.g. its node is gone for
/// good) deletes them through garbage collection.
#[derive(Clone, Debug)]
pub struct PodOwner {
    pub name: String,
    pub uid: String,
}

/// Settings of the status writer.
#[derive(Clone, Debug)]
pub struct StatusWriter {
    /// Where the status objects and the ConfigurationState live.
    pub namespace: String,
    pub node: String,
    /// Writes wait this long after a change, so a burst is written once.
    pub coalesce: Duration,
    pub owner: Option<PodOwner>,
}

/// What the cluster holds, as written or listed: `None` content means an object of ours that
/// does not read as one (to rewrite or delete).
type Written = BTreeMap<(Protocol, String), Option<StatusObject>>;

struct State {
    /// `None` until listed, and again when a resync is due.
    written: Option<Written>,
    listed_at: tokio::time::Instant,
    config_written: Option<ConfigReport>,
    last: Announced,
    pending_events: Vec<Takeover>,
    /// The live set of the last update (a larger one lists this node's objects again).
    listed_live: BTreeSet<String>,
    /// Sweeping: when each node out of the live set was first seen out (since `epoch`).
    absent_since: BTreeMap<String, Duration>,
    epoch: tokio::time::Instant,
    /// When to sweep next (only while this node sweeps).
    sweep_at: Option<tokio::time::Instant>,
    /// What the objects said after the last complete write (since the last list).
    synced: Option<OwnedProjection>,
}

/// Objects listed per page: a node announcing thousands of Services has thousands of status
/// objects, and one list of them all was the speaker's largest allocation after a restart.
const LIST_PAGE: u32 = 500;

/// Lists `api`'s objects a page at a time, handing each to `f`.
async fn for_each_listed<K>(
    api: &Api<K>,
    params: &ListParams,
    mut f: impl FnMut(K),
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone().limit(LIST_PAGE);
    loop {
        let page = api.list(&params).await?;
        let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
        page.items.into_iter().for_each(&mut f);
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

impl StatusWriter {
    pub fn new(namespace: &str, node: &str) -> StatusWriter {
        StatusWriter {
            namespace: namespace.into(),
            node: node.into(),
            coalesce: Duration::from_millis(100),
            owner: None,
        }
    }

    /// Runs until `announced`'s sender is gone, then writes the last state it sent (the run
    /// loop sends an empty one when it stops) and ends.
    pub fn spawn(
        self,
        client: kube::Client,
        mut announced: watch::Receiver<Announced>,
        mut config: watch::Receiver<ConfigReport>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let recorder = Recorder::new(
                client.clone(),
                Reporter {
                    controller: REPORTER.into(),
                    instance: Some(self.node.clone()),
                },
            );
            let mut state = State {
                written: None,
                listed_at: tokio::time::Instant::now(),
                config_written: None,
                last: Announced::default(),
                pending_events: Vec::new(),
                listed_live: BTreeSet::new(),
                absent_since: BTreeMap::new(),
                epoch: tokio::time::Instant::now(),
                sweep_at: None,
                synced: None,
            };
            let mut backoff = Duration::from_millis(200);
            let mut config_open = true;
            loop {
                if state.listed_at.elapsed() >= RESYNC {
                    state.written = None;
                }
                let now = announced.borrow_and_update().clone();
                let report = config.borrow_and_update().clone();
                state.pending_events.extend(takeovers(&state.last, &now));
                let excess = state
                    .pending_events
                    .len()
                    .saturating_sub(MAX_PENDING_EVENTS);
                state.pending_events.drain(..excess);
                state.last = now;
                if state.last.live != state.listed_live {
                    // Speakers came back: this node may have been cut off from them and
                    // declared dead meanwhile, its objects swept. List them again and rewrite
                    // what is missing. (A death alone needs no list: every speaker at once
                    // would send one for nothing.)
                    if !state.last.live.is_subset(&state.listed_live) {
                        state.written = None;
                    }
                    state.listed_live = state.last.live.clone();
                    if state.last.sweeps {
                        state.sweep_at = Some(tokio::time::Instant::now());
                    }
                }
                if !state.last.sweeps {
                    state.sweep_at = None;
                    state.absent_since.clear();
                } else if state.sweep_at.is_none() {
                    state.sweep_at = Some(tokio::time::Instant::now());
                }
                // A node back in the live set starts afresh if it leaves again: its absence
                // is counted from then, not from the first time.
                let live = live_labels(&state.last.live);
                state.absent_since.retain(|n, _| !live.contains(n));
                let ok = self.sync(&client, &recorder, &mut state, &report).await;
                let announced_open = announced.has_changed().is_ok();
                if !announced_open && ok {
                    debug!("status writer done");
                    return;
                }
                if ok {
                    backoff = Duration::from_millis(200);
                    tokio::select! {
                        // Closed: fall through to one last sync of the final state.
                        _ = announced.changed() => {}
                        r = config.changed(), if config_open => config_open = r.is_ok(),
                        _ = tokio::time::sleep(RESYNC) => {}
                        _ = crate::wait::sleep_until_opt(state.sweep_at) => {}
                    }
                    tokio::time::sleep(self.coalesce).await;
                } else {
                    tokio::time::sleep(backoff).await;
                    // As the watches do: back within a second of the API server.
                    backoff = (backoff * 2).min(ferrolb_kube::reconnect::MAX_DELAY);
                    if !announced_open {
                        // Stopping and the API server does not answer: give up.
                        return;
                    }
                }
            }
        })
    }

    /// Brings the cluster in line with `state.last` and `report`; false if anything failed
    /// (it is retried as a whole; applies are idempotent).
    async fn sync(
        &self,
        client: &kube::Client,
        recorder: &Recorder,
        state: &mut State,
        report: &ConfigReport,
    ) -> bool {
        let mut ok = true;
        if let Err(e) = self.sync_objects(client, state).await {
            warn!(error = %e, "cannot write the status objects; retrying");
            ok = false;
        }
        if state
            .sweep_at
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            // Its own retry: a failing sweep must not hold up this node's own writes.
            if let Err(e) = self.sweep(client, state).await {
                warn!(error = %e, "cannot sweep the status objects of dead speakers; retrying in 5 s");
                state.sweep_at = Some(tokio::time::Instant::now() + SWEEP_RETRY);
            }
        }
        while let Some(t) = state.pending_events.first() {
            let reference = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(t.service_name.clone()),
                namespace: Some(t.service_namespace.clone()),
                ..Default::default()
            };
            let event = Event {
                type_: EventType::Normal,
                reason: TAKEOVER_REASON.into(),
                note: Some(t.note(&self.node)),
                action: "Announce".into(),
                secondary: None,
            };
            match recorder.publish(&event, &reference).await {
                Ok(()) => {
                    state.pending_events.remove(0);
                }
                Err(e) => {
                    warn!(service = %format!("{}/{}", t.service_namespace, t.service_name), error = %e, "cannot publish the takeover Event; retrying");
                    ok = false;
                    break;
                }
            }
        }
        if state.config_written.as_ref() != Some(report) {
            match self.write_configuration_state(client, report).await {
                Ok(()) => state.config_written = Some(report.clone()),
                Err(e) => {
                    warn!(error = %e, "cannot write the ConfigurationState; retrying");
                    ok = false;
                }
            }
        }
        ok
    }

    fn params() -> PatchParams {
        PatchParams::apply(FIELD_MANAGER).force()
    }

    async fn sync_objects(
        &self,
        client: &kube::Client,
        state: &mut State,
    ) -> Result<(), kube::Error> {
        let l2: Api<ServiceL2Status> = Api::namespaced(client.clone(), &self.namespace);
        let bgp: Api<ServiceBGPStatus> = Api::namespaced(client.clone(), &self.namespace);
        let now = projection(&state.last);
        if state.written.is_some()
            && state
                .synced
                .as_ref()
                .is_some_and(|kept| same_projection(kept, &now))
        {
            // Nothing this node's objects say changed (a plan about addresses it does not
            // own): no objects to build.
            return Ok(());
        }
        if state.written.is_none() {
            // Objects left by an earlier run of this node's speaker: ours to update or delete.
            let mine =
                ListParams::default().labels(&format!("{NODE_LABEL}={}", label_value(&self.node)));
            let mut found = Written::new();
            for_each_listed(&l2, &mine, |o| {
                let read = listed(
                    Protocol::Layer2,
                    &o.metadata,
                    o.status.as_ref().map(|s| {
                        let items = s.interfaces.iter().map(|i| i.name.clone()).collect();
                        (&s.node, &s.service_namespace, &s.service_name, items)
                    }),
                );
                found.insert(
                    (
                        Protocol::Layer2,
                        o.metadata.name.clone().unwrap_or_default(),
                    ),
                    read,
                );
            })
            .await?;
            for_each_listed(&bgp, &mine, |o| {
                let read = listed(
                    Protocol::Bgp,
                    &o.metadata,
                    o.status.as_ref().map(|s| {
                        (
                            &s.node,
                            &s.service_namespace,
                            &s.service_name,
                            s.peers.clone(),
                        )
                    }),
                );
                found.insert(
                    (Protocol::Bgp, o.metadata.name.clone().unwrap_or_default()),
                    read,
                );
            })
            .await?;
            state.written = Some(found);
            state.listed_at = tokio::time::Instant::now();
        }
        let written = state.written.as_mut().expect("listed above");
        let want = desired(&self.node, &state.last);
        state.synced = None;
        for (name, object) in &want {
            let key = (object.protocol, name.clone());
            if written
                .get(&key)
                .is_some_and(|w| w.as_ref() == Some(object))
            {
                continue;
            }
            let mut body = object.object();
            if let Some(owner) = &self.owner {
                body["metadata"]["ownerReferences"] = json!([{
                    "apiVersion": "v1", "kind": "Pod", "name": owner.name, "uid": owner.uid,
                }]);
            }
            let status = object.status();
            match object.protocol {
                Protocol::Layer2 => apply(&l2, name, &body, &status).await?,
                Protocol::Bgp => apply(&bgp, name, &body, &status).await?,
            }
            info!(name = %name, service = %format!("{}/{}", object.service_namespace, object.service_name), items = ?object.items, "status written");
            written.insert(key, Some(object.clone()));
        }
        let stale: Vec<(Protocol, String)> = written
            .keys()
            .filter(|(p, n)| want.get(n).is_none_or(|o| o.protocol != *p))
            .cloned()
            .collect();
        for key in stale {
            let name = &key.1;
            let result = match key.0 {
                Protocol::Bgp => bgp.delete(name, &DeleteParams::default()).await.map(drop),
                Protocol::Layer2 => l2.delete(name, &DeleteParams::default()).await.map(drop),
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            info!(name = %name, "status deleted");
            written.remove(&key);
        }
        state.synced = Some(owned_projection(&now));
        Ok(())
    }

    /// Deletes the ServiceL2Status objects of speakers out of the live set for
    /// [`super::DEAD_FOR`] (this node sweeps: [`super::sweeper`]). Objects are matched by
    /// their node label, so one whose status was never written (its speaker killed between
    /// the two writes) goes too; each delete is conditional on the object as listed, so one
    /// its speaker rewrote meanwhile (back) stays.
    async fn sweep(&self, client: &kube::Client, state: &mut State) -> Result<(), kube::Error> {
        let l2: Api<ServiceL2Status> = Api::namespaced(client.clone(), &self.namespace);
        let mut versions: BTreeMap<String, Preconditions> = BTreeMap::new();
        let mut listed: Vec<(String, String)> = Vec::new();
        for_each_listed(&l2, &ListParams::default(), |o| {
            let (Some(name), Some(owner)) = (
                o.metadata.name.clone(),
                o.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(NODE_LABEL))
                    .cloned(),
            ) else {
                return;
            };
            versions.insert(
                name.clone(),
                Preconditions {
                    uid: o.metadata.uid.clone(),
                    resource_version: o.metadata.resource_version.clone(),
                },
            );
            listed.push((name, owner));
        })
        .await?;
        let now = state.epoch.elapsed();
        let me = label_value(&self.node);
        let live = live_labels(&state.last.live);
        for (_, owner) in &listed {
            if !live.contains(owner) && *owner != me {
                state.absent_since.entry(owner.clone()).or_insert(now);
            }
        }
        let (dead, again) = dead_objects(&me, &live, &listed, &state.absent_since, now);
        for name in dead {
            let params = DeleteParams {
                preconditions: versions.remove(&name),
                ..DeleteParams::default()
            };
            match l2.delete(&name, &params).await {
                Ok(_) => info!(name = %name, "status of a speaker declared dead deleted"),
                // Gone already, or rewritten since the list (its speaker is back).
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        // Forget nodes that have no object left.
        state
            .absent_since
            .retain(|n, _| listed.iter().any(|(_, owner)| owner == n));
        let next = again.map_or(SWEEP_EVERY, |a| a.saturating_sub(now).min(SWEEP_EVERY));
        state.sweep_at = Some(tokio::time::Instant::now() + next);
        Ok(())
    }

    async fn write_configuration_state(
        &self,
        client: &kube::Client,
        report: &ConfigReport,
    ) -> Result<(), kube::Error> {
        let Some(status) = configuration_status(report) else {
            return Ok(());
        };
        let api: Api<ConfigurationState> = Api::namespaced(client.clone(), &self.namespace);
        let name = configuration_state_name(&self.node);
        let body = json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "ConfigurationState",
            "metadata": {"name": name},
            "spec": {},
        });
        let status = json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "ConfigurationState",
            "metadata": {"name": name},
            "status": status,
        });
        apply(&api, &name, &body, &status).await?;
        info!(name = %name, result = %status["status"]["result"], "ConfigurationState written");
        Ok(())
    }
}

/// The node label values of the live speakers (what the status objects carry).
fn live_labels(live: &BTreeSet<String>) -> BTreeSet<String> {
    live.iter().map(|n| label_value(n)).collect()
}

/// A listed object's status fields: node, Service namespace and name, interfaces or peers.
type ReadStatus<'a> = (
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    Vec<String>,
);

/// A listed status object as [`StatusObject`], if it reads as one.
fn listed(
    protocol: super::Protocol,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    status: Option<ReadStatus<'_>>,
) -> Option<StatusObject> {
    let (node, namespace, name, mut items) = status?;
    items.sort();
    let object = StatusObject {
        protocol,
        name: meta.name.clone()?,
        node: node.clone()?,
        service_namespace: namespace.clone()?,
        service_name: name.clone()?,
        items,
    };
    // Labels removed or changed by hand: rewrite.
    let labels_intact = object
        .labels()
        .iter()
        .all(|(k, v)| meta.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    labels_intact.then_some(object)
}

/// Server-side applies the object, then its status (a custom resource's status is dropped on
/// create and written only through the subresource).
async fn apply<K>(api: &Api<K>, name: &str, body: &Value, status: &Value) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = StatusWriter::params();
    api.patch(name, &params, &Patch::Apply(body)).await?;
    api.patch_status(name, &params, &Patch::Apply(status))
        .await?;
    Ok(())
}
