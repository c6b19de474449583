//! `build`: API objects in, validated [`Config`] or every problem found out.

use crate::addresses::{Family, IpRange};
use crate::community::Community;
use crate::error::{ConfigError, Reporter};
use crate::model::*;
use ferrolb_crds as crds;
use ferrolb_crds::limits;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

mod peers;
use peers::build_peers;

/// Everything `build` reads. Objects come from the API (kube mode) or from manifests (file mode
/// and `validate`); FerroLB objects are expected to live in one namespace, the one the
/// components watch.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    pub pools: Vec<crds::IPAddressPool>,
    pub l2_advertisements: Vec<crds::L2Advertisement>,
    pub bgp_advertisements: Vec<crds::BGPAdvertisement>,
    pub bgp_peers: Vec<crds::BGPPeer>,
    pub bfd_profiles: Vec<crds::BFDProfile>,
    pub communities: Vec<crds::Community>,
    /// Secrets that BGPPeers' passwordSecret may name.
    pub secrets: Vec<Secret>,
}

/// Validates `resources` and builds the model, or returns every problem found, sorted.
pub fn build(resources: &Resources) -> Result<Config, Vec<ConfigError>> {
    build_with(resources, &Context::default())
}

/// What [`build`] may know besides the objects: which objects were left out as invalid (a
/// reference to one of them is not a second problem) and which pools were in force before (in an
/// overlap, the pool that was not gives way).
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    /// `Kind/name` of every object left out.
    pub left_out: BTreeSet<String>,
    /// Pools that advertisements name but that do not exist, already reported: dropped from
    /// those advertisements as MetalLB does, instead of making them invalid (a running component
    /// keeps announcing the pools that exist while one is created or deleted).
    pub missing_pools: BTreeSet<String>,
    /// Names of pools whose addresses were in force, unchanged.
    pub pools_in_force: BTreeSet<String>,
}

impl Context {
    fn is_left_out(&self, kind: &str, name: &str) -> bool {
        self.left_out.contains(&format!("{kind}/{name}"))
    }
}

pub(crate) fn build_with(
    resources: &Resources,
    context: &Context,
) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    check_duplicate_names(resources, &mut errors);

    let pools = build_pools(&resources.pools, context, &mut errors);
    let aliases = build_aliases(&resources.communities, &mut errors);
    let bfd_profiles = build_bfd_profiles(&resources.bfd_profiles, &mut errors);
    let peers = build_peers(resources, &bfd_profiles, context, &mut errors);

    let mut l2_advertisements = BTreeMap::new();
    for adv in &resources.l2_advertisements {
        let name = adv.name_any();
        let mut r = Reporter::new("L2Advertisement", &name, &mut errors);
        let spec = &adv.spec;
        let pools = resolve_pools(
            &spec.ip_address_pools,
            &spec.ip_address_pool_selectors,
            &pools,
            context,
            &mut r,
        );
        duplicates(&spec.ip_address_pools, "spec.ipAddressPools", &mut r);
        let node_selectors = selectors(&spec.node_selectors, "spec.nodeSelectors", &mut r);
        let service_selectors = selectors(&spec.service_selectors, "spec.serviceSelectors", &mut r);
        for (i, interface) in spec.interfaces.iter().enumerate() {
            if let Err(why) = check_interface_name(interface) {
                r.error(format!("spec.interfaces[{i}]"), why);
            }
        }
        let mut preferred_nodes = Vec::new();
        for (i, term) in spec.preferred_node_selectors.iter().enumerate() {
            let field = format!("spec.preferredNodeSelectors[{i}]");
            if !(1..=100).contains(&term.weight) {
                r.error(
                    format!("{field}.weight"),
                    format!("{} is out of range 1..=100", term.weight),
                );
                continue;
            }
            match selector_of(&term.preference) {
                Ok(s) => preferred_nodes.push((term.weight as u32, s)),
                Err(why) => r.error(format!("{field}.preference"), why),
            }
        }
        l2_advertisements.insert(
            name.clone(),
            L2Advertisement {
                name,
                pools,
                node_selectors,
                interfaces: spec.interfaces.clone(),
                service_selectors,
                preferred_nodes,
                virtual_mac: spec.virtual_mac.unwrap_or(false),
            },
        );
    }

    // Advertisements may name a peer that is itself invalid; that peer reports its own errors.
    let peer_names: BTreeSet<String> = resources.bgp_peers.iter().map(|p| p.name_any()).collect();
    let mut bgp_advertisements = BTreeMap::new();
    for adv in &resources.bgp_advertisements {
        let name = adv.name_any();
        let mut r = Reporter::new("BGPAdvertisement", &name, &mut errors);
        if let Some(built) =
            build_bgp_advertisement(adv, &pools, &peer_names, &aliases, context, &mut r)
        {
            bgp_advertisements.insert(name, built);
        }
    }

    check_local_prefs(&bgp_advertisements, &pools, &mut errors);
    check_duplicate_peers(&peers, &mut errors);

    if errors.is_empty() {
        Ok(Config {
            pools,
            l2_advertisements,
            bgp_advertisements,
            peers,
            bfd_profiles,
            withheld_pools: BTreeSet::new(),
        })
    } else {
        errors.sort();
        errors.dedup();
        Err(errors)
    }
}

/// Whether two node selector lists may select a common node, judged without the Nodes: an empty
/// list selects every node; two different non-empty lists are taken to select different nodes.
fn may_share_nodes(a: &SelectorSet, b: &SelectorSet) -> bool {
    a.is_empty() || b.is_empty() || a == b
}

/// MetalLB's rule: two advertisements of one pool may differ in localPref only where they cannot
/// produce the same route to the same peer from the same node (different aggregation for the
/// pool's families, disjoint peer lists, or different nodes); with serviceSelectors they may.
fn check_local_prefs(
    advertisements: &BTreeMap<String, BgpAdvertisement>,
    pools: &BTreeMap<String, Pool>,
    errors: &mut Vec<ConfigError>,
) {
    let list: Vec<&BgpAdvertisement> = advertisements.values().collect();
    for (i, later) in list.iter().enumerate() {
        for earlier in &list[..i] {
            if later.local_pref.unwrap_or(0) == earlier.local_pref.unwrap_or(0)
                || !later.service_selectors.is_empty()
                || !earlier.service_selectors.is_empty()
                || (!later.peers.is_empty()
                    && !earlier.peers.is_empty()
                    && later.peers.is_disjoint(&earlier.peers))
                || !may_share_nodes(&later.node_selectors, &earlier.node_selectors)
            {
                continue;
            }
            let common = later.pools.intersection(&earlier.pools).find(|name| {
                let Some(pool) = pools.get(*name) else {
                    return false;
                };
                let v4 = pool.has_family(Family::V4);
                let v6 = pool.has_family(Family::V6);
                let differ4 = later.aggregation_length != earlier.aggregation_length;
                let differ6 = later.aggregation_length_v6 != earlier.aggregation_length_v6;
                let distinct = match (v4, v6) {
                    (true, true) => differ4 && differ6,
                    (true, false) => differ4,
                    (false, true) => differ6,
                    (false, false) => true,
                };
                !distinct
            });
            if let Some(pool) = common {
                errors.push(ConfigError::new(
                    format!("BGPAdvertisement/{}", later.name),
                    "spec.localPref",
                    format!(
                        "{} conflicts with localPref {} of BGPAdvertisement/{} for IPAddressPool/{pool}: \
                         both would announce the same routes to the same peers from the same nodes",
                        later.local_pref.unwrap_or(0),
                        earlier.local_pref.unwrap_or(0),
                        earlier.name
                    ),
                ));
            }
        }
    }
}

/// One session per peer address (and VRF) on a node, as MetalLB refuses two BGPPeers with one
/// address selecting the same node.
fn check_duplicate_peers(peers: &BTreeMap<String, Peer>, errors: &mut Vec<ConfigError>) {
    let list: Vec<&Peer> = peers.values().collect();
    for (i, later) in list.iter().enumerate() {
        if let Some(earlier) = list[..i].iter().find(|earlier| {
            earlier.address == later.address
                && earlier.vrf == later.vrf
                && may_share_nodes(&earlier.node_selectors, &later.node_selectors)
        }) {
            errors.push(ConfigError::new(
                format!("BGPPeer/{}", later.name),
                "spec.peerAddress",
                format!(
                    "{} is already the address of BGPPeer/{} on the same nodes; one session per address and node",
                    later.address, earlier.name
                ),
            ));
        }
    }
}

fn check_duplicate_names(resources: &Resources, errors: &mut Vec<ConfigError>) {
    fn check(kind: &str, names: impl Iterator<Item = String>, errors: &mut Vec<ConfigError>) {
        let mut seen = BTreeSet::new();
        for name in names {
            if name.is_empty() {
                errors.push(ConfigError::new(
                    format!("{kind}/<unnamed>"),
                    "metadata.name",
                    "is required",
                ));
            } else if !seen.insert(name.clone()) {
                errors.push(ConfigError::new(
                    format!("{kind}/{name}"),
                    "metadata.name",
                    "defined more than once",
                ));
            }
        }
    }
    check(
        "IPAddressPool",
        resources.pools.iter().map(|o| o.name_any()),
        errors,
    );
    check(
        "L2Advertisement",
        resources.l2_advertisements.iter().map(|o| o.name_any()),
        errors,
    );
    check(
        "BGPAdvertisement",
        resources.bgp_advertisements.iter().map(|o| o.name_any()),
        errors,
    );
    check(
        "BGPPeer",
        resources.bgp_peers.iter().map(|o| o.name_any()),
        errors,
    );
    check(
        "BFDProfile",
        resources.bfd_profiles.iter().map(|o| o.name_any()),
        errors,
    );
    check(
        "Community",
        resources.communities.iter().map(|o| o.name_any()),
        errors,
    );
}

/// A selector in a canonical form (expressions and their values sorted), to find repeats.
fn canonical(selector: &LabelSelector) -> String {
    let mut expressions: Vec<(String, String, Vec<String>)> = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let mut values = e.values.clone().unwrap_or_default();
            values.sort();
            (e.key.clone(), e.operator.clone(), values)
        })
        .collect();
    expressions.sort();
    format!("{:?} {expressions:?}", selector.match_labels)
}

fn selectors(list: &[LabelSelector], field: &str, r: &mut Reporter<'_>) -> SelectorSet {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, selector) in list.iter().enumerate() {
        // As MetalLB: a selector listed twice is a mistake, not a harmless repeat.
        if !seen.insert(canonical(selector)) {
            r.error(format!("{field}[{i}]"), "repeats an earlier selector");
            continue;
        }
        match selector_of(selector) {
            Ok(s) => out.push(s),
            Err(why) => r.error(format!("{field}[{i}]"), why),
        }
    }
    SelectorSet(out)
}

/// Converts and checks one label selector (operators, values present where needed).
pub(crate) fn selector_of(selector: &LabelSelector) -> Result<Selector, String> {
    for (j, expr) in selector.match_expressions.iter().flatten().enumerate() {
        if let Err(why) = check_label_key(&expr.key) {
            return Err(format!("matchExpressions[{j}].key: {why}"));
        }
        let has_values = expr.values.as_ref().is_some_and(|v| !v.is_empty());
        let values = expr.values.as_deref().unwrap_or_default();
        if let Some(v) = values
            .iter()
            .enumerate()
            .find(|(k, v)| values[..*k].contains(v))
            .map(|(_, v)| v)
        {
            return Err(format!(
                "matchExpressions[{j}].values: {v:?} is listed twice"
            ));
        }
        if selector
            .match_expressions
            .iter()
            .flatten()
            .take(j)
            .any(|earlier| earlier == expr)
        {
            return Err(format!(
                "matchExpressions[{j}] repeats an earlier expression"
            ));
        }
        match expr.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(format!(
                    "matchExpressions[{j}]: operator {} needs at least one value",
                    expr.operator
                ))
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(format!(
                    "matchExpressions[{j}]: operator {} takes no values",
                    expr.operator
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "matchExpressions[{j}]: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                ))
            }
        }
    }
    Selector::try_from(selector.clone()).map_err(|e| e.to_string())
}

/// A label key as Kubernetes accepts it: an optional DNS subdomain prefix and `/`, then a name of
/// at most 63 characters, alphanumeric at both ends, with `-`, `_` and `.` inside.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    if key.is_empty() {
        Err("is required".into())
    } else if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn labels_of(meta: &kube::core::ObjectMeta) -> Labels {
    meta.labels.clone().unwrap_or_default()
}

fn build_pools(
    objects: &[crds::IPAddressPool],
    context: &Context,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Pool> {
    // In an overlap the pool ranked later gives way: pools in force before first, then the
    // older ones (as MetalLB's webhook refuses the newcomer), then by name.
    type Rank = (
        bool,
        bool,
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    );
    let rank: HashMap<String, Rank> = objects
        .iter()
        .map(|o| {
            let name = o.name_any();
            let created = o.metadata.creation_timestamp.clone();
            let in_force = context.pools_in_force.contains(&name);
            // No timestamp (a manifest) sorts after every timestamp.
            (name, (!in_force, created.is_none(), created))
        })
        .collect();
    // Every parsed range, for the overlap check across and within pools.
    let mut all: Vec<(IpRange, String, usize)> = Vec::new();
    let mut pools = BTreeMap::new();
    for obj in objects {
        let name = obj.name_any();
        let mut r = Reporter::new("IPAddressPool", &name, errors);
        let spec = &obj.spec;
        if spec.addresses.is_empty() {
            r.error("spec.addresses", "at least one address range is required");
        }
        let mut ranges = Vec::new();
        for (i, text) in spec.addresses.iter().enumerate() {
            match IpRange::parse(text) {
                Ok(range) => {
                    all.push((range, name.clone(), i));
                    ranges.push(range);
                }
                Err(e) => r.error(format!("spec.addresses[{i}]"), e.to_string()),
            }
        }
        ranges.sort();
        let allocation = spec.service_allocation.as_ref().map(|a| {
            let priority = match a.priority {
                Some(p) if p < 0 => {
                    r.error(
                        "spec.serviceAllocation.priority",
                        format!("{p} is negative"),
                    );
                    None
                }
                Some(0) | None => None,
                Some(p) => Some(p as u32),
            };
            duplicates(&a.namespaces, "spec.serviceAllocation.namespaces", &mut r);
            for (i, ns) in a.namespaces.iter().enumerate() {
                if ns.is_empty() {
                    r.error(
                        format!("spec.serviceAllocation.namespaces[{i}]"),
                        "is empty",
                    );
                }
            }
            PoolAllocation {
                priority,
                namespaces: a.namespaces.iter().cloned().collect(),
                namespace_selectors: selectors(
                    &a.namespace_selectors,
                    "spec.serviceAllocation.namespaceSelectors",
                    &mut r,
                ),
                service_selectors: selectors(
                    &a.service_selectors,
                    "spec.serviceAllocation.serviceSelectors",
                    &mut r,
                ),
            }
        });
        pools.insert(
            name.clone(),
            Pool {
                name,
                labels: labels_of(&obj.metadata),
                ranges,
                auto_assign: spec.auto_assign,
                avoid_buggy_ips: spec.avoid_buggy_ips,
                allocation,
            },
        );
    }

    // Sweep the ranges in address order; each range is compared with the one reaching furthest
    // so far, which finds every range that overlaps an earlier one.
    all.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let mut reach: Option<&(IpRange, String, usize)> = None;
    for item in &all {
        if let Some(prev) = reach {
            if prev.0.overlaps(&item.0) {
                // Blame the range of the pool that gives way; within one pool, the later range.
                let (blamed, other) = if prev.1 != item.1
                    && (rank.get(&prev.1), &prev.1) > (rank.get(&item.1), &item.1)
                {
                    (prev, item)
                } else {
                    (item, prev)
                };
                let (range, pool, i) = blamed;
                let where_ = if other.1 == *pool {
                    format!("spec.addresses[{}] of the same pool", other.2)
                } else {
                    format!("IPAddressPool/{} spec.addresses[{}]", other.1, other.2)
                };
                errors.push(ConfigError::new(
                    format!("IPAddressPool/{pool}"),
                    format!("spec.addresses[{i}]"),
                    format!(
                        "{range} overlaps {} ({where_}); pools must not overlap",
                        other.0
                    ),
                ));
            }
            if prev.0.family() != item.0.family() || item.0.end() > prev.0.end() {
                reach = Some(item);
            }
        } else {
            reach = Some(item);
        }
    }
    pools
}

fn build_aliases(
    objects: &[crds::Community],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Community> {
    let mut aliases = BTreeMap::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for obj in objects {
        let name = obj.name_any();
        let mut r = Reporter::new("Community", &name, errors);
        for (i, alias) in obj.spec.communities.iter().enumerate() {
            if alias.name.trim().is_empty() {
                r.error(format!("spec.communities[{i}].name"), "is empty");
                continue;
            }
            if Community::looks_literal(&alias.name) {
                r.error(
                    format!("spec.communities[{i}].name"),
                    format!("{:?} looks like a community value, not a name", alias.name),
                );
            }
            match alias.value.parse::<Community>() {
                Ok(value) => {
                    if let Some(first) = owner.get(&alias.name) {
                        r.error(
                            format!("spec.communities[{i}].name"),
                            format!(
                                "alias {:?} is already defined in Community/{first}",
                                alias.name
                            ),
                        );
                    } else {
                        owner.insert(alias.name.clone(), name.clone());
                        aliases.insert(alias.name.clone(), value);
                    }
                }
                Err(e) => r.error(format!("spec.communities[{i}].value"), e.to_string()),
            }
        }
    }
    aliases
}

fn check_range(value: Option<u32>, (min, max): (u32, u32), field: &str, r: &mut Reporter<'_>) {
    if let Some(v) = value {
        if !(min..=max).contains(&v) {
            r.error(field, format!("{v} is out of range {min}..={max}"));
        }
    }
}

fn build_bfd_profiles(
    objects: &[crds::BFDProfile],
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, BfdProfile> {
    let mut out = BTreeMap::new();
    for obj in objects {
        let name = obj.name_any();
        let mut r = Reporter::new("BFDProfile", &name, errors);
        let s = &obj.spec;
        check_range(
            s.receive_interval,
            limits::BFD_INTERVAL_MS,
            "spec.receiveInterval",
            &mut r,
        );
        check_range(
            s.transmit_interval,
            limits::BFD_INTERVAL_MS,
            "spec.transmitInterval",
            &mut r,
        );
        check_range(
            s.echo_interval,
            limits::BFD_INTERVAL_MS,
            "spec.echoInterval",
            &mut r,
        );
        check_range(
            s.detect_multiplier,
            limits::BFD_MULTIPLIER,
            "spec.detectMultiplier",
            &mut r,
        );
        check_range(
            s.minimum_ttl,
            limits::BFD_MINIMUM_TTL,
            "spec.minimumTtl",
            &mut r,
        );
        out.insert(
            name.clone(),
            BfdProfile {
                name,
                receive_interval_ms: s.receive_interval.unwrap_or(defaults::BFD_INTERVAL_MS),
                transmit_interval_ms: s.transmit_interval.unwrap_or(defaults::BFD_INTERVAL_MS),
                detect_multiplier: s.detect_multiplier.unwrap_or(defaults::BFD_MULTIPLIER),
                echo_interval_ms: s.echo_interval.unwrap_or(defaults::BFD_ECHO_INTERVAL_MS),
                echo_mode: s.echo_mode.unwrap_or(false),
                passive_mode: s.passive_mode.unwrap_or(false),
                minimum_ttl: s.minimum_ttl.unwrap_or(defaults::BFD_MINIMUM_TTL),
            },
        );
    }
    out
}

/// Parses a Go-style duration (`90s`, `1m30s`, `500ms`) as MetalLB's metav1.Duration fields take.
fn duration(text: &Option<String>, field: &str, r: &mut Reporter<'_>) -> Option<Duration> {
    let text = text.as_ref()?;
    match text.trim().parse::<kube::core::Duration>() {
        Ok(d) if d.is_negative() => {
            r.error(field, format!("{text:?} is negative"));
            None
        }
        Ok(d) => Some(d.into()),
        Err(_) => {
            r.error(
                field,
                format!("{text:?} is not a duration such as \"90s\", \"1m30s\" or \"500ms\""),
            );
            None
        }
    }
}

/// `d` cut to whole seconds, as MetalLB cuts BGP timers.
fn whole(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// Reports each entry of `list` that repeats an earlier one (MetalLB refuses them too).
fn duplicates(list: &[String], field: &str, r: &mut Reporter<'_>) {
    let mut seen = BTreeSet::new();
    for (i, item) in list.iter().enumerate() {
        if !seen.insert(item) {
            r.error(format!("{field}[{i}]"), format!("{item:?} is listed twice"));
        }
    }
}

/// Interface and VRF names as Linux accepts them.
fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} is not an interface name (1 to 15 bytes)"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(format!("{name:?} is not an interface name"));
    }
    Ok(())
}

/// Pool names from an explicit list plus label selectors; neither given means every pool.
fn resolve_pools(
    names: &[String],
    pool_selectors: &[LabelSelector],
    pools: &BTreeMap<String, Pool>,
    context: &Context,
    r: &mut Reporter<'_>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, name) in names.iter().enumerate() {
        if pools.contains_key(name) {
            out.insert(name.clone());
        } else if context.is_left_out("IPAddressPool", name) || context.missing_pools.contains(name)
        {
            // The pool reports its own problem (or its absence was reported); the other pools
            // named here still apply.
        } else {
            r.error(
                format!("spec.ipAddressPools[{i}]"),
                format!("IPAddressPool/{name} does not exist"),
            );
        }
    }
    let sel = selectors(pool_selectors, "spec.ipAddressPoolSelectors", r);
    if !sel.is_empty() {
        out.extend(
            pools
                .values()
                .filter(|p| sel.matches(&p.labels))
                .map(|p| p.name.clone()),
        );
    }
    if names.is_empty() && pool_selectors.is_empty() {
        out.extend(pools.keys().cloned());
    }
    out
}

fn build_bgp_advertisement(
    adv: &crds::BGPAdvertisement,
    pools: &BTreeMap<String, Pool>,
    peer_names: &BTreeSet<String>,
    aliases: &BTreeMap<String, Community>,
    context: &Context,
    r: &mut Reporter<'_>,
) -> Option<BgpAdvertisement> {
    let s = &adv.spec;
    let selected = resolve_pools(
        &s.ip_address_pools,
        &s.ip_address_pool_selectors,
        pools,
        context,
        r,
    );
    let mut lengths = [(Family::V4, 32u8), (Family::V6, 128u8)];
    for ((family, length), (field, value, (min, max))) in lengths.iter_mut().zip([
        (
            "spec.aggregationLength",
            s.aggregation_length,
            limits::AGGREGATION_LENGTH_V4,
        ),
        (
            "spec.aggregationLengthV6",
            s.aggregation_length_v6,
            limits::AGGREGATION_LENGTH_V6,
        ),
    ]) {
        let Some(v) = value else { continue };
        if !(min..=max).contains(&v) {
            r.error(field, format!("{v} is out of range {min}..={max}"));
            continue;
        }
        *length = v as u8;
        // As MetalLB: no shorter than the largest CIDR block of each address entry, so an
        // aggregate never covers more than one such block (it may still cover addresses of the
        // block outside a range, which MetalLB allows too).
        for pool in selected.iter().filter_map(|n| pools.get(n)) {
            for range in pool.ranges.iter().filter(|rg| rg.family() == *family) {
                let needed = range.least_specific_prefix();
                if *length < needed {
                    r.error(
                        field,
                        format!(
                            "{v} is shorter than /{needed}, the largest block of {range} in IPAddressPool/{}; \
                             routes would cover addresses outside the pool",
                            pool.name
                        ),
                    );
                }
            }
        }
    }
    if !s.service_selectors.is_empty() && (lengths[0].1 != 32 || lengths[1].1 != 128) {
        // Aggregates cover many Services: they cannot follow per-Service selectors (MetalLB's rule).
        r.error(
            "spec.serviceSelectors",
            "cannot be combined with an aggregationLength other than 32 or an aggregationLengthV6 other than 128",
        );
    }
    duplicates(&s.ip_address_pools, "spec.ipAddressPools", r);
    duplicates(&s.communities, "spec.communities", r);
    duplicates(&s.peers, "spec.peers", r);
    let mut communities = BTreeSet::new();
    for (i, text) in s.communities.iter().enumerate() {
        if let Some(c) = aliases.get(text) {
            communities.insert(*c);
        } else if Community::looks_literal(text) {
            match text.parse::<Community>() {
                Ok(c) => {
                    communities.insert(c);
                }
                Err(e) => r.error(format!("spec.communities[{i}]"), e.to_string()),
            }
        } else {
            r.error(
                format!("spec.communities[{i}]"),
                format!(
                    "{text:?} is not a community value and no Community object defines that alias"
                ),
            );
        }
    }
    for (i, peer) in s.peers.iter().enumerate() {
        // A peer left out keeps its name here, so the list never widens to "every peer".
        if !peer_names.contains(peer) && !context.is_left_out("BGPPeer", peer) {
            r.error(
                format!("spec.peers[{i}]"),
                format!("BGPPeer/{peer} does not exist"),
            );
        }
    }
    let node_selectors = selectors(&s.node_selectors, "spec.nodeSelectors", r);
    let service_selectors = selectors(&s.service_selectors, "spec.serviceSelectors", r);
    Some(BgpAdvertisement {
        name: adv.name_any(),
        aggregation_length: lengths[0].1,
        aggregation_length_v6: lengths[1].1,
        local_pref: s.local_pref,
        communities,
        pools: selected,
        node_selectors,
        peers: s.peers.iter().cloned().collect(),
        service_selectors,
        weight_by_endpoints: s.weight_by_endpoints.unwrap_or(false),
    })
}
