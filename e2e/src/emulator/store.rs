//! The object store: every write goes through one admission pipeline (decode and prune,
//! subresource rules, defaults, validation, generation, field ownership) and produces one
//! event with the next global resourceVersion. A bounded event history serves watches that
//! resume from a resourceVersion and exact-resourceVersion lists.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::error::{ApiError, ApiResult, FieldError};
use super::fields::{self, ApplyOutcome, Shape, Writer};
use super::patch::{self, PatchKind};
use super::registry::{Builtin, Flavour, Registry, ResourceType};
use super::schema;
use super::selector::{FieldSelector, LabelSelector};
use super::services::ServiceNetwork;

pub type StorageKey = (String, String);
pub type ObjectKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as stored in the history and broadcast to watchers.
#[derive(Debug)]
pub struct EventRecord {
    pub rv: u64,
    pub storage: StorageKey,
    pub namespace: String,
    pub kind: EventKind,
    pub object: Value,
    /// The state before the change (for MODIFIED and DELETED).
    pub old: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

/// Per-request write options from the query string.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    /// Derived from the User-Agent when no fieldManager is given.
    pub default_manager: String,
}

impl WriteOptions {
    fn manager(&self) -> String {
        self.field_manager
            .clone()
            .unwrap_or_else(|| self.default_manager.clone())
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a write returns: the object, whether it was created, warnings for the client.
#[derive(Debug)]
pub struct WriteResult {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// How field ownership is recorded for a write.
enum Tracking {
    Update(String),
    /// Server-side apply already wrote managedFields into the object.
    Applied,
}

pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn validate_metadata(rt: &ResourceType, object: &Value, errors: &mut Vec<FieldError>) {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let builtin = rt.builtin();
    let (ok, what) = match builtin {
        Some(Builtin::Namespace) => (is_dns_label(name), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
        Some(Builtin::Service) => (
            is_dns_label(name) && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
        ),
        _ => (is_dns_subdomain(name), "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
    };
    if !ok {
        errors.push(FieldError::invalid(
            "metadata.name",
            &Value::from(name),
            what,
        ));
    }
    if let Some(labels) = object["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errors.push(FieldError::invalid("metadata.labels", &Value::from(k.clone()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            if !v.as_str().is_some_and(is_label_value) {
                errors.push(FieldError::invalid(&format!("metadata.labels.{k}"), v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
    }
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
) -> Result<(Value, Vec<String>), String> {
    let mut unknown = Vec::new();
    let typed: T = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .map_err(|e| e.to_string())?;
    Ok((
        serde_json::to_value(typed).map_err(|e| e.to_string())?,
        unknown,
    ))
}

/// Decodes a built-in object through its typed form, which drops unknown fields (reported).
fn decode_builtin(which: Builtin, value: Value) -> Result<(Value, Vec<String>), String> {
    match which {
        Builtin::Namespace => roundtrip::<api::core::v1::Namespace>(value),
        Builtin::Node => roundtrip::<api::core::v1::Node>(value),
        Builtin::Service => roundtrip::<api::core::v1::Service>(value),
        Builtin::Endpoints => roundtrip::<api::core::v1::Endpoints>(value),
        Builtin::Pod => roundtrip::<api::core::v1::Pod>(value),
        Builtin::CoreEvent => roundtrip::<api::core::v1::Event>(value),
        Builtin::Secret => roundtrip::<api::core::v1::Secret>(value),
        Builtin::ConfigMap => roundtrip::<api::core::v1::ConfigMap>(value),
        Builtin::EndpointSlice => roundtrip::<api::discovery::v1::EndpointSlice>(value),
        Builtin::Lease => roundtrip::<api::coordination::v1::Lease>(value),
        Builtin::Event => roundtrip::<api::events::v1::Event>(value),
        Builtin::CustomResourceDefinition => roundtrip::<CustomResourceDefinition>(value),
    }
}

/// Strips what the server owns before comparing two versions of an object.
fn comparable(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    o
}

/// What a generation bump is about: everything but metadata, and but status when status is
/// a subresource (without one, a status change is a change like any other).
fn spec_part(object: &Value, status_subresource: bool) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "apiVersion", "kind"] {
            m.remove(k);
        }
        if status_subresource {
            m.remove("status");
        }
    }
    o
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

pub struct Store {
    pub registry: Registry,
    rv: u64,
    objects: HashMap<StorageKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<EventRecord>>,
    history_limit: usize,
    /// The newest resourceVersion that has left the history (watches from before it get 410).
    compacted: u64,
    services: ServiceNetwork,
    events: broadcast::Sender<Arc<EventRecord>>,
    cel: kube::core::cel::Validator,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("rv", &self.rv)
            .finish_non_exhaustive()
    }
}

fn ns_subject() -> super::error::Subject<'static> {
    super::error::Subject {
        group: "",
        plural: "namespaces",
        kind: "Namespace",
    }
}

impl Store {
    pub fn new(service_cidrs: Vec<ipnet::IpNet>, history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(16384);
        let mut store = Self {
            registry: Registry::with_builtins(),
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            services: ServiceNetwork::new(service_cidrs),
            events,
            cel: kube::core::cel::Validator::new(),
        };
        let ns = store
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            store
                .create(
                    &ns,
                    "",
                    body,
                    &WriteOptions {
                        default_manager: "kube-apiserver".into(),
                        ..Default::default()
                    },
                )
                .expect("built-in namespaces are valid");
        }
        store
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.events.subscribe()
    }

    /// The object as clients of `rt`'s version see it.
    pub fn present(rt: &ResourceType, object: &Value) -> Value {
        let mut o = match rt.builtin() {
            Some(Builtin::Event) => super::events::to_events_v1(object),
            _ => object.clone(),
        };
        o["apiVersion"] = Value::from(rt.api_version());
        o["kind"] = Value::from(rt.kind.clone());
        o
    }

    fn bucket(&self, rt: &ResourceType) -> Option<&BTreeMap<ObjectKey, Value>> {
        self.objects.get(&rt.storage_key())
    }

    fn lookup(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.bucket(rt)?.get(&(ns.to_string(), name.to_string()))
    }

    fn shape(rt: &ResourceType) -> Shape<'_> {
        match &rt.flavour {
            Flavour::Custom {
                schema: Some(s), ..
            } => Shape {
                schema: Some(s.as_ref()),
            },
            _ => Shape { schema: None },
        }
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<Value> {
        self.lookup(rt, ns, name)
            .map(|o| Self::present(rt, o))
            .ok_or_else(|| ApiError::not_found(rt.subject(), name))
    }

    /// The objects of a resource as they were at `rv`, rebuilt by undoing newer events.
    fn snapshot_at(&self, rt: &ResourceType, rv: u64) -> ApiResult<BTreeMap<ObjectKey, Value>> {
        if rv < self.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                self.compacted
            )));
        }
        let key = rt.storage_key();
        let mut items = self.bucket(rt).cloned().unwrap_or_default();
        for event in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if event.storage != key {
                continue;
            }
            let name = event.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let k = (event.namespace.clone(), name);
            match (&event.kind, &event.old) {
                (EventKind::Added, _) => {
                    items.remove(&k);
                }
                (_, Some(old)) => {
                    items.insert(k, old.clone());
                }
                _ => {}
            }
        }
        Ok(items)
    }

    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Value> {
        let requested = opts
            .resource_version
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "0");
        let requested: Option<u64> = match requested {
            Some(s) => Some(
                s.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
            None => None,
        };
        let (items, list_rv) = match (requested, opts.resource_version_match.as_deref()) {
            (Some(n), Some("Exact")) => {
                if n > self.rv {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {n}, current: {}",
                        self.rv
                    )));
                }
                (self.snapshot_at(rt, n)?, n)
            }
            (Some(n), _) if n > self.rv => {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {n}, current: {}",
                    self.rv
                )));
            }
            _ => (self.bucket(rt).cloned().unwrap_or_default(), self.rv),
        };
        let after: Option<(u64, ObjectKey)> = match &opts.continue_token {
            Some(token) if !token.is_empty() => {
                let decoded =
                    unhex(token).ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let mut parts = decoded.splitn(3, '\n');
                let rv = parts.next().and_then(|s| s.parse().ok());
                let (ns_part, name_part) = (parts.next(), parts.next());
                match (rv, ns_part, name_part) {
                    (Some(rv), Some(a), Some(b)) => Some((rv, (a.to_string(), b.to_string()))),
                    _ => return Err(ApiError::bad_request("invalid continue token")),
                }
            }
            _ => None,
        };
        let mut matching: Vec<(&ObjectKey, &Value)> = items
            .iter()
            .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
            .filter(|(k, _)| after.as_ref().is_none_or(|(_, last)| *k > last))
            .filter(|(_, o)| opts.labels.matches(o) && opts.fields.matches(o))
            .collect();
        let mut next = None;
        let total = matching.len();
        if let Some(limit) = opts.limit.filter(|l| *l > 0) {
            if matching.len() > limit {
                matching.truncate(limit);
                let (last, _) = matching[limit - 1];
                let rv = after.as_ref().map(|(rv, _)| *rv).unwrap_or(list_rv);
                next = Some((hex(&format!("{rv}\n{}\n{}", last.0, last.1)), total - limit));
            }
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some((token, remaining)) = next {
            metadata["continue"] = Value::from(token);
            metadata["remainingItemCount"] = Value::from(remaining);
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": metadata,
            "items": matching.into_iter().map(|(_, o)| Self::present(rt, o)).collect::<Vec<_>>(),
        }))
    }

    /// Drops the whole history, as a restarted API server's watch cache starts empty: only a
    /// watch from the current resourceVersion on can resume.
    pub fn forget_history(&mut self) {
        self.history.clear();
        // Resource versions are opaque to clients; skipping one makes a resume from the last
        // version before the restart as stale as any other.
        self.rv += 1;
        self.compacted = self.rv;
    }

    /// Events a watch from `rv` must replay, or 410 if they have left the history.
    pub fn events_since(&self, rv: u64) -> ApiResult<Vec<Arc<EventRecord>>> {
        if rv < self.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                self.compacted
            )));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Current objects (for a watch that starts with the state).
    pub fn current(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        self.bucket(rt)
            .map(|b| {
                b.iter()
                    .filter(|((o_ns, _), _)| ns.is_none_or(|n| n == o_ns))
                    .map(|(_, o)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record(
        &mut self,
        rt_key: StorageKey,
        namespace: &str,
        kind: EventKind,
        object: &mut Value,
        old: Option<Value>,
    ) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = Value::from(self.rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bucket = self.objects.entry(rt_key.clone()).or_default();
        match kind {
            EventKind::Deleted => {
                bucket.remove(&(namespace.to_string(), name));
            }
            _ => {
                bucket.insert((namespace.to_string(), name), object.clone());
            }
        }
        let event = Arc::new(EventRecord {
            rv: self.rv,
            storage: rt_key,
            namespace: namespace.to_string(),
            kind,
            object: object.clone(),
            old,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        let _ = self.events.send(event);
    }

    /// Decode, prune and (for custom kinds) default an incoming object.
    fn decode(
        &self,
        rt: &ResourceType,
        mut object: Value,
        validation: FieldValidation,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let kind = &rt.kind;
        let version = &rt.version;
        let cannot = |e: String| {
            ApiError::bad_request(format!(
                "{kind} in version {version:?} cannot be handled as a {kind}: {e}"
            ))
        };
        let mut unknown = Vec::new();
        if let Some(meta) = object.get("metadata").cloned() {
            let (meta, mut u) = roundtrip::<ObjectMeta>(meta).map_err(cannot)?;
            object["metadata"] = meta;
            unknown.extend(u.drain(..).map(|p| format!("metadata.{p}")));
        }
        match &rt.flavour {
            Flavour::Builtin(which) => {
                let (decoded, u) = decode_builtin(*which, object).map_err(cannot)?;
                object = decoded;
                unknown.extend(u.into_iter().filter(|p| !p.starts_with("metadata.")));
            }
            Flavour::Custom {
                schema: Some(schema),
                ..
            } => {
                schema::prune_and_default(&mut object, schema, "", true, &mut unknown, true);
            }
            Flavour::Custom { schema: None, .. } => {}
        }
        if !unknown.is_empty() {
            match validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|p| format!("unknown field {p:?}"))
                        .collect();
                    return Err(cannot(format!(
                        "strict decoding error: {}",
                        list.join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|p| format!("unknown field {p:?}")))
                }
                FieldValidation::Ignore => {}
            }
        }
        Ok(object)
    }

    /// The shared admission pipeline for creates and updates.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        old: Option<&Value>,
        incoming: Value,
        subresource: &str,
        opts: &WriteOptions,
        tracking: Tracking,
        warnings: &mut Vec<String>,
    ) -> ApiResult<Value> {
        let mut object = self.decode(rt, incoming, opts.field_validation, warnings)?;
        if rt.builtin() == Some(Builtin::Event) {
            object = super::events::to_core(&object);
        }
        object["apiVersion"] = Value::from(rt.api_version());
        object["kind"] = Value::from(rt.kind.clone());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if rt.namespaced {
            object["metadata"]["namespace"] = Value::from(ns);
        } else if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("namespace");
        }

        // Subresource separation.
        match (old, subresource, rt.status) {
            (Some(old), "status", _) => {
                let mut merged = old.clone();
                match object.get("status") {
                    Some(s) => merged["status"] = s.clone(),
                    None => {
                        if let Some(m) = merged.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if matches!(tracking, Tracking::Applied) {
                    merged["metadata"]["managedFields"] =
                        object["metadata"]["managedFields"].clone();
                }
                object = merged;
            }
            (Some(old), _, true) => match old.get("status") {
                Some(s) => object["status"] = s.clone(),
                None => {
                    if let Some(m) = object.as_object_mut() {
                        m.remove("status");
                    }
                }
            },
            (None, _, true) if rt.is_custom() => {
                if let Some(m) = object.as_object_mut() {
                    m.remove("status");
                }
            }
            _ => {}
        }

        // Server-owned metadata.
        let meta_keys = [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ];
        match old {
            Some(old) => {
                for key in meta_keys {
                    match old["metadata"].get(key) {
                        Some(v) => object["metadata"][key] = v.clone(),
                        None => {
                            if let Some(m) = object["metadata"].as_object_mut() {
                                m.remove(key);
                            }
                        }
                    }
                }
                if old["metadata"].get("deletionTimestamp").is_some() {
                    let before: Vec<Value> = old["metadata"]["finalizers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    let added = object["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|now| now.iter().any(|f| !before.contains(f)));
                    if added {
                        return Err(ApiError::invalid(
                            rt.subject(),
                            &name,
                            &[FieldError::forbidden(
                                "metadata.finalizers",
                                "no new finalizers can be added if the object is being deleted",
                            )],
                        ));
                    }
                }
            }
            None => {
                if let Some(m) = object["metadata"].as_object_mut() {
                    for key in meta_keys {
                        m.remove(key);
                    }
                }
                object["metadata"]["uid"] = Value::from(new_uid());
                object["metadata"]["creationTimestamp"] = Value::from(now());
            }
        }

        // Defaults of the built-in kinds.
        match rt.builtin() {
            Some(Builtin::Namespace) => {
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] =
                    Value::from(name.clone());
                if old.is_none() {
                    if object["spec"]["finalizers"].is_null() {
                        object["spec"]["finalizers"] = json!(["kubernetes"]);
                    }
                    object["status"] = json!({"phase": "Active"});
                }
            }
            Some(Builtin::Secret) => {
                // stringData is write-only: it lands in data, base64-encoded.
                if let Some(Value::Object(plain)) =
                    object.as_object_mut().and_then(|m| m.remove("stringData"))
                {
                    use base64::Engine;
                    for (k, v) in plain {
                        let text = v.as_str().unwrap_or_default().to_string();
                        object["data"][k] =
                            Value::from(base64::engine::general_purpose::STANDARD.encode(text));
                    }
                }
            }
            Some(Builtin::EndpointSlice) => {
                if let Some(ports) = object["ports"].as_array_mut() {
                    for p in ports {
                        if p["protocol"].is_null() {
                            p["protocol"] = Value::from("TCP");
                        }
                    }
                }
            }
            _ => {}
        }

        // Validation.
        let mut errors = Vec::new();
        validate_metadata(rt, &object, &mut errors);
        if let Flavour::Custom {
            schema: Some(schema),
            has_cel,
            ..
        } = &rt.flavour
        {
            schema::validate(&object, schema, "", true, &mut errors);
            if errors.is_empty() && *has_cel {
                if let Err(failures) = self.cel.validate(schema, &object, old) {
                    for f in failures.iter() {
                        let field = if f.field_path.is_empty() {
                            "<root>".to_string()
                        } else {
                            f.field_path.clone()
                        };
                        errors.push(FieldError {
                            field,
                            reason: "FieldValueInvalid",
                            detail: format!("Invalid value: \"object\": {}", f.message),
                        });
                    }
                }
            }
        }
        match rt.builtin() {
            Some(Builtin::EndpointSlice)
                if object["addressType"].as_str().is_none_or(str::is_empty) =>
            {
                errors.push(FieldError::required("addressType"));
            }
            Some(Builtin::Lease) => {
                if let Some(d) = object["spec"]["leaseDurationSeconds"].as_i64() {
                    if d <= 0 {
                        errors.push(FieldError::invalid(
                            "spec.leaseDurationSeconds",
                            &Value::from(d),
                            "must be greater than 0",
                        ));
                    }
                }
            }
            Some(Builtin::CustomResourceDefinition) => {
                super::registry::crd_resource_types(&object)?;
            }
            _ => {}
        }
        if errors.is_empty() && rt.builtin() == Some(Builtin::Service) && subresource != "status" {
            if let Err(mut e) = self
                .services
                .admit(&format!("{ns}/{name}"), old, &mut object)
            {
                errors.append(&mut e);
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid(rt.subject(), &name, &errors));
        }

        if rt.builtin() == Some(Builtin::CustomResourceDefinition) {
            let spec = &object["spec"];
            let stored: Vec<Value> = spec["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"].as_bool() == Some(true))
                .map(|v| v["name"].clone())
                .collect();
            let t = now();
            object["status"] = json!({
                "acceptedNames": spec["names"],
                "storedVersions": stored,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
                ],
            });
        }

        // Generation: 1 on create, +1 when anything but metadata and status changes.
        if rt.has_generation() {
            let generation = match old {
                None => 1,
                Some(old) => {
                    let g = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    if spec_part(old, rt.status) != spec_part(&object, rt.status) {
                        g + 1
                    } else {
                        g
                    }
                }
            };
            object["metadata"]["generation"] = Value::from(generation);
        }

        // Field ownership.
        let api_version = rt.api_version();
        let time = now();
        let writer = Writer {
            manager: "",
            subresource,
            api_version: &api_version,
            time: &time,
            has_status: rt.status,
        };
        match tracking {
            Tracking::Update(manager) => {
                if let Some(old) = old {
                    object["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
                } else if let Some(m) = object["metadata"].as_object_mut() {
                    m.remove("managedFields");
                }
                fields::track_update(
                    old,
                    &mut object,
                    &Writer {
                        manager: &manager,
                        ..writer
                    },
                    Self::shape(rt),
                );
            }
            Tracking::Applied => {}
        }
        if object["metadata"]["managedFields"].is_null() {
            if let Some(m) = object["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
        Ok(object)
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_rt = self
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        match self.lookup(&ns_rt, "", ns) {
            None => Err(ApiError::not_found(ns_subject(), ns)),
            Some(n) if n["metadata"].get("deletionTimestamp").is_some() => Err(ApiError::forbidden(format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.subject().qualified_resource(),
            ))),
            Some(_) => Ok(()),
        }
    }

    fn after_store(&mut self, rt: &ResourceType, ns: &str, object: Option<&Value>, name: &str) {
        match rt.builtin() {
            Some(Builtin::Service) => self.services.commit(&format!("{ns}/{name}"), object),
            Some(Builtin::CustomResourceDefinition) => {
                if let Some(crd) = object {
                    let _ = self.registry.register_crd(crd);
                }
            }
            _ => {}
        }
    }

    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        self.create_tracked(rt, ns, body, opts, Tracking::Update(opts.manager()))
    }

    fn create_tracked(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut body: Value,
        opts: &WriteOptions,
        tracking: Tracking,
    ) -> ApiResult<WriteResult> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if let Some(kind) = body["kind"].as_str() {
            if kind != rt.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({kind}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        if let Some(body_ns) = body["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if rt.namespaced && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let mut name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            match body["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    name = format!("{prefix}{}", random_suffix());
                    body["metadata"]["name"] = Value::from(name.clone());
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt.subject(),
                        "",
                        &[FieldError {
                            field: "metadata.name".into(),
                            reason: "FieldValueRequired",
                            detail: "Required value: name or generateName is required".into(),
                        }],
                    ))
                }
            }
        }
        let tracked_apply = matches!(tracking, Tracking::Applied);
        if !tracked_apply
            && body["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        self.check_namespace(rt, ns, &name)?;
        if self.lookup(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt.subject(), &name));
        }
        let mut warnings = Vec::new();
        let mut object = self.admit(rt, ns, None, body, "", opts, tracking, &mut warnings)?;
        if !opts.dry_run {
            self.record(rt.storage_key(), ns, EventKind::Added, &mut object, None);
            self.after_store(rt, ns, Some(&object), &name);
        }
        Ok(WriteResult {
            object: Self::present(rt, &object),
            created: true,
            warnings,
        })
    }

    fn check_preconditions(
        rt: &ResourceType,
        name: &str,
        old: &Value,
        uid: Option<&str>,
        rv: Option<&str>,
    ) -> ApiResult<()> {
        let old_uid = old["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(uid) = uid.filter(|u| !u.is_empty()) {
            if uid != old_uid {
                return Err(ApiError::conflict(
                    rt.subject(),
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"),
                ));
            }
        }
        if let Some(rv) = rv.filter(|r| !r.is_empty()) {
            if rv
                != old["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            {
                return Err(ApiError::stale(rt.subject(), name));
            }
        }
        Ok(())
    }

    pub fn update(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        subresource: &str,
        opts: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        if body["metadata"]["resourceVersion"]
            .as_str()
            .is_none_or(str::is_empty)
            && !rt.allows_unconditional_update()
        {
            return Err(ApiError::invalid(
                rt.subject(),
                name,
                &[FieldError::invalid(
                    "metadata.resourceVersion",
                    &Value::from(0),
                    "must be specified for an update",
                )],
            ));
        }
        self.update_tracked(
            rt,
            ns,
            name,
            body,
            subresource,
            opts,
            Tracking::Update(opts.manager()),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn update_tracked(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        mut body: Value,
        subresource: &str,
        opts: &WriteOptions,
        tracking: Tracking,
    ) -> ApiResult<WriteResult> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        match body["metadata"]["name"].as_str() {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => body["metadata"]["name"] = Value::from(name),
        }
        if let Some(body_ns) = body["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
        {
            if rt.namespaced && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        let old = self
            .lookup(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.subject(), name))?;
        Self::check_preconditions(
            rt,
            name,
            &old,
            body["metadata"]["uid"].as_str(),
            body["metadata"]["resourceVersion"].as_str(),
        )?;
        let mut warnings = Vec::new();
        let mut object = self.admit(
            rt,
            ns,
            Some(&old),
            body,
            subresource,
            opts,
            tracking,
            &mut warnings,
        )?;
        object["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if comparable(&object) == comparable(&old) || opts.dry_run {
            // A no-op write neither bumps the resourceVersion nor emits an event.
            let shown = if opts.dry_run { object } else { old };
            return Ok(WriteResult {
                object: Self::present(rt, &shown),
                created: false,
                warnings,
            });
        }
        let finalized = object["metadata"].get("deletionTimestamp").is_some()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty);
        if finalized {
            self.remove(rt, ns, name, object.clone(), old);
        } else {
            self.record(
                rt.storage_key(),
                ns,
                EventKind::Modified,
                &mut object,
                Some(old),
            );
            self.after_store(rt, ns, Some(&object), name);
        }
        Ok(WriteResult {
            object: Self::present(rt, &object),
            created: false,
            warnings,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        subresource: &str,
        opts: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        if kind == PatchKind::Apply {
            return self.apply(rt, ns, name, body, subresource, opts);
        }
        if kind == PatchKind::Strategic && rt.is_custom() {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        let old = self
            .lookup(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.subject(), name))?;
        let mut target = Self::present(rt, &old);
        match kind {
            PatchKind::Json => patch::json_patch(&mut target, body)?,
            PatchKind::Merge => patch::merge_patch(&mut target, body)?,
            PatchKind::Strategic => patch::strategic_merge_patch(&mut target, body)?,
            PatchKind::Apply => unreachable!("handled above"),
        }
        self.update_tracked(
            rt,
            ns,
            name,
            target,
            subresource,
            opts,
            Tracking::Update(opts.manager()),
        )
    }

    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: &[u8],
        subresource: &str,
        opts: &WriteOptions,
    ) -> ApiResult<WriteResult> {
        let Some(manager) = opts.field_manager.clone().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                super::error::Subject {
                    group: "meta.k8s.io",
                    plural: "patchoptions",
                    kind: "PatchOptions",
                },
                "",
                &[FieldError {
                    field: "fieldManager".into(),
                    reason: "FieldValueRequired",
                    detail: "Required value: is required for apply patch".into(),
                }],
            ));
        };
        let mut applied: Value = serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        if !applied.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        match applied.get("metadata") {
            None | Some(Value::Null) => applied["metadata"] = json!({}),
            Some(Value::Object(_)) => {}
            Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
        }
        for key in ["apiVersion", "kind"] {
            if applied[key].as_str().is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(format!("{key} must be set")));
            }
        }
        if applied["kind"].as_str() != Some(rt.kind.as_str()) {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                applied["kind"].as_str().unwrap_or_default(),
                rt.kind
            )));
        }
        match applied["metadata"]["name"].as_str() {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            None => applied["metadata"]["name"] = Value::from(name),
        }
        // The applied configuration is pruned like any object, but not defaulted: defaults
        // are nobody's fields.
        let mut unknown = Vec::new();
        if let Flavour::Custom {
            schema: Some(schema),
            ..
        } = &rt.flavour
        {
            schema::prune_and_default(&mut applied, schema, "", true, &mut unknown, false);
        }
        if !unknown.is_empty() && opts.field_validation == FieldValidation::Strict {
            let list: Vec<String> = unknown
                .iter()
                .map(|p| format!("unknown field {p:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                rt.kind,
                rt.version,
                rt.kind,
                list.join(", ")
            )));
        }
        let api_version = rt.api_version();
        let time = now();
        let writer = Writer {
            manager: &manager,
            subresource,
            api_version: &api_version,
            time: &time,
            has_status: rt.status,
        };
        let old = self.lookup(rt, ns, name).cloned();
        let live = match &old {
            Some(o) => {
                Self::check_preconditions(
                    rt,
                    name,
                    o,
                    applied["metadata"]["uid"].as_str(),
                    applied["metadata"]["resourceVersion"].as_str(),
                )?;
                Self::present(rt, o)
            }
            None if subresource == "status" => return Err(ApiError::not_found(rt.subject(), name)),
            None => json!({"apiVersion": api_version, "kind": rt.kind, "metadata": {"name": name}}),
        };
        let merged = match fields::apply(&live, &applied, &writer, opts.force, Self::shape(rt)) {
            ApplyOutcome::Merged(m) => m,
            ApplyOutcome::Conflicts(c) => {
                return Err(ApiError::apply_conflicts(rt.subject(), name, &c))
            }
        };
        let mut result = match old {
            Some(_) => {
                self.update_tracked(rt, ns, name, merged, subresource, opts, Tracking::Applied)?
            }
            None => self.create_tracked(rt, ns, merged, opts, Tracking::Applied)?,
        };
        result
            .warnings
            .extend(unknown.into_iter().map(|p| format!("unknown field {p:?}")));
        Ok(result)
    }

    /// Removes an object for good, emitting DELETED; cascades for namespaces and CRDs.
    fn remove(&mut self, rt: &ResourceType, ns: &str, name: &str, mut object: Value, old: Value) {
        self.record(
            rt.storage_key(),
            ns,
            EventKind::Deleted,
            &mut object,
            Some(old),
        );
        self.after_store(rt, ns, None, name);
        match rt.builtin() {
            Some(Builtin::CustomResourceDefinition) => {
                let crd_name = name.to_string();
                if let Ok(types) = super::registry::crd_resource_types(&object) {
                    if let Some(first) = types.first() {
                        let key = first.storage_key();
                        let doomed: Vec<(ObjectKey, Value)> = self
                            .objects
                            .get(&key)
                            .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                            .unwrap_or_default();
                        for ((o_ns, _), obj) in doomed {
                            let mut o = obj.clone();
                            self.record(key.clone(), &o_ns, EventKind::Deleted, &mut o, Some(obj));
                        }
                    }
                }
                self.registry.unregister_crd(&crd_name);
            }
            Some(Builtin::Namespace) => {}
            _ => self.maybe_finish_namespace(ns),
        }
    }

    /// A terminating namespace goes away once nothing is left in it.
    fn maybe_finish_namespace(&mut self, ns: &str) {
        if ns.is_empty() {
            return;
        }
        let ns_rt = self
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        let Some(namespace) = self.lookup(&ns_rt, "", ns).cloned() else {
            return;
        };
        let pinned = namespace["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if namespace["metadata"].get("deletionTimestamp").is_none() || pinned {
            return;
        }
        let empty = self.objects.iter().all(|((g, p), bucket)| {
            (g.is_empty() && p == "namespaces") || !bucket.keys().any(|(o_ns, _)| o_ns == ns)
        });
        if empty {
            let mut gone = namespace.clone();
            self.record(
                ns_rt.storage_key(),
                "",
                EventKind::Deleted,
                &mut gone,
                Some(namespace),
            );
        }
    }

    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<(Value, bool)> {
        let old = self
            .lookup(rt, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt.subject(), name))?;
        if let Some(rv) = opts.resource_version.as_deref().filter(|r| !r.is_empty()) {
            let current = old["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default();
            if rv != current {
                return Err(ApiError::conflict(
                    rt.subject(),
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current}"),
                ));
            }
        }
        Self::check_preconditions(rt, name, &old, opts.uid.as_deref(), None)?;
        if opts.dry_run {
            return Ok((Self::present(rt, &old), true));
        }
        let finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let is_namespace = rt.builtin() == Some(Builtin::Namespace);
        if finalizers || is_namespace {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok((Self::present(rt, &old), false));
            }
            let mut object = old.clone();
            object["metadata"]["deletionTimestamp"] = Value::from(now());
            object["metadata"]["deletionGracePeriodSeconds"] = Value::from(0);
            if let Some(g) = object["metadata"]["generation"].as_i64() {
                object["metadata"]["generation"] = Value::from(g + 1);
            }
            if is_namespace {
                object["status"]["phase"] = Value::from("Terminating");
            }
            self.record(
                rt.storage_key(),
                ns,
                EventKind::Modified,
                &mut object,
                Some(old),
            );
            if is_namespace {
                self.empty_namespace(name);
                self.maybe_finish_namespace(name);
                let still = self.lookup(rt, "", name).cloned();
                return Ok((
                    Self::present(rt, still.as_ref().unwrap_or(&object)),
                    still.is_none(),
                ));
            }
            return Ok((Self::present(rt, &object), false));
        }
        let mut gone = old.clone();
        gone["metadata"]["deletionTimestamp"] = Value::from(now());
        gone["metadata"]["deletionGracePeriodSeconds"] = Value::from(0);
        self.remove(rt, ns, name, gone.clone(), old);
        Ok((Self::present(rt, &gone), true))
    }

    /// Deletes everything in a namespace (objects with finalizers are only marked).
    fn empty_namespace(&mut self, ns: &str) {
        let keys: Vec<StorageKey> = self.objects.keys().cloned().collect();
        for key in keys {
            let names: Vec<String> = self.objects[&key]
                .keys()
                .filter(|(o_ns, _)| o_ns == ns)
                .map(|(_, n)| n.clone())
                .collect();
            let Some(rt) = self.type_for_storage(&key) else {
                continue;
            };
            for name in names {
                let _ = self.delete(&rt, ns, &name, &DeleteOptions::default());
            }
        }
    }

    fn type_for_storage(&self, key: &StorageKey) -> Option<ResourceType> {
        self.registry
            .groups()
            .into_iter()
            .filter(|(g, _)| *g == key.0)
            .flat_map(|(g, versions)| versions.into_iter().map(move |v| (g.clone(), v)))
            .find_map(|(g, v)| self.registry.get(&g, &v, &key.1))
            .map(|rt| (*rt).clone())
    }

    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Value> {
        let listed = self.list(rt, ns, list)?;
        let mut deleted = Vec::new();
        for item in listed["items"].as_array().cloned().unwrap_or_default() {
            let name = item["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let o_ns = item["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Ok((o, _)) = self.delete(rt, &o_ns, &name, opts) {
                deleted.push(o);
            }
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": deleted,
        }))
    }
}
