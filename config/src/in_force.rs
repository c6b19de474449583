//! What is in force when some objects are invalid: one bad object never stops the rest.
//!
//! [`build`](crate::build) is all or nothing, which is right for `validate` but wrong for a
//! running component: one pool with `addresses: ["not-an-ip"]` (which the API server may well
//! accept) would stop every Service from getting an address. [`in_force`] instead builds the
//! configuration from every valid object; an invalid object whose earlier version was valid keeps
//! that version in force (a pool edited into garbage keeps its addresses); an invalid object
//! without one is left out, and so is what cannot work without it (a BGPPeer naming a BFDProfile
//! that is left out). References to a left-out pool or peer are dropped from advertisements that
//! name others too, so they keep announcing those.

use crate::build::{build_with, Context, Resources};
use crate::error::ConfigError;
use crate::model::Config;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

/// The outcome of [`in_force`].
#[derive(Clone, Debug, Default)]
pub struct InForce {
    /// The configuration made of every object that can be used.
    pub config: Config,
    /// Every problem of the current objects, sorted.
    pub errors: Vec<ConfigError>,
    /// `Kind/name` of the objects whose current version is invalid and whose last valid version
    /// stays in force.
    pub kept: BTreeSet<String>,
    /// `Kind/name` of the objects left out of the configuration.
    pub left_out: BTreeSet<String>,
    /// The objects `config` was built from: hand them back as `last` next time.
    pub resources: Resources,
}

impl InForce {
    /// Whether every current object is in force as it is.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.kept.is_empty() && self.left_out.is_empty()
    }

    /// Every problem, then what became of each object that has one, one line each.
    pub fn report_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        lines.extend(
            self.kept
                .iter()
                .map(|o| format!("{o}: invalid; its last valid version stays in force")),
        );
        lines.extend(
            self.left_out
                .iter()
                .map(|o| format!("{o}: left out of the configuration")),
        );
        lines
    }

    /// `Kind/name` of every object named by a problem or a fate, with its lines.
    pub fn by_object(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for e in &self.errors {
            let line = if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            };
            out.entry(e.object.clone()).or_default().push(line);
        }
        for o in &self.kept {
            out.entry(o.clone())
                .or_default()
                .push("invalid; its last valid version stays in force".into());
        }
        for o in &self.left_out {
            out.entry(o.clone())
                .or_default()
                .push("left out of the configuration".into());
        }
        out
    }
}

/// A kind of configuration object, as [`in_force`] handles every one of them the same way.
trait Slot {
    const KIND: &'static str;
    fn list(r: &Resources) -> &Vec<Self>
    where
        Self: Sized;
    fn list_mut(r: &mut Resources) -> &mut Vec<Self>
    where
        Self: Sized;
    /// Same spec and labels (what the configuration is made of).
    fn same(&self, other: &Self) -> bool;
}

macro_rules! slot {
    ($ty:ty, $kind:literal, $field:ident) => {
        impl Slot for $ty {
            const KIND: &'static str = $kind;
            fn list(r: &Resources) -> &Vec<Self> {
                &r.$field
            }
            fn list_mut(r: &mut Resources) -> &mut Vec<Self> {
                &mut r.$field
            }
            fn same(&self, other: &Self) -> bool {
                self.spec == other.spec && self.metadata.labels == other.metadata.labels
            }
        }
    };
}
slot!(ferrolb_crds::IPAddressPool, "IPAddressPool", pools);
slot!(
    ferrolb_crds::L2Advertisement,
    "L2Advertisement",
    l2_advertisements
);
slot!(
    ferrolb_crds::BGPAdvertisement,
    "BGPAdvertisement",
    bgp_advertisements
);
slot!(ferrolb_crds::BGPPeer, "BGPPeer", bgp_peers);
slot!(ferrolb_crds::BFDProfile, "BFDProfile", bfd_profiles);
slot!(ferrolb_crds::Community, "Community", communities);

/// What [`replace`] did with one object.
enum Step {
    /// Its last valid version now stands in for it.
    Restored,
    /// It was removed from the set.
    Removed,
    /// It is not an object of this kind.
    NotHere,
}

/// Puts back `name`'s version from `last` (once), or removes it from `set`.
fn replace<K>(
    name: &str,
    set: &mut Resources,
    last: &Resources,
    restored: &BTreeSet<String>,
) -> Step
where
    K: Slot + Resource + Clone,
{
    let id = format!("{}/{name}", K::KIND);
    let list = K::list_mut(set);
    if !list.iter().any(|o| o.name_any() == name) {
        return Step::NotHere;
    }
    let earlier = K::list(last).iter().find(|o| o.name_any() == name);
    let current = list.iter().find(|o| o.name_any() == name);
    match earlier {
        Some(e) if !restored.contains(&id) && !current.is_some_and(|c| c.same(e)) => {
            let e = e.clone();
            list.retain(|o| o.name_any() != name);
            list.push(e);
            Step::Restored
        }
        _ => {
            list.retain(|o| o.name_any() != name);
            Step::Removed
        }
    }
}

/// Puts back `name`'s version from `last` where it differs from the one in `set`.
fn restore_unchanged<K: Slot + Resource + Clone>(
    name: &str,
    set: &mut Resources,
    last: &Resources,
) {
    let Some(earlier) = K::list(last).iter().find(|o| o.name_any() == name) else {
        return;
    };
    let list = K::list_mut(set);
    if let Some(current) = list.iter_mut().find(|o| o.name_any() == name) {
        if !current.same(earlier) {
            *current = earlier.clone();
        }
    }
}

/// Adds `name`'s version from `last` to `set`, where `set` has none. Returns whether it did.
fn bring_back<K: Slot + Resource + Clone>(
    name: &str,
    set: &mut Resources,
    last: &Resources,
) -> bool {
    let Some(earlier) = K::list(last).iter().find(|o| o.name_any() == name) else {
        return false;
    };
    let list = K::list_mut(set);
    if list.iter().any(|o| o.name_any() == name) {
        return false;
    }
    list.push(earlier.clone());
    true
}

/// The pools that advertisements of `current` name and that are not in `set` (the objects in
/// use, unreadable ones brought back); each such reference is reported in `errors` (the
/// advertisement stays in force for the pools that exist).
fn missing_pools(
    current: &Resources,
    set: &Resources,
    errors: &mut Vec<ConfigError>,
) -> BTreeSet<String> {
    let exists: BTreeSet<String> = set.pools.iter().map(|p| p.name_any()).collect();
    let named = current
        .l2_advertisements
        .iter()
        .map(|a| ("L2Advertisement", a.name_any(), &a.spec.ip_address_pools))
        .chain(
            current
                .bgp_advertisements
                .iter()
                .map(|a| ("BGPAdvertisement", a.name_any(), &a.spec.ip_address_pools)),
        );
    let mut missing = BTreeSet::new();
    for (kind, name, pools) in named {
        for (i, pool) in pools.iter().enumerate() {
            if !exists.contains(pool) {
                errors.push(ConfigError::new(
                    format!("{kind}/{name}"),
                    format!("spec.ipAddressPools[{i}]"),
                    format!("IPAddressPool/{pool} does not exist"),
                ));
                missing.insert(pool.clone());
            }
        }
    }
    missing
}

/// Builds the configuration in force from `current`, given `last`, the objects in force before
/// (the `resources` of the previous outcome; empty on a start). `unreadable` names (`Kind/name`)
/// objects that exist but could not even be read (a manifest with a type error): they are not
/// deletions, so their last valid version stays in force. See the module documentation.
pub fn in_force(current: &Resources, last: &Resources, unreadable: &BTreeSet<String>) -> InForce {
    let mut set = current.clone();
    let mut restored: BTreeSet<String> = BTreeSet::new();
    for id in unreadable {
        let Some((kind, name)) = id.split_once('/') else {
            continue;
        };
        let back = match kind {
            "IPAddressPool" => bring_back::<ferrolb_crds::IPAddressPool>(name, &mut set, last),
            "L2Advertisement" => bring_back::<ferrolb_crds::L2Advertisement>(name, &mut set, last),
            "BGPAdvertisement" => {
                bring_back::<ferrolb_crds::BGPAdvertisement>(name, &mut set, last)
            }
            "BGPPeer" => bring_back::<ferrolb_crds::BGPPeer>(name, &mut set, last),
            "BFDProfile" => bring_back::<ferrolb_crds::BFDProfile>(name, &mut set, last),
            "Community" => bring_back::<ferrolb_crds::Community>(name, &mut set, last),
            _ => false,
        };
        if back {
            restored.insert(id.clone());
        }
    }
    let mut errors: Vec<ConfigError> = Vec::new();
    // After the unreadable objects are back: a pool that exists but cannot be read is not missing.
    let missing_pools = missing_pools(current, &set, &mut errors);
    let mut context = Context {
        left_out: BTreeSet::new(),
        missing_pools,
        pools_in_force: last
            .pools
            .iter()
            .filter(|p| {
                current
                    .pools
                    .iter()
                    .any(|c| c.name_any() == p.name_any() && c.spec.addresses == p.spec.addresses)
            })
            .map(|p| p.name_any())
            .collect(),
    };
    let mut first = true;
    // Each round restores or removes at least one object, so this ends; the bound is a guard.
    let objects = current.pools.len()
        + current.l2_advertisements.len()
        + current.bgp_advertisements.len()
        + current.bgp_peers.len()
        + current.bfd_profiles.len()
        + current.communities.len();
    for _ in 0..=2 * objects + 1 {
        let round = build_with(&set, &context);
        let problems = match round {
            Ok(config) => {
                errors.sort();
                errors.dedup();
                let kept = restored.difference(&context.left_out).cloned().collect();
                return InForce {
                    config,
                    errors,
                    kept,
                    left_out: context.left_out,
                    resources: set,
                };
            }
            Err(problems) => problems,
        };
        // The problems of the current objects are what users must fix; those of restored
        // versions were reported when they were current.
        for p in &problems {
            if first || !restored.contains(&p.object) {
                errors.push(p.clone());
            }
        }
        first = false;
        let named: BTreeSet<String> = problems.iter().map(|p| p.object.clone()).collect();
        let mut changed = false;
        for id in named {
            let Some((kind, name)) = id.split_once('/') else {
                continue;
            };
            let step = match kind {
                "IPAddressPool" => {
                    replace::<ferrolb_crds::IPAddressPool>(name, &mut set, last, &restored)
                }
                "L2Advertisement" => {
                    replace::<ferrolb_crds::L2Advertisement>(name, &mut set, last, &restored)
                }
                "BGPAdvertisement" => {
                    replace::<ferrolb_crds::BGPAdvertisement>(name, &mut set, last, &restored)
                }
                "BGPPeer" => {
                    // A peer unchanged but for its Secret gets the Secret back first.
                    if !restored.contains(&id) && restore_peer_secret(name, &mut set, last) {
                        restore_unchanged::<ferrolb_crds::BGPPeer>(name, &mut set, last);
                        Step::Restored
                    } else {
                        replace::<ferrolb_crds::BGPPeer>(name, &mut set, last, &restored)
                    }
                }
                "BFDProfile" => {
                    replace::<ferrolb_crds::BFDProfile>(name, &mut set, last, &restored)
                }
                "Community" => replace::<ferrolb_crds::Community>(name, &mut set, last, &restored),
                _ => Step::NotHere,
            };
            match step {
                Step::Restored => {
                    if kind == "IPAddressPool" {
                        context.pools_in_force.insert(name.to_string());
                    }
                    restored.insert(id);
                    changed = true;
                }
                Step::Removed => {
                    context.left_out.insert(id);
                    changed = true;
                }
                Step::NotHere => {}
            }
        }
        if !changed {
            break;
        }
    }
    // Problems that name no object could not be set aside: nothing can be trusted.
    errors.sort();
    errors.dedup();
    InForce {
        config: Config::default(),
        errors,
        kept: BTreeSet::new(),
        left_out: context.left_out,
        resources: Resources::default(),
    }
}

/// A BGPPeer that was in force takes back the Secret its last valid version read its password
/// from, so a Secret deleted or emptied by mistake does not end the session. Returns whether that
/// changed the set.
fn restore_peer_secret(peer: &str, set: &mut Resources, last: &Resources) -> bool {
    let Some(name) = last
        .bgp_peers
        .iter()
        .find(|p| p.name_any() == peer)
        .and_then(|p| p.spec.password_secret.as_ref())
        .and_then(|r| r.name.clone())
    else {
        return false;
    };
    let Some(secret) = last.secrets.iter().find(|s| s.name_any() == name) else {
        return false;
    };
    let current = set.secrets.iter().find(|s| s.name_any() == name);
    if current.is_some_and(|c| {
        c.data == secret.data && c.string_data == secret.string_data && c.type_ == secret.type_
    }) {
        return false;
    }
    set.secrets.retain(|s| s.name_any() != name);
    set.secrets.push(secret.clone());
    true
}

/// The conditions of a ConfigurationState for the report lines of [`InForce::report_lines`]: `Valid`
/// for the whole, then one per object with a problem, typed `Kind.name` (a condition type may not
/// hold `/`), status `False`, reason `LeftOut`, `LastValidKept` or `Invalid`, its problems as the
/// message. Every condition is stamped `now`; [`carry_transition_times`] keeps older stamps.
pub fn state_conditions(lines: &[String], now: &Time) -> Vec<Condition> {
    let mut by_object: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in lines {
        let (object, rest) = line.split_once(": ").unwrap_or((line.as_str(), ""));
        by_object.entry(object.to_string()).or_default().push(rest);
    }
    let condition = |type_: String, status: &str, reason: &str, message: String| Condition {
        type_,
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    };
    let mut out = vec![if lines.is_empty() {
        condition(
            "Valid".into(),
            "True",
            "AllObjectsValid",
            "every object is in force".into(),
        )
    } else {
        condition(
            "Valid".into(),
            "False",
            "InvalidObjects",
            format!(
                "{} object(s) with problems; the others are in force",
                by_object.len()
            ),
        )
    }];
    for (object, problems) in by_object {
        let reason = if problems.contains(&"left out of the configuration") {
            "LeftOut"
        } else if problems.contains(&"invalid; its last valid version stays in force") {
            "LastValidKept"
        } else {
            "Invalid"
        };
        let type_: String = object
            .replacen('/', ".", 1)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(316)
            .collect();
        let mut message = problems.join("; ");
        message.truncate(32_000);
        out.push(condition(type_, "False", reason, message));
    }
    out
}

/// Keeps the transition time of every condition that did not change since `old`.
pub fn carry_transition_times(new: &mut [Condition], old: &[Condition]) {
    for c in new {
        if let Some(o) = old.iter().find(|o| {
            o.type_ == c.type_
                && o.status == c.status
                && o.reason == c.reason
                && o.message == c.message
        }) {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
}
