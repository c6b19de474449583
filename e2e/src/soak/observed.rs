//! What the cluster holds, as the soak sees it through watches (the same reconnecting watch the
//! components use): every Service's addresses and every ServiceL2Status, with when each
//! changed. Polling would miss an address held for less than its interval, and the old owner
//! of an address answers for its release grace after handing it over: the history of the
//! status objects says which nodes may answer.

use super::checks::Snapshot;
use ferrolb_crds::ServiceL2Status;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A node that stopped owning an address answers for its release grace (2 s): it may answer
/// for this long after its ServiceL2Status is gone.
pub const RELEASE_WINDOW: Duration = Duration::from_secs(3);

#[derive(Default)]
struct State {
    services: BTreeMap<String, Vec<IpAddr>>,
    /// When each address's holders last changed.
    address_changed: BTreeMap<IpAddr, Instant>,
    /// ServiceL2Status by object name: (Service, node).
    statuses: BTreeMap<String, (String, String)>,
    /// Status objects removed, and when (kept for [`RELEASE_WINDOW`]).
    removed: Vec<(Instant, String, String)>,
    /// When each Service's set of announcing nodes last changed.
    owners_changed: BTreeMap<String, Instant>,
    /// How many status objects went or changed (hand-overs, Services deleted).
    statuses_ended: u64,
}

impl State {
    fn owners(&self, service: &str) -> BTreeSet<String> {
        self.statuses
            .values()
            .filter(|(s, _)| s == service)
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn set_service(&mut self, name: String, ips: Vec<IpAddr>, now: Instant) {
        let old = self.services.get(&name).cloned().unwrap_or_default();
        if old != ips {
            for ip in old.iter().chain(&ips) {
                self.address_changed.insert(*ip, now);
            }
        }
        if ips.is_empty() {
            self.services.remove(&name);
        } else {
            self.services.insert(name, ips);
        }
    }

    fn set_status(&mut self, name: String, value: Option<(String, String)>, now: Instant) {
        let old = match &value {
            Some(v) => self.statuses.insert(name, v.clone()),
            None => self.statuses.remove(&name),
        };
        if old == value {
            return;
        }
        for (service, _) in old.iter().chain(&value) {
            self.owners_changed.insert(service.clone(), now);
        }
        if let Some((service, node)) = old {
            self.statuses_ended += 1;
            self.removed.push((now, service, node));
        }
        self.removed
            .retain(|(at, _, _)| now.duration_since(*at) < RELEASE_WINDOW * 2);
    }
}

pub struct Observed {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
}

fn addresses(s: &Service) -> Vec<IpAddr> {
    crate::emulator::harness::ingress_ips(s)
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Follows `api` through the reconnecting watch (as the components do): every object seen goes
/// to `apply` (`None`: deleted), and the end of a relist deletes what it did not list (`listed`
/// names what the state holds).
fn follow<K>(
    api: Api<K>,
    state: Arc<Mutex<State>>,
    apply: fn(&mut State, String, Option<&K>, Instant),
    listed: fn(&State) -> Vec<String>,
) -> JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(ferrolb_kube::reconnect::watch(
            api,
            watcher::Config::default()
        ));
        let mut relisting: Option<BTreeSet<String>> = None;
        while let Some(e) = events.next().await {
            let now = Instant::now();
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            match e {
                Ok(watcher::Event::Init) => relisting = Some(BTreeSet::new()),
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                    let name = o.meta().name.clone().unwrap_or_default();
                    if let Some(seen) = relisting.as_mut() {
                        seen.insert(name.clone());
                    }
                    apply(&mut st, name, Some(&o), now);
                }
                Ok(watcher::Event::Delete(o)) => {
                    apply(
                        &mut st,
                        o.meta().name.clone().unwrap_or_default(),
                        None,
                        now,
                    );
                }
                Ok(watcher::Event::InitDone) => {
                    let seen = relisting.take().unwrap_or_default();
                    for name in listed(&st) {
                        if !seen.contains(&name) {
                            apply(&mut st, name, None, now);
                        }
                    }
                }
                Err(_) => {}
            }
        }
    })
}

impl Observed {
    /// Watches the Services of `apps` and the ServiceL2Status objects of `system`.
    pub fn start(client: &kube::Client, apps: &str, system: &str) -> Observed {
        let state: Arc<Mutex<State>> = Arc::default();
        let services = follow::<Service>(
            Api::namespaced(client.clone(), apps),
            state.clone(),
            |st, name, s, now| st.set_service(name, s.map(addresses).unwrap_or_default(), now),
            |st| st.services.keys().cloned().collect(),
        );
        let statuses = follow::<ServiceL2Status>(
            Api::namespaced(client.clone(), system),
            state.clone(),
            |st, name, o, now| {
                let read = o.and_then(|o| {
                    let status = o.status.as_ref()?;
                    Some((status.service_name.clone()?, status.node.clone()?))
                });
                st.set_status(name, read, now);
            },
            |st| st.statuses.keys().cloned().collect(),
        );
        Observed {
            state,
            tasks: vec![services, statuses],
        }
    }

    /// What is held and announced now, with the recent history the checks need.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut may_answer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (service, node) in st.statuses.values() {
            may_answer
                .entry(service.clone())
                .or_default()
                .insert(node.clone());
        }
        for (at, service, node) in &st.removed {
            if now.duration_since(*at) < RELEASE_WINDOW {
                may_answer
                    .entry(service.clone())
                    .or_default()
                    .insert(node.clone());
            }
        }
        let settled_owner: BTreeMap<String, String> = st
            .services
            .keys()
            .filter_map(|s| {
                let owners = st.owners(s);
                let since = st.owners_changed.get(s)?;
                (owners.len() == 1 && now.duration_since(*since) >= RELEASE_WINDOW)
                    .then(|| (s.clone(), owners.into_iter().next().unwrap_or_default()))
            })
            .collect();
        Snapshot {
            services: st.services.clone(),
            l2_statuses: st.statuses.values().cloned().collect(),
            address_changed: st.address_changed.clone(),
            may_answer,
            settled_owner,
            statuses_ended: st.statuses_ended,
        }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
