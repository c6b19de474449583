//! Services and EndpointSlices as the planner reads them, kept up to date one watch event at a
//! time (kube mode).
//!
//! A reflector store holds every object whole, and rebuilding the views from it on every change
//! meant copying 10,000 Services and EndpointSlices for each: most of a change's CPU, and two
//! copies of everything in memory (measured, docs/benchmarks.md). Here each event is reduced at
//! once to the few fields the views need ([`ServiceFacts`], [`SliceFacts`]), and only the views
//! of the Services it touches are built again; the others are shared ([`Arc`]) with the
//! previous snapshot. Pure: the watch tasks feed it kube-runtime's watcher events, the source
//! reads it.

use crate::source::is_served;
use crate::view::{view_of, ServiceFacts, ServiceView, SliceFacts};
use ferrolb_config::service::status_ips;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// The served Services and their EndpointSlices, reduced, with each Service's view.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    lb_class: Option<String>,
    /// Served Services by `namespace/name`.
    services: BTreeMap<String, ServiceFacts>,
    /// EndpointSlices by `namespace/name` (of the slice).
    slices: HashMap<String, SliceFacts>,
    /// Each Service's slices (keys of `slices`), whether or not the Service is known yet.
    slices_of: HashMap<String, BTreeSet<String>>,
    /// The view of every served Service, in key order; `dirty` ones are built again.
    views: BTreeMap<String, Arc<ServiceView>>,
    dirty: BTreeSet<String>,
    /// A list in progress, per kind: what it brought (`None`: an object that is not ours),
    /// taken as a whole when it is done, as a reflector store swaps its contents, so that no
    /// snapshot mixes the old list with part of the new.
    listing_services: Option<HashMap<String, Option<ServiceFacts>>>,
    listing_slices: Option<HashMap<String, Option<SliceFacts>>>,
    /// Whether each kind's first list is done.
    services_listed: bool,
    slices_listed: bool,
}

/// What a finished list means for objects kept under `known` keys: those it did not bring are
/// gone (`None`), then everything it brought.
fn list_outcome<'k, F>(
    known: impl Iterator<Item = &'k String>,
    listed: HashMap<String, Option<F>>,
) -> Vec<(String, Option<F>)> {
    let mut out: Vec<(String, Option<F>)> = known
        .filter(|k| !listed.contains_key(*k))
        .map(|k| (k.clone(), None))
        .collect();
    out.extend(listed);
    out
}

fn key_of<K: ResourceExt>(o: &K) -> String {
    format!(
        "{}/{}",
        o.namespace().unwrap_or_else(|| "default".into()),
        o.name_any()
    )
}

impl ServiceIndex {
    /// An index of the Services of `lb_class` (`None`: those without a class).
    pub fn new(lb_class: Option<String>) -> ServiceIndex {
        ServiceIndex {
            lb_class,
            ..ServiceIndex::default()
        }
    }

    /// Whether both kinds have been listed once.
    pub fn ready(&self) -> bool {
        self.services_listed && self.slices_listed
    }

    pub fn service_event(&mut self, event: Event<Service>) {
        match event {
            Event::Apply(svc) => {
                let facts = self.service_facts(&svc);
                self.set_service(key_of(&svc), facts);
            }
            Event::Delete(svc) => self.set_service(key_of(&svc), None),
            Event::Init => self.listing_services = Some(HashMap::new()),
            Event::InitApply(svc) => {
                let facts = self.service_facts(&svc);
                match &mut self.listing_services {
                    Some(listed) => {
                        listed.insert(key_of(&svc), facts);
                    }
                    None => self.set_service(key_of(&svc), facts),
                }
            }
            Event::InitDone => {
                if let Some(listed) = self.listing_services.take() {
                    for (key, facts) in list_outcome(self.services.keys(), listed) {
                        self.set_service(key, facts);
                    }
                }
                self.services_listed = true;
            }
        }
    }

    pub fn slice_event(&mut self, event: Event<EndpointSlice>) {
        match event {
            Event::Apply(slice) => self.set_slice(key_of(&slice), SliceFacts::of(&slice)),
            Event::Delete(slice) => self.set_slice(key_of(&slice), None),
            Event::Init => self.listing_slices = Some(HashMap::new()),
            Event::InitApply(slice) => {
                let facts = SliceFacts::of(&slice);
                match &mut self.listing_slices {
                    Some(listed) => {
                        listed.insert(key_of(&slice), facts);
                    }
                    None => self.set_slice(key_of(&slice), facts),
                }
            }
            Event::InitDone => {
                if let Some(listed) = self.listing_slices.take() {
                    for (key, facts) in list_outcome(self.slices.keys(), listed) {
                        self.set_slice(key, facts);
                    }
                }
                self.slices_listed = true;
            }
        }
    }

    /// What the index keeps of `svc`; `None` if it is not served here (another type or class,
    /// or changed to one).
    fn service_facts(&self, svc: &Service) -> Option<ServiceFacts> {
        // Only the addresses the controller gave it: a request it refused is not announced.
        is_served(svc, self.lb_class.as_deref()).then(|| ServiceFacts::of(svc, status_ips(svc)))
    }

    fn set_service(&mut self, key: String, facts: Option<ServiceFacts>) {
        match facts {
            Some(facts) => {
                if self.services.get(&key) != Some(&facts) {
                    self.services.insert(key.clone(), facts);
                    self.dirty.insert(key);
                }
            }
            None => {
                if self.services.remove(&key).is_some() {
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// `facts` `None`: the slice is gone, or no longer names a Service.
    fn set_slice(&mut self, key: String, facts: Option<SliceFacts>) {
        if self.slices.get(&key) == facts.as_ref() {
            return;
        }
        if let Some(old) = self.slices.remove(&key) {
            if let Some(set) = self.slices_of.get_mut(&old.service) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(&old.service);
                }
            }
            self.dirty.insert(old.service);
        }
        if let Some(facts) = facts {
            self.dirty.insert(facts.service.clone());
            self.slices_of
                .entry(facts.service.clone())
                .or_default()
                .insert(key.clone());
            self.slices.insert(key, facts);
        }
    }

    /// Every served Service's view, in key order; only those changed since the last call are
    /// built again.
    pub fn views(&mut self) -> Vec<Arc<ServiceView>> {
        for key in std::mem::take(&mut self.dirty) {
            let Some(facts) = self.services.get(&key) else {
                self.views.remove(&key);
                continue;
            };
            let slices: Vec<&SliceFacts> = self
                .slices_of
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|s| self.slices.get(s))
                .collect();
            let view = view_of(facts, &slices, true);
            self.views.insert(key, Arc::new(view));
        }
        self.views.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{service_views, Serving};
    use serde_json::json;

    fn service(name: &str, ip: Option<&str>, class: Option<&str>) -> Service {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "apps", "labels": {"tier": "web"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
        });
        if let Some(c) = class {
            v["spec"]["loadBalancerClass"] = json!(c);
        }
        if let Some(ip) = ip {
            v["status"] = json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        serde_json::from_value(v).unwrap()
    }

    fn slice(name: &str, service: &str, nodes: &[(&str, bool)]) -> EndpointSlice {
        let endpoints: Vec<_> = nodes
            .iter()
            .map(|(n, terminating)| {
                json!({"addresses": ["198.51.100.1"], "nodeName": n,
                       "conditions": {"serving": true, "terminating": terminating}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
        .unwrap()
    }

    fn nodes(v: &ServiceView) -> Vec<String> {
        match &v.serving {
            Serving::On(n) => n.iter().cloned().collect(),
            Serving::Everywhere => vec!["*".into()],
        }
    }

    #[test]
    fn views_follow_events_and_equal_views_built_from_whole_objects() {
        let mut ix = ServiceIndex::new(None);
        let (a, b) = (
            service("a", Some("192.0.2.1"), None),
            service("b", Some("192.0.2.2"), None),
        );
        let (sa1, sa2, sb) = (
            slice("a-1", "a", &[("n1", false), ("n2", true)]),
            slice("a-2", "a", &[("n2", false)]),
            slice("b-1", "b", &[("n3", false)]),
        );
        ix.service_event(Event::Init);
        for s in [&a, &b] {
            ix.service_event(Event::InitApply(s.clone()));
        }
        ix.service_event(Event::InitDone);
        assert!(!ix.ready(), "slices not listed yet");
        ix.slice_event(Event::Init);
        for s in [&sa1, &sa2, &sb] {
            ix.slice_event(Event::InitApply(s.clone()));
        }
        ix.slice_event(Event::InitDone);
        assert!(ix.ready());
        let whole = service_views(
            &[a.clone(), b.clone()],
            &[sa1.clone(), sa2.clone(), sb.clone()],
            true,
        );
        let got: Vec<ServiceView> = ix.views().iter().map(|v| (**v).clone()).collect();
        assert_eq!(got, whole);

        // One slice changes: only its Service's view is new, the other is shared.
        let before = ix.views();
        ix.slice_event(Event::Apply(slice("a-2", "a", &[("n4", false)])));
        let after = ix.views();
        assert!(!Arc::ptr_eq(&before[0], &after[0]));
        assert!(Arc::ptr_eq(&before[1], &after[1]));
        assert_eq!(nodes(&after[0]), ["n1", "n2", "n4"]);

        // A slice deleted, then its Service.
        ix.slice_event(Event::Delete(sa1.clone()));
        assert_eq!(nodes(&ix.views()[0]), ["n4"]);
        ix.service_event(Event::Delete(a.clone()));
        let left = ix.views();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, "apps/b");
    }

    #[test]
    fn a_relist_is_taken_whole_and_forgets_what_it_does_not_bring_again() {
        let mut ix = ServiceIndex::new(None);
        ix.service_event(Event::Apply(service("a", Some("192.0.2.1"), None)));
        ix.service_event(Event::Apply(service("b", Some("192.0.2.2"), None)));
        ix.slice_event(Event::Apply(slice("a-1", "a", &[("n1", false)])));
        ix.slice_event(Event::Apply(slice("b-1", "b", &[("n1", false)])));
        // While the list runs, the old objects stay as they were (the API server may be slow
        // to answer): nothing of the new list shows before it is whole.
        ix.service_event(Event::Init);
        ix.service_event(Event::InitApply(service("b", Some("192.0.2.2"), None)));
        ix.service_event(Event::InitApply(service("c", Some("192.0.2.3"), None)));
        let keys = |ix: &mut ServiceIndex| -> Vec<String> {
            ix.views().iter().map(|v| v.key.clone()).collect()
        };
        assert_eq!(keys(&mut ix), ["apps/a", "apps/b"]);
        ix.service_event(Event::InitDone);
        assert_eq!(keys(&mut ix), ["apps/b", "apps/c"]);
        ix.slice_event(Event::Init);
        ix.slice_event(Event::InitApply(slice("c-1", "c", &[("n2", false)])));
        assert_eq!(
            nodes(&ix.views()[0]),
            ["n1"],
            "b's slice stays until the list is done"
        );
        ix.slice_event(Event::InitDone);
        let v = ix.views();
        assert_eq!(
            v[0].serving,
            Serving::On(Default::default()),
            "b's slice is gone"
        );
        assert_eq!(nodes(&v[1]), ["n2"]);
    }

    #[test]
    fn only_served_services_with_an_address_in_their_status_count() {
        let mut ix = ServiceIndex::new(Some("ours".into()));
        ix.service_event(Event::Apply(service("other", Some("192.0.2.1"), None)));
        ix.service_event(Event::Apply(service("a", Some("192.0.2.2"), Some("ours"))));
        assert_eq!(ix.views().len(), 1);
        // Its class changed: no longer ours.
        ix.service_event(Event::Apply(service(
            "a",
            Some("192.0.2.2"),
            Some("theirs"),
        )));
        assert!(ix.views().is_empty());
        // A request without an address in the status (the controller refused it, or has not
        // answered yet) is not announced.
        let mut requested = service("r", None, Some("ours"));
        requested.metadata.annotations = Some(
            [(
                "metallb.io/loadBalancerIPs".to_string(),
                "192.0.2.9".to_string(),
            )]
            .into(),
        );
        ix.service_event(Event::Apply(requested));
        let v = ix.views();
        assert_eq!(v.len(), 1);
        assert!(v[0].ips.is_empty());
    }

    #[test]
    fn a_slice_moved_to_another_service_leaves_the_first() {
        let mut ix = ServiceIndex::new(None);
        ix.service_event(Event::Apply(service("a", Some("192.0.2.1"), None)));
        ix.service_event(Event::Apply(service("b", Some("192.0.2.2"), None)));
        ix.slice_event(Event::Apply(slice("x", "a", &[("n1", false)])));
        ix.slice_event(Event::Apply(slice("x", "b", &[("n2", false)])));
        let v = ix.views();
        assert_eq!(nodes(&v[0]), Vec::<String>::new());
        assert_eq!(nodes(&v[1]), ["n2"]);
    }
}
