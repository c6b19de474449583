//! Shared set-up for the emulator's tests. Every test gets a fresh namespace, so the same tests
//! can run against a real cluster (FERROLB_E2E_KUBECONFIG) without stepping on each other.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_e2e::emulator::EmulatorConfig;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::Status;
use serde_json::{json, Value};

pub fn widget_crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/emulator/testdata/widgets-crd.yaml")
}

pub struct Env {
    pub cluster: TestCluster,
    pub ns: String,
}

impl Env {
    pub async fn start(prefix: &str) -> Env {
        Self::start_with(prefix, EmulatorConfig::default()).await
    }

    pub async fn start_with(prefix: &str, config: EmulatorConfig) -> Env {
        let cluster = TestCluster::start_with(config).await.expect("test cluster");
        cluster
            .apply_crds(&widget_crds())
            .await
            .expect("fixture CRDs apply");
        let ns = cluster
            .create_namespace(prefix)
            .await
            .expect("test namespace");
        Env { cluster, ns }
    }

    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    pub fn widgets(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client(), &self.ns, &widget_resource())
    }

    pub fn gadgets(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("emulator-test.ferrolb.io", "v1", "Gadget");
        Api::all_with(
            self.client(),
            &ApiResource::from_gvk_with_plural(&gvk, "gadgets"),
        )
    }

    pub fn typed<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), &self.ns)
    }

    pub async fn finish(self) {
        self.cluster
            .delete_namespace(&self.ns)
            .await
            .expect("namespace deletion");
    }
}

pub fn widget_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("emulator-test.ferrolb.io", "v1", "Widget");
    ApiResource::from_gvk_with_plural(&gvk, "widgets")
}

pub fn widget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "emulator-test.ferrolb.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("widget JSON is a DynamicObject")
}

/// The Status of an API error, panicking on anything else.
pub fn status(result: Result<impl std::fmt::Debug, kube::Error>) -> Status {
    match result {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub async fn within<F: std::future::Future>(secs: u64, what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
