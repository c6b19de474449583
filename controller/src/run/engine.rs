//! The controller's decisions, without I/O: the allocator plus what the live controller must
//! remember around it (which Service object holds what, which Services wait for an address, the
//! last valid configuration). Every method that frees addresses retries the waiting Services
//! itself, in one deterministic order (oldest first, ties by namespace/name), so the outcome never
//! depends on the order in which reconciles happen to run.

use crate::allocator::ServiceKey;
use crate::allocator::{self, AllocError, Allocator, Assignment, PoolCounts, ServiceInfo};
use ferrolb_config::model::Labels;
use ferrolb_config::Config;
use std::collections::{BTreeMap, BTreeSet};

/// One Service this controller serves.
#[derive(Clone, Debug)]
struct Tracked {
    /// The object's uid: a Service deleted and created again under the same name is another one.
    uid: String,
    info: ServiceInfo,
}

/// What happened to one Service, and which other Services got addresses as a consequence (their
/// status must be written too).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub result: Result<Assignment, AllocError>,
    pub retried: Vec<ServiceKey>,
}

/// The allocator and its bookkeeping. See the module documentation.
#[derive(Clone, Debug)]
pub struct Engine {
    alloc: Allocator,
    config: Config,
    namespaces: BTreeMap<String, Labels>,
    services: BTreeMap<ServiceKey, Tracked>,
    /// Services without addresses, in the order they are retried: (creation time, key).
    pending: BTreeSet<(String, ServiceKey)>,
}

fn order(info: &ServiceInfo) -> (String, ServiceKey) {
    (info.created.clone(), info.key.clone())
}

impl Engine {
    /// The state after a start or a leader takeover: every Service first keeps the addresses in
    /// its status if it still may (in key order), then the others are served oldest first. This
    /// is what makes a restart change nothing.
    pub fn load(
        config: Config,
        namespaces: BTreeMap<String, Labels>,
        services: Vec<(ServiceInfo, String)>,
    ) -> (Self, BTreeMap<ServiceKey, Result<Assignment, AllocError>>) {
        let infos: Vec<ServiceInfo> = services.iter().map(|(i, _)| i.clone()).collect();
        let (alloc, plan) = allocator::plan(&config, &namespaces, &infos);
        let mut engine = Self {
            alloc,
            config,
            namespaces,
            services: BTreeMap::new(),
            pending: BTreeSet::new(),
        };
        for (info, uid) in services {
            if matches!(plan.results.get(&info.key), Some(Err(_))) {
                engine.pending.insert(order(&info));
            }
            engine
                .services
                .insert(info.key.clone(), Tracked { uid, info });
        }
        (engine, plan.results)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current decision for a Service this controller serves (after [`Engine::observe`]).
    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.alloc.assignment(key)
    }

    /// A Service of ours was created or changed: it keeps what it has if still allowed, else gets
    /// new addresses or waits with the reason.
    pub fn observe(&mut self, info: ServiceInfo, uid: &str) -> Outcome {
        let key = info.key.clone();
        let mut freed = false;
        if let Some(old) = self.services.get(&key) {
            if old.uid != uid {
                // The Service was deleted and created again before we saw the deletion: what the
                // old object held is free, and the new one starts from nothing.
                freed |= self.drop_tracked(&key).is_some();
            }
        }
        let before = self.alloc.assignment(&key).cloned();
        if before.is_none() && !info.current_ips.is_empty() {
            // Status written by an earlier leader after our load: honour it if still allowed.
            let _ = self.alloc.keep(&info, &info.current_ips);
        }
        let result = self.alloc.allocate(&info);
        if let Some(previous) = self.services.get(&key) {
            self.pending.remove(&order(&previous.info));
        }
        if result.is_err() {
            self.pending.insert(order(&info));
        }
        self.services.insert(
            key.clone(),
            Tracked {
                uid: uid.to_string(),
                info,
            },
        );
        if let Some(before) = before {
            freed |= result.as_ref().map(|a| &a.ips) != Ok(&before.ips);
        }
        let retried = if freed { self.retry_pending() } else { vec![] };
        Outcome { result, retried }
    }

    fn drop_tracked(&mut self, key: &ServiceKey) -> Option<Assignment> {
        let tracked = self.services.remove(key)?;
        self.pending.remove(&order(&tracked.info));
        self.alloc.release(key)
    }

    /// A Service is gone, or no longer ours (another type or class, or unreadable). `uid`, when
    /// given, must match the object we track: a deletion seen late must not free the addresses
    /// of a new Service of the same name. Returns what it held and the Services served instead.
    pub fn forget(
        &mut self,
        key: &ServiceKey,
        uid: Option<&str>,
    ) -> (Option<Assignment>, Vec<ServiceKey>) {
        match (self.services.get(key), uid) {
            (None, _) => return (None, vec![]),
            (Some(t), Some(uid)) if t.uid != uid => return (None, vec![]),
            _ => {}
        }
        let released = self.drop_tracked(key);
        let retried = if released.is_some() {
            self.retry_pending()
        } else {
            vec![]
        };
        (released, retried)
    }

    /// Keys of every Service tracked, with their uids (to compare with the cluster after a
    /// relist).
    pub fn tracked(&self) -> impl Iterator<Item = (&ServiceKey, &str)> {
        self.services.iter().map(|(k, t)| (k, t.uid.as_str()))
    }

    /// Whether a Service waits for an address.
    /// How many Services wait for an address and show none (a Service whose pool is withheld
    /// waits too, but keeps the addresses in its status).
    pub fn pending_count(&self) -> usize {
        self.pending
            .iter()
            .filter(|(_, key)| {
                self.services
                    .get(key)
                    .is_some_and(|t| t.info.current_ips.is_empty())
            })
            .count()
    }

    pub fn is_pending(&self, key: &ServiceKey) -> bool {
        self.services
            .get(key)
            .is_some_and(|t| self.pending.contains(&order(&t.info)))
    }

    /// A new valid configuration. Only Services whose addresses left every pool allowed to them
    /// get new ones; then waiting Services are retried. Returns every Service whose decision
    /// changed.
    pub fn set_config(&mut self, config: Config) -> Vec<ServiceKey> {
        if config == self.config {
            return vec![];
        }
        let dropped = self.alloc.set_config(&config);
        self.config = config;
        self.reallocate(dropped)
    }

    /// Namespace labels changed (namespaceSelectors may now select other Services).
    pub fn set_namespaces(&mut self, namespaces: BTreeMap<String, Labels>) -> Vec<ServiceKey> {
        if namespaces == self.namespaces {
            return vec![];
        }
        for gone in self
            .namespaces
            .keys()
            .filter(|n| !namespaces.contains_key(*n))
        {
            self.alloc.remove_namespace(gone);
        }
        for (ns, labels) in &namespaces {
            self.alloc.set_namespace_labels(ns, labels.clone());
        }
        self.namespaces = namespaces;
        let config = self.config.clone();
        let dropped = self.alloc.set_config(&config);
        self.reallocate(dropped)
    }

    fn reallocate(&mut self, dropped: Vec<ServiceKey>) -> Vec<ServiceKey> {
        let mut infos: Vec<ServiceInfo> = dropped
            .iter()
            .filter_map(|k| self.services.get(k).map(|t| t.info.clone()))
            .collect();
        infos.sort_by_key(order);
        let mut changed = Vec::new();
        for info in infos {
            if self.alloc.allocate(&info).is_err() {
                self.pending.insert(order(&info));
            }
            changed.push(info.key);
        }
        changed.extend(self.retry_pending());
        changed.sort();
        changed.dedup();
        changed
    }

    /// Serves waiting Services, oldest first; returns those that got addresses.
    fn retry_pending(&mut self) -> Vec<ServiceKey> {
        let mut served = Vec::new();
        let waiting: Vec<(String, ServiceKey)> = self.pending.iter().cloned().collect();
        for entry in waiting {
            let Some(tracked) = self.services.get(&entry.1) else {
                self.pending.remove(&entry);
                continue;
            };
            if self.alloc.allocate(&tracked.info).is_ok() {
                self.pending.remove(&entry);
                served.push(entry.1);
            }
        }
        served
    }

    /// Exact counts and number of Services of every pool of the configuration in force.
    pub fn pool_usage(&self) -> Vec<(String, PoolCounts, usize)> {
        let mut services: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, a) in self.alloc.assignments() {
            *services.entry(a.pool.as_str()).or_default() += 1;
        }
        self.alloc
            .pool_names()
            .map(|name| {
                (
                    name.clone(),
                    self.alloc.counts(name).unwrap_or_default(),
                    services.get(name.as_str()).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::FamilyPolicy;
    use ferrolb_config::addresses::Family;
    use ferrolb_config::manifest::Manifests;
    use ferrolb_config::service::ServiceRequest;
    use std::net::IpAddr;

    fn config(pools: &[(&str, &str)]) -> Config {
        let mut m = Manifests::default();
        for (name, addresses) in pools {
            let yaml = format!(
                "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{addresses}]\n"
            );
            assert!(m.add_yaml(&yaml, "t.yaml").is_empty());
        }
        ferrolb_config::build(&m.resources).unwrap()
    }

    fn svc(name: &str, created: &str) -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey::new("default", name),
            labels: Labels::new(),
            request: ServiceRequest::default(),
            families: vec![Family::V4],
            policy: FamilyPolicy::SingleStack,
            ports: vec![("TCP".into(), 80)],
            local_traffic: false,
            selector: BTreeMap::new(),
            current_ips: vec![],
            allocated_from: None,
            created: created.into(),
        }
    }

    fn ips(o: &Outcome) -> Vec<String> {
        o.result
            .as_ref()
            .map(|a| a.ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    #[test]
    fn a_withheld_pool_keeps_what_it_handed_out_and_the_other_pools_still_serve() {
        // Pool "p" exists but is invalid on this start; "q" is fine.
        let mut c = config(&[("q", "198.51.100.0/30")]);
        c.withheld_pools.insert("p".into());
        let mut held = svc("held", "2024-01-01T00:00:00Z");
        held.current_ips = vec!["192.0.2.1".parse().unwrap()];
        held.allocated_from = Some("p".into());
        let fresh = svc("fresh", "2024-01-02T00:00:00Z");
        let (mut engine, results) = Engine::load(
            c,
            BTreeMap::new(),
            vec![(held.clone(), "u1".into()), (fresh, "u2".into())],
        );
        assert_eq!(
            results[&key("held")],
            Err(AllocError::PoolWithheld("p".into()))
        );
        assert_eq!(
            results[&key("fresh")].as_ref().unwrap().ips,
            vec!["198.51.100.0".parse::<std::net::IpAddr>().unwrap()]
        );
        // Observed again (a resync): still held, nothing else given to it.
        let again = engine.observe(held.clone(), "u1");
        assert_eq!(again.result, Err(AllocError::PoolWithheld("p".into())));
        // Held, it waits but shows its address: not counted as a Service without one.
        assert!(engine.is_pending(&key("held")));
        assert_eq!(engine.pending_count(), 0);
        let mut lost = svc("lost", "2024-01-03T00:00:00Z");
        lost.request.pool = Some("p".into());
        let _ = engine.observe(lost, "u3");
        assert_eq!(
            engine.pending_count(),
            1,
            "a new Service of the withheld pool waits"
        );
        // The pool is fixed: the Service keeps exactly the address it had.
        let fixed = config(&[("p", "192.0.2.0/30"), ("q", "198.51.100.0/30")]);
        let changed = engine.set_config(fixed);
        assert!(changed.contains(&key("held")), "{changed:?}");
        assert_eq!(
            engine.assignment(&key("held")).unwrap().ips,
            vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn without_any_pool_no_address_is_taken_away() {
        let mut held = svc("held", "2024-01-01T00:00:00Z");
        held.current_ips = vec!["192.0.2.1".parse().unwrap()];
        let fresh = svc("fresh", "2024-01-02T00:00:00Z");
        let (mut engine, results) = Engine::load(
            Config::default(),
            BTreeMap::new(),
            vec![(held.clone(), "u1".into()), (fresh, "u2".into())],
        );
        assert_eq!(results[&key("held")], Err(AllocError::NoPoolInForce));
        assert!(matches!(
            results[&key("fresh")],
            Err(AllocError::NoFreeAddress { .. })
        ));
        // The configuration arrives: the Service keeps exactly its address.
        engine.set_config(config(&[("p", "192.0.2.0/30")]));
        assert_eq!(
            engine.assignment(&key("held")).unwrap().ips,
            vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_pool_deleted_for_good_reallocates_its_services() {
        let mut c = config(&[("q", "198.51.100.0/30")]);
        c.withheld_pools.insert("other".into());
        let mut moved = svc("moved", "2024-01-01T00:00:00Z");
        moved.current_ips = vec!["192.0.2.1".parse().unwrap()];
        moved.allocated_from = Some("p".into());
        let (_, results) = Engine::load(c, BTreeMap::new(), vec![(moved, "u1".into())]);
        assert_eq!(
            results[&key("moved")].as_ref().unwrap().ips,
            vec!["198.51.100.0".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_load_keeps_status_then_serves_the_rest_oldest_first() {
        let c = config(&[("p", "192.0.2.0/30")]);
        let mut holder = svc("z-holder", "2024-01-03T00:00:00Z");
        holder.current_ips = vec!["192.0.2.0".parse().unwrap()];
        let older = svc("b", "2024-01-01T00:00:00Z");
        let newer = svc("a", "2024-01-02T00:00:00Z");
        let (engine, results) = Engine::load(
            c,
            BTreeMap::new(),
            vec![
                (newer, "u-a".into()),
                (holder, "u-z".into()),
                (older, "u-b".into()),
            ],
        );
        let got = |k: &str| results[&key(k)].as_ref().unwrap().ips[0].to_string();
        assert_eq!(got("z-holder"), "192.0.2.0");
        assert_eq!(got("b"), "192.0.2.1");
        assert_eq!(got("a"), "192.0.2.2");
        assert!(!engine.is_pending(&key("a")));
    }

    #[test]
    fn deleting_a_service_serves_the_waiting_ones_oldest_first() {
        let c = config(&[("p", "192.0.2.0/32")]);
        let (mut engine, _) = Engine::load(c, BTreeMap::new(), vec![]);
        let first = engine.observe(svc("first", "2024-01-01T00:00:00Z"), "u1");
        assert_eq!(ips(&first), ["192.0.2.0"]);
        let late = engine.observe(svc("a-late", "2024-01-03T00:00:00Z"), "u2");
        let early = engine.observe(svc("z-early", "2024-01-02T00:00:00Z"), "u3");
        assert!(late.result.is_err() && early.result.is_err());
        assert!(engine.is_pending(&key("a-late")));
        // A stale deletion (another uid) frees nothing.
        assert_eq!(engine.forget(&key("first"), Some("old")), (None, vec![]));
        let (released, retried) = engine.forget(&key("first"), Some("u1"));
        assert!(released.is_some());
        assert_eq!(retried, vec![key("z-early")]);
        assert_eq!(
            engine.assignment(&key("z-early")).unwrap().ips,
            ["192.0.2.0".parse::<IpAddr>().unwrap()]
        );
        assert!(engine.is_pending(&key("a-late")));
    }

    #[test]
    fn a_service_recreated_under_the_same_name_starts_afresh() {
        let c = config(&[("p", "192.0.2.0/31")]);
        let (mut engine, _) = Engine::load(c, BTreeMap::new(), vec![]);
        let mut asks = svc("x", "1");
        asks.request.requested_ips = vec!["192.0.2.1".parse().unwrap()];
        assert_eq!(ips(&engine.observe(asks, "u1")), ["192.0.2.1"]);
        // Same name, new object (the deletion not yet seen), asking nothing: lowest free.
        assert_eq!(ips(&engine.observe(svc("x", "2"), "u2")), ["192.0.2.0"]);
        // The old object's deletion arrives late: nothing changes.
        assert_eq!(engine.forget(&key("x"), Some("u1")), (None, vec![]));
        assert!(engine.assignment(&key("x")).is_some());
    }

    #[test]
    fn a_config_change_moves_only_services_whose_pool_went() {
        let c = config(&[("a", "192.0.2.0/31"), ("b", "198.51.100.0/31")]);
        let (mut engine, _) = Engine::load(c, BTreeMap::new(), vec![]);
        engine.observe(svc("one", "1"), "u1");
        engine.observe(svc("two", "2"), "u2");
        let three = engine.observe(svc("three", "3"), "u3");
        assert_eq!(ips(&three), ["198.51.100.0"]);
        let mut waiting = svc("four", "4");
        waiting.request.pool = Some("c".into());
        assert!(engine.observe(waiting, "u4").result.is_err());
        // Pool a goes, pool c comes: one moves to b's last address, two (younger) to c, then
        // four, waiting for c, gets the next one. three is untouched.
        let changed =
            engine.set_config(config(&[("b", "198.51.100.0/31"), ("c", "203.0.113.0/31")]));
        assert_eq!(changed, vec![key("four"), key("one"), key("two")]);
        assert_eq!(
            engine.assignment(&key("three")).unwrap().ips[0].to_string(),
            "198.51.100.0"
        );
        assert_eq!(
            engine.assignment(&key("one")).unwrap().ips[0].to_string(),
            "198.51.100.1"
        );
        assert_eq!(
            engine.assignment(&key("two")).unwrap().ips[0].to_string(),
            "203.0.113.0"
        );
        assert_eq!(
            engine.assignment(&key("four")).unwrap().ips[0].to_string(),
            "203.0.113.1"
        );
        assert!(!engine.is_pending(&key("four")));
        // The same configuration again changes nothing.
        let same = engine.config().clone();
        assert!(engine.set_config(same).is_empty());
    }
}
