//! The configuration objects and Secrets of one namespace, watched into stores, read as
//! FerroLB's types whichever API group they come from.
//!
//! Both groups are watched as dynamic objects and converted one by one: an object that cannot be
//! read as its kind (a real API server accepts whatever a MetalLB CRD allows) is reported by
//! name instead of failing the whole watch, and [`ferrolb_config::in_force`] then keeps its last
//! valid version.

use crate::reflect::{keep, reflect};
use ferrolb_config::{ConfigError, Resources};
use ferrolb_crds as crds;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Which API group the configuration is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigApi {
    /// `ferrolb.io/v1beta1`, in FerroLB's namespace.
    FerroLb,
    /// MetalLB's objects as they are: `metallb.io/v1beta1`, and `v1beta2` for BGPPeer (its
    /// storage version), in MetalLB's namespace.
    MetalLb,
}

/// The configuration kinds, with their plural resource names.
const KINDS: [(&str, &str); 6] = [
    ("IPAddressPool", "ipaddresspools"),
    ("L2Advertisement", "l2advertisements"),
    ("BGPAdvertisement", "bgpadvertisements"),
    ("BGPPeer", "bgppeers"),
    ("BFDProfile", "bfdprofiles"),
    ("Community", "communities"),
];

impl ConfigApi {
    pub fn group(self) -> &'static str {
        match self {
            ConfigApi::FerroLb => crds::GROUP,
            ConfigApi::MetalLb => "metallb.io",
        }
    }

    /// The API resource `kind` is watched as.
    pub fn resource(self, kind: &str) -> Option<ApiResource> {
        let (kind, plural) = KINDS.iter().find(|(k, _)| *k == kind)?;
        let version = match (self, *kind) {
            (ConfigApi::MetalLb, "BGPPeer") => "v1beta2",
            _ => "v1beta1",
        };
        let group = self.group();
        Some(ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: (*kind).into(),
            plural: (*plural).into(),
        })
    }
}

/// What the watched objects make: FerroLB's objects, and those that could not be read.
#[derive(Clone, Debug, Default)]
pub struct ConfigObjects {
    pub resources: Resources,
    /// `Kind/name` of every object that could not be read as its kind.
    pub unreadable: BTreeSet<String>,
    /// Why, one per unreadable object.
    pub problems: Vec<ConfigError>,
}

/// Running watches of the configuration of one namespace. Dropping it stops them.
pub struct ConfigWatch {
    api: ConfigApi,
    namespace: String,
    kinds: Vec<(&'static str, Store<DynamicObject>)>,
    secrets: Store<Secret>,
    /// The same kinds in every namespace, when asked for ([`ConfigWatch::watch_strays`]).
    everywhere: Vec<(&'static str, Store<DynamicObject>)>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ConfigWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatch")
            .field("api", &self.api)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ConfigWatch {
    /// Starts watching the configuration kinds of `api` and the Secrets in `namespace`, waking
    /// `changed` on every change.
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        api: ConfigApi,
        changed: &Arc<Notify>,
    ) -> Self {
        let mut tasks = Vec::new();
        let mut kinds = Vec::new();
        for (kind, _) in KINDS {
            let resource = api.resource(kind).expect("every kind has a resource");
            let (store, task) = reflect(
                Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource),
                resource,
                watcher::Config::default(),
                changed.clone(),
                keep,
            );
            tasks.push(task);
            kinds.push((kind, store));
        }
        let (secrets, task) = reflect(
            Api::<Secret>::namespaced(client.clone(), namespace),
            (),
            watcher::Config::default(),
            changed.clone(),
            keep,
        );
        tasks.push(task);
        Self {
            api,
            namespace: namespace.into(),
            kinds,
            secrets,
            everywhere: Vec::new(),
            tasks,
        }
    }

    /// Also watches the configuration kinds in every namespace, so that objects where they are
    /// not read (a MetalLB manifest applied with only its apiVersion changed, say) are reported
    /// by [`ConfigWatch::strays`] instead of ignored in silence. Needs cluster-wide list and
    /// watch of the kinds ([`crate::api_calls::STRAY_WATCH`]).
    pub fn watch_strays(&mut self, client: &kube::Client, changed: &Arc<Notify>) {
        for (kind, _) in KINDS {
            let resource = self.api.resource(kind).expect("every kind has a resource");
            let (store, task) = reflect(
                Api::<DynamicObject>::all_with(client.clone(), &resource),
                resource,
                watcher::Config::default(),
                changed.clone(),
                keep,
            );
            self.tasks.push(task);
            self.everywhere.push((kind, store));
        }
    }

    /// Configuration objects in other namespaces than the one read, each a problem naming
    /// where it is; sorted.
    pub fn strays(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for (kind, store) in &self.everywhere {
            for object in store.state() {
                let Some(ns) = object.namespace().filter(|ns| *ns != self.namespace) else {
                    continue;
                };
                out.push(ConfigError::new(
                    format!("{kind}/{ns}/{}", object.name_any()),
                    "metadata.namespace",
                    format!(
                        "{ns}: {} objects are read in {}; this one is ignored",
                        self.api.group(),
                        self.namespace
                    ),
                ));
            }
        }
        out.sort();
        out
    }

    pub fn api(&self) -> ConfigApi {
        self.api
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Waits until every store has been filled once. Only one task may wait on a store
    /// (kube-runtime wakes a single waiter).
    pub async fn wait_until_ready(&self) {
        let waits = self
            .kinds
            .iter()
            .chain(&self.everywhere)
            .map(|(_, s)| s.wait_until_ready());
        let _ = futures::join!(
            futures::future::join_all(waits),
            self.secrets.wait_until_ready()
        );
    }

    /// The Secrets of the namespace, by name.
    pub fn secrets(&self) -> Vec<Secret> {
        let mut v: Vec<Secret> = self.secrets.state().iter().map(|s| (**s).clone()).collect();
        v.sort_by_key(|s| s.name_any());
        v
    }

    /// The objects as FerroLB's types, sorted by name.
    pub fn objects(&self) -> ConfigObjects {
        let mut out = ConfigObjects {
            resources: Resources {
                secrets: self.secrets(),
                ..Resources::default()
            },
            ..ConfigObjects::default()
        };
        for (kind, store) in &self.kinds {
            let mut objects: Vec<Arc<DynamicObject>> = store.state();
            objects.sort_by_key(|o| o.name_any());
            for object in objects {
                read_object(
                    &mut out.resources,
                    &mut out.problems,
                    &mut out.unreadable,
                    self.api,
                    kind,
                    &object,
                );
            }
        }
        out
    }
}

/// Reads configuration object `object` of `kind` (either API group) into `resources`; one that
/// cannot be read is named in `problems` and, as `Kind/name`, in `unreadable`.
pub fn read_object(
    resources: &mut Resources,
    problems: &mut Vec<ConfigError>,
    unreadable: &mut BTreeSet<String>,
    api: ConfigApi,
    kind: &str,
    object: &DynamicObject,
) {
    let r = resources;
    let read = match kind {
        "IPAddressPool" => convert(object, kind).map(|o| r.pools.push(o)),
        "L2Advertisement" => convert(object, kind).map(|o| r.l2_advertisements.push(o)),
        "BGPAdvertisement" => convert(object, kind).map(|o| r.bgp_advertisements.push(o)),
        "BGPPeer" => convert(object, kind).map(|o| r.bgp_peers.push(o)),
        "BFDProfile" => convert(object, kind).map(|o| r.bfd_profiles.push(o)),
        _ => convert(object, kind).map(|o| r.communities.push(o)),
    };
    if let Err(why) = read {
        let id = format!("{kind}/{}", object.name_any());
        problems.push(ConfigError::new(
            id.clone(),
            "",
            format!("cannot be read as {}: {why}", api.group()),
        ));
        unreadable.insert(id);
    }
}

/// Reads a dynamic object of either group as FerroLB's type of `kind`. Status is left out (it
/// is not configuration, and MetalLB's pool counters have another shape).
pub fn convert<K: serde::de::DeserializeOwned>(
    object: &DynamicObject,
    kind: &str,
) -> Result<K, String> {
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    let Some(map) = value.as_object_mut() else {
        return Err("not an object".into());
    };
    map.insert("apiVersion".into(), Value::String(crds::API_VERSION.into()));
    map.insert("kind".into(), Value::String(kind.into()));
    map.remove("status");
    if crds::KINDS_WITH_OPTIONAL_SPEC.contains(&kind) && map.get("spec").is_none_or(Value::is_null)
    {
        map.insert("spec".into(), Value::Object(Default::default()));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}
