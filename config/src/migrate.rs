//! `migrate`: MetalLB's configuration in, FerroLB's manifests out.
//!
//! Reads what a MetalLB user has: metallb.io objects (v1beta1, and v1beta2 for BGPPeer) as
//! `kubectl get -o yaml` prints them, and the ConfigMap of MetalLB before v0.13 (key `config`:
//! `peers`, `address-pools`, `bgp-communities`, `bfd-profiles`). Writes the same configuration
//! as ferrolb.io/v1beta1 objects in FerroLB's namespace, with the Secrets BGPPeers name. The
//! output is deterministic (kinds in a fixed order, then names) and lossless: a field FerroLB
//! has no place for, or a legacy key it does not know, is an error naming it, and nothing is
//! written. Legacy objects get the names MetalLB's own converter gives them (`peer1`,
//! `bgpadvertisement1`, `l2advertisement1`, `communities`), so both tools agree.
//!
//! Pure: the caller reads the files.

use crate::error::ConfigError;
use crate::manifest::{Manifests, METALLB_GROUP};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What [`Migration::finish`] hands back: the objects and what the user should know.
#[derive(Clone, Debug, Default)]
pub struct Migrated {
    /// The ferrolb.io objects (and Secrets), in output order.
    pub objects: Vec<Value>,
    /// Things done that the user should know about (renamed objects, skipped documents).
    pub notes: Vec<String>,
}

impl Migrated {
    /// The objects as one multi-document YAML stream.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for o in &self.objects {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(o).unwrap_or_default());
        }
        out
    }
}

/// A migration in progress: add texts, then [`Migration::finish`].
#[derive(Debug)]
pub struct Migration {
    namespace: String,
    objects: BTreeMap<(usize, String), Value>,
    notes: Vec<String>,
    errors: Vec<ConfigError>,
    /// Secrets seen, by name; only those a BGPPeer names are written.
    secrets: BTreeMap<String, Value>,
    /// Counters for legacy names, across every legacy ConfigMap read.
    legacy_peers: usize,
    legacy_bgp_advertisements: usize,
    legacy_l2_advertisements: usize,
}

/// Output order of the kinds (MetalLB's converter's order, then Secrets).
const ORDER: [&str; 7] = [
    "BGPPeer",
    "IPAddressPool",
    "BGPAdvertisement",
    "L2Advertisement",
    "BFDProfile",
    "Community",
    "Secret",
];

/// Metadata worth keeping: the rest (uid, resourceVersion, managedFields, ...) belongs to the
/// old object.
fn clean_metadata(meta: &Value, name: &str, namespace: &str) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    out.insert("namespace".into(), json!(namespace));
    if let Some(labels) = meta
        .get("labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
    {
        out.insert("labels".into(), labels.clone());
    }
    if let Some(Value::Object(annotations)) = meta.get("annotations") {
        let kept: Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            out.insert("annotations".into(), Value::Object(kept));
        }
    }
    Value::Object(out)
}

impl Migration {
    /// A migration into `namespace` (FerroLB's, usually ferrolb-system).
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.into(),
            objects: BTreeMap::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            secrets: BTreeMap::new(),
            legacy_peers: 0,
            legacy_bgp_advertisements: 0,
            legacy_l2_advertisements: 0,
        }
    }

    /// Reads every document of `text` (named `source` in messages).
    pub fn add_yaml(&mut self, text: &str, source: &str) {
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let where_ = format!("{source}#{}", index + 1);
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.add_value(value, &where_),
                Err(e) => {
                    self.errors
                        .push(ConfigError::new(where_, "", format!("not valid YAML: {e}")));
                    return;
                }
            }
        }
    }

    fn add_value(&mut self, value: Value, where_: &str) {
        let api_version = value["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = value["kind"].as_str().unwrap_or("").to_string();
        let name = value["metadata"]["name"].as_str().unwrap_or("").to_string();
        if kind.ends_with("List") {
            if let Some(items) = value["items"].as_array() {
                for (i, item) in items.iter().enumerate() {
                    self.add_value(item.clone(), &format!("{where_} items[{i}]"));
                }
                return;
            }
        }
        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        match (group, kind.as_str()) {
            (METALLB_GROUP, "ServiceL2Status" | "ServiceBGPStatus" | "ConfigurationState") => {
                self.notes.push(format!(
                    "{kind}/{name}: skipped (written by the running components, not configuration)"
                ));
            }
            (METALLB_GROUP | ferrolb_crds::GROUP, _) => {
                self.add_object(value, &kind, &name);
            }
            ("", "ConfigMap") => match value["data"]["config"].as_str() {
                Some(config) => self.add_legacy(config, &format!("ConfigMap/{name}")),
                None => self.notes.push(format!(
                    "ConfigMap/{name}: skipped (no key \"config\": not MetalLB's configuration)"
                )),
            },
            ("", "Secret") => {
                self.secrets.insert(name, value);
            }
            _ => self.notes.push(format!(
                "{}: {api_version} {kind}/{name}: skipped (not MetalLB configuration)",
                where_
            )),
        }
    }

    /// A metallb.io (or ferrolb.io) configuration object: FerroLB's apiVersion and namespace,
    /// no status, checked field by field.
    fn add_object(&mut self, value: Value, kind: &str, name: &str) {
        let Some(rank) = ORDER.iter().position(|k| *k == kind) else {
            self.errors.push(ConfigError::new(
                format!("{kind}/{name}"),
                "kind",
                "is not a MetalLB configuration kind FerroLB has",
            ));
            return;
        };
        let mut out = Map::new();
        out.insert("apiVersion".into(), json!(ferrolb_crds::API_VERSION));
        out.insert("kind".into(), json!(kind));
        out.insert(
            "metadata".into(),
            clean_metadata(&value["metadata"], name, &self.namespace),
        );
        if let Some(spec) = value.get("spec") {
            out.insert("spec".into(), spec.clone());
        }
        self.push(rank, name, Value::Object(out));
    }

    fn push(&mut self, rank: usize, name: &str, object: Value) {
        let kind = ORDER[rank];
        if self.objects.contains_key(&(rank, name.to_string())) {
            self.errors.push(ConfigError::new(
                format!("{kind}/{name}"),
                "metadata.name",
                "defined more than once",
            ));
            return;
        }
        self.objects.insert((rank, name.to_string()), object);
    }

    /// MetalLB's configuration before v0.13, as its converter turns it into objects.
    fn add_legacy(&mut self, text: &str, origin: &str) {
        let legacy: legacy::Config = match serde_yaml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                // serde names the unknown or mistyped key and where it is.
                self.errors.push(ConfigError::new(
                    origin,
                    "data.config",
                    format!("not MetalLB's legacy configuration: {e}"),
                ));
                return;
            }
        };
        let mut renamed: BTreeMap<String, String> = BTreeMap::new();
        let mut k8s_name =
            |kind: &str, name: &str, errors: &mut Vec<ConfigError>| -> Option<String> {
                match legacy::k8s_name(name) {
                    Some(n) => {
                        if n != name {
                            renamed.insert(format!("{kind} {name:?}"), n.clone());
                        }
                        Some(n)
                    }
                    None => {
                        errors.push(ConfigError::new(
                            origin,
                            format!("data.config: {kind} {name:?}"),
                            "has no letter to make a Kubernetes name of",
                        ));
                        None
                    }
                }
            };
        let mut profiles: BTreeMap<String, String> = BTreeMap::new();
        for p in &legacy.bfd_profiles {
            let Some(name) = k8s_name("bfd-profile", &p.name, &mut self.errors) else {
                continue;
            };
            profiles.insert(p.name.clone(), name.clone());
            let rank = ORDER.iter().position(|k| *k == "BFDProfile").unwrap_or(0);
            let object = json!({
                "apiVersion": ferrolb_crds::API_VERSION, "kind": "BFDProfile",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": p.spec(),
            });
            self.push(rank, &name, object);
        }
        for p in &legacy.peers {
            self.legacy_peers += 1;
            let name = format!("peer{}", self.legacy_peers);
            let mut spec = p.spec();
            if let Some(profile) = &p.bfd_profile {
                spec["bfdProfile"] =
                    json!(profiles
                        .get(profile)
                        .cloned()
                        .unwrap_or_else(
                            || legacy::k8s_name(profile).unwrap_or_else(|| profile.clone())
                        ));
            }
            let object = json!({
                "apiVersion": ferrolb_crds::API_VERSION, "kind": "BGPPeer",
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            });
            self.push(0, &name, object);
        }
        for pool in &legacy.address_pools {
            let Some(name) = k8s_name("address pool", &pool.name, &mut self.errors) else {
                continue;
            };
            let mut spec = json!({"addresses": pool.addresses});
            if let Some(v) = pool.auto_assign {
                spec["autoAssign"] = json!(v);
            }
            if pool.avoid_buggy_ips {
                spec["avoidBuggyIPs"] = json!(true);
            }
            self.push(
                1,
                &name,
                json!({
                    "apiVersion": ferrolb_crds::API_VERSION, "kind": "IPAddressPool",
                    "metadata": {"name": name, "namespace": self.namespace},
                    "spec": spec,
                }),
            );
            match pool.protocol.as_str() {
                "layer2" => {
                    if !pool.bgp_advertisements.is_empty() {
                        self.errors.push(ConfigError::new(
                            origin,
                            format!(
                                "data.config: address pool {:?}: bgp-advertisements",
                                pool.name
                            ),
                            "are only for protocol bgp (MetalLB refuses them on a layer2 pool)",
                        ));
                    }
                    self.legacy_l2_advertisements += 1;
                    let adv = format!("l2advertisement{}", self.legacy_l2_advertisements);
                    self.push(
                        3,
                        &adv,
                        json!({
                            "apiVersion": ferrolb_crds::API_VERSION, "kind": "L2Advertisement",
                            "metadata": {"name": adv, "namespace": self.namespace},
                            "spec": {"ipAddressPools": [name]},
                        }),
                    );
                }
                "bgp" => {
                    let advertisements = if pool.bgp_advertisements.is_empty() {
                        vec![legacy::BgpAdvertisement::default()]
                    } else {
                        pool.bgp_advertisements.clone()
                    };
                    for a in advertisements {
                        self.legacy_bgp_advertisements += 1;
                        let adv = format!("bgpadvertisement{}", self.legacy_bgp_advertisements);
                        let mut spec = a.spec();
                        spec["ipAddressPools"] = json!([name]);
                        self.push(
                            2,
                            &adv,
                            json!({
                                "apiVersion": ferrolb_crds::API_VERSION, "kind": "BGPAdvertisement",
                                "metadata": {"name": adv, "namespace": self.namespace},
                                "spec": spec,
                            }),
                        );
                    }
                }
                other => self.errors.push(ConfigError::new(
                    origin,
                    format!("data.config: address pool {:?}: protocol", pool.name),
                    format!("{other:?} is neither layer2 nor bgp"),
                )),
            }
        }
        if !legacy.bgp_communities.is_empty() {
            let communities: Vec<Value> = legacy
                .bgp_communities
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            self.push(
                5,
                "communities",
                json!({
                    "apiVersion": ferrolb_crds::API_VERSION, "kind": "Community",
                    "metadata": {"name": "communities", "namespace": self.namespace},
                    "spec": {"communities": communities},
                }),
            );
        }
        for (old, new) in renamed {
            self.notes.push(format!(
                "{origin}: {old} is named {new:?} (a Kubernetes name); Services naming it in an address-pool annotation must use the new name"
            ));
        }
    }

    /// The objects, or every problem. Each object is read back as FerroLB reads manifests, so
    /// a field with no place in FerroLB's API is an error here, not silently dropped.
    pub fn finish(mut self) -> Result<Migrated, Vec<ConfigError>> {
        // The Secrets BGPPeers read passwords from come along, in FerroLB's namespace.
        let wanted: Vec<String> = self
            .objects
            .iter()
            .filter(|((rank, _), _)| *rank == 0)
            .filter_map(|(_, peer)| {
                peer["spec"]["passwordSecret"]["name"]
                    .as_str()
                    .map(String::from)
            })
            .filter(|n| !n.is_empty())
            .collect();
        for name in wanted {
            match self.secrets.get(&name) {
                Some(secret) => {
                    let mut s = Map::new();
                    s.insert("apiVersion".into(), json!("v1"));
                    s.insert("kind".into(), json!("Secret"));
                    s.insert(
                        "metadata".into(),
                        clean_metadata(&secret["metadata"], &name, &self.namespace),
                    );
                    for key in ["type", "data", "stringData"] {
                        if let Some(v) = secret.get(key) {
                            s.insert(key.into(), v.clone());
                        }
                    }
                    self.objects.insert((6, name), Value::Object(s));
                }
                None => self.notes.push(format!(
                    "Secret/{name}: named by a BGPPeer's passwordSecret but not among the inputs; copy it into {} yourself",
                    self.namespace
                )),
            }
        }
        let migrated = Migrated {
            objects: self.objects.into_values().collect(),
            notes: self.notes,
        };
        let mut check = Manifests::default();
        self.errors
            .extend(check.add_yaml(&migrated.to_yaml(), "migrated"));
        if self.errors.is_empty() {
            Ok(migrated)
        } else {
            self.errors.sort();
            self.errors.dedup();
            Err(self.errors)
        }
    }
}

/// MetalLB's configuration before v0.13 (the `config` key of its ConfigMap). Unknown keys are
/// errors, as MetalLB read it strictly.
mod legacy {
    use serde::Deserialize;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Config {
        #[serde(default)]
        pub peers: Vec<Peer>,
        #[serde(default)]
        pub bgp_communities: BTreeMap<String, String>,
        #[serde(default)]
        pub address_pools: Vec<Pool>,
        #[serde(default)]
        pub bfd_profiles: Vec<BfdProfile>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Peer {
        pub my_asn: u32,
        pub peer_asn: u32,
        pub peer_address: String,
        pub source_address: Option<String>,
        pub peer_port: Option<u16>,
        pub hold_time: Option<String>,
        pub keepalive_time: Option<String>,
        pub router_id: Option<String>,
        pub password: Option<String>,
        pub bfd_profile: Option<String>,
        #[serde(default)]
        pub ebgp_multihop: bool,
        #[serde(default)]
        pub node_selectors: Vec<NodeSelector>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct NodeSelector {
        #[serde(default)]
        pub match_labels: BTreeMap<String, String>,
        #[serde(default)]
        pub match_expressions: Vec<Expression>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    pub struct Expression {
        pub key: String,
        pub operator: String,
        #[serde(default)]
        pub values: Vec<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Pool {
        pub name: String,
        #[serde(default)]
        pub protocol: String,
        pub addresses: Vec<String>,
        #[serde(default)]
        pub avoid_buggy_ips: bool,
        pub auto_assign: Option<bool>,
        #[serde(default)]
        pub bgp_advertisements: Vec<BgpAdvertisement>,
    }

    #[derive(Deserialize, Debug, Default, Clone)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct BgpAdvertisement {
        pub aggregation_length: Option<i32>,
        pub aggregation_length_v6: Option<i32>,
        pub localpref: Option<u32>,
        #[serde(default)]
        pub communities: Vec<String>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    pub struct BfdProfile {
        pub name: String,
        pub receive_interval: Option<u32>,
        pub transmit_interval: Option<u32>,
        pub detect_multiplier: Option<u32>,
        pub echo_interval: Option<u32>,
        pub echo_mode: Option<bool>,
        pub passive_mode: Option<bool>,
        pub minimum_ttl: Option<u32>,
    }

    /// Sets `key` in `spec` when `value` is given.
    fn set<T: serde::Serialize>(spec: &mut Value, key: &str, value: &Option<T>) {
        if let Some(v) = value {
            spec[key] = json!(v);
        }
    }

    impl Peer {
        pub fn spec(&self) -> Value {
            let mut spec = json!({
                "myASN": self.my_asn,
                "peerASN": self.peer_asn,
                "peerAddress": self.peer_address,
            });
            set(&mut spec, "sourceAddress", &self.source_address);
            set(&mut spec, "peerPort", &self.peer_port.filter(|p| *p != 0));
            set(&mut spec, "holdTime", &self.hold_time);
            set(&mut spec, "keepaliveTime", &self.keepalive_time);
            set(&mut spec, "routerID", &self.router_id);
            set(&mut spec, "password", &self.password);
            if self.ebgp_multihop {
                spec["ebgpMultiHop"] = json!(true);
            }
            if !self.node_selectors.is_empty() {
                let selectors: Vec<Value> = self
                    .node_selectors
                    .iter()
                    .map(|s| {
                        let mut out = json!({});
                        if !s.match_labels.is_empty() {
                            out["matchLabels"] = json!(s.match_labels);
                        }
                        if !s.match_expressions.is_empty() {
                            out["matchExpressions"] = json!(s
                                .match_expressions
                                .iter()
                                .map(|e| json!({"key": e.key, "operator": e.operator, "values": e.values}))
                                .collect::<Vec<_>>());
                        }
                        out
                    })
                    .collect();
                spec["nodeSelectors"] = json!(selectors);
            }
            spec
        }
    }

    impl BgpAdvertisement {
        pub fn spec(&self) -> Value {
            let mut spec = json!({});
            set(&mut spec, "aggregationLength", &self.aggregation_length);
            set(
                &mut spec,
                "aggregationLengthV6",
                &self.aggregation_length_v6,
            );
            set(&mut spec, "localPref", &self.localpref);
            if !self.communities.is_empty() {
                spec["communities"] = json!(self.communities);
            }
            spec
        }
    }

    impl BfdProfile {
        pub fn spec(&self) -> Value {
            let mut spec = json!({});
            set(&mut spec, "receiveInterval", &self.receive_interval);
            set(&mut spec, "transmitInterval", &self.transmit_interval);
            set(&mut spec, "detectMultiplier", &self.detect_multiplier);
            set(&mut spec, "echoInterval", &self.echo_interval);
            set(&mut spec, "echoMode", &self.echo_mode);
            set(&mut spec, "passiveMode", &self.passive_mode);
            set(&mut spec, "minimumTtl", &self.minimum_ttl);
            spec
        }
    }

    /// A Kubernetes name for a legacy name, as MetalLB's converter makes it: kept when it is a
    /// DNS label; else cut to 63, lowercased, `_` to `-`, and what comes before the first
    /// letter dropped. `None` when it has no letter.
    pub fn k8s_name(name: &str) -> Option<String> {
        let is_label = |n: &str| {
            let b = n.as_bytes();
            (2..=63).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b[b.len() - 1].is_ascii_lowercase() | b[b.len() - 1].is_ascii_digit()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        };
        if is_label(name) {
            return Some(name.to_string());
        }
        let cut: String = name.chars().take(63).collect();
        let lowered = cut.to_lowercase().replace('_', "-");
        let start = lowered.find(|c: char| c.is_ascii_lowercase())?;
        Some(lowered[start..].to_string())
    }
}
