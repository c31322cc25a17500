//! Putting every instance back: each on its own, so that one that cannot be put back
//! does not stop the others, and each outlasting a flaky API until the rollback's
//! deadline. What every provider with instances (machines, hosts) restores with.

use std::future::Future;

use futures_util::future::join_all;

use super::{outlast, Context, ProviderError};

/// Puts back every one of `instances`, `at_once` at a time, in the order given.
/// `put_back(instance, try)` is one attempt; `try` counts from 1, so a later attempt can
/// read the platform afresh. The error names every instance that is not back and why;
/// a signal ends it once the group in flight has stopped.
pub async fn every_instance<'a, T, F, Fut>(
    ctx: &Context,
    kind: &str,
    instances: &'a [T],
    at_once: usize,
    name: impl Fn(&T) -> String,
    put_back: F,
) -> Result<(), ProviderError>
where
    F: Fn(&'a T, u32) -> Fut,
    Fut: Future<Output = Result<(), ProviderError>>,
{
    let mut left = Vec::new();
    for group in instances.chunks(at_once.max(1)) {
        let each = group.iter().map(|instance| {
            let (put_back, name) = (&put_back, name(instance));
            async move {
                let (mut tries, what) = (0, format!("put {name} back"));
                let put = outlast(ctx, &what, || {
                    tries += 1;
                    put_back(instance, tries)
                })
                .await;
                (name, put)
            }
        });
        for (name, put) in join_all(each).await {
            match put {
                Err(ProviderError::Cancelled(cause)) => return Err(ProviderError::Cancelled(cause)),
                Err(e) => left.push(format!("{name}: {e}")),
                Ok(()) => {}
            }
        }
    }
    match left.as_slice() {
        [] => Ok(()),
        _ => Err(ProviderError::Failed(format!("not every {kind} is back: {}", left.join("; ")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::time::Instant;

    fn ctx() -> Context {
        Context {
            deadline: Instant::now() + Duration::from_secs(60),
            budget: "rollback-timeout",
            shutdown: crate::shutdown::Shutdown::new(),
            progress: Default::default(),
            surface: Default::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_instance_that_cannot_be_put_back_does_not_stop_the_others() {
        let tried = Mutex::new(Vec::new());
        let result = every_instance(
            &ctx(),
            "host",
            &["a", "b", "c"],
            1,
            |h| h.to_string(),
            |h, _| {
                tried.lock().unwrap().push(*h);
                let h = *h;
                async move {
                    match h {
                        "b" => Err(ProviderError::Failed("its disk is full".into())),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        assert_eq!(*tried.lock().unwrap(), ["a", "b", "c"], "each tried, in order, b once (not transient)");
        let why = result.unwrap_err().to_string();
        assert_eq!(why, "not every host is back: b: its disk is full");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flaky_answer_is_tried_again_and_the_try_is_counted() {
        let tries = Mutex::new(Vec::new());
        let result = every_instance(
            &ctx(),
            "machine",
            &[1, 2],
            2,
            |m| format!("machine {m}"),
            |m, attempt| {
                tries.lock().unwrap().push((*m, attempt));
                async move {
                    match attempt {
                        1 => Err(ProviderError::Unavailable("502 Bad Gateway".into())),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
        let mut tries = tries.into_inner().unwrap();
        tries.sort();
        assert_eq!(tries, [(1, 1), (1, 2), (2, 1), (2, 2)]);
    }
}
