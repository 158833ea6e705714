//! Waiting for asynchronous outcomes in tests against the emulator: poll with a deadline
//! instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

/// How long [`eventually`] waits: generous, since a loaded CI machine is slow, yet bounded.
pub const EVENTUALLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Poll `check` every few milliseconds until it returns `Some`, and return that value; panic
/// naming `what` after [`EVENTUALLY_TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY_TIMEOUT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
