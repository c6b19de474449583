//! Watches that come back fast after the API server was away.
//!
//! kube-runtime's default watch backoff grows from 0.8 s to 30 s (client-go's numbers, kind to a
//! struggling API server), and a resumed watch that gets 410 Gone backs off once more before it
//! relists. After a control-plane restart of 15 s, that left the controller and the speakers
//! blind for 20-70 s (measured): a new Service waited up to a minute for its address, and every
//! upgrade of the control plane restarts it. Here a failed watch is retried after 100 ms,
//! doubling to at most 1 s (each delay shortened at random by up to half, so a thousand speakers
//! do not reconnect in step), and a first 410 Gone is answered by relisting at once: the components see
//! changes again within about a second of the API server being ready, at the cost of one cheap
//! failed connection per second per watch while it is down.

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::Resource;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::Duration;

/// The first delay after a failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// 100 ms doubling to 1 s, with jitter; back to 100 ms after anything succeeds.
#[derive(Clone, Debug)]
pub struct ReconnectBackoff {
    next: Duration,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self { next: FIRST_DELAY }
    }
}

impl Iterator for ReconnectBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        // Between half the delay and all of it.
        let jitter = rand::random_range(0.5..=1.0);
        Some(delay.mul_f64(jitter))
    }
}

impl Backoff for ReconnectBackoff {
    fn reset(&mut self) {
        self.next = FIRST_DELAY;
    }
}

/// Whether a watch error is 410 Gone as a watch event: the resourceVersion left the server's
/// history (always so after a restart). The watcher has then reset itself and relists on its
/// next poll. (A 410 answering the watch request itself leaves the watcher retrying the same
/// version, so that one goes through the backoff like any other error.)
pub fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The least delay after the API server answered 429 Too Many Requests.
pub const THROTTLED_DELAY: Duration = Duration::from_secs(5);

/// Whether the API server asked us to slow down (429).
fn is_throttled(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 429,
        watcher::Error::WatchError(s) => s.code == 429,
        _ => false,
    }
}

/// How long after one 410 Gone another one still counts as the same trouble.
const GONE_AGAIN: Duration = Duration::from_secs(60);

/// `watcher(api, config)`, retried on [`ReconnectBackoff`]. The delay grows while attempts fail
/// and starts over only when the watch delivers a change after its list, so a server that keeps
/// refusing (RBAC, overload, a list that fails) is asked at most once a second. A 410 Gone
/// relists at once the first time; another within a minute waits like any error, so a server
/// that answers every watch with 410 cannot drive a list loop.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    struct State<S> {
        inner: std::pin::Pin<Box<S>>,
        backoff: ReconnectBackoff,
        delay: Option<Duration>,
        last_gone: Option<tokio::time::Instant>,
    }
    let state = State {
        inner: Box::pin(watcher(api, config)),
        backoff: ReconnectBackoff::default(),
        delay: None,
        last_gone: None,
    };
    futures::stream::unfold(state, |mut st| async move {
        if let Some(delay) = st.delay.take() {
            tokio::time::sleep(delay).await;
        }
        let item = st.inner.next().await?;
        match &item {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => st.backoff.reset(),
            Ok(_) => {}
            Err(e) if is_gone(e) => {
                let again = st.last_gone.is_some_and(|t| t.elapsed() < GONE_AGAIN);
                st.last_gone = Some(tokio::time::Instant::now());
                if again {
                    st.delay = st.backoff.next();
                }
            }
            Err(e) => {
                let delay = st.backoff.next().unwrap_or(MAX_DELAY);
                // Told to slow down (429): at least the longest delay, 5 times over.
                st.delay = Some(if is_throttled(e) {
                    delay.max(THROTTLED_DELAY)
                } else {
                    delay
                });
            }
        }
        Some((item, st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_one_second_with_jitter_and_reset() {
        let mut b = ReconnectBackoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next().unwrap()).collect();
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, ceiling) in delays.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(*d <= ceiling && *d >= ceiling / 2, "{d:?} vs {ceiling:?}");
        }
        b.reset();
        assert!(b.next().unwrap() <= FIRST_DELAY);
    }

    #[test]
    fn only_410_is_gone() {
        let status = |code| {
            Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            })
        };
        assert!(is_gone(&watcher::Error::WatchError(status(410))));
        assert!(!is_gone(&watcher::Error::WatchError(status(500))));
        assert!(is_gone(&watcher::Error::WatchFailed(kube::Error::Api(
            status(410)
        ))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }
}
