//! The L2 tie-breaker Lease against the API emulator (or the cluster named by
//! FERROLB_E2E_KUBECONFIG): contenders agree on one holder, nobody touches the Lease outside a
//! tie, a holder leaving the tie hands it over at once, and a holder that vanishes without a
//! word is replaced once its lease lapses.

use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_speaker::runtime::TieBreak;
use ferrolb_speaker::tiebreak::{spawn, LEASE_NAME};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

async fn holder_is(t: &mut TieBreak, want: Option<&str>, what: &str) {
    let got = tokio::time::timeout(LIMIT, t.holder.wait_for(|h| h.as_deref() == want))
        .await
        .is_ok();
    assert!(
        got,
        "{what}: holder {:?}, expected {want:?}",
        t.holder.borrow().clone()
    );
}

#[tokio::test]
async fn contenders_agree_on_one_holder_and_hand_over() {
    let cluster = TestCluster::start().await.unwrap();
    let ns = cluster.create_namespace("tiebreak").await.unwrap();
    let api: Api<Lease> = Api::namespaced(cluster.client(), &ns);
    let duration = Duration::from_secs(3);
    let (mut a, task_a) = spawn(api.clone(), "node-a".into(), duration);
    let (mut b, _task_b) = spawn(api.clone(), "node-b".into(), duration);

    // Outside a tie nobody writes the Lease.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.get_opt(LEASE_NAME).await.unwrap().is_none());
    assert_eq!(*a.holder.borrow(), None);

    // Both in a tie at once: one holder, the same for both.
    a.contend.send_replace(true);
    b.contend.send_replace(true);
    let first = tokio::time::timeout(LIMIT, a.holder.wait_for(Option::is_some))
        .await
        .expect("a holder within the limit")
        .unwrap()
        .clone()
        .unwrap();
    holder_is(&mut b, Some(&first), "b sees a's holder").await;
    let stored = api.get(LEASE_NAME).await.unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(first.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    // Renewals keep it with the same holder.
    tokio::time::sleep(duration * 2).await;
    holder_is(&mut a, Some(&first), "still the first holder").await;

    // The holder leaves the tie: it releases, the other takes it within a round.
    let (holder, other, other_name) = if first == "node-a" {
        (&mut a, &mut b, "node-b")
    } else {
        (&mut b, &mut a, "node-a")
    };
    holder.contend.send_replace(false);
    holder_is(holder, None, "the leaver publishes nobody").await;
    let started = tokio::time::Instant::now();
    holder_is(other, Some(other_name), "the other takes it").await;
    assert!(started.elapsed() < duration, "{:?}", started.elapsed());

    // The new holder vanishes without releasing (its task killed): the remaining contender
    // takes over once the lease lapses, not before.
    holder.contend.send_replace(true);
    holder_is(holder, Some(other_name), "back in the tie, sees the holder").await;
    if other_name == "node-a" {
        task_a.abort();
    } else {
        _task_b.abort();
    }
    let vanished = tokio::time::Instant::now();
    let me = if other_name == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let got = tokio::time::timeout(
        duration * 4,
        holder.holder.wait_for(|h| h.as_deref() == Some(me)),
    )
    .await;
    assert!(got.is_ok(), "no takeover after the holder vanished");
    let waited = vanished.elapsed();
    assert!(
        waited >= duration / 2,
        "taken over after {waited:?}, before the lease could lapse"
    );
}
