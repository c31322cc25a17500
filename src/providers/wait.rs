//! Waiting on a platform: `outlast`, which asks again through a flaky API, and `Poll`,
//! which paces a provider's wait for a state (a release phase, a deployment, a machine's
//! checks): the deadline, the heartbeat and a signal, in one place.

use std::time::Duration;

use tokio::time::Instant;

use super::{Context, ProviderError};
use crate::inputs::human;

/// Runs `op` until it succeeds, fails for good, or `ctx`'s deadline comes: a transient
/// failure (5xx, 429, a reset, a garbled answer) is tried again after a pause that
/// doubles up to 10 s. What a rollback uses to outlast a flaky API.
pub async fn outlast<T, F, Fut>(ctx: &Context, what: &str, mut op: F) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    let mut failures = 0;
    loop {
        match op().await {
            // A spent budget is taken again when the platform says: wait for it, within
            // the deadline, rather than asking in vain.
            Err(ProviderError::RateLimited { message, until: Some(at) }) => {
                let wait = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                if wait >= ctx.remaining() {
                    return Err(ProviderError::RateLimited {
                        message: format!(
                            "{message}; it is taken again in {}, after this step's time runs out: re-run then",
                            crate::inputs::human(wait)
                        ),
                        until: Some(at),
                    });
                }
                failures += 1;
                let wait = wait + Duration::from_millis(250 + fastrand::u64(0..250));
                ctx.progress.log(
                    what,
                    &format!(
                        "{message}; waiting {} until it is taken again, as the platform says",
                        crate::inputs::human(wait)
                    ),
                );
                ctx.progress.waiting(what, started, Some(ctx.deadline));
                if !ctx.shutdown.sleep(wait).await {
                    return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
                }
            }
            Err(e) if e.is_transient() && ctx.remaining() > pause => {
                failures += 1;
                // Said once, with how long it goes on; the engine's heartbeat says the rest.
                if failures == 1 {
                    let left = crate::inputs::human(ctx.remaining());
                    ctx.progress.log(what, &format!("{e}; trying again for up to {left}"));
                } else {
                    tracing::debug!("{what}: {e}; trying again in {}", crate::inputs::human(pause));
                }
                ctx.progress.waiting(what, started, Some(ctx.deadline));
                if !ctx.shutdown.sleep(pause + Duration::from_millis(fastrand::u64(0..250))).await {
                    return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Ok(done) if failures > 0 => {
                let took = crate::inputs::human(started.elapsed());
                ctx.progress.log(what, &format!("answered after {} tries in {took}", failures + 1));
                return Ok(done);
            }
            other => return other,
        }
    }
}

/// One wait of a provider's for a state, between its looks:
/// ```text
/// let mut poll = ctx.poll("the release phase of v42", Duration::from_secs(1));
/// loop { look; if done { break } poll.next("pending").await? }
/// ```
/// `next` says what the last look saw (the heartbeat), fails once the time is up
/// (naming that, and the input that gives the time), and otherwise pauses until the
/// next look; a signal ends the wait at once.
pub struct Poll<'c> {
    ctx: &'c Context,
    what: String,
    every: Duration,
    started: Instant,
    deadline: Instant,
    input: &'static str,
}

impl Context {
    /// A wait for `what`, looking every `every`, until the context's deadline.
    pub fn poll(&self, what: impl Into<String>, every: Duration) -> Poll<'_> {
        Poll {
            ctx: self,
            what: what.into(),
            every,
            started: Instant::now(),
            deadline: self.deadline,
            input: self.budget,
        }
    }
}

impl Poll<'_> {
    /// A limit of its own, when it comes before the context's deadline; `input` is what
    /// sets it, named when the wait runs out of it.
    pub fn within(mut self, limit: Duration, input: &'static str) -> Self {
        let own = self.started + limit;
        if own < self.deadline {
            (self.deadline, self.input) = (own, input);
        }
        self
    }

    /// Looks from now on every `every`. Zero: the look waits by itself (a long poll
    /// the platform answers when the state is reached), so no pause comes between.
    pub fn set_every(&mut self, every: Duration) {
        self.every = every;
    }

    /// What is left of its time: the most a look that waits by itself may wait.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long it has waited so far.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The input that sets the limit this wait runs against.
    pub fn input(&self) -> &'static str {
        self.input
    }

    /// After a look that found the wait not over: `now` is what it saw.
    pub async fn next(&mut self, now: &str) -> Result<(), ProviderError> {
        let ctx = self.ctx;
        ctx.check_cancelled()?;
        let said = if now.is_empty() { self.what.clone() } else { format!("{} ({now})", self.what) };
        ctx.progress.waiting(&said, self.started, Some(self.deadline));
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProviderError::Timeout { what: said, limit: human(self.elapsed()), input: self.input });
        }
        // A little jitter keeps runs that started together from asking in step.
        let jitter = Duration::from_millis(fastrand::u64(0..=(self.every.as_millis() as u64 / 8).min(250)));
        let pause = (self.every + jitter).min(left);
        if !pause.is_zero() && !ctx.shutdown.sleep(pause).await {
            return Err(ProviderError::Cancelled(ctx.shutdown.cause().unwrap_or("shutdown")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::Shutdown;

    fn ctx(within: Duration) -> Context {
        Context {
            deadline: Instant::now() + within,
            budget: "deploy-timeout",
            shutdown: Shutdown::new(),
            progress: Default::default(),
            surface: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_looks_until_its_time_is_up_then_names_what_it_last_saw() {
        let ctx = ctx(Duration::from_secs(10));
        let mut poll = ctx.poll("the release phase of v42", Duration::from_secs(1));
        let mut looks = 0;
        let timeout = loop {
            looks += 1;
            if let Err(e) = poll.next("pending").await {
                break e;
            }
        };
        assert!((10..=12).contains(&looks), "about one look a second for 10 s: {looks}");
        assert_eq!(
            timeout.to_string(),
            "the release phase of v42 (pending) took longer than 10s; raise deploy-timeout if the app needs more time"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_of_its_own_is_named_when_it_comes_first() {
        let ctx = ctx(Duration::from_secs(600));
        let mut poll =
            ctx.poll("the new container", Duration::from_secs(1)).within(Duration::from_secs(3), "boot-timeout");
        while poll.next("").await.is_ok() {}
        assert_eq!(poll.input(), "boot-timeout");
        assert!(poll.elapsed() < Duration::from_secs(5));
        let later = ctx.poll("x", Duration::from_secs(1)).within(Duration::from_secs(900), "boot-timeout");
        assert_eq!(later.input(), "deploy-timeout", "the run's deadline comes first");
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_ends_a_wait_at_once() {
        let ctx = ctx(Duration::from_secs(600));
        let mut poll = ctx.poll("a deployment", Duration::from_secs(5));
        let stop = ctx.shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(7)).await;
            stop.trigger("SIGTERM");
        });
        let started = Instant::now();
        let ended = loop {
            if let Err(e) = poll.next("BUILDING").await {
                break e;
            }
        };
        assert!(matches!(ended, ProviderError::Cancelled("SIGTERM")), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(8), "not after the next pause");
    }
}
