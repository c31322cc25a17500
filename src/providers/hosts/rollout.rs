//! A roll-out over hosts, batch by batch as `providers::batches` cuts them: the hosts of
//! a batch change together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::join_all;

use std::collections::HashMap;

use super::{Core, Host, Record, Staged};
use crate::inputs::human;
use crate::providers::{batches, Applied, Context, Instance, ProviderError, ReleaseRef, Rollout, Route, Waited};

pub struct HostsRollout {
    core: Arc<Core>,
    record: Record,
    image: String,
    batches: Vec<Vec<usize>>,
    changed: Arc<AtomicBool>,
    /// Hosts of the batch in flight whose new container is staged on their loopback,
    /// by SSH address: gated there, then started on the balancer's port by `admit`.
    staged: HashMap<String, Staged>,
}

impl HostsRollout {
    pub fn new(core: Arc<Core>, record: Record, image: String) -> HostsRollout {
        let batches = batches::cut(record.hosts.len(), core.options.max_unavailable);
        HostsRollout { core, record, image, batches, changed: Arc::new(AtomicBool::new(false)), staged: HashMap::new() }
    }

    fn hosts(&self, batch: usize) -> Vec<&Host> {
        self.batches[batch].iter().map(|&i| &self.record.hosts[i].host).collect()
    }

    /// Runs `step` on every host of the batch at once; the first error wins.
    async fn each<'a, F, Fut>(&'a self, batch: usize, step: F) -> Result<(), ProviderError>
    where
        F: Fn(&'a Host) -> Fut,
        Fut: std::future::Future<Output = Result<(), ProviderError>>,
    {
        for result in join_all(self.hosts(batch).into_iter().map(step)).await {
            result?;
        }
        Ok(())
    }
}

#[async_trait]
impl Rollout for HostsRollout {
    fn batches(&self) -> usize {
        self.batches.len()
    }

    fn describe(&self, batch: usize) -> String {
        let names: Vec<&str> = self.hosts(batch).iter().map(|h| h.name.as_str()).collect();
        let n = self.record.hosts.len();
        match names.as_slice() {
            [one] => format!("host {one} ({} of {n})", self.batches[batch][0] + 1),
            many => format!("hosts {}", many.join(", ")),
        }
    }

    async fn apply(&mut self, batch: usize, gated: bool, ctx: &Context) -> Result<Applied, ProviderError> {
        // A signal before the first write leaves the batch as it was.
        ctx.check_cancelled()?;
        let (core, layout, image) = (&self.core, &self.record.layout, &self.image);
        let keep = self.record.kept(&core.options.container);
        // Where only the app's drain switch keeps traffic away, a new container on the
        // balancer's port would get traffic as soon as it answers, before its gate: a
        // gated one starts on the host's loopback instead.
        let stage = gated && !layout.drain_by_api;
        self.staged.clear();
        let changed = self.changed.clone();
        let mark = move || changed.store(true, Ordering::SeqCst);
        let steps = self.hosts(batch).into_iter().map(|host| {
            let (mark, keep) = (mark.clone(), keep.clone());
            async move {
                // A host with no running container has nothing to drain.
                if core.running(host, ctx).await?.is_some_and(|r| r.running) {
                    core.drain(host, layout, ctx, &mark).await?;
                }
                // From the stop on, the host is changed even if the connection drops.
                mark();
                core.retire(host, &keep, ctx).await?;
                let staged = core.launch(host, layout, image, stage, ctx).await?;
                Ok::<_, ProviderError>((host.ssh.clone(), staged))
            }
        });
        let mut first_error = None;
        let done = join_all(steps).await;
        for step in done {
            match step {
                Ok((ssh, Some(ports))) => {
                    self.staged.insert(ssh, ports);
                }
                Ok((_, None)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let mut instances = Vec::new();
        for host in self.hosts(batch) {
            // The gate asks the health URL's path where the new container serves: the
            // balancer's port, or its staged port on the host's loopback.
            let origin = self.core.url_for(host, layout.app_port, self.staged.get(&host.ssh)).await?;
            instances.push(Instance { id: host.name.clone(), route: origin.map(Route::Origin) });
        }
        Ok(Applied { release: ReleaseRef::named(&self.image), instances })
    }

    async fn wait(&mut self, batch: usize, ctx: &Context) -> Result<Waited, ProviderError> {
        let check = &self.record.layout.check;
        let staged = &self.staged;
        self.each(batch, |host| self.core.until_healthy(host, check, staged.get(&host.ssh), ctx)).await?;
        Ok(Waited::Ready)
    }

    fn changed(&self) -> bool {
        self.changed.load(Ordering::SeqCst)
    }

    fn admission(&self, batch: usize) -> Option<String> {
        let layout = &self.record.layout;
        let how = match (layout.drain_by_api, self.staged.is_empty()) {
            (true, _) => "put it back in the balancer",
            (false, true) => "let the balancer check it",
            (false, false) => "start it on the balancer's port and let the balancer check it",
        };
        Some(format!("{how} and wait {} until it must count it healthy", human(layout.check.in_after())))
            .filter(|_| batch < self.batches.len())
    }

    async fn admit(&mut self, batch: usize, ctx: &Context) -> Result<(), ProviderError> {
        let (core, layout, image, staged) = (&self.core, &self.record.layout, &self.image, &self.staged);
        self.each(batch, |host| async move {
            if staged.contains_key(&host.ssh) {
                core.unstage(host, layout, image, ctx).await?;
            }
            core.admit(host, layout, ctx).await
        })
        .await
    }
}
