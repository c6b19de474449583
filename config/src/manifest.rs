//! Reading manifests: the multi-document YAML a user would `kubectl apply`.
//!
//! Used by `ferrolb-controller validate` / `plan` and by the speaker's file source. Unlike the
//! API server, which silently prunes fields its schema does not know, this reader reports them:
//! a typo such as `adresses` is an error here, not a pool with no addresses.
//!
//! Pure: the caller reads the files and hands over their bytes.

use crate::build::Resources;
use crate::error::ConfigError;
use ferrolb_crds as crds;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Everything read from a set of manifests, by kind.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// The FerroLB objects (and Secrets) that make up the configuration.
    pub resources: Resources,
    pub services: Vec<Service>,
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Objects of kinds FerroLB does not read (a Deployment in the same directory, say), as
    /// `apiVersion kind/name`.
    pub skipped: Vec<String>,
    /// How many objects were read in MetalLB's API group (`metallb.io`).
    pub metallb_objects: usize,
    /// `Kind/name` of the objects read in MetalLB's API group.
    pub metallb_ids: std::collections::BTreeSet<String>,
}

/// MetalLB's API group: its objects are read as FerroLB's, whose kinds have the same shapes.
pub const METALLB_GROUP: &str = "metallb.io";

/// Kinds of the FerroLB API that describe configuration.
const FERROLB_KINDS: [&str; 6] = crds::CONFIG_KINDS;
/// Kinds of the FerroLB API that FerroLB writes; read and ignored.
const FERROLB_STATUS_KINDS: [&str; 3] =
    ["ServiceL2Status", "ServiceBGPStatus", "ConfigurationState"];

/// At most this many documents (list items included) are read from one text, so a hostile file
/// cannot make the reader run for ever.
const MAX_DOCUMENTS: usize = 100_000;

impl Manifests {
    /// Reads every document of `text` (named `source` in errors) and adds what it holds.
    /// Returns the problems found; documents with problems are left out, the rest are kept.
    pub fn add_yaml(&mut self, text: &str, source: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let where_ = format!("{source}#{}", index + 1);
            if index >= MAX_DOCUMENTS {
                errors.push(ConfigError::new(
                    where_,
                    "",
                    "too many documents; the rest are not read",
                ));
                break;
            }
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.add_value(value, &where_, &mut errors, 0),
                Err(e) => {
                    // After a syntax error the YAML stream cannot be resynchronised.
                    errors.push(ConfigError::new(where_, "", format!("not valid YAML: {e}")));
                    break;
                }
            }
        }
        errors
    }

    /// Like [`Self::add_yaml`], for bytes that may not be UTF-8.
    pub fn add_bytes(&mut self, bytes: &[u8], source: &str) -> Vec<ConfigError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => self.add_yaml(text, source),
            Err(e) => vec![ConfigError::new(source, "", format!("not UTF-8 text: {e}"))],
        }
    }

    fn add_value(
        &mut self,
        value: Value,
        where_: &str,
        errors: &mut Vec<ConfigError>,
        depth: usize,
    ) {
        let Value::Object(map) = &value else {
            errors.push(ConfigError::new(
                where_,
                "",
                "not a Kubernetes object (expected a mapping)",
            ));
            return;
        };
        let api_version = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = map
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if api_version.is_empty() || kind.is_empty() {
            errors.push(ConfigError::new(
                where_,
                "",
                "not a Kubernetes object: apiVersion and kind are required",
            ));
            return;
        }
        let name = map
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let object = if name.is_empty() {
            format!("{kind}/<unnamed> ({where_})")
        } else {
            format!("{kind}/{name}")
        };

        if kind.ends_with("List") && map.get("items").is_some_and(Value::is_array) {
            if depth > 0 {
                errors.push(ConfigError::new(
                    object,
                    "items",
                    "lists inside lists are not read",
                ));
                return;
            }
            if let Some(Value::Array(items)) = map.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.add_value(
                        item.clone(),
                        &format!("{where_} items[{i}]"),
                        errors,
                        depth + 1,
                    );
                }
            }
            return;
        }
        if name.is_empty() {
            errors.push(ConfigError::new(object, "metadata.name", "is required"));
            return;
        }

        let group = api_version.split_once('/').map_or("", |(g, _)| g);
        if group == crds::GROUP {
            // As the API server does through the CRD's default.
            let mut value = value;
            if crds::KINDS_WITH_OPTIONAL_SPEC.contains(&kind.as_str()) {
                if let Some(map) = value.as_object_mut() {
                    if map.get("spec").is_none_or(Value::is_null) {
                        map.insert("spec".into(), Value::Object(Default::default()));
                    }
                }
            }
            if api_version != crds::API_VERSION {
                errors.push(ConfigError::new(
                    object,
                    "apiVersion",
                    format!(
                        "{api_version} is not served; FerroLB's API is {}",
                        crds::API_VERSION
                    ),
                ));
                return;
            }
            let r = &mut self.resources;
            match kind.as_str() {
                "IPAddressPool" => push(typed(value, &object, errors), &mut r.pools),
                "L2Advertisement" => push(typed(value, &object, errors), &mut r.l2_advertisements),
                "BGPAdvertisement" => {
                    push(typed(value, &object, errors), &mut r.bgp_advertisements)
                }
                "BGPPeer" => push(typed(value, &object, errors), &mut r.bgp_peers),
                "BFDProfile" => push(typed(value, &object, errors), &mut r.bfd_profiles),
                "Community" => push(typed(value, &object, errors), &mut r.communities),
                k if FERROLB_STATUS_KINDS.contains(&k) => {
                    self.skipped.push(format!("{api_version} {object}"))
                }
                _ => errors.push(ConfigError::new(
                    object,
                    "kind",
                    format!("{kind} is not a kind of {}", crds::API_VERSION),
                )),
            }
            return;
        }
        if group == METALLB_GROUP {
            let served = matches!(
                (api_version.as_str(), kind.as_str()),
                ("metallb.io/v1beta1", k) if FERROLB_KINDS.contains(&k) || FERROLB_STATUS_KINDS.contains(&k)
            ) || (api_version == "metallb.io/v1beta2" && kind == "BGPPeer");
            if !served {
                errors.push(ConfigError::new(
                    object,
                    "apiVersion",
                    format!("{api_version} {kind} is not a MetalLB kind FerroLB reads (metallb.io/v1beta1, and v1beta2 for BGPPeer)"),
                ));
                return;
            }
            // MetalLB's kinds have FerroLB's shapes: read as the same object in ferrolb.io.
            let mut value = value;
            if let Some(map) = value.as_object_mut() {
                map.insert("apiVersion".into(), Value::String(crds::API_VERSION.into()));
            }
            self.metallb_objects += 1;
            self.metallb_ids.insert(format!("{kind}/{name}"));
            self.add_value(value, where_, errors, depth);
            return;
        }
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => push(typed(value, &object, errors), &mut self.services),
            ("v1", "Namespace") => push(typed(value, &object, errors), &mut self.namespaces),
            ("v1", "Node") => push(typed(value, &object, errors), &mut self.nodes),
            ("v1", "Secret") => push(typed(value, &object, errors), &mut self.resources.secrets),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                push(typed(value, &object, errors), &mut self.endpoint_slices)
            }
            _ => self.skipped.push(format!("{api_version} {object}")),
        }
    }

    /// Configuration objects in a namespace the components would not read them from: FerroLB's
    /// in `ferrolb`, MetalLB's (metallb.io, read in MetalLB-compatible mode) in `metallb`. An
    /// object without a namespace goes where it is applied, and is not judged.
    pub fn namespace_problems(&self, ferrolb: &str, metallb: &str) -> Vec<ConfigError> {
        let r = &self.resources;
        let metas = r
            .pools
            .iter()
            .map(|o| ("IPAddressPool", &o.metadata))
            .chain(
                r.l2_advertisements
                    .iter()
                    .map(|o| ("L2Advertisement", &o.metadata)),
            )
            .chain(
                r.bgp_advertisements
                    .iter()
                    .map(|o| ("BGPAdvertisement", &o.metadata)),
            )
            .chain(r.bgp_peers.iter().map(|o| ("BGPPeer", &o.metadata)))
            .chain(r.bfd_profiles.iter().map(|o| ("BFDProfile", &o.metadata)))
            .chain(r.communities.iter().map(|o| ("Community", &o.metadata)));
        let mut out = Vec::new();
        for (kind, meta) in metas {
            let name = meta.name.clone().unwrap_or_default();
            let id = format!("{kind}/{name}");
            let (wanted, group) = if self.metallb_ids.contains(&id) {
                (metallb, METALLB_GROUP)
            } else {
                (ferrolb, crds::GROUP)
            };
            if let Some(ns) = meta.namespace.as_deref().filter(|ns| *ns != wanted) {
                out.push(ConfigError::new(
                    id,
                    "metadata.namespace",
                    format!(
                        "{ns}: {group} objects are read in {wanted}; this one would be ignored"
                    ),
                ));
            }
        }
        out
    }

    /// One line saying what was read, e.g. `read 2 IPAddressPools, 1 L2Advertisement, 1 Service`.
    pub fn summary(&self) -> String {
        let r = &self.resources;
        let counts: BTreeMap<usize, (usize, &str, &str)> = [
            (r.pools.len(), "IPAddressPool", "IPAddressPools"),
            (
                r.l2_advertisements.len(),
                "L2Advertisement",
                "L2Advertisements",
            ),
            (
                r.bgp_advertisements.len(),
                "BGPAdvertisement",
                "BGPAdvertisements",
            ),
            (r.bgp_peers.len(), "BGPPeer", "BGPPeers"),
            (r.bfd_profiles.len(), "BFDProfile", "BFDProfiles"),
            (r.communities.len(), "Community", "Communities"),
            (r.secrets.len(), "Secret", "Secrets"),
            (self.services.len(), "Service", "Services"),
            (self.namespaces.len(), "Namespace", "Namespaces"),
            (self.nodes.len(), "Node", "Nodes"),
            (
                self.endpoint_slices.len(),
                "EndpointSlice",
                "EndpointSlices",
            ),
            (
                self.skipped.len(),
                "object of another kind",
                "objects of other kinds",
            ),
        ]
        .into_iter()
        .enumerate()
        .collect();
        let parts: Vec<String> = counts
            .values()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        if parts.is_empty() {
            "read no objects".to_string()
        } else {
            format!("read {}", parts.join(", "))
        }
    }
}

/// Builds a configuration from YAML text alone (inline manifests, tests): every problem of
/// reading or validating, or the configuration.
pub fn config_from_yaml(text: &str) -> Result<crate::Config, Vec<ConfigError>> {
    let mut manifests = Manifests::default();
    let mut errors = manifests.add_yaml(text, "<yaml>");
    match crate::build(&manifests.resources) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

fn push<T>(item: Option<T>, into: &mut Vec<T>) {
    if let Some(item) = item {
        into.push(item);
    }
}

/// Deserialises `value` as `T`, reporting type errors and unknown fields with their paths.
fn typed<T: DeserializeOwned>(
    value: Value,
    object: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let result: Result<T, _> = serde_path_to_error::deserialize(deserializer);
    // An object with unknown fields is still kept, so its other fields are checked too.
    for path in unknown {
        // The kube-derived types check apiVersion and kind without storing them; `status` of
        // objects FerroLB writes may appear in a manifest and is not configuration.
        if matches!(path.as_str(), "apiVersion" | "kind" | "status") {
            continue;
        }
        errors.push(ConfigError::new(
            object,
            path,
            "unknown field (misspelt? the API server would silently drop it)",
        ));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let field = typed_path(e.path());
            errors.push(ConfigError::new(object, field, e.into_inner().to_string()));
            None
        }
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn typed_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}
