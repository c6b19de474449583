//! Waiting on something that may not be there, for `select!` arms: a deadline that may be
//! unset, a channel that may not exist. An absent one never fires.

use tokio::sync::watch;
use tokio::time::Instant;

/// Sleeps until `at`; forever when there is none.
pub async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for a change on `rx`; forever when there is no channel.
pub async fn changed_opt<T>(
    rx: Option<&mut watch::Receiver<T>>,
) -> Result<(), watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}
