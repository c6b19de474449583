//! The emulator against the behaviour of the real API, through kube-rs: CRUD, optimistic
//! concurrency, the status subresource, generation, finalizers, selectors, discovery, and the
//! emulator run as a process. Set FERROLB_E2E_KUBECONFIG to run the same tests on a cluster.

mod emulator_common;

use std::collections::BTreeMap;

use emulator_common::{status, widget, Env};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use serde_json::json;

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    cm.data = Some([("k".to_string(), "v1".to_string())].into());
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_round_trip_with_kubernetes_errors() {
    let env = Env::start("emu-crud-").await;
    let api: Api<ConfigMap> = env.typed();
    let created = api
        .create(&PostParams::default(), &config_map("one", &[]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.as_ref().is_some_and(|u| u.len() == 36),
        "uid: {:?}",
        meta.uid
    );
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();

    let fetched = api.get("one").await.unwrap();
    assert_eq!(fetched.data, created.data);

    let again = status(
        api.create(&PostParams::default(), &config_map("one", &[]))
            .await,
    );
    assert_eq!(
        (again.code, again.reason.as_str()),
        (409, "AlreadyExists"),
        "{again:?}"
    );

    let missing = status(api.get("nope").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert!(
        missing.message.contains("configmaps \"nope\" not found"),
        "{}",
        missing.message
    );

    let mut changed = fetched.clone();
    changed.data = Some([("k".to_string(), "v2".to_string())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1, "resourceVersion is monotonic: {rv1} then {rv2}");

    // A write that changes nothing keeps the resourceVersion.
    let same = api
        .replace("one", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        replaced.metadata.resource_version
    );

    let merged = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"extra": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged
            .data
            .as_ref()
            .unwrap()
            .get("extra")
            .map(String::as_str),
        Some("x")
    );
    let json_patched = api
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/extra"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert!(!json_patched.data.as_ref().unwrap().contains_key("extra"));

    api.delete("one", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(api.get("one").await).code, 404);
    assert_eq!(
        status(api.delete("one", &DeleteParams::default()).await).code,
        404
    );

    let in_missing_ns: Api<ConfigMap> = Api::namespaced(env.client(), "no-such-namespace-emu");
    assert_eq!(
        status(
            in_missing_ns
                .create(&PostParams::default(), &config_map("x", &[]))
                .await
        )
        .code,
        404
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_resource_version_is_a_409_conflict() {
    let env = Env::start("emu-conflict-").await;
    let api: Api<ConfigMap> = env.typed();
    let first = api
        .create(&PostParams::default(), &config_map("cm", &[]))
        .await
        .unwrap();
    let mut a = first.clone();
    a.data = Some([("k".to_string(), "a".to_string())].into());
    api.replace("cm", &PostParams::default(), &a).await.unwrap();
    let mut b = first.clone();
    b.data = Some([("k".to_string(), "b".to_string())].into());
    let conflict = status(api.replace("cm", &PostParams::default(), &b).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("the object has been modified"),
        "{}",
        conflict.message
    );

    // Custom resources refuse an update without a resourceVersion.
    let widgets = env.widgets();
    widgets
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let mut unconditional = widget("w", json!({"size": 2}));
    unconditional.metadata.resource_version = None;
    let invalid = status(
        widgets
            .replace("w", &PostParams::default(), &unconditional)
            .await,
    );
    assert_eq!(invalid.code, 422, "{invalid:?}");
    assert!(
        invalid.message.contains("metadata.resourceVersion"),
        "{}",
        invalid.message
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_is_separate_and_generation_tracks_spec() {
    let env = Env::start("emu-status-").await;
    let api = env.widgets();
    let mut w = widget("w", json!({"size": 1}));
    w.data["status"] = json!({"phase": "Ignored"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create: {:?}",
        created.data
    );

    // Status writes change only status, and never the generation.
    let mut with_status = created.clone();
    with_status.data["status"] = json!({"phase": "Ready", "observedGeneration": 1});
    with_status.data["spec"]["size"] = json!(9);
    let after_status = api
        .replace_status("w", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(after_status.data["status"]["phase"], "Ready");
    assert_eq!(
        after_status.data["spec"]["size"], 1,
        "spec ignored on /status"
    );
    assert_eq!(after_status.metadata.generation, Some(1));

    // Spec writes ignore status and bump the generation.
    let mut spec_write = after_status.clone();
    spec_write.data["spec"]["size"] = json!(2);
    spec_write.data["status"] = json!({"phase": "Overwritten"});
    let after_spec = api
        .replace("w", &PostParams::default(), &spec_write)
        .await
        .unwrap();
    assert_eq!(after_spec.data["status"]["phase"], "Ready");
    assert_eq!(after_spec.metadata.generation, Some(2));

    // Metadata-only changes leave the generation alone.
    let labelled = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    let patched_status = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Done"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched_status.data["status"]["phase"], "Done");
    assert_eq!(patched_status.metadata.generation, Some(2));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_with_a_deletion_timestamp() {
    let env = Env::start("emu-final-").await;
    let api = env.widgets();
    let mut w = widget("w", json!({"size": 1}));
    w.metadata.finalizers = Some(vec!["emulator-test.ferrolb.io/hold".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();

    let deleting = api.delete("w", &DeleteParams::default()).await.unwrap();
    let pending = deleting
        .left()
        .expect("object returned while finalizers are pending");
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get("w").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    let add = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["emulator-test.ferrolb.io/hold", "other/new"]}}),
            ),
        )
        .await;
    let forbidden = status(add);
    assert_eq!(forbidden.code, 422, "{forbidden:?}");
    assert!(
        forbidden.message.contains("metadata.finalizers"),
        "{}",
        forbidden.message
    );

    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let gone = status(api.get("w").await);
    assert_eq!(gone.code, 404);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_filter_lists() {
    let env = Env::start("emu-select-").await;
    let api: Api<ConfigMap> = env.typed();
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
    ] {
        api.create(
            &PostParams::default(),
            &config_map(name, &[("app", app), ("tier", tier)]),
        )
        .await
        .unwrap();
    }
    let names = |list: kube::api::ObjectList<ConfigMap>| -> Vec<String> {
        let mut n: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        n.sort();
        n
    };
    let q = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(names(api.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(
        names(api.list(&q("app in (db),tier=back")).await.unwrap()),
        ["c"]
    );
    assert_eq!(names(api.list(&q("tier!=back")).await.unwrap()), ["a"]);
    assert_eq!(
        names(api.list(&q("!app")).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    // Only the field labels the real server supports for the kind.
    let unsupported = status(api.list(&ListParams::default().fields("data.k=v1")).await);
    assert_eq!(unsupported.code, 400, "{unsupported:?}");
    let ns_field = format!("metadata.namespace={}", env.ns);
    let all: Api<ConfigMap> = Api::all(env.client());
    let across = names(
        all.list(&ListParams::default().fields(&ns_field).labels("app"))
            .await
            .unwrap(),
    );
    assert_eq!(across, ["a", "b", "c"]);

    // Pagination hands out every item exactly once.
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let mut all_names = names(first);
    all_names.extend(names(second));
    all_names.sort();
    assert!(
        all_names.starts_with(&["a".to_string(), "b".to_string(), "c".to_string()]),
        "{all_names:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_update_race_has_exactly_one_winner_per_round() {
    let env = Env::start("emu-lease-").await;
    let api: Api<Lease> = env.typed();
    let mut lease = Lease::default();
    lease.metadata.name = Some("leader".into());
    api.create(&PostParams::default(), &lease).await.unwrap();
    for round in 0..20 {
        let seen = api.get("leader").await.unwrap();
        let contenders = ["controller-a", "controller-b"].map(|who| {
            let api = api.clone();
            let mut mine = seen.clone();
            mine.spec
                .get_or_insert_with(Default::default)
                .holder_identity = Some(format!("{who}-{round}"));
            tokio::spawn(async move { api.replace("leader", &PostParams::default(), &mine).await })
        });
        let mut winners = 0;
        for c in contenders {
            match c.await.unwrap() {
                Ok(_) => winners += 1,
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => panic!("unexpected error in round {round}: {e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_builtins_and_custom_resources() {
    let env = Env::start("emu-disco-").await;
    let discovery = Discovery::new(env.client()).run().await.unwrap();
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            found.push((
                ar.group.clone(),
                ar.plural.clone(),
                caps.scope == Scope::Namespaced,
            ));
        }
    }
    for (group, plural, namespaced) in [
        ("", "services", true),
        ("", "namespaces", false),
        ("discovery.k8s.io", "endpointslices", true),
        ("coordination.k8s.io", "leases", true),
        ("events.k8s.io", "events", true),
        ("emulator-test.ferrolb.io", "widgets", true),
        ("emulator-test.ferrolb.io", "gadgets", false),
    ] {
        assert!(
            found.contains(&(group.to_string(), plural.to_string(), namespaced)),
            "{group}/{plural} missing from discovery"
        );
    }
    // Cluster-scoped custom resources work without a namespace.
    let gadgets = env.gadgets();
    let mut gadget = widget("emu-gadget", json!({"colour": "red"}));
    gadget.types.as_mut().unwrap().kind = "Gadget".into();
    let made = gadgets
        .create(&PostParams::default(), &gadget)
        .await
        .unwrap();
    assert!(made.metadata.namespace.is_none());
    gadgets
        .delete("emu-gadget", &DeleteParams::default())
        .await
        .unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_removes_its_content() {
    let env = Env::start("emu-ns-").await;
    let api: Api<ConfigMap> = env.typed();
    api.create(&PostParams::default(), &config_map("cm", &[]))
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(env.client());
    let ns = namespaces.get(&env.ns).await.unwrap();
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let mut held = widget("held", json!({"size": 1}));
    held.metadata.finalizers = Some(vec!["emulator-test.ferrolb.io/hold".into()]);
    env.widgets()
        .create(&PostParams::default(), &held)
        .await
        .unwrap();
    let name = env.ns.clone();
    env.cluster.delete_namespace(&name).await.unwrap();
    // The finalizer holds the namespace in Terminating, where nothing new may be created.
    emulator_common::within(120, "namespace content deleted", async {
        while api.get("cm").await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let terminating = namespaces.get(&name).await.unwrap();
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let refused = status(
        api.create(&PostParams::default(), &config_map("late", &[]))
            .await,
    );
    assert_eq!(refused.code, 403, "{refused:?}");
    assert!(
        refused.message.contains("being terminated"),
        "{}",
        refused.message
    );
    env.widgets()
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    // A real cluster finishes this asynchronously; wait for it.
    emulator_common::within(120, "namespace deletion", async {
        loop {
            match namespaces.get(&name).await {
                Err(kube::Error::Api(s)) if s.code == 404 => break,
                Ok(n) => assert!(n.metadata.deletion_timestamp.is_some()),
                Err(e) => panic!("{e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(status(api.get("cm").await).code, 404);
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_binary_serves_a_kubeconfig() {
    use ferrolb_e2e::emulator::harness::EmulatorProcess;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferrolb-apiserver-emulator"));
    let process =
        EmulatorProcess::spawn(binary, &[], "127.0.0.1:0".parse().unwrap(), &kubeconfig).unwrap();
    assert!(
        process.url().starts_with("http://127.0.0.1:"),
        "{}",
        process.url()
    );
    let client = process.client().await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for builtin in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == builtin), "{builtin} in {names:?}");
    }
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_takeover_by_apply_conflicts_for_the_loser() {
    // The pattern of SSA-based lease locks (e.g. kube-lease-manager): contenders apply
    // holderIdentity as their own field manager; the second one to arrive conflicts.
    let env = Env::start("emu-lease-ssa-").await;
    let api: Api<Lease> = env.typed();
    let mut lease = Lease::default();
    lease.metadata.name = Some("lock".into());
    api.create(&PostParams::default(), &lease).await.unwrap();
    let take = |who: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "spec": {"holderIdentity": who, "leaseDurationSeconds": 15},
        }))
    };
    let contenders = ["speaker-a", "speaker-b"].map(|who| {
        let api = api.clone();
        let patch = take(who);
        tokio::spawn(async move { api.patch("lock", &PatchParams::apply(who), &patch).await })
    });
    let mut outcomes = Vec::new();
    for c in contenders {
        outcomes.push(
            c.await
                .unwrap()
                .map(|l| l.spec.unwrap().holder_identity.unwrap())
                .map_err(|e| match e {
                    kube::Error::Api(s) => s.code,
                    other => panic!("{other}"),
                }),
        );
    }
    let winners: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert!(outcomes.contains(&Err(409)), "{outcomes:?}");
    // The holder renews with a strategic merge patch (an Update); releasing clears the fields,
    // after which the other contender's apply no longer conflicts.
    let holder = winners[0].clone();
    let other = if holder == "speaker-a" {
        "speaker-b"
    } else {
        "speaker-a"
    };
    let release = json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": null}});
    api.patch(
        "lock",
        &PatchParams {
            field_manager: Some(holder.clone()),
            ..Default::default()
        },
        &Patch::Strategic(release),
    )
    .await
    .unwrap();
    let taken = api
        .patch("lock", &PatchParams::apply(other), &take(other))
        .await
        .unwrap();
    assert_eq!(taken.spec.unwrap().holder_identity.as_deref(), Some(other));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_recorder_creates_then_patches_series() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    use kube::Resource;
    let env = Env::start("emu-events-").await;
    let api: Api<ConfigMap> = env.typed();
    let cm = api
        .create(&PostParams::default(), &config_map("subject", &[]))
        .await
        .unwrap();
    let reporter = Reporter {
        controller: "ferrolb-e2e".into(),
        instance: Some("test".into()),
    };
    let recorder = Recorder::new(env.client(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "IPAllocated".into(),
        note: Some("assigned 192.0.2.1".into()),
        action: "Allocate".into(),
        secondary: None,
    };
    let reference = cm.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<K8sEvent> = env.typed();
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1, "{:?}", listed.items);
    assert_eq!(listed.items[0].series.as_ref().map(|s| s.count), Some(2));
    // One store, two shapes: the same event through the core API.
    let core: Api<k8s_openapi::api::core::v1::Event> = env.typed();
    let core_events = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(core_events.items.len(), 1);
    assert_eq!(
        core_events.items[0].message.as_deref(),
        Some("assigned 192.0.2.1")
    );
    assert_eq!(
        core_events.items[0].involved_object.name.as_deref(),
        Some("subject")
    );
    let by_regarding = events
        .list(&ListParams::default().fields("regarding.name=subject"))
        .await
        .unwrap();
    assert_eq!(by_regarding.items.len(), 1);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_statuses_not_a_dead_server() {
    use axum::http::{Method, Request};
    let env = Env::start("emu-garbage-").await;
    let ns = env.ns.clone();
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    let widgets = format!("/apis/emulator-test.ferrolb.io/v1/namespaces/{ns}/widgets");
    env.widgets()
        .create(&PostParams::default(), &widget("w", json!({"size": 1})))
        .await
        .unwrap();
    let cases: Vec<(Method, String, &str, &str)> = vec![
        (Method::POST, cms.clone(), "application/json", "{not json"),
        (Method::POST, cms.clone(), "application/json", "[1, 2, 3]"),
        (
            Method::POST,
            cms.clone(),
            "application/json",
            r#"{"metadata": "x", "data": {}}"#,
        ),
        (
            Method::POST,
            cms.clone(),
            "application/json",
            r#"{"kind": "Secret", "metadata": {"name": "a"}}"#,
        ),
        (
            Method::POST,
            cms.clone(),
            "application/json",
            r#"{"metadata": {"name": "UPPER"}}"#,
        ),
        (
            Method::POST,
            cms.clone(),
            "application/json",
            r#"{"metadata": {"name": "a"}, "data": 7}"#,
        ),
        (
            Method::POST,
            widgets.clone(),
            "application/json",
            r#"{"apiVersion": "emulator-test.ferrolb.io/v1", "kind": "Widget", "metadata": {"name": "x"}, "spec": "big"}"#,
        ),
        (
            Method::PATCH,
            format!("{widgets}/w"),
            "application/json-patch+json",
            r#"[{"op": "explode"}]"#,
        ),
        (
            Method::PATCH,
            format!("{widgets}/w"),
            "application/json-patch+json",
            r#"[{"op": "replace", "path": "", "value": "s"}]"#,
        ),
        (
            Method::PATCH,
            format!("{widgets}/w"),
            "application/merge-patch+json",
            "nope",
        ),
        (
            Method::PATCH,
            format!("{widgets}/w"),
            "application/strategic-merge-patch+json",
            "{}",
        ),
        (
            Method::PATCH,
            format!("{widgets}/w?fieldManager=m"),
            "application/apply-patch+yaml",
            "just a string",
        ),
        (
            Method::PATCH,
            format!("{widgets}/w?fieldManager=m"),
            "application/apply-patch+yaml",
            "apiVersion: v1\nkind: Widget\nmetadata: 3\n",
        ),
        (Method::PATCH, format!("{widgets}/w"), "text/plain", "{}"),
        (
            Method::GET,
            format!("{cms}?labelSelector=a%20b%20c"),
            "",
            "",
        ),
        (
            Method::GET,
            format!("{cms}?resourceVersion=notanumber&resourceVersionMatch=Exact"),
            "",
            "",
        ),
        (Method::GET, "/apis/no.such.group/v1/things".into(), "", ""),
        (
            Method::PUT,
            format!("{widgets}/w/scale"),
            "application/json",
            "{}",
        ),
    ];
    let client = env.client();
    for (method, uri, content_type, body) in cases {
        let mut request = Request::builder().method(method.clone()).uri(&uri);
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let request = request.body(body.as_bytes().to_vec()).unwrap();
        match client.request_text(request).await {
            Err(kube::Error::Api(s)) => {
                assert!((400..500).contains(&s.code), "{method} {uri} {body}: {s:?}")
            }
            other => panic!("{method} {uri} {body}: expected a 4xx Status, got {other:?}"),
        }
    }
    // Still serving.
    env.widgets().get("w").await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_and_get_work() {
    let Ok(kubectl) = which("kubectl") else {
        eprintln!("SKIP: kubectl is not installed");
        return;
    };
    let env = Env::start("emu-kubectl-").await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("widget.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: emulator-test.ferrolb.io/v1\nkind: Widget\nmetadata:\n  name: from-kubectl\nspec:\n  size: 2\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(env.cluster.kubeconfig())
            .args(["--namespace", &env.ns])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let manifest = manifest.to_str().unwrap();
    let (ok, _, err) = run(&["apply", "-f", manifest]);
    assert!(ok, "client-side apply: {err}");
    let (ok, _, err) = run(&["apply", "--server-side", "-f", manifest]);
    assert!(ok, "server-side apply: {err}");
    let (ok, out, err) = run(&["get", "widgets", "-o", "json"]);
    assert!(ok, "get: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"][0]["spec"]["mode"], "slow");
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: emulator-test.ferrolb.io/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  size: 99\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["apply", "-f", dir.path().join("bad.yaml").to_str().unwrap()]);
    assert!(!ok && err.contains("spec.size"), "{err}");
    env.finish().await;
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_processes_get_the_cluster_kubeconfig() {
    let env = Env::start("emu-spawn-").await;
    let mut process = env
        .cluster
        .spawn(
            std::path::Path::new("/bin/sh"),
            &["-c", "cat \"$KUBECONFIG\"; sleep 30"],
        )
        .unwrap();
    emulator_common::within(10, "process output", async {
        while !process.log().contains("server:") {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(process.is_running());
    process.kill();
    assert!(!process.is_running());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_emulator_is_trusted_through_the_kubeconfig_ca() {
    let config = ferrolb_e2e::emulator::EmulatorConfig {
        tls: true,
        ..Default::default()
    };
    let env = Env::start_with("emu-tls-", config).await;
    if let Some(emulator) = env.cluster.emulator() {
        assert!(emulator.url().starts_with("https://"), "{}", emulator.url());
        let kubeconfig = std::fs::read_to_string(env.cluster.kubeconfig()).unwrap();
        assert!(
            kubeconfig.contains("certificate-authority-data:"),
            "{kubeconfig}"
        );
        // The bare emulator client trusts the same CA.
        let direct: Api<Namespace> = Api::all(emulator.client().unwrap());
        direct.get(&env.ns).await.unwrap();
        // A client that does not know the CA is refused.
        let mut untrusted = kube::Config::new(emulator.url().parse().unwrap());
        untrusted.root_cert = None;
        let stranger: Api<Namespace> = Api::all(kube::Client::try_from(untrusted).unwrap());
        assert!(stranger.get(&env.ns).await.is_err());
    }
    let api: Api<ConfigMap> = env.typed();
    api.create(&PostParams::default(), &config_map("over-tls", &[]))
        .await
        .unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_binary_serves_tls_with_a_kubeconfig() {
    use ferrolb_e2e::emulator::harness::EmulatorProcess;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ferrolb-apiserver-emulator"));
    let process = EmulatorProcess::spawn_with_args(
        binary,
        &[],
        "127.0.0.1:0".parse().unwrap(),
        &kubeconfig,
        &["--tls"],
    )
    .unwrap();
    assert!(
        process.url().starts_with("https://127.0.0.1:"),
        "{}",
        process.url()
    );
    let namespaces: Api<Namespace> = Api::all(process.client().await.unwrap());
    namespaces.get("default").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rules_secret_string_data_and_resource_version() {
    use k8s_openapi::api::core::v1::Secret;
    let env = Env::start("emu-create-").await;
    let secrets: Api<Secret> = env.typed();
    let mut secret = Secret::default();
    secret.metadata.name = Some("bgp-password".into());
    secret.string_data = Some([("password".to_string(), "s3cret".to_string())].into());
    let stored = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert!(stored.string_data.is_none(), "stringData is write-only");
    assert_eq!(stored.data.unwrap()["password"].0, b"s3cret");

    // Creating from a fetched object (with its resourceVersion) is refused.
    let api: Api<ConfigMap> = env.typed();
    let first = api
        .create(&PostParams::default(), &config_map("orig", &[]))
        .await
        .unwrap();
    let mut copy = first.clone();
    copy.metadata.name = Some("copy".into());
    let refused = status(api.create(&PostParams::default(), &copy).await);
    assert_eq!(refused.code, 400, "{refused:?}");
    assert!(
        refused
            .message
            .contains("resourceVersion should not be set"),
        "{}",
        refused.message
    );
    env.finish().await;
}
