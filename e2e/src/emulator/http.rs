//! The HTTP face of the emulator: Kubernetes REST paths, discovery, and chunked watch streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::error::{ApiError, ApiResult};
use super::patch::PatchKind;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{
    DeleteOptions, EventKind, EventRecord, FieldValidation, ListOptions, Store, WriteOptions,
};

/// State shared by all request handlers.
#[derive(Debug)]
pub struct Shared {
    /// Shared with the next server after a restart ([`super::Emulator::go_down`]).
    pub store: Arc<Mutex<Store>>,
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Bumped to end every open watch (clients then resume from their resourceVersion).
    pub disconnect: tokio::sync::watch::Sender<u64>,
    pub server_address: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock would be a bug; keep serving rather than cascade.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut response = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {w:?}")) {
            response.headers_mut().append("Warning", v);
        }
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.to_status(), &[])
    }
}

/// Where a resource request points.
#[derive(Debug, Default)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_resource_path(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let mut t = Target {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    let tail: &[&str] = match rest {
        ["namespaces", ns, res, tail @ ..] if *res != "status" && *res != "finalize" => {
            t.namespace = Some(ns.to_string());
            t.plural = res.to_string();
            tail
        }
        [res, tail @ ..] => {
            t.plural = res.to_string();
            tail
        }
        [] => return None,
    };
    match tail {
        [] => {}
        [name] => t.name = Some(name.to_string()),
        [name, sub] => {
            t.name = Some(name.to_string());
            t.subresource = Some(sub.to_string());
        }
        _ => return None,
    }
    Some(t)
}

pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    tracing::debug!(%method, %path, query = ?uri.query(), "request");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match segments.as_slice() {
        ["version"] => Ok(json_response(200, &version_info(), &[])),
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v3"] => Ok(json_response(200, &openapi_v3_root(&shared), &[])),
        ["openapi", "v3", "api", version] => openapi_v3_group_version(&shared, "", version),
        ["openapi", "v3", "apis", group, version] => {
            openapi_v3_group_version(&shared, group, version)
        }
        ["api"] => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.server_address}]}),
            &[],
        )),
        ["apis"] => Ok(json_response(200, &group_list(&shared), &[])),
        ["api", "v1"] => resource_list(&shared, "", "v1"),
        ["apis", group] => api_group(&shared, group),
        ["apis", group, version] => resource_list(&shared, group, version),
        ["api", "v1", rest @ ..] => match parse_resource_path("", "v1", rest) {
            Some(t) => resource_request(&shared, method, t, &query, &headers, body).await,
            None => Err(ApiError::not_found_path(&path)),
        },
        ["apis", group, version, rest @ ..] => match parse_resource_path(group, version, rest) {
            Some(t) => resource_request(&shared, method, t, &query, &headers, body).await,
            None => Err(ApiError::not_found_path(&path)),
        },
        _ => Err(ApiError::not_found_path(&path)),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(code = e.code, message = %e.message, "request failed");
        e.into_response()
    })
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-ferrolb-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn group_list(shared: &Shared) -> Value {
    let store = shared.lock();
    let groups: Vec<Value> = store
        .registry
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, versions)| group_json(&g, &versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn api_group(shared: &Shared, group: &str) -> ApiResult<Response> {
    let store = shared.lock();
    let (g, versions) = store
        .registry
        .groups()
        .into_iter()
        .find(|(g, _)| g == group)
        .ok_or_else(|| ApiError::not_found_path(&format!("/apis/{group}")))?;
    let mut body = group_json(&g, &versions);
    body["kind"] = Value::from("APIGroup");
    body["apiVersion"] = Value::from("v1");
    Ok(json_response(200, &body, &[]))
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> ApiResult<Response> {
    let store = shared.lock();
    if !store.registry.has_group_version(group, version) {
        return Err(ApiError::not_found_path(&format!(
            "/apis/{group}/{version}"
        )));
    }
    let mut resources = Vec::new();
    for rt in store.registry.resources(group, version) {
        resources.push(json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": rt.short_names,
            "categories": rt.categories,
        }));
        if rt.status {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}),
        &[],
    ))
}

/// The OpenAPI v3 index: one document per group/version, as kubectl expects.
fn openapi_v3_root(shared: &Shared) -> Value {
    let store = shared.lock();
    let mut paths = serde_json::Map::new();
    for (group, versions) in store.registry.groups() {
        for version in versions {
            let key = if group.is_empty() {
                format!("api/{version}")
            } else {
                format!("apis/{group}/{version}")
            };
            let url = format!("/openapi/v3/{key}?hash={}", store.resource_version());
            paths.insert(key, json!({"serverRelativeURL": url}));
        }
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for a group/version: no schemas, but one operation per
/// verb with the group-version-kind extension and the `fieldValidation` parameter, which is
/// what kubectl checks before it leaves validation to the server (`--validate=strict`).
fn openapi_v3_group_version(shared: &Shared, group: &str, version: &str) -> ApiResult<Response> {
    let store = shared.lock();
    if !store.registry.has_group_version(group, version) {
        return Err(ApiError::not_found_path(&format!(
            "/openapi/v3/{group}/{version}"
        )));
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let params = json!([
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    let mut paths = serde_json::Map::new();
    for rt in store.registry.resources(group, version) {
        let gvk = json!({"group": group, "version": version, "kind": rt.kind});
        let op = |action: &str| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": {}});
        let base = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    let doc = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    });
    Ok(json_response(200, &doc, &[]))
}

/// Whether the client asked for objects or only their metadata (`as=PartialObjectMetadata`,
/// as kube-rs `list_metadata` and `metadata_watcher` do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Full,
    Metadata,
}

fn view(headers: &HeaderMap) -> View {
    let metadata = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|t| t.contains("as=PartialObjectMetadata"))
        });
    if metadata {
        View::Metadata
    } else {
        View::Full
    }
}

fn render(view: View, rt: &ResourceType, object: &Value) -> Value {
    match view {
        View::Full => Store::present(rt, object),
        View::Metadata => json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object["metadata"],
        }),
    }
}

/// kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` first.
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|t| t.contains("as=Table") && t.contains("v=v1"))
        })
}

fn flag(query: &HashMap<String, String>, key: &str) -> bool {
    query
        .get(key)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let field_validation = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )))
        }
    };
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    Ok(WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
        field_manager: query.get("fieldManager").cloned(),
        field_validation,
        force: flag(query, "force"),
        default_manager: agent.split('/').next().unwrap_or(agent).to_string(),
    })
}

fn list_options(rt: &ResourceType, query: &HashMap<String, String>) -> ApiResult<ListOptions> {
    let fields =
        FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    for field in fields.fields() {
        if !rt.selectable_fields().iter().any(|f| f == field) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {field}"
            )));
        }
    }
    // events.k8s.io selectors name fields of the stored (core) shape.
    let fields = if rt.builtin() == Some(super::registry::Builtin::Event) {
        fields.map_fields(super::events::core_field_label)
    } else {
        fields
    };
    Ok(ListOptions {
        labels: LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields,
        limit: query.get("limit").and_then(|l| l.parse().ok()),
        continue_token: query.get("continue").cloned(),
        resource_version: query.get("resourceVersion").cloned(),
        resource_version_match: query
            .get("resourceVersionMatch")
            .cloned()
            .filter(|s| !s.is_empty()),
    })
}

fn parse_body(body: &Bytes, headers: &HeaderMap) -> ApiResult<Value> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the API emulator speaks JSON and YAML only, not {content_type}"
        )));
    }
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

async fn resource_request(
    shared: &Arc<Shared>,
    method: Method,
    t: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let rt = shared
        .lock()
        .registry
        .get(&t.group, &t.version, &t.plural)
        .ok_or_else(|| {
            ApiError::not_found_path(&format!("{}/{}/{}", t.group, t.version, t.plural))
        })?;
    let rt: &ResourceType = &rt;
    if !rt.namespaced && t.namespace.is_some() {
        return Err(ApiError::not_found_path(&format!(
            "namespaced request for cluster-scoped {}",
            rt.plural
        )));
    }
    if rt.namespaced && t.namespace.is_none() && (t.name.is_some() || method == Method::POST) {
        return Err(ApiError::not_found_path(&format!(
            "{} needs a namespace",
            rt.plural
        )));
    }
    let sub = t.subresource.clone().unwrap_or_default();
    if !(sub.is_empty() || (sub == "status" && rt.status)) {
        return Err(ApiError::not_found_path(&format!("{}/{sub}", rt.plural)));
    }
    let ns = t.namespace.clone().unwrap_or_default();
    match (method, t.name.as_deref()) {
        (Method::GET, None) if flag(query, "watch") => {
            watch(shared, rt, t.namespace.as_deref(), query, view(headers))
        }
        (Method::GET, None) => {
            let list = shared
                .lock()
                .list(rt, t.namespace.as_deref(), &list_options(rt, query)?)?;
            if view(headers) == View::Metadata {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|o| render(View::Metadata, rt, o))
                    .collect();
                let body = json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadataList",
                    "metadata": list["metadata"],
                    "items": items,
                });
                return Ok(json_response(200, &body, &[]));
            }
            if wants_table(headers) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                return Ok(json_response(
                    200,
                    &super::table::table(rt, &items, &list["metadata"], query),
                    &[],
                ));
            }
            Ok(json_response(200, &list, &[]))
        }
        (Method::GET, Some(name)) => {
            let object = shared.lock().get(rt, &ns, name)?;
            if view(headers) == View::Metadata {
                return Ok(json_response(
                    200,
                    &render(View::Metadata, rt, &object),
                    &[],
                ));
            }
            if wants_table(headers) {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                return Ok(json_response(
                    200,
                    &super::table::table(rt, &[object], &meta, query),
                    &[],
                ));
            }
            Ok(json_response(200, &object, &[]))
        }
        (Method::POST, None) => {
            let opts = write_options(query, headers)?;
            let object = parse_body(&body, headers)?;
            let r = shared.lock().create(rt, &ns, object, &opts)?;
            Ok(json_response(201, &r.object, &r.warnings))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_options(query, headers)?;
            let object = parse_body(&body, headers)?;
            let r = shared.lock().update(rt, &ns, name, object, &sub, &opts)?;
            Ok(json_response(200, &r.object, &r.warnings))
        }
        (Method::PATCH, Some(name)) => {
            let opts = write_options(query, headers)?;
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = PatchKind::from_content_type(content_type).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
                ))
            })?;
            let r = shared
                .lock()
                .patch(rt, &ns, name, kind, &body, &sub, &opts)?;
            Ok(json_response(
                if r.created { 201 } else { 200 },
                &r.object,
                &r.warnings,
            ))
        }
        (Method::DELETE, Some(name)) => {
            let mut opts = DeleteOptions {
                dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
                ..Default::default()
            };
            if !body.is_empty() {
                let options: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
                opts.uid = options["preconditions"]["uid"].as_str().map(String::from);
                opts.resource_version = options["preconditions"]["resourceVersion"]
                    .as_str()
                    .map(String::from);
                if options["dryRun"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|x| x == "All"))
                {
                    opts.dry_run = true;
                }
            }
            let (object, gone) = shared.lock().delete(rt, &ns, name, &opts)?;
            Ok(json_response(if gone { 200 } else { 202 }, &object, &[]))
        }
        (Method::DELETE, None) => {
            let opts = DeleteOptions {
                dry_run: query.get("dryRun").is_some_and(|v| v == "All"),
                ..Default::default()
            };
            let list = shared.lock().delete_collection(
                rt,
                t.namespace.as_deref(),
                &list_options(rt, query)?,
                &opts,
            )?;
            Ok(json_response(200, &list, &[]))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method ({m}) on the requested resource"
        ))),
    }
}

/// Which events a watcher gets, and as what.
struct WatchFilter {
    storage: (String, String),
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str().unwrap_or_default() == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// Objects moving into or out of the selection turn into ADDED and DELETED, as in the real server.
    fn translate<'a>(&self, e: &'a EventRecord) -> Option<(&'static str, &'a Value)> {
        if e.storage != self.storage {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.old.as_ref().is_some_and(|o| self.matches(o));
        match e.kind {
            EventKind::Added if now => Some(("ADDED", &e.object)),
            EventKind::Modified if now && before => Some(("MODIFIED", &e.object)),
            EventKind::Modified if now => Some(("ADDED", &e.object)),
            EventKind::Modified if before => Some(("DELETED", &e.object)),
            EventKind::Deleted if before || now => Some(("DELETED", &e.object)),
            _ => None,
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut object = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"resourceVersion": rv.to_string()}});
    if initial_end {
        object["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &object)
}

fn watch(
    shared: &Arc<Shared>,
    rt: &ResourceType,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    view: View,
) -> ApiResult<Response> {
    let list = list_options(rt, query)?;
    let filter = WatchFilter {
        storage: rt.storage_key(),
        namespace: ns.map(String::from),
        labels: list.labels,
        fields: list.fields,
    };
    let bookmarks = flag(query, "allowWatchBookmarks");
    let initial_events = flag(query, "sendInitialEvents");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(shared.default_watch_timeout);
    let requested: Option<u64> = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };

    let mut first: Vec<Bytes> = Vec::new();
    let mut expired = false;
    let (receiver, start_rv) = {
        let store = shared.lock();
        let receiver = store.subscribe();
        let current = store.resource_version();
        match requested {
            Some(rv) if !initial_events => match store.events_since(rv) {
                Ok(events) => {
                    for e in &events {
                        if let Some((kind, object)) = filter.translate(e) {
                            first.push(line(kind, &render(view, rt, object)));
                        }
                    }
                }
                Err(gone) => {
                    // Like the real server: HTTP 200, then an ERROR event carrying 410.
                    first.push(line("ERROR", &gone.to_status()));
                    expired = true;
                }
            },
            _ => {
                for object in store.current(rt, ns) {
                    if filter.matches(&object) {
                        first.push(line("ADDED", &render(view, rt, &object)));
                    }
                }
                if initial_events && bookmarks {
                    first.push(bookmark(rt, current, true));
                }
            }
        }
        // From a resourceVersion the server has not reached yet, only later events count
        // (what the watch cache does).
        (receiver, requested.map_or(current, |rv| rv.max(current)))
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let rt = rt.clone();
    let interval = shared.bookmark_interval;
    let mut shutdown = shared.shutdown.clone();
    let mut disconnect = shared.disconnect.subscribe();
    tokio::spawn(async move {
        for l in first {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        pump(
            receiver,
            tx,
            filter,
            rt,
            view,
            start_rv,
            bookmarks,
            interval,
            timeout,
            Stops {
                shutdown: &mut shutdown,
                disconnect: &mut disconnect,
            },
        )
        .await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Ok(response)
}

/// What ends a watch early: server shutdown, or a test asking to drop all watches.
struct Stops<'a> {
    shutdown: &'a mut tokio::sync::watch::Receiver<bool>,
    disconnect: &'a mut tokio::sync::watch::Receiver<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    mut receiver: broadcast::Receiver<Arc<EventRecord>>,
    tx: mpsc::Sender<Bytes>,
    filter: WatchFilter,
    rt: ResourceType,
    view: View,
    start_rv: u64,
    bookmarks: bool,
    interval: Duration,
    timeout: Duration,
    stops: Stops<'_>,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    let mut last_rv = start_rv;
    loop {
        tokio::select! {
            event = receiver.recv() => match event {
                Ok(e) => {
                    if e.rv <= last_rv {
                        continue;
                    }
                    last_rv = e.rv;
                    if let Some((kind, object)) = filter.translate(&e) {
                        if tx.send(line(kind, &render(view, &rt, object))).await.is_err() {
                            return;
                        }
                    }
                }
                // A watcher too slow for the broadcast buffer is cut off; it resumes from its
                // last resourceVersion, which the history still holds.
                Err(_) => return,
            },
            _ = ticker.tick() => {
                if bookmarks && tx.send(bookmark(&rt, last_rv, false)).await.is_err() {
                    return;
                }
                if tx.is_closed() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = stops.shutdown.changed() => return,
            _ = stops.disconnect.changed() => return,
            _ = tx.closed() => return,
        }
    }
}
