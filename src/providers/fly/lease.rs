//! Leases on every machine a deploy touches, so two deploys never fight over one.
//! Taken before any change, refreshed in the background, released at the end, on
//! failure and on cancellation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::client::FlyClient;
use crate::providers::ProviderError;
use crate::shutdown::Shutdown;

/// flyctl's default is 13 s; a little longer leaves room for a slow refresh, while a
/// crashed run still frees the app within half a minute.
pub const TTL: Duration = Duration::from_secs(30);

pub struct Leases {
    held: Mutex<BTreeMap<String, String>>,
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Names this run's leases ("safe-deploy <launch id>"), so a lease granted to a
    /// request whose answer was lost is recognised as ours and its nonce read back.
    description: String,
}

impl Leases {
    pub fn new(launch_id: &str) -> Leases {
        Leases { held: Mutex::default(), refresher: Mutex::default(), description: format!("safe-deploy {launch_id}") }
    }

    pub fn nonce(&self, id: &str) -> Option<String> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: &str, nonce: String) {
        self.lock().insert(id.to_string(), nonce);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a lease on each machine not yet held. If one is held by someone else, the
    /// ones just taken are given back and the error names the holder. With `patience`,
    /// a held lease is tried again until then (a crashed run's lease expires by itself).
    pub async fn acquire(
        &self,
        client: &FlyClient,
        ids: &[String],
        patience: Duration,
        shutdown: &Shutdown,
    ) -> Result<(), ProviderError> {
        let give_up = Instant::now() + patience;
        let mut taken = Vec::new();
        for id in ids.iter().filter(|id| self.nonce(id).is_none()) {
            let mut lost_answers = 0;
            loop {
                let granted = match client.lease(id, TTL, None, &self.description, shutdown).await {
                    // Granted or not, the answer was lost: a lease under our name is ours;
                    // no lease at all means it was not granted (or expired): ask again.
                    Err(e) if e.is_transient() => match client.current_lease(id, shutdown).await {
                        Ok(Some((nonce, description))) if description == self.description => Ok(nonce),
                        Ok(None) if lost_answers < 3 => {
                            lost_answers += 1;
                            continue;
                        }
                        _ => Err(e),
                    },
                    other => other,
                };
                match granted {
                    Ok(nonce) => {
                        self.insert(id, nonce);
                        taken.push(id.clone());
                        break;
                    }
                    Err(ProviderError::Conflict { .. }) if Instant::now() < give_up => {
                        if !shutdown.sleep(Duration::from_secs(1)).await {
                            return Err(ProviderError::Cancelled(shutdown.cause().unwrap_or("shutdown")));
                        }
                    }
                    Err(e) => {
                        for t in &taken {
                            let nonce = self.lock().remove(t);
                            if let Some(nonce) = nonce {
                                let _ = client.release_lease(t, &nonce, shutdown).await;
                            }
                        }
                        return Err(match e {
                            ProviderError::Conflict { detail, .. } => ProviderError::Conflict {
                                what: format!("machine {id}"),
                                detail: format!("its lease: {detail}; nothing was changed"),
                            },
                            other => other,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Refreshes every held lease at a third of its TTL until `release_all`. A refresh
    /// that fails is tried again at once, twice, before the lease can expire; a lease
    /// someone else now holds (or that is gone) is dropped, so a later `acquire` (the
    /// rollback's) takes it again instead of sending a nonce that no longer works.
    pub fn keep_fresh(self: &Arc<Self>, client: Arc<FlyClient>) {
        let leases = self.clone();
        let task = tokio::spawn(async move {
            let shutdown = Shutdown::new();
            loop {
                tokio::time::sleep(TTL / 3).await;
                let held: Vec<(String, String)> = leases.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (id, nonce) in held {
                    for attempt in 1..=3 {
                        match client.lease(&id, TTL, Some(&nonce), &leases.description, &shutdown).await {
                            Ok(_) => break,
                            Err(ProviderError::Conflict { .. } | ProviderError::NotFound { .. }) => {
                                tracing::warn!(
                                    "the lease on machine {id} was lost; it is taken again before the next change"
                                );
                                leases.lock().remove(&id);
                                break;
                            }
                            Err(e) if attempt == 3 => {
                                tracing::warn!("could not refresh the lease on machine {id}: {e}");
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                        }
                    }
                }
            }
        });
        if let Some(old) = self.refresher.lock().unwrap_or_else(|e| e.into_inner()).replace(task) {
            old.abort();
        }
    }

    /// Gives every lease back. Runs on every path, cancellation included, so it uses a
    /// fresh shutdown handle and a short time limit of its own.
    /// Returns the machines whose lease could not be given back (it expires by itself
    /// within the TTL), for the summary.
    pub async fn release_all(&self, client: &FlyClient) -> Vec<String> {
        if let Some(task) = self.refresher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        let held: Vec<(String, String)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        let fresh = &Shutdown::new();
        let releases = held.iter().map(|(id, nonce)| async move {
            match client.release_lease(id, nonce, fresh).await {
                Ok(()) | Err(ProviderError::NotFound { .. }) => None,
                Err(e) => Some(format!("machine {id} ({e})")),
            }
        });
        // All at once and briefly: after a signal the whole step has seconds left.
        let unreleased: Vec<String> =
            match tokio::time::timeout(Duration::from_secs(3), futures_util::future::join_all(releases)).await {
                Ok(results) => results.into_iter().flatten().collect(),
                Err(_) => held.iter().map(|(id, _)| format!("machine {id} (no answer in time)")).collect(),
            };
        if unreleased.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "the lease on {} could not be given back; it expires by itself within {}s",
            unreleased.join(", "),
            TTL.as_secs()
        )]
    }
}
