//! The allocator: which addresses each LoadBalancer Service gets. Pure: no I/O, no clock, no
//! randomness; the same inputs in the same order give the same result.
//!
//! Order of preference for a Service (MetalLB's, made deterministic):
//! 1. the addresses it requests (`loadBalancerIPs` annotation or `spec.loadBalancerIP`);
//! 2. the pool its `address-pool` annotation names (autoAssign ignored);
//! 3. pools whose `serviceAllocation` selects it, by priority (unset last), ties by name;
//! 4. autoAssign pools without `serviceAllocation`, by name.
//!
//! Within a pool the lowest free address is taken. Addresses a Service already has (from its
//! status, after a restart) are kept as long as they are still allowed; [`plan`] loads every such
//! assignment before it hands out any new address, so a restart changes nothing.

mod free_set;
pub mod service;

use ferrolb_config::addresses::{ip_to_u128, u128_to_ip, Family, IpRange};
use ferrolb_config::model::{Labels, Pool};
use ferrolb_config::Config;
use free_set::FreeSet;
pub use service::{service_info, FamilyPolicy, ServiceInfo, ServiceKey};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

/// Addresses given to one Service, all from one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub pool: String,
    /// In the Service's family order.
    pub ips: Vec<IpAddr>,
}

/// Why a Service gets no address. The text is what the AllocationFailed Event says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{0}")]
    InvalidService(String),
    #[error("requested address {0} is in no IPAddressPool")]
    NotInAnyPool(IpAddr),
    #[error("requested addresses {0} and {1} are in different pools ({2} and {3})")]
    DifferentPools(IpAddr, IpAddr, String, String),
    #[error("requested address {ip} is {family}, but the Service's IP families are {wanted}")]
    WrongFamily {
        ip: IpAddr,
        family: Family,
        wanted: String,
    },
    #[error("requested address {ip} is in IPAddressPool/{pool}, but the address-pool annotation names {named}")]
    NotInNamedPool {
        ip: IpAddr,
        pool: String,
        named: String,
    },
    #[error("IPAddressPool/{0} does not exist")]
    NoSuchPool(String),
    #[error("IPAddressPool/{pool} does not serve this Service ({why})")]
    PoolNotAllowed { pool: String, why: String },
    #[error("requested address {0} is skipped by avoidBuggyIPs")]
    BuggyAddress(IpAddr),
    #[error("address {ip} is in use by {holder}{why}")]
    InUse {
        ip: IpAddr,
        holder: ServiceKey,
        why: String,
    },
    #[error("RequireDualStack, but the requested addresses are not one per family")]
    DualStackRequestIncomplete,
    #[error("its addresses came from IPAddressPool/{0}, which is invalid and left out; they stay as they are until the pool is fixed or deleted")]
    PoolWithheld(String),
    #[error("no IPAddressPool is in force; its addresses stay as they are until one is (a controller started before its configuration, say)")]
    NoPoolInForce,
    #[error("no IPAddressPool serving this Service has a free {families} address{hint}")]
    NoFreeAddress { families: String, hint: String },
}

/// Exact counts of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub assigned_v4: u128,
    pub assigned_v6: u128,
    pub available_v4: u128,
    pub available_v6: u128,
}

#[derive(Clone, Debug)]
struct PoolState {
    pool: Pool,
    free: [FreeSet; 2],
    size: [u128; 2],
    used: [u128; 2],
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PoolState {
    fn new(pool: &Pool) -> Self {
        let ranges = |f: Family| {
            pool.ranges
                .iter()
                .copied()
                .filter(move |r: &IpRange| r.family() == f)
        };
        Self {
            free: [
                FreeSet::new(ranges(Family::V4)),
                FreeSet::new(ranges(Family::V6)),
            ],
            size: [pool.size(Family::V4), pool.size(Family::V6)],
            used: [0, 0],
            pool: pool.clone(),
        }
    }

    /// The lowest free address of `family` this pool may hand out.
    fn lowest_free(&self, family: Family) -> Option<IpAddr> {
        let avoid = self.pool.avoid_buggy_ips;
        self.free[slot(family)]
            .lowest(|a| !avoid || !IpRange::is_buggy(u128_to_ip(family, a)))
            .map(|a| u128_to_ip(family, a))
    }
}

/// Who holds an address.
#[derive(Clone, Debug)]
struct AddressUse {
    pool: String,
    holders: BTreeSet<ServiceKey>,
}

/// The allocator's state: pools, who holds what, and what each Service asked for.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolState>,
    addresses: BTreeMap<IpAddr, AddressUse>,
    assignments: BTreeMap<ServiceKey, (Assignment, ServiceInfo)>,
    namespaces: BTreeMap<String, Labels>,
    /// Services holding addresses, by sharing key, so sharing costs no scan of all Services.
    by_sharing_key: BTreeMap<String, BTreeSet<ServiceKey>>,
    /// [`Config::withheld_pools`].
    withheld: BTreeSet<String>,
}

/// The sharing rules: same non-empty key, no common (protocol, port), and the same traffic
/// policy (with identical selectors when Local, since both must be served by the same nodes).
fn sharing_conflict(a: &ServiceInfo, b: &ServiceInfo) -> Option<String> {
    match (&a.request.sharing_key, &b.request.sharing_key) {
        (Some(x), Some(y)) if x == y => {}
        (None, _) | (_, None) => return Some(String::new()),
        _ => return Some(" with another sharing key".into()),
    }
    if let Some(p) = a.ports.iter().find(|p| b.ports.contains(p)) {
        return Some(format!(", and both use {} port {}", p.0, p.1));
    }
    if a.local_traffic != b.local_traffic {
        return Some(", and only one has externalTrafficPolicy Local".into());
    }
    if a.local_traffic && a.selector != b.selector {
        return Some(
            ", and with externalTrafficPolicy Local both must have the same selector".into(),
        );
    }
    None
}

fn families_text(families: &[Family]) -> String {
    families
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

impl Allocator {
    pub fn new(config: &Config) -> Self {
        Self {
            pools: config
                .pools
                .values()
                .map(|p| (p.name.clone(), PoolState::new(p)))
                .collect(),
            withheld: config.withheld_pools.clone(),
            ..Self::default()
        }
    }

    /// Namespace labels, for pools' namespaceSelectors.
    pub fn set_namespace_labels(&mut self, namespace: &str, labels: Labels) {
        self.namespaces.insert(namespace.to_string(), labels);
    }

    pub fn remove_namespace(&mut self, namespace: &str) {
        self.namespaces.remove(namespace);
    }

    /// Replaces the pools. Assignments still allowed are kept exactly; the Services whose
    /// addresses left every pool allowed to them are returned, in key order, to allocate again.
    pub fn set_config(&mut self, config: &Config) -> Vec<ServiceKey> {
        let previous = std::mem::take(&mut self.assignments);
        let namespaces = std::mem::take(&mut self.namespaces);
        *self = Self::new(config);
        self.namespaces = namespaces;
        let mut dropped = Vec::new();
        for (key, (assignment, info)) in previous {
            if self.keep(&info, &assignment.ips).is_err() {
                dropped.push(key);
            }
        }
        dropped
    }

    pub fn assignment(&self, key: &ServiceKey) -> Option<&Assignment> {
        self.assignments.get(key).map(|(a, _)| a)
    }

    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.assignments.iter().map(|(k, (a, _))| (k, a))
    }

    /// Whether `pool` may serve `svc`, and if not why.
    fn pool_allows(&self, pool: &Pool, svc: &ServiceInfo) -> Result<(), String> {
        let Some(alloc) = &pool.allocation else {
            return Ok(());
        };
        let empty = Labels::new();
        let ns_labels = self.namespaces.get(&svc.key.namespace).unwrap_or(&empty);
        if alloc.allows(&svc.key.namespace, ns_labels, &svc.labels) {
            Ok(())
        } else {
            Err("its serviceAllocation selects other namespaces or Services".into())
        }
    }

    /// Checks that `svc` may hold `ips` (requests, pool rules, families, sharing) without
    /// changing anything; returns the pool.
    fn check_hold(&self, svc: &ServiceInfo, ips: &[IpAddr]) -> Result<String, AllocError> {
        let mut pool_name: Option<String> = None;
        for &ip in ips {
            let family = Family::of(ip);
            if !svc.families.contains(&family) {
                return Err(AllocError::WrongFamily {
                    ip,
                    family,
                    wanted: families_text(&svc.families),
                });
            }
            let Some(state) = self.pools.values().find(|p| p.pool.contains(ip)) else {
                return Err(AllocError::NotInAnyPool(ip));
            };
            let name = &state.pool.name;
            if let Some(named) = &svc.request.pool {
                if named != name {
                    return Err(AllocError::NotInNamedPool {
                        ip,
                        pool: name.clone(),
                        named: named.clone(),
                    });
                }
            }
            match &pool_name {
                Some(first) if first != name => {
                    return Err(AllocError::DifferentPools(
                        ips[0],
                        ip,
                        first.clone(),
                        name.clone(),
                    ));
                }
                _ => pool_name = Some(name.clone()),
            }
            self.pool_allows(&state.pool, svc)
                .map_err(|why| AllocError::PoolNotAllowed {
                    pool: name.clone(),
                    why,
                })?;
            if !state.pool.offers(ip) {
                return Err(AllocError::BuggyAddress(ip));
            }
            if let Some(used) = self.addresses.get(&ip) {
                for holder in used.holders.iter().filter(|h| **h != svc.key) {
                    let (_, other) = &self.assignments[holder];
                    if let Some(why) = sharing_conflict(svc, other) {
                        return Err(AllocError::InUse {
                            ip,
                            holder: holder.clone(),
                            why,
                        });
                    }
                }
            }
        }
        pool_name.ok_or_else(|| AllocError::InvalidService("no address to hold".into()))
    }

    fn hold(&mut self, svc: &ServiceInfo, pool: String, mut ips: Vec<IpAddr>) -> Assignment {
        ips.sort_by_key(|ip| svc.families.iter().position(|f| *f == Family::of(*ip)));
        self.release(&svc.key);
        for &ip in &ips {
            let state = self.pools.get_mut(&pool).expect("checked by check_hold");
            let family = Family::of(ip);
            if state.free[slot(family)].take(ip_to_u128(ip)) {
                state.used[slot(family)] += 1;
            }
            self.addresses
                .entry(ip)
                .or_insert_with(|| AddressUse {
                    pool: pool.clone(),
                    holders: BTreeSet::new(),
                })
                .holders
                .insert(svc.key.clone());
        }
        let assignment = Assignment { pool, ips };
        if let Some(key) = &svc.request.sharing_key {
            self.by_sharing_key
                .entry(key.clone())
                .or_default()
                .insert(svc.key.clone());
        }
        self.assignments
            .insert(svc.key.clone(), (assignment.clone(), svc.clone()));
        assignment
    }

    /// Keeps addresses a Service already has (from its status) if it may still hold them.
    pub fn keep(&mut self, svc: &ServiceInfo, ips: &[IpAddr]) -> Result<Assignment, AllocError> {
        if ips.is_empty() {
            return Err(AllocError::InvalidService("no address to keep".into()));
        }
        let mut families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
        families.dedup();
        if families.len() != ips.len() {
            return Err(AllocError::InvalidService(
                "more than one address of a family".into(),
            ));
        }
        if svc.policy == FamilyPolicy::RequireDualStack && ips.len() < svc.families.len() {
            return Err(AllocError::DualStackRequestIncomplete);
        }
        if !svc.request.requested_ips.is_empty() {
            let want: BTreeSet<&IpAddr> = svc.request.requested_ips.iter().collect();
            let have: BTreeSet<&IpAddr> = ips.iter().collect();
            if want != have {
                return Err(AllocError::InvalidService(
                    "the requested addresses changed".into(),
                ));
            }
        }
        let pool = self.check_hold(svc, ips)?;
        Ok(self.hold(svc, pool, ips.to_vec()))
    }

    /// Gives `svc` addresses: what it has if still allowed, else new ones.
    pub fn allocate(&mut self, svc: &ServiceInfo) -> Result<Assignment, AllocError> {
        if let Some((current, _)) = self.assignments.get(&svc.key) {
            let ips = current.ips.clone();
            if let Ok(kept) = self.keep(svc, &ips) {
                return Ok(kept);
            }
            // What it had is no longer allowed (its request changed, say): it goes, whether or
            // not a new address can be found, so status never shows an address it may not hold.
            self.release(&svc.key);
        } else if !svc.current_ips.is_empty() {
            // What its status shows, if it may hold it (a pool fixed after being withheld).
            if let Ok(kept) = self.keep(svc, &svc.current_ips) {
                return Ok(kept);
            }
        }
        if let Some(pool) = self.withheld_source(svc) {
            return Err(AllocError::PoolWithheld(pool));
        }
        if self.pools.is_empty() && !svc.current_ips.is_empty() {
            // Nothing to judge the addresses by: taking them away would empty every Service
            // at once (MetalLB #2887), e.g. when the controller starts before its configuration
            // is applied, or reads the wrong namespace. Without a pool nothing announces them.
            return Err(AllocError::NoPoolInForce);
        }
        if !svc.request.requested_ips.is_empty() {
            let ips = svc.request.requested_ips.clone();
            if svc.policy == FamilyPolicy::RequireDualStack && ips.len() < svc.families.len() {
                return Err(AllocError::DualStackRequestIncomplete);
            }
            let pool = self.check_hold(svc, &ips)?;
            return Ok(self.hold(svc, pool, ips));
        }
        let candidates: Vec<String> = match &svc.request.pool {
            Some(named) => {
                let Some(state) = self.pools.get(named) else {
                    return Err(AllocError::NoSuchPool(named.clone()));
                };
                self.pool_allows(&state.pool, svc)
                    .map_err(|why| AllocError::PoolNotAllowed {
                        pool: named.clone(),
                        why,
                    })?;
                vec![named.clone()]
            }
            None => self.automatic_pools(svc),
        };
        // Sharing: an address already held under the same key, if compatible, comes first.
        if let Some(found) = self.shared_candidate(svc, &candidates) {
            return Ok(found);
        }
        let wanted = &svc.families;
        let full = candidates
            .iter()
            .find_map(|name| self.fresh(name, wanted).map(|ips| (name, ips)));
        let chosen = match (full, svc.policy) {
            (Some(found), _) => Some(found),
            (None, FamilyPolicy::PreferDualStack) => wanted.iter().find_map(|family| {
                candidates
                    .iter()
                    .find_map(|name| self.fresh(name, &[*family]).map(|ips| (name, ips)))
            }),
            (None, _) => None,
        };
        match chosen {
            Some((name, ips)) => {
                let name = name.clone();
                Ok(self.hold(svc, name, ips))
            }
            None => Err(AllocError::NoFreeAddress {
                families: families_text(wanted),
                hint: if candidates.is_empty() {
                    " (no pool is allowed for it: check autoAssign and serviceAllocation)".into()
                } else {
                    format!(" (tried {})", candidates.join(", "))
                },
            }),
        }
    }

    /// The withheld pool `svc`'s status addresses came from, when they lie in no pool in force:
    /// they are not taken away because a pool edit went wrong or a pool cannot be read.
    fn withheld_source(&self, svc: &ServiceInfo) -> Option<String> {
        if self.withheld.is_empty() || svc.current_ips.is_empty() {
            return None;
        }
        let in_force = svc
            .current_ips
            .iter()
            .any(|ip| self.pools.values().any(|p| p.pool.contains(*ip)));
        if in_force {
            return None;
        }
        match &svc.allocated_from {
            Some(pool) if self.withheld.contains(pool) => Some(pool.clone()),
            Some(_) => None,
            // No annotation (an address MetalLB gave, say): any withheld pool may hold it.
            None => self.withheld.iter().next().cloned(),
        }
    }

    /// Pools tried for a Service without a pool annotation, in order.
    fn automatic_pools(&self, svc: &ServiceInfo) -> Vec<String> {
        let mut selected: Vec<(u32, &String)> = Vec::new();
        let mut open: Vec<&String> = Vec::new();
        for (name, state) in &self.pools {
            match &state.pool.allocation {
                Some(alloc) if self.pool_allows(&state.pool, svc).is_ok() => {
                    selected.push((alloc.priority.unwrap_or(u32::MAX), name));
                }
                Some(_) => {}
                None if state.pool.auto_assign => open.push(name),
                None => {}
            }
        }
        // Stable sort keeps name order among equal priorities.
        selected.sort_by_key(|(priority, _)| *priority);
        selected
            .into_iter()
            .map(|(_, n)| n.clone())
            .chain(open.into_iter().cloned())
            .collect()
    }

    /// The lowest free address of each family in `pool`, if it has all of them.
    fn fresh(&self, pool: &str, families: &[Family]) -> Option<Vec<IpAddr>> {
        let state = self.pools.get(pool)?;
        families.iter().map(|f| state.lowest_free(*f)).collect()
    }

    fn shared_candidate(&mut self, svc: &ServiceInfo, pools: &[String]) -> Option<Assignment> {
        let sharing = svc.request.sharing_key.as_ref()?;
        // Addresses held under the same key in a candidate pool, by holder key order: a
        // deterministic choice.
        let mut options: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for key in self.by_sharing_key.get(sharing).into_iter().flatten() {
            let Some((assignment, _)) = self.assignments.get(key) else {
                continue;
            };
            if *key == svc.key {
                continue;
            }
            if pools.contains(&assignment.pool)
                && !options.iter().any(|(_, ips)| *ips == assignment.ips)
            {
                options.push((assignment.pool.clone(), assignment.ips.clone()));
            }
        }
        for (pool, ips) in options {
            let families: Vec<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
            let within = families.iter().all(|f| svc.families.contains(f));
            let fits = match svc.policy {
                FamilyPolicy::SingleStack => families == svc.families,
                FamilyPolicy::RequireDualStack => within && families.len() == svc.families.len(),
                FamilyPolicy::PreferDualStack => within,
            };
            if fits && self.check_hold(svc, &ips).is_ok() {
                return Some(self.hold(svc, pool, ips));
            }
        }
        None
    }

    /// Frees a Service's addresses (shared ones only when their last holder goes).
    pub fn release(&mut self, key: &ServiceKey) -> Option<Assignment> {
        let (assignment, info) = self.assignments.remove(key)?;
        if let Some(sharing) = &info.request.sharing_key {
            if let Some(set) = self.by_sharing_key.get_mut(sharing) {
                set.remove(key);
                if set.is_empty() {
                    self.by_sharing_key.remove(sharing);
                }
            }
        }
        for ip in &assignment.ips {
            let Some(used) = self.addresses.get_mut(ip) else {
                continue;
            };
            used.holders.remove(key);
            if used.holders.is_empty() {
                let pool = used.pool.clone();
                self.addresses.remove(ip);
                if let Some(state) = self.pools.get_mut(&pool) {
                    let family = Family::of(*ip);
                    state.free[slot(family)].give_back(ip_to_u128(*ip));
                    state.used[slot(family)] -= 1;
                }
            }
        }
        Some(assignment)
    }

    /// Exact counts of `pool`.
    pub fn counts(&self, pool: &str) -> Option<PoolCounts> {
        let s = self.pools.get(pool)?;
        Some(PoolCounts {
            assigned_v4: s.used[0],
            assigned_v6: s.used[1],
            available_v4: s.size[0] - s.used[0],
            available_v6: s.size[1] - s.used[1],
        })
    }

    pub fn pool_names(&self) -> impl Iterator<Item = &String> {
        self.pools.keys()
    }

    /// Number of Services holding addresses of `pool`.
    pub fn services_in(&self, pool: &str) -> usize {
        self.assignments
            .values()
            .filter(|(a, _)| a.pool == pool)
            .count()
    }
}

/// The outcome for every Service of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub results: BTreeMap<ServiceKey, Result<Assignment, AllocError>>,
}

/// Allocates for a whole set of Services at once, as the controller does on start: first every
/// Service keeps the addresses in its status if it still may (in key order), then the others are
/// served, oldest first (ties by key). Returns the allocator, to read counts from.
pub fn plan(
    config: &Config,
    namespaces: &BTreeMap<String, Labels>,
    services: &[ServiceInfo],
) -> (Allocator, Plan) {
    let mut allocator = Allocator::new(config);
    for (ns, labels) in namespaces {
        allocator.set_namespace_labels(ns, labels.clone());
    }
    let mut results = BTreeMap::new();
    let mut sorted: Vec<&ServiceInfo> = services.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut pending = Vec::new();
    for svc in &sorted {
        if svc.current_ips.is_empty() {
            pending.push(*svc);
            continue;
        }
        match allocator.keep(svc, &svc.current_ips) {
            Ok(a) => {
                results.insert(svc.key.clone(), Ok(a));
            }
            Err(_) => pending.push(*svc),
        }
    }
    pending.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    for svc in pending {
        results.insert(svc.key.clone(), allocator.allocate(svc));
    }
    (allocator, Plan { results })
}

impl fmt::Display for PoolCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 {} assigned / {} available, IPv6 {} assigned / {} available",
            self.assigned_v4, self.available_v4, self.assigned_v6, self.available_v6
        )
    }
}

#[cfg(test)]
mod tests;
