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
    /// Seen during a relist (replaces the old set at its end).
    relisting_services: Option<BTreeSet<String>>,
    relisting_statuses: Option<BTreeSet<String>>,
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
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| {
            i.iter()
                .filter_map(|i| i.ip.as_ref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Observed {
    /// Watches the Services of `apps` and the ServiceL2Status objects of `system`.
    pub fn start(client: &kube::Client, apps: &str, system: &str) -> Observed {
        let state: Arc<Mutex<State>> = Arc::default();
        let services: Api<Service> = Api::namespaced(client.clone(), apps);
        let statuses: Api<ServiceL2Status> = Api::namespaced(client.clone(), system);
        let s1 = state.clone();
        let t1 = tokio::spawn(async move {
            let mut events = std::pin::pin!(ferrolb_kube::reconnect::watch(
                services,
                watcher::Config::default()
            ));
            while let Some(e) = events.next().await {
                let now = Instant::now();
                let mut st = s1.lock().unwrap_or_else(|p| p.into_inner());
                match e {
                    Ok(watcher::Event::Init) => st.relisting_services = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(s)) | Ok(watcher::Event::Apply(s)) => {
                        let name = s.metadata.name.clone().unwrap_or_default();
                        if let Some(seen) = st.relisting_services.as_mut() {
                            seen.insert(name.clone());
                        }
                        st.set_service(name, addresses(&s), now);
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        st.set_service(s.metadata.name.unwrap_or_default(), vec![], now);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = st.relisting_services.take().unwrap_or_default();
                        let gone: Vec<String> = st
                            .services
                            .keys()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect();
                        for name in gone {
                            st.set_service(name, vec![], now);
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        let s2 = state.clone();
        let t2 = tokio::spawn(async move {
            let mut events = std::pin::pin!(ferrolb_kube::reconnect::watch(
                statuses,
                watcher::Config::default()
            ));
            let read = |o: &ServiceL2Status| {
                let st = o.status.as_ref()?;
                Some((st.service_name.clone()?, st.node.clone()?))
            };
            while let Some(e) = events.next().await {
                let now = Instant::now();
                let mut st = s2.lock().unwrap_or_else(|p| p.into_inner());
                match e {
                    Ok(watcher::Event::Init) => st.relisting_statuses = Some(BTreeSet::new()),
                    Ok(watcher::Event::InitApply(o)) | Ok(watcher::Event::Apply(o)) => {
                        let name = o.metadata.name.clone().unwrap_or_default();
                        if let Some(seen) = st.relisting_statuses.as_mut() {
                            seen.insert(name.clone());
                        }
                        st.set_status(name, read(&o), now);
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        st.set_status(o.metadata.name.unwrap_or_default(), None, now);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = st.relisting_statuses.take().unwrap_or_default();
                        let gone: Vec<String> = st
                            .statuses
                            .keys()
                            .filter(|n| !seen.contains(*n))
                            .cloned()
                            .collect();
                        for name in gone {
                            st.set_status(name, None, now);
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        Observed {
            state,
            tasks: vec![t1, t2],
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
