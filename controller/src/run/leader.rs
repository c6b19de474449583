//! Exactly one active replica, through a coordination.k8s.io Lease (kube-lease-manager: the lock
//! is taken and renewed by server-side apply, so two contenders cannot both win a round).
//!
//! A standby only waits. When it takes the lease it starts from nothing and loads the state from
//! Service status, like a restart, so a takeover changes no assignment. A leader that loses the
//! lease stops at once (it does not finish in-flight work) and the process exits: it cannot know
//! what the new leader has decided since.

use super::metrics::Health;
use super::{Options, RunError, Shutdown};
use ferrolb_kube::reconnect::{ReconnectBackoff, MAX_DELAY};
use kube::runtime::utils::Backoff;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// A future that resolves when the leader must stop.
pub type StopSignal = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Checks lease timings before they reach the lease crate (which panics on bad ones).
pub fn check_timings(duration: u64, grace: u64) -> Result<(), String> {
    if duration == 0 || grace == 0 || grace >= duration {
        return Err(format!(
            "the lease grace period ({grace} s) must be above 0 and below the lease duration ({duration} s)"
        ));
    }
    Ok(())
}

/// Stands by until this replica holds the lease, then runs `lead` until shutdown (returns Ok) or
/// until the lease is lost (returns [`RunError::LostLease`]). The lease is released on a clean
/// shutdown so a standby takes over at once.
pub async fn run_when_leader<F, Fut>(
    client: &kube::Client,
    opts: &Options,
    health: Arc<Health>,
    shutdown: Shutdown,
    lead: F,
) -> Result<(), RunError>
where
    F: FnOnce(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    let manager = LeaseManagerBuilder::new(client.clone(), &opts.lease_name)
        .with_namespace(&opts.namespace)
        .with_identity(&opts.identity)
        .with_duration(opts.lease_duration_seconds)
        .with_grace(opts.lease_grace_seconds)
        .build()
        .await?;
    let (mut is_leader, lease_task) = follow_lease(manager);
    health.ready.store(true, Ordering::SeqCst);
    info!(identity = %opts.identity, lease = %opts.lease_name, "standing by for the lease");
    let became_leader = tokio::select! {
        won = is_leader.wait_for(|leader| *leader) => won.is_ok(),
        () = shutdown.clone().wait() => false,
    };
    let outcome = if became_leader {
        let (stop, stop_signal) = Shutdown::new();
        let leading = lead(Box::pin(stop_signal.wait()));
        tokio::pin!(leading);
        tokio::select! {
            () = &mut leading => Ok(()),
            () = shutdown.wait() => {
                let _ = stop.send(true);
                if tokio::time::timeout(Duration::from_secs(10), leading).await.is_err() {
                    warn!("reconciles did not finish within 10 s of the shutdown");
                }
                Ok(())
            }
            _ = is_leader.wait_for(|leader| !*leader) => Err(RunError::LostLease),
        }
    } else {
        Ok(())
    };
    // Closing the channel makes the lease task release the lease (if held) and end.
    drop(is_leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(()))) => info!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task"),
        Err(_) => warn!("the lease was not released within 5 s"),
    }
    outcome
}

/// Takes and renews the lease while the receiver lives, telling whether this replica holds it;
/// releases it when the receiver is dropped. kube-lease-manager's own loop (`watch`) retries API
/// errors after up to 30 s: after an API server restart the leader would renew late and could
/// lose the lease to a standby that retried first, or a standby would take over late. This one
/// retries on the watches' backoff (at most 1 s).
fn follow_lease(
    manager: LeaseManager,
) -> (
    watch::Receiver<bool>,
    JoinHandle<Result<(), kube_lease_manager::LeaseManagerError>>,
) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut backoff = ReconnectBackoff::default();
        loop {
            tokio::select! {
                biased;
                () = tx.closed() => return manager.release().await,
                changed = manager.changed() => match changed {
                    Ok(leader) => {
                        backoff.reset();
                        if tx.send(leader).is_err() {
                            return manager.release().await;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "lease: cannot reach the API server; retrying");
                        tokio::time::sleep(backoff.next().unwrap_or(MAX_DELAY)).await;
                    }
                },
            }
        }
    });
    (rx, task)
}
