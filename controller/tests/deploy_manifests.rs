//! `deploy/`: every manifest parses strictly into its k8s-openapi type (an unknown or misspelt
//! field fails, where `kubectl apply` would silently drop it), the controller's RBAC grants
//! exactly the API calls `run` makes (`ferrolb_controller::run::api_calls::api_calls()`), the
//! kustomization installs every manifest (but the membership Secret template), and the
//! workloads run what the Dockerfile builds.

use ferrolb_controller::run::api_calls::{api_calls, metallb_compat_calls, Scope};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const KUSTOMIZATION: &str = "kustomization.yaml";

/// The MetalLB-compatible add-on under deploy/.
const METALLB_COMPAT: &str = "metallb-compat";

/// Add-ons under deploy/ with kustomizations of their own: monitoring (Prometheus Operator
/// objects and a promtool rules file, tested in e2e/tests/monitoring.rs) and the kubectl
/// plugin's ClusterRole (tested in kubectl-plugin/tests/plugin.rs).
const OWN_KUSTOMIZATIONS: [&str; 2] = ["monitoring", "kubectl-plugin"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && path.file_name().is_some_and(|n| n == METALLB_COMPAT) {
            // A kustomization of its own, checked by its own tests below.
        } else if path.is_dir()
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| OWN_KUSTOMIZATIONS.contains(&n))
        {
            // Checked by the tests named above.
        } else if path.is_dir() {
            yaml_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == KUSTOMIZATION) {
            // Not a Kubernetes object; checked by its own tests below.
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every YAML document of every manifest under `deploy/`, as JSON, with where it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let origin = format!("{}#{index}", file.display());
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(value)
                .unwrap_or_else(|e| panic!("{origin}: not a JSON-compatible document: {e}"));
            docs.push((origin, json));
        }
    }
    docs
}

/// Deserialises `doc` into `T`, failing on any field `T` does not have.
fn strict<T: DeserializeOwned + k8s_openapi::Resource>(doc: &Value) -> Result<T, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    if api_version != T::API_VERSION {
        return Err(format!(
            "apiVersion {api_version:?}, expected {:?} for {}",
            T::API_VERSION,
            T::KIND
        ));
    }
    let mut unknown = Vec::new();
    let parsed: Result<T, _> =
        serde_ignored::deserialize(doc.clone(), |path| unknown.push(field_path(&path)));
    let parsed = parsed.map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("unknown fields: {}", unknown.join(", ")))
    }
}

/// `spec.template.spec.containers[0].image`, as kubectl names a field.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Parses one document by its kind; kinds FerroLB does not ship are an error too.
fn check(doc: &Value) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "Namespace" => strict::<Namespace>(doc).map(drop),
        "ServiceAccount" => strict::<ServiceAccount>(doc).map(drop),
        "ClusterRole" => strict::<ClusterRole>(doc).map(drop),
        "ClusterRoleBinding" => strict::<ClusterRoleBinding>(doc).map(drop),
        "Role" => strict::<Role>(doc).map(drop),
        "RoleBinding" => strict::<RoleBinding>(doc).map(drop),
        "Deployment" => strict::<Deployment>(doc).map(drop),
        "DaemonSet" => strict::<DaemonSet>(doc).map(drop),
        "ConfigMap" => strict::<ConfigMap>(doc).map(drop),
        "Secret" => strict::<Secret>(doc).map(drop),
        "Service" => strict::<Service>(doc).map(drop),
        "CustomResourceDefinition" => strict::<CustomResourceDefinition>(doc).map(drop),
        other => Err(format!(
            "kind {other:?} is not checked by this test; add it"
        )),
    }
}

#[test]
fn every_manifest_in_deploy_parses_strictly() {
    let docs = documents();
    let failures: Vec<String> = docs
        .iter()
        .filter_map(|(origin, doc)| check(doc).err().map(|e| format!("{origin}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for expected in [
        "Namespace",
        "Deployment",
        "ClusterRole",
        "Role",
        "CustomResourceDefinition",
    ] {
        assert!(kinds.contains(expected), "no {expected} in deploy/");
    }
}

#[test]
fn a_misspelt_field_fails_the_strict_parse() {
    let doc = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "imagePullPolicy": "Always", "imge": "x"}]}}
        }
    });
    let err = check(&doc).unwrap_err();
    assert!(err.contains("spec.replica"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].imge") || err.contains("imge"),
        "{err}"
    );
    let wrong_version = serde_json::json!({"apiVersion": "apps/v1beta1", "kind": "Deployment"});
    assert!(check(&wrong_version).unwrap_err().contains("apiVersion"));
}

fn find<T: DeserializeOwned + k8s_openapi::Resource>(name: &str) -> T {
    documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == T::KIND && d["metadata"]["name"] == name)
        .map(|(origin, d)| strict(&d).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .unwrap_or_else(|| panic!("no {} {name} in deploy/", T::KIND))
}

use ferrolb_e2e::rbac::grants;
type Grant = ferrolb_e2e::rbac::Grant<Scope>;

#[test]
fn rbac_grants_exactly_the_api_calls_the_controller_makes() {
    let cluster_role: ClusterRole = find("ferrolb-controller");
    let role: Role = find("ferrolb-controller");
    let mut granted = grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        Scope::Cluster,
    );
    granted.extend(grants(
        role.rules.as_deref().unwrap_or_default(),
        Scope::OwnNamespace,
    ));
    let mut used = BTreeSet::new();
    for call in api_calls() {
        for verb in call.verbs {
            used.insert((
                call.scope,
                call.group.to_string(),
                call.resource.to_string(),
                verb.to_string(),
            ));
        }
    }
    let missing: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "RBAC in deploy/controller/rbac.yaml differs from run::api_calls::api_calls()\n\
         used but not granted: {missing:?}\ngranted but not used: {unused:?}"
    );
}

#[test]
fn the_deployment_runs_two_replicas_as_the_bound_service_account_with_probes() {
    let deployment: Deployment = find("ferrolb-controller");
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let account = pod.service_account_name.clone().unwrap();

    let role: Role = find("ferrolb-controller");
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let _: Namespace = find(&namespace);
    let _: ServiceAccount = find(&account);
    let cluster_binding: ClusterRoleBinding = find("ferrolb-controller");
    let binding: RoleBinding = find("ferrolb-controller");
    assert_eq!(
        binding.metadata.namespace.as_deref(),
        Some(namespace.as_str())
    );
    for (subjects, role_ref) in [
        (cluster_binding.subjects, cluster_binding.role_ref),
        (binding.subjects, binding.role_ref),
    ] {
        assert_eq!(role_ref.name, "ferrolb-controller");
        let subjects = subjects.unwrap_or_default();
        assert!(
            subjects.iter().any(|s| s.kind == "ServiceAccount"
                && s.name == account
                && s.namespace.as_deref() == Some(namespace.as_str())),
            "{subjects:?}"
        );
    }

    let container = &pod.containers[0];
    assert_eq!(container.args.as_deref().unwrap()[0], "run");
    let env = container.env.clone().unwrap_or_default();
    for name in ["POD_NAME", "FERROLB_NAMESPACE"] {
        assert!(env.iter().any(|e| e.name == name), "no {name}");
    }
    let port = container.ports.as_ref().unwrap()[0].container_port;
    assert_eq!(port, 7472, "the default --metrics-addr port");
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

/// `deploy/kustomization.yaml`, strictly: a misspelt key (`resource:`) would install nothing.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    resources: Vec<String>,
}

fn kustomization() -> Kustomization {
    let path = deploy_dir().join(KUSTOMIZATION);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Holds a random key created once per cluster; applying the template would overwrite it.
const NOT_INSTALLED: &[&str] = &["speaker/memberlist-secret.yaml"];

#[test]
fn the_kustomization_installs_every_manifest_but_the_memberlist_secret() {
    let k = kustomization();
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let dir = deploy_dir();
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    let on_disk: BTreeSet<String> = files
        .iter()
        .map(|f| f.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = k.resources.iter().cloned().collect();
    assert_eq!(listed.len(), k.resources.len(), "a resource listed twice");
    for r in &listed {
        assert!(
            on_disk.contains(r),
            "deploy/{KUSTOMIZATION} lists {r}, which does not exist"
        );
    }
    let unlisted: Vec<&String> = on_disk
        .difference(&listed)
        .filter(|f| !NOT_INSTALLED.contains(&f.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "not installed by deploy/{KUSTOMIZATION}: {unlisted:?}"
    );
    for f in NOT_INSTALLED {
        assert!(on_disk.contains(*f), "deploy/{f} is gone");
        assert!(!listed.contains(*f), "deploy/{f} must not be installed");
    }
}

/// `kubectl kustomize deploy/` (kustomize built into kubectl) builds the whole installation.
#[test]
fn kubectl_kustomize_builds_the_installation() {
    let dir = deploy_dir();
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP: no kubectl to build the kustomization with ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut objects = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        let json: Value = serde_json::to_value(v).unwrap();
        check(&json).unwrap();
        objects.insert(format!(
            "{}/{}",
            json["kind"].as_str().unwrap(),
            json["metadata"]["name"].as_str().unwrap()
        ));
    }
    for expected in [
        "Namespace/ferrolb-system",
        "CustomResourceDefinition/ipaddresspools.ferrolb.io",
        "Deployment/ferrolb-controller",
        "DaemonSet/ferrolb-speaker",
        "ServiceAccount/ferrolb-speaker",
    ] {
        assert!(objects.contains(expected), "no {expected} in {objects:?}");
    }
    assert!(!objects.contains("Secret/ferrolb-memberlist"));
}

fn container_of(
    pod: &k8s_openapi::api::core::v1::PodSpec,
) -> &k8s_openapi::api::core::v1::Container {
    assert_eq!(pod.containers.len(), 1, "one container");
    &pod.containers[0]
}

#[test]
fn the_speaker_daemonset_runs_on_the_host_network_with_few_capabilities() {
    let ds: DaemonSet = find("ferrolb-speaker");
    assert_eq!(ds.metadata.namespace.as_deref(), Some("ferrolb-system"));
    let spec = ds.spec.unwrap();
    let strategy = spec.update_strategy.unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.service_account_name.as_deref(), Some("ferrolb-speaker"));
    let tolerations = pod.tolerations.clone().unwrap_or_default();
    assert!(
        tolerations.iter().any(|t| t.key.as_deref()
            == Some("node-role.kubernetes.io/control-plane")
            && t.operator.as_deref() == Some("Exists")
            && t.effect.as_deref() == Some("NoSchedule")),
        "{tolerations:?}"
    );

    let c = container_of(&pod);
    assert_eq!(c.args.as_deref(), Some(&["run".to_string()][..]));
    let env = c.env.clone().unwrap_or_default();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(field("NODE_NAME").as_deref(), Some("spec.nodeName"));
    assert_eq!(
        field("POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );

    let sc = c.security_context.clone().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    // L2 needs the packet socket only (checked by running the speaker with NET_RAW alone);
    // BGP mode listens on port 179; L2Advertisement virtualMAC makes macvlan devices.
    assert_eq!(
        caps.add.as_deref(),
        Some(
            &[
                "NET_RAW".to_string(),
                "NET_BIND_SERVICE".to_string(),
                "NET_ADMIN".to_string()
            ][..]
        )
    );

    let ports = c.ports.clone().unwrap_or_default();
    let port = |name: &str| ports.iter().find(|p| p.name.as_deref() == Some(name));
    // The speaker's default --metrics-addr port and membership's DEFAULT_PORT.
    assert_eq!(port("metrics").map(|p| p.container_port), Some(7472));
    let memberlist = port("memberlist").unwrap();
    assert_eq!(
        (memberlist.container_port, memberlist.protocol.as_deref()),
        (7946, Some("UDP"))
    );
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| (h.path.clone(), h.port.clone()))
    };
    let metrics_port =
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into());
    assert_eq!(
        probe(&c.liveness_probe),
        Some((Some("/healthz".into()), metrics_port.clone()))
    );
    assert_eq!(
        probe(&c.readiness_probe),
        Some((Some("/readyz".into()), metrics_port))
    );
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

#[test]
fn both_workloads_run_the_binaries_the_dockerfile_installs_from_one_image() {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile"))
            .unwrap();
    // The Dockerfile and deploy/image/build.sh (buildah, run by .ci/test) take the image's
    // files from the same script, which builds both binaries.
    let rootfs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/rootfs.sh"),
    )
    .unwrap();
    assert!(
        rootfs.contains("-p ferrolb-controller -p ferrolb-speaker"),
        "rootfs.sh builds both binaries"
    );
    assert!(dockerfile.contains("bash deploy/image/rootfs.sh /out"));
    assert!(dockerfile.contains("COPY --from=build /out/ /"));
    assert!(dockerfile.contains("USER 65532:65532"));
    // The image's version label is the workspace's version.
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(manifest.contains(&format!("version = \"{version}\"")));
    assert!(
        dockerfile.contains(&format!("ARG VERSION={version}")),
        "the Dockerfile's VERSION is the workspace version {version}"
    );
    let build = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/image/build.sh"),
    )
    .unwrap();
    assert!(build.contains("bash deploy/image/rootfs.sh"));
    assert!(build.contains("--user 65532:65532"));
    let deployment: Deployment = find("ferrolb-controller");
    let ds: DaemonSet = find("ferrolb-speaker");
    let controller = container_of(
        deployment
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap(),
    )
    .clone();
    let speaker = container_of(ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()).clone();
    assert_eq!(controller.image, speaker.image, "one image for both");
    for (c, binary) in [
        (&controller, "ferrolb-controller"),
        (&speaker, "ferrolb-speaker"),
    ] {
        assert!(
            rootfs
                .lines()
                .any(|l| l.starts_with("for bin in ") && l.contains(binary))
                && rootfs.contains("\"$out/usr/local/bin/$bin\""),
            "rootfs.sh does not install {binary} in /usr/local/bin"
        );
        assert_eq!(
            c.command.as_deref(),
            Some(&[format!("/usr/local/bin/{binary}")][..])
        );
    }
}

#[test]
fn the_memberlist_secret_template_carries_no_usable_key() {
    let secret: Secret = find("ferrolb-memberlist");
    assert_eq!(secret.metadata.namespace.as_deref(), Some("ferrolb-system"));
    let from_data = secret
        .data
        .unwrap_or_default()
        .get("secretkey")
        .map(|b| b.0.len())
        .unwrap_or(0);
    let from_string = secret
        .string_data
        .unwrap_or_default()
        .get("secretkey")
        .map(String::len)
        .unwrap_or(0);
    // The speaker refuses keys under 16 bytes: a committed key must never be one it accepts.
    assert!(
        from_data < 16 && from_string < 16,
        "a real key is committed"
    );
}

/// `kubectl kustomize` of a directory under deploy/, as JSON objects; `None` (with a message)
/// where kubectl is missing.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let out = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIP: no kubectl to build the kustomization with ({e})");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|doc| {
                let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
                serde_json::to_value(v).unwrap()
            })
            .collect(),
    )
}

/// The MetalLB-compatible add-on's own manifests, as JSON.
fn metallb_compat_documents() -> Vec<Value> {
    let dir = deploy_dir().join(METALLB_COMPAT);
    let mut out = Vec::new();
    for name in ["namespace.yaml", "options.yaml", "rbac.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            let json: Value = serde_json::to_value(v).unwrap();
            check(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push(json);
        }
    }
    out
}

#[test]
fn the_metallb_compat_add_on_grants_exactly_what_compatible_mode_calls() {
    let docs = metallb_compat_documents();
    let role = |name: &str| -> Role {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Role {name}"));
        assert_eq!(doc["metadata"]["namespace"], "metallb-system");
        strict(doc).unwrap()
    };
    let binding = |name: &str, account: &str| {
        let doc = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no RoleBinding {name}"));
        assert_eq!(doc["metadata"]["namespace"], "metallb-system");
        assert_eq!(doc["roleRef"]["name"], name);
        assert_eq!(doc["subjects"][0]["name"], account);
        assert_eq!(doc["subjects"][0]["namespace"], "ferrolb-system");
    };
    binding("ferrolb-controller-metallb", "ferrolb-controller");
    binding("ferrolb-speaker-metallb", "ferrolb-speaker");
    let as_grants = |calls: Vec<ferrolb_controller::run::api_calls::ApiCall>| {
        let mut used = BTreeSet::new();
        for call in calls {
            assert_ne!(call.scope, Scope::OwnNamespace, "{call:?}");
            for verb in call.verbs {
                used.insert((
                    call.scope,
                    call.group.to_string(),
                    call.resource.to_string(),
                    verb.to_string(),
                ));
            }
        }
        used
    };
    let mut controller = grants(
        role("ferrolb-controller-metallb")
            .rules
            .as_deref()
            .unwrap_or_default(),
        Scope::MetallbNamespace,
    );
    let cluster_role: ClusterRole = docs
        .iter()
        .find(|d| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "ferrolb-controller-metallb"
        })
        .map(|d| strict(d).unwrap())
        .expect("ClusterRole ferrolb-controller-metallb");
    controller.extend(grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        Scope::Cluster,
    ));
    let cluster_binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("ClusterRoleBinding ferrolb-controller-metallb");
    assert_eq!(
        cluster_binding["roleRef"]["name"],
        "ferrolb-controller-metallb"
    );
    assert_eq!(cluster_binding["subjects"][0]["name"], "ferrolb-controller");
    assert_eq!(controller, as_grants(metallb_compat_calls()));
    // The speaker's Role: speaker/tests/deploy_rbac.rs.
    // The option both components read, and where they read it.
    let options = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("ConfigMap ferrolb-options");
    assert_eq!(options["metadata"]["name"], "ferrolb-options");
    assert_eq!(
        options["data"]["FERROLB_METALLB_NAMESPACE"],
        "metallb-system"
    );
    let deployment: Deployment = find("ferrolb-controller");
    let daemonset: DaemonSet = find("ferrolb-speaker");
    for pod in [
        deployment.spec.unwrap().template.spec.unwrap(),
        daemonset.spec.unwrap().template.spec.unwrap(),
    ] {
        let from = container_of(&pod).env_from.clone().unwrap_or_default();
        let reference = from
            .iter()
            .find_map(|e| e.config_map_ref.as_ref())
            .expect("envFrom ferrolb-options");
        assert_eq!(reference.name, "ferrolb-options");
        assert_eq!(reference.optional, Some(true));
    }
    if let Some(objects) = kustomize(&deploy_dir().join(METALLB_COMPAT)) {
        assert_eq!(objects.len(), docs.len());
    }
}
