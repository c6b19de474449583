//! Watches: resumption from a resourceVersion, 410 Gone and kube-runtime's watcher recovering
//! from it, bookmarks, selector transitions, timeouts.

mod emulator_common;

use std::collections::BTreeSet;

use emulator_common::{within, Env};
use ferrolb_e2e::emulator::EmulatorConfig;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c
}

fn name_of(e: &WatchEvent<ConfigMap>) -> String {
    match e {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            o.metadata.name.clone().unwrap_or_default()
        }
        other => format!("{other:?}"),
    }
}

fn kind_of(e: &WatchEvent<ConfigMap>) -> &'static str {
    match e {
        WatchEvent::Added(_) => "ADDED",
        WatchEvent::Modified(_) => "MODIFIED",
        WatchEvent::Deleted(_) => "DELETED",
        WatchEvent::Bookmark(_) => "BOOKMARK",
        WatchEvent::Error(_) => "ERROR",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_resource_version() {
    let env = Env::start("emu-wresume-").await;
    let api: Api<ConfigMap> = env.typed();
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    // Changes made before the watch starts are replayed, in order, from `from`.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let wp = WatchParams::default().timeout(10).disable_bookmarks();
    let mut stream = api.watch(&wp, &from).await.unwrap().boxed();
    let mut seen = Vec::new();
    within(10, "replayed events", async {
        while seen.len() < 3 {
            let e = stream.try_next().await.unwrap().expect("stream open");
            seen.push((kind_of(&e), name_of(&e)));
        }
    })
    .await;
    assert_eq!(
        seen,
        [
            ("MODIFIED", "a".to_string()),
            ("ADDED", "b".to_string()),
            ("DELETED", "a".to_string())
        ]
    );
    // And live events follow.
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    let live = within(10, "live event", stream.try_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((kind_of(&live), name_of(&live)), ("ADDED", "c".to_string()));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_resource_version_is_410_and_the_watcher_relists() {
    let config = EmulatorConfig {
        history_limit: 8,
        ..EmulatorConfig::default()
    };
    let env = Env::start_with("emu-wgone-", config).await;
    let Some(emulator) = env.cluster.emulator() else {
        // A real cluster compacts on its own schedule; 410 cannot be forced from here.
        eprintln!("SKIP: forcing 410 Gone needs the emulator (FERROLB_E2E_KUBECONFIG is set)");
        return env.finish().await;
    };
    let api: Api<ConfigMap> = env.typed();
    let first = api
        .create(&PostParams::default(), &cm("first"))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("filler-{i}")))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    match within(5, "410 event", stream.try_next()).await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // kube-runtime's watcher: list, watch, then lose the watch while the history moves on.
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut initial = BTreeSet::new();
    within(10, "initial list", async {
        loop {
            match events.try_next().await.unwrap().unwrap() {
                watcher::Event::InitApply(o) => {
                    initial.insert(o.metadata.name.unwrap());
                }
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(initial.len(), 11);
    // Not polling the watcher now: its watch is open; end it, then push its resourceVersion
    // out of the history.
    emulator.disconnect_watches();
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("late-{i}")))
            .await
            .unwrap();
    }
    let mut saw_gone = false;
    let mut relisted = BTreeSet::new();
    within(20, "relist after 410", async {
        loop {
            match events.next().await.expect("watcher stream continues") {
                Err(watcher::Error::WatchError(status)) if status.code == 410 => saw_gone = true,
                Err(e) => panic!("unexpected watcher error: {e}"),
                Ok(watcher::Event::InitApply(o)) => {
                    relisted.insert(o.metadata.name.unwrap());
                }
                Ok(watcher::Event::InitDone) if saw_gone => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(saw_gone);
    assert_eq!(relisted.len(), 21, "{relisted:?}");
    assert!(relisted.contains("late-9"));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_carry_the_current_resource_version() {
    let env = Env::start("emu-wbook-").await;
    let api: Api<ConfigMap> = env.typed();
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    // Real servers send bookmarks about once a minute; the emulator every second by default.
    let wp = WatchParams::default().timeout(120);
    let mut stream = api.watch(&wp, &rv.to_string()).await.unwrap().boxed();
    let bookmark = within(120, "a bookmark", async {
        loop {
            if let WatchEvent::Bookmark(b) = stream.try_next().await.unwrap().expect("stream open")
            {
                break b;
            }
        }
    })
    .await;
    let at: u64 = bookmark.metadata.resource_version.parse().unwrap();
    assert!(at >= rv, "bookmark at {at} < {rv}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_watch_sees_objects_enter_and_leave() {
    let env = Env::start("emu-wsel-").await;
    let api: Api<ConfigMap> = env.typed();
    let wp = WatchParams::default()
        .labels("role=target")
        .timeout(20)
        .disable_bookmarks();
    let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("x")).await.unwrap();
    let label = |v: Option<&str>| Patch::Merge(json!({"metadata": {"labels": {"role": v}}}));
    api.patch("x", &PatchParams::default(), &label(Some("target")))
        .await
        .unwrap();
    api.patch("x", &PatchParams::default(), &label(Some("other")))
        .await
        .unwrap();
    let mut seen = Vec::new();
    within(10, "selector transitions", async {
        while seen.len() < 2 {
            let e = stream.try_next().await.unwrap().expect("stream open");
            seen.push(kind_of(&e));
        }
    })
    .await;
    assert_eq!(seen, ["ADDED", "DELETED"]);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_after_timeout_seconds() {
    let env = Env::start("emu-wtimeout-").await;
    let api: Api<ConfigMap> = env.typed();
    let wp = WatchParams::default().timeout(1).disable_bookmarks();
    let mut stream = api.watch(&wp, "0").await.unwrap().boxed();
    let ended = within(30, "watch end", async {
        loop {
            if stream.try_next().await.unwrap().is_none() {
                break true;
            }
        }
    })
    .await;
    assert!(ended);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    let env = Env::start("emu-wstream-").await;
    if env.cluster.is_real_cluster() {
        // WatchList (sendInitialEvents) depends on the cluster's version and feature gates.
        eprintln!("SKIP: streaming lists are only asserted against the emulator");
        return env.finish().await;
    }
    let api: Api<ConfigMap> = env.typed();
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &cm(name)).await.unwrap();
    }
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = BTreeSet::new();
    within(10, "streamed initial events", async {
        loop {
            match events.try_next().await.unwrap().unwrap() {
                watcher::Event::InitApply(o) => {
                    initial.insert(o.metadata.name.unwrap());
                }
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(initial, BTreeSet::from(["a".to_string(), "b".to_string()]));
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
    let next = within(10, "live event", events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(next, watcher::Event::Apply(ref o) if o.metadata.name.as_deref() == Some("c")),
        "{next:?}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_lists_and_watches() {
    use kube::core::PartialObjectMeta;
    let env = Env::start("emu-wmeta-").await;
    let api: Api<ConfigMap> = env.typed();
    let mut labelled = cm("a");
    labelled.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
    api.create(&PostParams::default(), &labelled).await.unwrap();
    let list = api
        .list_metadata(&kube::api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.labels.as_ref().unwrap()["k"], "v");

    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(env.client(), &env.ns);
    let mut events = watcher(meta_api, watcher::Config::default()).boxed();
    within(10, "metadata watcher init", async {
        loop {
            if let watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
                break;
            }
        }
    })
    .await;
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    let next = within(10, "metadata event", events.try_next())
        .await
        .unwrap()
        .unwrap();
    match next {
        watcher::Event::Apply(m) => assert_eq!(m.metadata.name.as_deref(), Some("b")),
        other => panic!("{other:?}"),
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_future_resource_version_skips_earlier_events() {
    let env = Env::start("emu-wfuture-").await;
    if env.cluster.is_real_cluster() {
        // Real servers differ here by version (wait, error, or skip); only the emulator's
        // choice is pinned down.
        eprintln!("SKIP: future resourceVersions are only asserted against the emulator");
        return env.finish().await;
    }
    let api: Api<ConfigMap> = env.typed();
    let created = api.create(&PostParams::default(), &cm("a")).await.unwrap();
    let rv: u64 = created.metadata.resource_version.unwrap().parse().unwrap();
    let wp = WatchParams::default().timeout(2).disable_bookmarks();
    let mut stream = api.watch(&wp, &(rv + 5).to_string()).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("b")).await.unwrap();
    let mut seen = Vec::new();
    within(10, "watch end", async {
        while let Some(e) = stream.try_next().await.unwrap() {
            seen.push(name_of(&e));
        }
    })
    .await;
    assert!(seen.is_empty(), "{seen:?}");
    env.finish().await;
}
