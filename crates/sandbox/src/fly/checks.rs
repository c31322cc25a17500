//! Machine health checks as flyd runs them: while a machine's process runs, probe
//! each configured HTTP (or TCP) check at the process's real port every
//! `check_interval`, and record passing or critical with the output. A check's
//! status is its last result (the kit's `Thresholds` with rise = fall = 1).
//!
//! The probes themselves are the kit's; what is Fly's is which checks a machine has
//! (`machine`), when probing stops (a new process, a stopped machine), and where the
//! results go (`Platform::store_checks`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::ids;
use super::machine::CheckResult;
use super::platform::Platform;
use crate::kit::checks::{probe, Thresholds};

/// Results in a row that change a check's status: flyd reports each probe as it is.
const RISE: u32 = 1;
const FALL: u32 = 1;

/// Probes machine `id` for as long as `generation` is its running process.
pub fn watch(platform: Arc<Platform>, id: String, generation: u64, port: u16) {
    tokio::spawn(async move {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut thresholds: Vec<Thresholds> = Vec::new();
        loop {
            // The first result comes one interval after start: until then the list is empty.
            tokio::time::sleep(platform.check_interval).await;
            let defs = {
                let mut state = platform.lock();
                match state.machine(&id).filter(|m| m.generation == generation && m.state == "started") {
                    Some(m) => m.check_defs(),
                    None => return,
                }
            };
            if defs.is_empty() {
                return;
            }
            // A generation's config does not change, so neither do its checks.
            thresholds.resize(defs.len(), Thresholds::new(RISE, FALL));
            let mut probes = tokio::task::JoinSet::new();
            for (i, def) in defs.into_iter().enumerate() {
                probes.spawn(async move { (i, def.name, probe(&def.probe, addr, def.timeout).await) });
            }
            let mut outcomes = probes.join_all().await;
            outcomes.sort_by_key(|(i, _, _)| *i);
            let results = outcomes
                .into_iter()
                .map(|(i, name, outcome)| CheckResult {
                    name,
                    passing: thresholds[i].observe(outcome.passing),
                    output: outcome.output,
                    updated_at: ids::rfc3339(SystemTime::now()),
                })
                .collect();
            if !platform.store_checks(&id, generation, results) {
                return;
            }
        }
    });
}
