//! What the emulator serves: the built-in kinds FerroLB touches, plus every version of every
//! CustomResourceDefinition applied to it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::error::{ApiError, ApiResult, FieldError, Subject};

/// The built-in kinds, each with its own defaulting and typed decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Namespace,
    Node,
    Service,
    Endpoints,
    EndpointSlice,
    Lease,
    CoreEvent,
    Event,
    Secret,
    ConfigMap,
    Pod,
    CustomResourceDefinition,
}

/// How objects of a resource are checked and pruned.
#[derive(Debug, Clone)]
pub enum Flavour {
    Builtin(Builtin),
    Custom {
        /// The version's `openAPIV3Schema`; `None` accepts anything.
        schema: Option<Arc<Value>>,
        /// Whether the schema carries `x-kubernetes-validations` anywhere (CEL is only run then).
        has_cel: bool,
        /// Field labels from the CRD's `selectableFields` (`.spec.x` becomes `spec.x`).
        selectable: Vec<String>,
    },
}

/// One served group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// A CRD version's `additionalPrinterColumns`, for `kubectl get` tables.
    pub printer_columns: Vec<Value>,
    pub flavour: Flavour,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn subject(&self) -> Subject<'_> {
        Subject {
            group: &self.group,
            plural: &self.plural,
            kind: &self.kind,
        }
    }

    /// Objects of all versions of a resource share one store.
    pub fn storage_key(&self) -> (String, String) {
        match self.flavour {
            // events.k8s.io Events live in the core Event store.
            Flavour::Builtin(Builtin::Event) => (String::new(), "events".into()),
            _ => (self.group.clone(), self.plural.clone()),
        }
    }

    pub fn is_custom(&self) -> bool {
        matches!(self.flavour, Flavour::Custom { .. })
    }

    pub fn builtin(&self) -> Option<Builtin> {
        match self.flavour {
            Flavour::Builtin(b) => Some(b),
            Flavour::Custom { .. } => None,
        }
    }

    /// Whether generation tracks spec changes for this kind.
    pub fn has_generation(&self) -> bool {
        match self.flavour {
            Flavour::Custom { .. } => true,
            Flavour::Builtin(b) => {
                matches!(b, Builtin::Service | Builtin::CustomResourceDefinition)
            }
        }
    }

    /// The field labels a fieldSelector may use, per kind as in kube-apiserver.
    pub fn selectable_fields(&self) -> Vec<String> {
        let mut fields = vec![
            "metadata.name".to_string(),
            "metadata.namespace".to_string(),
        ];
        let extra: &[&str] = match &self.flavour {
            Flavour::Custom { selectable, .. } => {
                fields.extend(selectable.iter().cloned());
                &[]
            }
            Flavour::Builtin(Builtin::Service) => &["spec.clusterIP", "spec.type"],
            Flavour::Builtin(Builtin::Node) => &["spec.unschedulable"],
            Flavour::Builtin(Builtin::Namespace) => &["status.phase"],
            Flavour::Builtin(Builtin::Secret) => &["type"],
            Flavour::Builtin(Builtin::Pod) => &[
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Flavour::Builtin(Builtin::CoreEvent) => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            Flavour::Builtin(Builtin::Event) => &[
                "regarding.kind",
                "regarding.namespace",
                "regarding.name",
                "regarding.uid",
                "regarding.apiVersion",
                "regarding.resourceVersion",
                "regarding.fieldPath",
                "reportingController",
                "reason",
                "type",
            ],
            Flavour::Builtin(_) => &[],
        };
        fields.extend(extra.iter().map(|s| s.to_string()));
        fields
    }

    /// Custom resources refuse an update without a resourceVersion, as the real server does.
    pub fn allows_unconditional_update(&self) -> bool {
        !self.is_custom()
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    status: bool,
    short_names: &[&str],
    which: Builtin,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        status,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: Vec::new(),
        printer_columns: Vec::new(),
        flavour: Flavour::Builtin(which),
    }
}

/// group -> version -> plural -> type
#[derive(Debug, Default, Clone)]
pub struct Registry {
    types: BTreeMap<String, BTreeMap<String, BTreeMap<String, Arc<ResourceType>>>>,
    /// Which CRD (by name) registered which (group, version, plural) entries.
    by_crd: BTreeMap<String, Vec<(String, String, String)>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for rt in [
            builtin(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                true,
                &["ns"],
                Builtin::Namespace,
            ),
            builtin(
                "",
                "v1",
                "nodes",
                "Node",
                false,
                true,
                &["no"],
                Builtin::Node,
            ),
            builtin(
                "",
                "v1",
                "services",
                "Service",
                true,
                true,
                &["svc"],
                Builtin::Service,
            ),
            builtin(
                "",
                "v1",
                "endpoints",
                "Endpoints",
                true,
                false,
                &["ep"],
                Builtin::Endpoints,
            ),
            builtin("", "v1", "pods", "Pod", true, true, &["po"], Builtin::Pod),
            builtin(
                "",
                "v1",
                "events",
                "Event",
                true,
                false,
                &["ev"],
                Builtin::CoreEvent,
            ),
            builtin(
                "",
                "v1",
                "secrets",
                "Secret",
                true,
                false,
                &[],
                Builtin::Secret,
            ),
            builtin(
                "",
                "v1",
                "configmaps",
                "ConfigMap",
                true,
                false,
                &["cm"],
                Builtin::ConfigMap,
            ),
            builtin(
                "discovery.k8s.io",
                "v1",
                "endpointslices",
                "EndpointSlice",
                true,
                false,
                &[],
                Builtin::EndpointSlice,
            ),
            builtin(
                "coordination.k8s.io",
                "v1",
                "leases",
                "Lease",
                true,
                false,
                &[],
                Builtin::Lease,
            ),
            builtin(
                "events.k8s.io",
                "v1",
                "events",
                "Event",
                true,
                false,
                &["ev"],
                Builtin::Event,
            ),
            builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
                &["crd", "crds"],
                Builtin::CustomResourceDefinition,
            ),
        ] {
            registry.insert(rt);
        }
        registry
    }

    fn insert(&mut self, rt: ResourceType) {
        self.types
            .entry(rt.group.clone())
            .or_default()
            .entry(rt.version.clone())
            .or_default()
            .insert(rt.plural.clone(), Arc::new(rt));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(group)?.get(version)?.get(plural).cloned()
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .get(group)
            .is_some_and(|v| v.contains_key(version))
    }

    /// Groups with their versions, preferred (first listed in the CRD, or v1) first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.types
            .iter()
            .filter(|(_, versions)| !versions.is_empty())
            .map(|(group, versions)| {
                let mut names: Vec<String> = versions.keys().cloned().collect();
                names.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                (group.clone(), names)
            })
            .collect()
    }

    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .get(group)
            .and_then(|v| v.get(version))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// (Re)registers everything a CRD serves; returns the storage key it serves.
    pub fn register_crd(&mut self, crd: &Value) -> ApiResult<(String, String)> {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let served = crd_resource_types(crd)?;
        self.unregister_crd(&name);
        let mut entries = Vec::new();
        let mut key = (String::new(), String::new());
        for rt in served {
            key = rt.storage_key();
            entries.push((rt.group.clone(), rt.version.clone(), rt.plural.clone()));
            self.insert(rt);
        }
        self.by_crd.insert(name, entries);
        Ok(key)
    }

    pub fn unregister_crd(&mut self, name: &str) {
        for (group, version, plural) in self.by_crd.remove(name).unwrap_or_default() {
            if let Some(versions) = self.types.get_mut(&group) {
                if let Some(resources) = versions.get_mut(&version) {
                    resources.remove(&plural);
                    if resources.is_empty() {
                        versions.remove(&version);
                    }
                }
                if versions.is_empty() {
                    self.types.remove(&group);
                }
            }
        }
    }
}

/// Kubernetes version ordering: GA > beta > alpha, higher numbers first.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let (class, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        (0, 0)
    };
    (class, major, minor)
}

fn crd_subject() -> Subject<'static> {
    Subject {
        group: "apiextensions.k8s.io",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
    }
}

/// Checks a CRD the way the apiextensions validation does for the parts that matter here,
/// and returns the resource types it serves.
pub fn crd_resource_types(crd: &Value) -> ApiResult<Vec<ResourceType>> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let mut errors = Vec::new();
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    let kind = spec["names"]["kind"].as_str().unwrap_or_default();
    if group.is_empty() {
        errors.push(FieldError::required("spec.group"));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural"));
    }
    if kind.is_empty() {
        errors.push(FieldError::required("spec.names.kind"));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            &Value::String(name.into()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = spec["scope"].as_str().unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        errors.push(FieldError::not_supported(
            "spec.scope",
            &spec["scope"],
            &[Value::from("Cluster"), Value::from("Namespaced")],
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::required("spec.versions"));
    }
    let storage = versions
        .iter()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            &Value::from(storage),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if let Some(schema) = v["schema"].get("openAPIV3Schema") {
            super::schema::check_structural(
                schema,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                &mut errors,
            );
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(crd_subject(), name, &errors));
    }
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(versions
        .iter()
        .filter(|v| v["served"].as_bool() != Some(false))
        .map(|v| {
            let schema = v["schema"].get("openAPIV3Schema").cloned();
            let has_cel = schema
                .as_ref()
                .is_some_and(|s| s.to_string().contains("x-kubernetes-validations"));
            ResourceType {
                group: group.into(),
                version: v["name"].as_str().unwrap_or_default().into(),
                plural: plural.into(),
                singular: names["singular"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| kind.to_lowercase()),
                kind: kind.into(),
                namespaced: scope == "Namespaced",
                status: v["subresources"].get("status").is_some(),
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                printer_columns: v["additionalPrinterColumns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                flavour: Flavour::Custom {
                    selectable: v["selectableFields"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["jsonPath"].as_str())
                        .map(|p| p.trim_start_matches('.').to_string())
                        .collect(),
                    schema: schema.map(Arc::new),
                    has_cel,
                },
            }
        })
        .collect())
}
