//! The L2 tie-breaker Lease (kube mode): when a speaker sees exactly half of the electorate
//! ([`crate::quorum`]), the side that holds the coordination.k8s.io Lease `ferrolb-l2-tiebreak`
//! in the speaker's namespace announces and the other stands down. The Lease is touched only
//! while this speaker is in a tie: never on the normal takeover path.
//!
//! While in a tie, every speaker reads the Lease every `duration / 3`; one whose holder is gone
//! (no holder, or not renewed for its `leaseDurationSeconds` by this node's clock) takes it,
//! the holder renews it; writes replace the object at the version read, so two contenders
//! cannot both take it. What is published is the holder as last read, and only for half a
//! lease duration after that read began (a round that hangs is cut off then): a speaker that
//! cannot reach the API server stops counting on its side's hold well before another side may take the Lease over (a whole duration after
//! the last renewal; the other half is the room for clock skew between nodes). Leaving the tie,
//! the holder releases the Lease so the next tie starts afresh.
//!
//! Failure modes (docs/operating.md): a tie with the API server unreachable from both sides
//! leaves both sides standing down; in a two-node cluster whose other node dies, the survivor
//! takes the Lease within one API round trip if nobody held it, or after the holder's lease
//! duration if the dead node held it (a tie was already going on).

use crate::wait::sleep_until_opt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The Lease's name.
pub const LEASE_NAME: &str = "ferrolb-l2-tiebreak";
/// Its duration: the holder renews every third of it.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(6);

/// What a contender does with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder let it lapse: take it.
    Take,
    /// Another node holds it.
    HeldBy(String),
}

/// The step for `lease` (as read) for contender `me` at `now`. Pure.
pub fn step(lease: Option<&Lease>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return if lease.is_some() {
            Step::Take
        } else {
            Step::Create
        };
    };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return Step::Take;
    };
    if holder == me {
        return Step::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| spec.acquire_time.as_ref().map(|t| t.0));
    match renewed {
        Some(at) if at + duration > now => Step::HeldBy(holder.to_owned()),
        _ => Step::Take,
    }
}

fn held_by(
    me: &str,
    duration: Duration,
    now: Timestamp,
    previous: Option<&LeaseSpec>,
) -> LeaseSpec {
    let taking = previous.and_then(|p| p.holder_identity.as_deref()) != Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
        acquire_time: if taking {
            Some(MicroTime(now))
        } else {
            previous.and_then(|p| p.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(taking),
        ),
        ..Default::default()
    }
}

/// One round: read the Lease and create, take or renew it as [`step`] says. Returns the holder
/// after the round (`None`: a write lost a race; the next round reads again).
async fn round(
    api: &Api<Lease>,
    me: &str,
    duration: Duration,
) -> Result<Option<String>, kube::Error> {
    let now = Timestamp::now();
    let current = api.get_opt(LEASE_NAME).await?;
    let write = match step(current.as_ref(), me, now) {
        Step::HeldBy(holder) => return Ok(Some(holder)),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    ..Default::default()
                },
                spec: Some(held_by(me, duration, now, None)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Step::Renew | Step::Take => {
            let mut lease = current.expect("a step other than Create has a Lease");
            lease.spec = Some(held_by(me, duration, now, lease.spec.as_ref()));
            // The version read is kept in metadata: a concurrent writer makes this a 409.
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match write {
        Ok(()) => Ok(Some(me.to_owned())),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if we hold it (leaving a tie).
async fn release(api: &Api<Lease>, me: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return Ok(());
    };
    let ours = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(me);
    if !ours {
        return Ok(());
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
    }
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts the tie-breaker task for node `me` on `api` (the speaker's namespace): returns the
/// run loop's side ([`crate::runtime::TieBreak`]).
pub fn spawn(
    api: Api<Lease>,
    me: String,
    duration: Duration,
) -> (crate::runtime::TieBreak, JoinHandle<()>) {
    let (holder_tx, holder_rx) = watch::channel(None::<String>);
    let (contend_tx, mut contend_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let every = duration / 3;
        let valid_for = duration / 2;
        // The published holder stands until half a lease after the read that found it began.
        let mut valid_until: Option<Instant> = None;
        let mut held_by_me = false;
        let clear = |holder_tx: &watch::Sender<Option<String>>| {
            holder_tx.send_if_modified(|h| h.take().is_some());
        };
        loop {
            if !*contend_rx.borrow_and_update() {
                clear(&holder_tx);
                valid_until = None;
                if std::mem::take(&mut held_by_me) {
                    if let Err(e) = release(&api, &me).await {
                        debug!(error = %e, "releasing the tie-breaker Lease");
                    }
                }
                if contend_rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let began = Instant::now();
            // A round that hangs (an API server that stopped answering) neither outlives its
            // own half lease nor keeps an older read valid past its time.
            let outcome = tokio::select! {
                r = tokio::time::timeout(valid_for, round(&api, &me, duration)) => Some(r),
                () = sleep_until_opt(valid_until) => None,
            };
            match outcome {
                None => {
                    warn!("L2 tie-breaker: no answer from the API server for half a lease; not counting on the Lease");
                    clear(&holder_tx);
                    valid_until = None;
                    continue;
                }
                Some(Ok(Ok(Some(holder)))) => {
                    held_by_me = holder == me;
                    valid_until = Some(began + valid_for);
                    holder_tx.send_if_modified(|h| {
                        let changed = h.as_deref() != Some(holder.as_str());
                        if changed {
                            info!(holder = %holder, "L2 tie-breaker Lease");
                        }
                        *h = Some(holder);
                        changed
                    });
                }
                // A write lost a race (409): what was read before stands until it lapses.
                Some(Ok(Ok(None))) => {}
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "L2 tie-breaker: cannot read or write the Lease");
                }
                Some(Err(_)) => warn!("L2 tie-breaker: the Lease round timed out"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = sleep_until_opt(valid_until) => {
                    clear(&holder_tx);
                    valid_until = None;
                }
                r = contend_rx.changed() => if r.is_err() {
                    // The run loop ended (shutdown): hand the Lease over at once.
                    if held_by_me {
                        let _ = release(&api, &me).await;
                    }
                    return;
                },
            }
        }
    });
    (
        crate::runtime::TieBreak {
            holder: holder_rx,
            contend: contend_tx,
        },
        task,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn contenders_create_take_renew_or_observe() {
        let now = Timestamp::now();
        assert_eq!(step(None, "n1", now), Step::Create);
        assert_eq!(
            step(Some(&lease(Some("n2"), 1, 6)), "n1", now),
            Step::HeldBy("n2".into())
        );
        assert_eq!(step(Some(&lease(Some("n2"), 7, 6)), "n1", now), Step::Take);
        assert_eq!(step(Some(&lease(Some("n1"), 1, 6)), "n1", now), Step::Renew);
        // Our own, even lapsed: renewing is taking it back.
        assert_eq!(step(Some(&lease(Some("n1"), 9, 6)), "n1", now), Step::Renew);
        assert_eq!(step(Some(&lease(None, 1, 6)), "n1", now), Step::Take);
        assert_eq!(step(Some(&lease(Some(""), 1, 6)), "n1", now), Step::Take);
        let empty = Lease::default();
        assert_eq!(step(Some(&empty), "n1", now), Step::Take);
    }

    #[test]
    fn taking_counts_a_transition_and_renewing_does_not() {
        let now = Timestamp::now();
        let taken = held_by(
            "n1",
            DEFAULT_DURATION,
            now,
            lease(Some("n2"), 9, 6).spec.as_ref(),
        );
        assert_eq!(taken.holder_identity.as_deref(), Some("n1"));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.lease_duration_seconds, Some(6));
        let renewed = held_by("n1", DEFAULT_DURATION, now, Some(&taken));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
    }
}
