//! `file:DIR`: a directory of manifests, polled for changes. A bad object is left out or keeps
//! its last valid version; a file that cannot be parsed keeps the whole last configuration.

use super::{assemble, is_served, shared, Assembled, Snapshot};
use crate::view::service_views;
use ferrolb_config::files::{manifest_files, read_manifests};
use ferrolb_config::Resources;
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{info, warn};

/// Kinds whose problems [`load_dir`] can set aside object by object.
const CONFIG_KINDS: [&str; 6] = ferrolb_crds::CONFIG_KINDS;

/// Reads and validates the manifests under `dir`, with `last` the objects in force before.
/// A configuration object with a problem is left out or keeps its `last` version
/// ([`Assembled::problems`] says which); `Err` (every problem) when the directory cannot be
/// trusted as a whole: a file that cannot be read or parsed, or a Service, Node, EndpointSlice or
/// Secret with a problem, where leaving it out would look like a deletion.
pub fn load_dir(
    dir: &Path,
    lb_class: Option<&str>,
    last: &Resources,
) -> Result<Assembled, Vec<String>> {
    let (manifests, errors) = read_manifests(&[dir.to_path_buf()], false);
    let mut unreadable = BTreeSet::new();
    let mut fatal = false;
    for e in &errors {
        match e.object.split_once('/') {
            Some((kind, name))
                if CONFIG_KINDS.contains(&kind) && !name.contains(['<', ' ', '/']) =>
            {
                unreadable.insert(e.object.clone());
            }
            _ => fatal = true,
        }
    }
    if fatal {
        return Err(errors.iter().map(ToString::to_string).collect());
    }
    let services: Vec<Service> = manifests
        .services
        .iter()
        .filter(|s| is_served(s, lb_class))
        .cloned()
        .collect();
    // File mode: a Service without EndpointSlices in the files serves everywhere.
    let views = shared(service_views(&services, &manifests.endpoint_slices, false));
    let mut assembled = assemble(
        &manifests.resources,
        last,
        &unreadable,
        views,
        &manifests.nodes,
    );
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    problems.append(&mut assembled.problems);
    assembled.problems = problems;
    Ok(assembled)
}

/// What identifies the directory's contents cheaply: each manifest file's name, size and
/// modification time.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Result<Fingerprint, String> {
    let files = manifest_files(dir, false).map_err(|e| e.to_string())?;
    Ok(files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (f, len, modified)
        })
        .collect())
}

/// A directory of manifests, watched by polling (every `poll`: one `stat` per file; a read
/// only when something changed).
#[derive(Clone, Debug)]
pub struct FileSource {
    pub dir: PathBuf,
    pub lb_class: Option<String>,
    pub poll: Duration,
}

impl FileSource {
    /// Loads now and then on every change, in a task. The receiver holds the last valid
    /// snapshot (`None` until the directory first holds a valid configuration).
    pub fn spawn(self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut seen: Option<Result<Fingerprint, String>> = None;
            let mut in_force = Resources::default();
            let mut tick = tokio::time::interval(self.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    return;
                }
                let now = fingerprint(&self.dir);
                if seen.as_ref() == Some(&now) {
                    continue;
                }
                if let Err(e) = &now {
                    warn!(dir = %self.dir.display(), error = %e, "cannot read the configuration directory; keeping the last valid configuration");
                    seen = Some(now);
                    continue;
                }
                seen = Some(now);
                match load_dir(&self.dir, self.lb_class.as_deref(), &in_force) {
                    Ok(assembled) => {
                        for p in &assembled.problems {
                            warn!(dir = %self.dir.display(), "invalid configuration: {p}");
                        }
                        info!(
                            dir = %self.dir.display(),
                            nodes = assembled.snapshot.nodes.len(),
                            services = assembled.snapshot.services.len(),
                            problems = assembled.problems.len(),
                            "configuration loaded"
                        );
                        in_force = assembled.in_force;
                        tx.send_replace(Some(Arc::new(assembled.snapshot)));
                    }
                    Err(errors) => {
                        for e in &errors {
                            warn!(dir = %self.dir.display(), "invalid configuration: {e}");
                        }
                        warn!(
                            dir = %self.dir.display(),
                            problems = errors.len(),
                            "configuration rejected; keeping the last configuration"
                        );
                    }
                }
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/24]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vip\n  annotations: {ferrolb.io/loadBalancerIPs: 192.0.2.10}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n";

    async fn next(rx: &mut watch::Receiver<Option<Arc<Snapshot>>>) -> Arc<Snapshot> {
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a reload within 5 s")
            .unwrap();
        rx.borrow_and_update().clone().unwrap()
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_the_last_valid_configuration() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lab.yaml"), GOOD).unwrap();
        let mut rx = FileSource {
            dir: dir.path().into(),
            lb_class: None,
            poll: Duration::from_millis(20),
        }
        .spawn();
        let first = next(&mut rx).await;
        assert_eq!(first.nodes.len(), 1);
        assert_eq!(
            first.services[0].ips,
            vec!["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]
        );

        // A bad edit: an address outside every pool is still valid YAML but a Service; make
        // it really invalid (overlapping pools).
        let bad = GOOD.replace("name: lan}\nspec", "name: lan}\nspec: {addresses: [192.0.2.0/25]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: other}\nspec");
        std::fs::write(dir.path().join("lab.yaml"), bad).unwrap();
        std::fs::write(dir.path().join("junk.yaml"), "kind: [").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rx.has_changed().unwrap(), "a bad edit publishes nothing");
        assert_eq!(rx.borrow().as_ref().unwrap().nodes.len(), 1);

        // Fixed: a second node appears.
        std::fs::remove_file(dir.path().join("junk.yaml")).unwrap();
        std::fs::write(
            dir.path().join("lab.yaml"),
            format!("{GOOD}---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-b}}\n"),
        )
        .unwrap();
        let fixed = next(&mut rx).await;
        assert_eq!(fixed.nodes.len(), 2);
    }

    #[test]
    fn a_bad_object_is_left_out_and_a_bad_edit_keeps_the_last_version() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = "---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: junk}\nspec: {addresses: [not-an-ip]}\n";
        std::fs::write(dir.path().join("lab.yaml"), format!("{GOOD}{garbage}")).unwrap();
        let first = load_dir(dir.path(), None, &Resources::default()).unwrap();
        assert_eq!(
            first.snapshot.config.pools.keys().collect::<Vec<_>>(),
            vec!["lan"]
        );
        assert!(first
            .problems
            .contains(&"IPAddressPool/junk: left out of the configuration".to_string()));
        assert_eq!(first.snapshot.services.len(), 1);

        // `lan` edited with a type error (a string, not a list): not a deletion.
        let typo = GOOD.replace(
            "spec: {addresses: [192.0.2.0/24]}",
            "spec: {addresses: 192.0.2.0/24}",
        );
        std::fs::write(dir.path().join("lab.yaml"), typo).unwrap();
        let second = load_dir(dir.path(), None, &first.in_force).unwrap();
        assert_eq!(
            second.snapshot.config.pools.keys().collect::<Vec<_>>(),
            vec!["lan"],
            "{:?}",
            second.problems
        );
        assert!(second.problems.contains(
            &"IPAddressPool/lan: invalid; its last valid version stays in force".to_string()
        ));
    }

    #[tokio::test]
    async fn a_directory_without_valid_configuration_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), "apiVersion: v1\nkind: [").unwrap();
        let rx = FileSource {
            dir: dir.path().join("missing"),
            lb_class: None,
            poll: Duration::from_millis(20),
        }
        .spawn();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(rx.borrow().is_none());
        assert!(load_dir(dir.path(), None, &Resources::default()).is_err());
    }
}
