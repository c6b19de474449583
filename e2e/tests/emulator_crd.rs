//! CustomResourceDefinitions: schema validation (422 naming the field), pruning, strict field
//! validation, defaults, CEL rules, server-side apply between field managers, and FerroLB's own
//! CRDs from deploy/crds/.

mod emulator_common;

use emulator_common::{status, widget, Env};
use ferrolb_e2e::emulator::harness::ferrolb_crds_dir;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::Discovery;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_violations_are_422_with_the_field_path() {
    let env = Env::start("emu-schema-").await;
    let api = env.widgets();
    let cases: [(&str, Value, &str); 10] = [
        ("type", json!({"size": "big"}), "spec.size"),
        ("required", json!({"mode": "fast"}), "spec.size"),
        ("minimum", json!({"size": 0}), "spec.size"),
        ("maximum", json!({"size": 11}), "spec.size"),
        ("enum", json!({"size": 1, "mode": "medium"}), "spec.mode"),
        (
            "pattern",
            json!({"size": 1, "label": "Upper"}),
            "spec.label",
        ),
        (
            "maxLength",
            json!({"size": 1, "label": "abcdefghij"}),
            "spec.label",
        ),
        (
            "format",
            json!({"size": 1, "address": "300.1.1.1"}),
            "spec.address",
        ),
        ("set", json!({"size": 1, "tags": ["a", "a"]}), "spec.tags"),
        (
            "maxItems",
            json!({"size": 1, "tags": ["a", "b", "c", "d"]}),
            "spec.tags",
        ),
    ];
    for (what, spec, field) in cases {
        let err = status(
            api.create(
                &PostParams::default(),
                &widget(&format!("bad-{}", what.to_lowercase()), spec),
            )
            .await,
        );
        assert_eq!(
            (err.code, err.reason.as_str()),
            (422, "Invalid"),
            "{what}: {err:?}"
        );
        assert!(
            err.message.contains(field),
            "{what}: {field} not in {:?}",
            err.message
        );
    }
    // CEL rule (x-kubernetes-validations) on spec.
    let cel = status(
        api.create(
            &PostParams::default(),
            &widget("bad-cel", json!({"size": 1, "label": "banned"})),
        )
        .await,
    );
    assert_eq!(cel.code, 422, "{cel:?}");
    assert!(
        cel.message.contains("label must not be 'banned'"),
        "{}",
        cel.message
    );

    // Transition rules see the old object.
    api.create(
        &PostParams::default(),
        &widget("serial", json!({"size": 1, "serial": "a1"})),
    )
    .await
    .unwrap();
    let changed = status(
        api.patch(
            "serial",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serial": "b2"}})),
        )
        .await,
    );
    assert_eq!(changed.code, 422, "{changed:?}");
    assert!(
        changed.message.contains("serial is immutable"),
        "{}",
        changed.message
    );
    api.patch(
        "serial",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();

    // int-or-string takes both.
    for port in [json!(80), json!("http")] {
        let name = format!("port-{}", if port.is_string() { "name" } else { "number" });
        api.create(
            &PostParams::default(),
            &widget(&name, json!({"size": 1, "port": port})),
        )
        .await
        .unwrap();
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_pruned_or_rejected_when_strict_and_defaults_apply() {
    let env = Env::start("emu-prune-").await;
    let api = env.widgets();
    let spec = json!({"size": 1, "bogus": true, "extra": {"anything": {"goes": 1}}});
    let created = api
        .create(&PostParams::default(), &widget("w", spec))
        .await
        .unwrap();
    assert!(
        created.data["spec"].get("bogus").is_none(),
        "pruned: {}",
        created.data["spec"]
    );
    assert_eq!(
        created.data["spec"]["extra"]["anything"]["goes"], 1,
        "preserve-unknown-fields kept"
    );
    assert_eq!(created.data["spec"]["mode"], "slow", "default applied");
    let stored = api.get("w").await.unwrap();
    assert!(stored.data["spec"].get("bogus").is_none());

    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    let rejected = status(
        api.patch("w", &strict, &Patch::Merge(json!({"spec": {"nope": 1}})))
            .await,
    );
    assert_eq!(rejected.code, 400, "{rejected:?}");
    assert!(
        rejected.message.contains("unknown field \"spec.nope\""),
        "{}",
        rejected.message
    );
    env.finish().await;
}

fn apply_widget(spec: Value) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "emulator-test.ferrolb.io/v1",
        "kind": "Widget",
        "metadata": {"name": "shared"},
        "spec": spec,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_between_managers_and_force_takes_over() {
    let env = Env::start("emu-ssa-").await;
    let api = env.widgets();
    let alice = PatchParams::apply("alice");
    let bob = PatchParams::apply("bob");
    let created = api
        .patch(
            "shared",
            &alice,
            &apply_widget(json!({"size": 3, "owner": "alice"})),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["alice"]);

    // Same value: shared ownership, no conflict. Different value: conflict naming alice.
    api.patch("shared", &bob, &apply_widget(json!({"size": 3})))
        .await
        .unwrap();
    let conflict = status(
        api.patch("shared", &bob, &apply_widget(json!({"size": 5})))
            .await,
    );
    assert_eq!(
        (conflict.code, conflict.reason.as_str()),
        (409, "Conflict"),
        "{conflict:?}"
    );
    assert!(conflict.message.contains("alice"), "{}", conflict.message);
    assert!(
        conflict.message.contains(".spec.size"),
        "{}",
        conflict.message
    );

    let forced = api
        .patch(
            "shared",
            &bob.clone().force(),
            &apply_widget(json!({"size": 5})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["size"], 5);
    assert_eq!(forced.data["spec"]["owner"], "alice");
    assert_eq!(forced.metadata.generation, Some(2));

    // Alice now conflicts on size, but applying without it drops only her claim:
    // bob still owns size, so it stays.
    let alice_conflict = status(
        api.patch(
            "shared",
            &alice,
            &apply_widget(json!({"size": 3, "owner": "alice"})),
        )
        .await,
    );
    assert_eq!(alice_conflict.code, 409);
    let after = api
        .patch("shared", &alice, &apply_widget(json!({"owner": "alice"})))
        .await
        .unwrap();
    assert_eq!(after.data["spec"]["size"], 5);
    // Alice stops applying owner: nobody else owns it, so it is removed.
    let dropped = api
        .patch("shared", &alice, &apply_widget(json!({"label": "x"})))
        .await
        .unwrap();
    assert!(
        dropped.data["spec"].get("owner").is_none(),
        "{}",
        dropped.data["spec"]
    );

    // Status is its own subresource for apply too; list-map conditions merge by key.
    let status_apply = |manager: &str, ty: &str| {
        let patch = Patch::Apply(json!({
            "apiVersion": "emulator-test.ferrolb.io/v1", "kind": "Widget", "metadata": {"name": "shared"},
            "status": {"conditions": [{"type": ty, "status": "True"}]},
        }));
        (PatchParams::apply(manager), patch)
    };
    let (p, body) = status_apply("controller", "Ready");
    api.patch_status("shared", &p, &body).await.unwrap();
    let (p, body) = status_apply("speaker", "Announced");
    let both = api.patch_status("shared", &p, &body).await.unwrap();
    let types: Vec<&str> = both.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Ready", "Announced"]);
    assert_eq!(
        both.metadata.generation,
        Some(3),
        "label change bumped it once; status did not"
    );

    let missing_manager = status(
        api.patch(
            "shared",
            &PatchParams::default(),
            &apply_widget(json!({"size": 1})),
        )
        .await,
    );
    assert!(
        missing_manager.code == 400 || missing_manager.code == 422,
        "{missing_manager:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrolb_crds_from_deploy_are_served() {
    let env = Env::start("emu-ferrolb-crds-").await;
    let dir = ferrolb_crds_dir();
    if !dir.join("ferrolb.io.yaml").exists() {
        eprintln!("SKIP: {} does not exist yet", dir.display());
        return env.finish().await;
    }
    let names = env.cluster.apply_ferrolb_crds().await.unwrap();
    assert!(
        names.iter().any(|n| n == "ipaddresspools.ferrolb.io"),
        "{names:?}"
    );
    let discovery = Discovery::new(env.client()).run().await.unwrap();
    let group = discovery
        .groups()
        .find(|g| g.name() == "ferrolb.io")
        .expect("ferrolb.io is discovered");
    let plurals: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.plural)
        .collect();
    assert!(plurals.iter().any(|p| p == "ipaddresspools"), "{plurals:?}");

    // A pool with a wrongly typed field is refused as the real server would.
    let (ar, _) = group
        .recommended_kind("IPAddressPool")
        .expect("IPAddressPool kind");
    let gvk = GroupVersionKind::gvk(&ar.group, &ar.version, &ar.kind);
    let pools: Api<DynamicObject> = Api::namespaced_with(
        env.client(),
        &env.ns,
        &ApiResource::from_gvk_with_plural(&gvk, "ipaddresspools"),
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": "IPAddressPool", "metadata": {"name": "bad"},
        "spec": {"addresses": "192.0.2.0/24"},
    }))
    .unwrap();
    let err = status(pools.create(&PostParams::default(), &bad).await);
    assert_eq!(err.code, 422, "{err:?}");
    assert!(err.message.contains("spec.addresses"), "{}", err.message);
    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": "IPAddressPool", "metadata": {"name": "good"},
        "spec": {"addresses": ["192.0.2.0/24"]},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &good).await.unwrap();

    // Address entries are judged at apply time: garbage is refused naming the entry, every
    // spelling MetalLB's users write is accepted.
    for (i, text) in [
        "not-an-ip",
        "192.0.2.300/24",
        "192.0.2.0/33",
        "192.0.2.1 to 192.0.2.9",
        "2001:db8::/129",
        "",
    ]
    .iter()
    .enumerate()
    {
        let pool: DynamicObject = serde_json::from_value(json!({
            "apiVersion": ar.api_version, "kind": "IPAddressPool",
            "metadata": {"name": format!("garbage-{i}")},
            "spec": {"addresses": ["192.0.2.0/28", text]},
        }))
        .unwrap();
        let err = status(pools.create(&PostParams::default(), &pool).await);
        assert_eq!(err.code, 422, "{text:?}: {err:?}");
        assert!(
            err.message.contains("spec.addresses[1]"),
            "{text:?}: {}",
            err.message
        );
    }
    let spellings = [
        "10.20.30.40/24",
        "198.51.100.0/24",
        "192.168.9.1-192.168.9.5",
        "40.0.0.210 - 40.0.0.240",
        "40.0.0.250 - 40.0.0.250",
        "192.0.2.7",
        "2001:db8::/64",
        "fc00:f853:0ccd:e799::/124",
        "2001:db8::1-2001:db8::ff",
        "::ffff:192.0.2.1",
        "0.0.0.0/0",
    ];
    let pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": ar.api_version, "kind": "IPAddressPool", "metadata": {"name": "spellings"},
        "spec": {"addresses": spellings},
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_runtime_controller_converges_without_a_hot_loop() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::StreamExt;
    use kube::runtime::controller::{Action, Controller};
    use kube::runtime::watcher;

    let env = Env::start("emu-controller-").await;
    let api = env.widgets();
    let reconciles = Arc::new(AtomicUsize::new(0));

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct ReconcileError(#[from] kube::Error);

    struct Ctx {
        api: Api<DynamicObject>,
        count: Arc<AtomicUsize>,
    }
    async fn reconcile(
        widget: Arc<DynamicObject>,
        ctx: Arc<Ctx>,
    ) -> Result<Action, ReconcileError> {
        ctx.count.fetch_add(1, Ordering::SeqCst);
        let name = widget.metadata.name.clone().unwrap_or_default();
        let status =
            json!({"status": {"phase": "Ready", "observedGeneration": widget.metadata.generation}});
        ctx.api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<DynamicObject>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
        Action::requeue(std::time::Duration::from_millis(100))
    }

    let ctx = Arc::new(Ctx {
        api: api.clone(),
        count: reconciles.clone(),
    });
    let controller = Controller::new_with(
        api.clone(),
        watcher::Config::default(),
        emulator_common::widget_resource(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {});
    let running = tokio::spawn(controller);

    api.create(
        &PostParams::default(),
        &widget("managed", json!({"size": 1})),
    )
    .await
    .unwrap();
    let observed = |generation: i64| {
        let api = api.clone();
        async move {
            loop {
                let w = api.get("managed").await.unwrap();
                if w.data["status"]["observedGeneration"] == generation {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    emulator_common::within(20, "first reconcile", observed(1)).await;
    api.patch(
        "managed",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    emulator_common::within(20, "second reconcile", observed(2)).await;
    // Status writes trigger one more reconcile each, whose write changes nothing and so
    // emits no event: the loop settles.
    // A hot loop never goes quiet; allow for a slow, busy machine otherwise.
    let settled = emulator_common::within(30, "controller to go quiet", async {
        let mut last = reconciles.load(Ordering::SeqCst);
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let now = reconciles.load(Ordering::SeqCst);
            if now == last {
                break now;
            }
            last = now;
        }
    })
    .await;
    assert!(settled <= 6, "{settled} reconciles for two changes");
    running.abort();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_crd_stops_serving_it_and_removes_its_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::DeleteParams;
    let env = Env::start("emu-crddel-").await;
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: sprockets.emulator-test.ferrolb.io
spec:
  group: emulator-test.ferrolb.io
  scope: Namespaced
  names: {plural: sprockets, singular: sprocket, kind: Sprocket, listKind: SprocketList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sprockets.yaml");
    std::fs::write(&path, crd).unwrap();
    env.cluster.apply_crds(&path).await.unwrap();
    let gvk = GroupVersionKind::gvk("emulator-test.ferrolb.io", "v1", "Sprocket");
    let sprockets: Api<DynamicObject> = Api::namespaced_with(
        env.client(),
        &env.ns,
        &ApiResource::from_gvk_with_plural(&gvk, "sprockets"),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "emulator-test.ferrolb.io/v1", "kind": "Sprocket", "metadata": {"name": "s"}, "teeth": 12,
    }))
    .unwrap();
    let created = sprockets
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    assert_eq!(
        created.data["teeth"], 12,
        "preserve-unknown-fields at the root keeps everything"
    );

    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    crds.delete(
        "sprockets.emulator-test.ferrolb.io",
        &DeleteParams::default(),
    )
    .await
    .unwrap();
    emulator_common::within(60, "CRD removal", async {
        loop {
            match sprockets.get("s").await {
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    env.finish().await;
}
