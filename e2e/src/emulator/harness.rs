//! The test harness: one [`TestCluster`] per test, backed by an in-process emulator, or by a
//! real cluster when `FERROLB_E2E_KUBECONFIG` names a kubeconfig. Tests create their objects in
//! their own namespace ([`TestCluster::create_namespace`]) so they can share a real cluster.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::runtime::wait::{await_condition, conditions};

use super::{Emulator, EmulatorConfig, EmulatorError};

/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "FERROLB_E2E_KUBECONFIG";

/// The field manager the harness applies fixtures with.
pub const HARNESS_MANAGER: &str = "ferrolb-e2e-harness";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("YAML document {index} of {path}: {message}")]
    Yaml {
        path: String,
        index: usize,
        message: String,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("emulator process: {0}")]
    Process(String),
}

/// A Kubernetes API for one test.
pub struct TestCluster {
    client: kube::Client,
    kubeconfig: PathBuf,
    emulator: Option<Emulator>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("emulator", &self.emulator)
            .finish_non_exhaustive()
    }
}

async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, HarnessError> {
    let bad = |message: String| HarnessError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

impl TestCluster {
    /// An emulator with the default configuration, or the real cluster.
    pub async fn start() -> Result<Self, HarnessError> {
        Self::start_with(EmulatorConfig::default()).await
    }

    /// An emulator with `config`, or the real cluster (then `config` is unused).
    pub async fn start_with(config: EmulatorConfig) -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()?;
        if let Some(path) = std::env::var_os(KUBECONFIG_ENV).filter(|p| !p.is_empty()) {
            let kubeconfig = PathBuf::from(path);
            let client = client_from_kubeconfig(&kubeconfig).await?;
            return Ok(Self {
                client,
                kubeconfig,
                emulator: None,
                _dir: dir,
            });
        }
        let emulator = Emulator::start(config).await?;
        let kubeconfig = dir.path().join("kubeconfig");
        emulator.write_kubeconfig(&kubeconfig)?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        Ok(Self {
            client,
            kubeconfig,
            emulator: Some(emulator),
            _dir: dir,
        })
    }

    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig file for processes under test (the controller, the speaker).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The emulator, unless the tests run against a real cluster.
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// The emulator, to take it down and back at times of the caller's choosing (the soak).
    pub fn emulator_mut(&mut self) -> Option<&mut Emulator> {
        self.emulator.as_mut()
    }

    pub fn is_real_cluster(&self) -> bool {
        self.emulator.is_none()
    }

    /// Stops the emulator (the API server goes away, as in an outage); nothing on a real
    /// cluster. Every later request fails.
    pub async fn stop_emulator(&mut self) {
        if let Some(emulator) = self.emulator.take() {
            emulator.disconnect_watches();
            emulator.stop().await;
        }
    }

    /// The API server restarts: down (connections refused, watches ended) for `down`, then
    /// back with every object and no watch history (resumed watches get 410 Gone). Returns
    /// false on a real cluster, where a test cannot restart the control plane.
    pub async fn restart_emulator(&mut self, down: std::time::Duration) -> bool {
        let Some(emulator) = self.emulator.as_mut() else {
            return false;
        };
        emulator.go_down().await;
        tokio::time::sleep(down).await;
        emulator
            .come_back()
            .await
            .expect("the emulator takes its address back");
        true
    }

    /// Creates a fresh namespace named `<prefix><random>` and returns its name.
    pub async fn create_namespace(&self, prefix: &str) -> Result<String, HarnessError> {
        let api: Api<Namespace> = Api::all(self.client());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": prefix, "labels": {"app.kubernetes.io/part-of": "ferrolb-e2e"}}
        }))
        .expect("static namespace is valid");
        let created = api.create(&PostParams::default(), &ns).await?;
        Ok(created.metadata.name.unwrap_or_default())
    }

    /// Deletes a namespace made by [`TestCluster::create_namespace`] (and, with it, its content).
    pub async fn delete_namespace(&self, name: &str) -> Result<(), HarnessError> {
        let api: Api<Namespace> = Api::all(self.client());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Server-side applies every document of a multi-document YAML (into `namespace` for
    /// namespaced kinds without one) and returns what the server stored.
    pub async fn apply_yaml(
        &self,
        yaml: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<DynamicObject>, HarnessError> {
        self.apply_yaml_from(yaml, "<inline>", namespace).await
    }

    async fn apply_yaml_from(
        &self,
        yaml: &str,
        origin: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<DynamicObject>, HarnessError> {
        let mut applied = Vec::new();
        for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let yaml_err = |message: String| HarnessError::Yaml {
                path: origin.into(),
                index,
                message,
            };
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| yaml_err(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject =
                serde_yaml::from_value(value).map_err(|e| yaml_err(e.to_string()))?;
            let types = object
                .types
                .clone()
                .ok_or_else(|| yaml_err("apiVersion and kind are required".into()))?;
            let gvk = GroupVersionKind::try_from(&types).map_err(|e| yaml_err(e.to_string()))?;
            let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
            let name = object
                .metadata
                .name
                .clone()
                .ok_or_else(|| yaml_err("metadata.name is required".into()))?;
            let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
                let ns = object
                    .metadata
                    .namespace
                    .as_deref()
                    .or(namespace)
                    .unwrap_or("default");
                Api::namespaced_with(self.client(), ns, &resource)
            } else {
                Api::all_with(self.client(), &resource)
            };
            let params = PatchParams::apply(HARNESS_MANAGER).force();
            applied.push(api.patch(&name, &params, &Patch::Apply(&object)).await?);
        }
        Ok(applied)
    }

    /// Applies every CustomResourceDefinition in `path` (a YAML file, or a directory of them)
    /// and waits until each is Established. Returns the CRD names.
    pub async fn apply_crds(&self, path: &Path) -> Result<Vec<String>, HarnessError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| HarnessError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let mut files = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| HarnessError::Read {
                path: path.display().to_string(),
                source,
            })?;
            for entry in entries {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.to_path_buf());
        }
        let mut names = Vec::new();
        for file in files {
            for object in self
                .apply_yaml_from(&read(&file)?, &file.display().to_string(), None)
                .await?
            {
                if object
                    .types
                    .as_ref()
                    .is_some_and(|t| t.kind == "CustomResourceDefinition")
                {
                    names.push(object.metadata.name.unwrap_or_default());
                }
            }
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        for name in &names {
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .map_err(|_| HarnessError::Timeout(format!("CRD {name} not established")))?
            .map_err(|e| HarnessError::Timeout(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(names)
    }

    /// Makes MetalLB's configuration kinds (metallb.io) exist: on a real cluster that has
    /// MetalLB's own CRDs they are left alone; otherwise FerroLB's stand-ins
    /// ([`ferrolb_crds::metallb_stand_in_crds`]) are applied.
    pub async fn apply_metallb_crds(&self) -> Result<(), HarnessError> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        if self.is_real_cluster() && api.get_opt("ipaddresspools.metallb.io").await?.is_some() {
            return Ok(());
        }
        let path = std::env::temp_dir().join(format!(
            "ferrolb-metallb-crds-{}-{}.yaml",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::write(&path, ferrolb_crds::metallb_stand_in_crds_yaml())?;
        let result = self.apply_crds(&path).await;
        let _ = std::fs::remove_file(&path);
        result.map(|_| ())
    }

    /// Applies FerroLB's CRDs from `deploy/crds/`.
    pub async fn apply_ferrolb_crds(&self) -> Result<Vec<String>, HarnessError> {
        self.apply_crds(&ferrolb_crds_dir()).await
    }

    /// Applies FerroLB's CRDs and makes a load-balancer test's own namespaces,
    /// `<prefix>sys-*` and `<prefix>app-*`, and class, `ferrolb.io/test-<system namespace>`.
    pub async fn lb_test_space(&self, prefix: &str) -> Result<LbTestSpace, HarnessError> {
        self.apply_ferrolb_crds().await?;
        let system = self.create_namespace(&format!("{prefix}sys-")).await?;
        let apps = self.create_namespace(&format!("{prefix}app-")).await?;
        Ok(LbTestSpace {
            class: format!("ferrolb.io/test-{system}"),
            system,
            apps,
        })
    }
}

/// Where a load-balancer test lives on a cluster, so that tests sharing a real cluster never
/// see each other's objects.
#[derive(Clone, Debug)]
pub struct LbTestSpace {
    /// The namespace the controller and speakers run in (their own objects live there).
    pub system: String,
    /// The namespace of the test's Services.
    pub apps: String,
    /// The load-balancer class the test's controller and speakers serve.
    pub class: String,
}

impl TestCluster {
    /// Starts `binary` with `args` and `KUBECONFIG` pointing at this cluster (how the tests run
    /// `ferrolb-controller` and `ferrolb-speaker`). Output goes to a log file; the process is
    /// killed by its PID when the handle is dropped.
    pub fn spawn(&self, binary: &Path, args: &[&str]) -> Result<TestProcess, HarnessError> {
        let log_path = self._dir.path().join(format!(
            "{}-{}.log",
            binary
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("process"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(TestProcess { child, log_path })
    }
}

/// A process started by [`TestCluster::spawn`].
#[derive(Debug)]
pub struct TestProcess {
    child: Child,
    log_path: PathBuf,
}

impl TestProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL, as a crash would) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for TestProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `deploy/crds/` of this workspace.
pub fn ferrolb_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("crds")
}

/// The emulator run as its own process (the `ferrolb-apiserver-emulator` binary), e.g. inside a
/// network namespace. Killed (by its PID) when dropped.
#[derive(Debug)]
pub struct EmulatorProcess {
    child: Child,
    url: String,
    kubeconfig: PathBuf,
}

impl EmulatorProcess {
    /// Starts `binary` listening on `listen` (port 0 picks one) and writing `kubeconfig`;
    /// `wrapper` (e.g. `["ip", "netns", "exec", "ns1"]`) runs it inside something.
    pub fn spawn(
        binary: &Path,
        wrapper: &[&str],
        listen: SocketAddr,
        kubeconfig: &Path,
    ) -> Result<Self, HarnessError> {
        Self::spawn_with_args(binary, wrapper, listen, kubeconfig, &[])
    }

    /// Like [`EmulatorProcess::spawn`], with extra arguments (e.g. `--tls`).
    pub fn spawn_with_args(
        binary: &Path,
        wrapper: &[&str],
        listen: SocketAddr,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Self, HarnessError> {
        use std::io::BufRead;
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Process("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Ok(Self {
                child,
                url,
                kubeconfig: kubeconfig.to_path_buf(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(HarnessError::Process(
                    "did not report its address within 20 s".into(),
                ))
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn client(&self) -> Result<kube::Client, HarnessError> {
        client_from_kubeconfig(&self.kubeconfig).await
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The addresses in a Service's status (`status.loadBalancer.ingress[].ip`), as written.
pub fn ingress_ips(svc: &k8s_openapi::api::core::v1::Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| i.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

/// A free TCP port on loopback (for a metrics address), as the kernel picks one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on loopback")
}
