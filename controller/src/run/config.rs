//! The configuration as the cluster holds it: the watched configuration objects (FerroLB's, or
//! MetalLB's in MetalLB-compatible mode), Secrets and Namespaces;
//! turned into the [`Engine`](super::engine::Engine)'s configuration and reported in this
//! controller's ConfigurationState. An invalid object is left out, or keeps its last valid
//! version, and is named there; everything else is in force. A pool left out keeps what it
//! handed out ([`Config::withheld_pools`](ferrolb_config::Config)).

use super::engine::Engine;
use super::reconcile::patch_params;
use super::Shared;
use crate::allocator::service::is_ours;
use crate::allocator::{service_info, ServiceKey};
use ferrolb_config::model::Labels;
use ferrolb_config::Resources;
use ferrolb_crds::{ConfigurationResult, ConfigurationState, ConfigurationStateSpec};
use ferrolb_kube::reflect::{keep, reflect};
use ferrolb_kube::{ConfigApi, ConfigWatch};
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Read-only views of everything the configuration is made of.
#[derive(Clone)]
pub struct ConfigStores {
    /// The configuration kinds and Secrets, of FerroLB's API group or MetalLB's.
    pub config: Arc<ConfigWatch>,
    pub namespaces: Store<Namespace>,
}

impl ConfigStores {
    /// Starts the watches: the configuration in `namespace` (of `api`'s group), Namespaces
    /// everywhere.
    pub fn start(
        client: &kube::Client,
        namespace: &str,
        api: ConfigApi,
        report_objects_elsewhere: bool,
        changed: &Arc<Notify>,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Self {
        let (namespaces, task) = reflect(
            Api::all(client.clone()),
            (),
            watcher::Config::default(),
            changed.clone(),
            keep,
        );
        tasks.push(task);
        let mut config = ConfigWatch::start(client, namespace, api, changed);
        if report_objects_elsewhere {
            config.watch_strays(client, changed);
        }
        Self {
            config: Arc::new(config),
            namespaces,
        }
    }

    /// Only one task may wait on a store: kube-runtime wakes a single waiter (the last one to
    /// poll), so a second waiter can sleep forever.
    pub async fn wait_until_ready(&self) {
        // A writer is dropped only when its task ends, i.e. on shutdown: nothing to wait for then.
        let _ = futures::join!(
            self.config.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
    }

    fn namespace_labels(&self) -> BTreeMap<String, Labels> {
        self.namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect()
    }
}

/// This controller's ConfigurationState, written only when it changes, and the Events it puts
/// on invalid objects.
pub struct StateWriter {
    api: Api<ConfigurationState>,
    name: String,
    written: Option<(ConfigurationResult, Option<String>)>,
    conditions: Vec<Condition>,
    recorder: Recorder,
}

impl StateWriter {
    pub fn new(client: kube::Client, namespace: &str, name: &str, recorder: Recorder) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            written: None,
            conditions: Vec::new(),
            recorder,
        }
    }

    /// Writes the result, the summary (one problem per line) and the conditions made of it.
    pub async fn write(
        &mut self,
        result: ConfigurationResult,
        summary: Option<String>,
    ) -> Result<(), kube::Error> {
        let wanted = (result, summary);
        if self.written.as_ref() == Some(&wanted) {
            return Ok(());
        }
        if self.api.get_opt(&self.name).await?.is_none() {
            let object = ConfigurationState::new(&self.name, ConfigurationStateSpec::default());
            match self.api.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        let lines: Vec<String> = wanted
            .1
            .iter()
            .flat_map(|s| s.lines())
            .map(str::to_string)
            .collect();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut conditions = ferrolb_config::state_conditions(&lines, &now);
        ferrolb_config::carry_transition_times(&mut conditions, &self.conditions);
        let patch = json!({"status": {
            "result": wanted.0,
            "errorSummary": wanted.1,
            "conditions": conditions,
        }});
        self.api
            .patch_status(&self.name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        self.written = Some(wanted);
        self.conditions = conditions;
        Ok(())
    }
}

/// The configuration loop: waits until every store is filled, loads the state from the cluster
/// (status first) once a valid configuration exists, then applies every later valid
/// configuration and reports every invalid one.
pub async fn config_loop(
    shared: Arc<Shared>,
    stores: ConfigStores,
    services: Store<Service>,
    mut services_listed: tokio::sync::watch::Receiver<bool>,
    changed: Arc<Notify>,
    mut state: StateWriter,
    lb_class: Option<String>,
) {
    // What each invalid object was last told in an Event, so each problem is said once.
    let mut told: BTreeMap<String, String> = BTreeMap::new();
    stores.wait_until_ready().await;
    debug!("configuration caches filled");
    // Not `services.wait_until_ready()`: the kube-runtime Controller already waits on that
    // store, and only one waiter is woken.
    let _ = services_listed.wait_for(|listed| *listed).await;
    info!("caches filled");
    // The objects in force: an object that turns invalid keeps this version.
    let mut in_force = Resources::default();
    loop {
        let objects = stores.config.objects();
        let outcome = ferrolb_config::in_force(&objects.resources, &in_force, &objects.unreadable);
        in_force = outcome.resources.clone();
        let namespaces = stores.namespace_labels();
        // Pools that exist but are left out: what they handed out is not to be taken away.
        let config = crate::plan::allocation_config(&outcome);
        let touched = {
            let mut guard = shared.engine.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_mut() {
                Some(engine) => {
                    let mut touched = engine.set_namespaces(namespaces);
                    touched.extend(engine.set_config(config));
                    touched
                        .into_iter()
                        .map(|k| ObjectRef::new(&k.name).within(&k.namespace))
                        .collect::<Vec<ObjectRef<Service>>>()
                }
                None => {
                    let list = load_services(&services, lb_class.as_deref());
                    let count = list.len();
                    let (engine, _) = Engine::load(config, namespaces, list);
                    *guard = Some(engine);
                    info!(services = count, "state loaded from Service status");
                    // Everything is reconciled once now that decisions can be made.
                    services
                        .state()
                        .iter()
                        .map(|s| ObjectRef::from_obj(&**s))
                        .collect()
                }
            }
        };
        shared.usage_changed.notify_one();
        shared
            .health
            .ready
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Objects where they are not read are reported, never ignored in silence.
        let strays = stores.config.strays();
        let report = if outcome.is_valid() && objects.problems.is_empty() && strays.is_empty() {
            (ConfigurationResult::Valid, None)
        } else {
            let mut lines: Vec<String> = strays
                .iter()
                .chain(&objects.problems)
                .map(ToString::to_string)
                .collect();
            lines.extend(outcome.report_lines());
            if state.written.as_ref().map(|w| &w.1) != Some(&Some(lines.join("\n"))) {
                warn!(
                    problems = outcome.errors.len(),
                    left_out = outcome.left_out.len(),
                    kept = outcome.kept.len(),
                    "invalid objects left out or kept at their last valid version; the rest is in force"
                );
                for line in &lines {
                    warn!(problem = %line, "configuration problem");
                }
            }
            (ConfigurationResult::Invalid, Some(lines.join("\n")))
        };
        shared
            .health
            .metrics
            .set_config(report.1.as_ref().map_or(0, |text| text.lines().count()));
        let mut problems = outcome.by_object();
        for p in &objects.problems {
            problems
                .entry(p.object.clone())
                .or_default()
                .push(p.message.clone());
        }
        tell_objects(
            &state.recorder,
            &stores.config,
            &objects.resources,
            &problems,
            &mut told,
        )
        .await;
        // The state first, then the Services: after a start their reconciles are a burst of
        // writes (one per Service) that would otherwise keep the state waiting behind them.
        let written = state.write(report.0, report.1.clone()).await;
        for r in touched {
            let _ = shared.triggers.unbounded_send(r);
        }
        if let Err(e) = written {
            warn!(error = %e, "cannot write ConfigurationState; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        changed.notified().await;
        // Several objects are often applied together: take them as one change.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Warning Event `InvalidConfiguration` on each object with problems, once per wording; an
/// object fixed or gone is forgotten, so a new problem is told again.
async fn tell_objects(
    recorder: &Recorder,
    config: &ConfigWatch,
    resources: &Resources,
    problems: &BTreeMap<String, Vec<String>>,
    told: &mut BTreeMap<String, String>,
) {
    told.retain(|id, _| problems.contains_key(id));
    for (id, lines) in problems {
        let mut note = lines.join("; ");
        if told.get(id) == Some(&note) {
            continue;
        }
        let Some(reference) = object_reference(config, resources, id) else {
            continue;
        };
        told.insert(id.clone(), note.clone());
        // An Event's note holds at most 1 kB.
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: "InvalidConfiguration".into(),
            note: Some(note),
            action: "Validate".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            warn!(object = %id, error = %e, "cannot publish event");
        }
    }
}

/// The reference of configuration object `id` (`Kind/name`) as the cluster holds it.
fn object_reference(
    config: &ConfigWatch,
    resources: &Resources,
    id: &str,
) -> Option<ObjectReference> {
    let (kind, name) = id.split_once('/')?;
    let meta = match kind {
        "IPAddressPool" => resources
            .pools
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        "L2Advertisement" => resources
            .l2_advertisements
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        "BGPAdvertisement" => resources
            .bgp_advertisements
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        "BGPPeer" => resources
            .bgp_peers
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        "BFDProfile" => resources
            .bfd_profiles
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        "Community" => resources
            .communities
            .iter()
            .map(|o| &o.metadata)
            .find(|m| m.name.as_deref() == Some(name)),
        _ => None,
    };
    let resource = config.api().resource(kind)?;
    Some(ObjectReference {
        api_version: Some(resource.api_version),
        kind: Some(kind.into()),
        name: Some(name.into()),
        namespace: Some(config.namespace().into()),
        uid: meta.and_then(|m| m.uid.clone()),
        ..Default::default()
    })
}

/// Every Service of ours with its uid, for [`Engine::load`]. Unreadable ones are left to their
/// reconcile, which reports why.
fn load_services(
    services: &Store<Service>,
    lb_class: Option<&str>,
) -> Vec<(crate::allocator::ServiceInfo, String)> {
    let mut list: Vec<_> = services
        .state()
        .iter()
        .filter(|s| is_ours(s, lb_class))
        .filter_map(|s| Some((service_info(s).ok()?, s.uid().unwrap_or_default())))
        .collect();
    list.sort_by(|a, b| a.0.key.cmp(&b.0.key));
    list
}

/// Keys of the Services present in the cluster, with uids (to drop what was deleted unseen).
pub fn present(services: &Store<Service>) -> BTreeMap<ServiceKey, String> {
    services
        .state()
        .iter()
        .map(|s| (ServiceKey::of(s), s.uid().unwrap_or_default()))
        .collect()
}
