//! Machine health checks: while a machine's process runs, probe each configured HTTP
//! (or TCP) check at the process's real port every `check_interval`, and record
//! passing or critical with the output, as flyd does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpStream;

use super::ids;
use super::machine::{CheckDef, CheckResult};
use super::platform::Platform;
use crate::client;

/// Probes machine `id` for as long as `generation` is its running process.
pub fn watch(platform: Arc<Platform>, id: String, generation: u64, port: u16) {
    tokio::spawn(async move {
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
            let mut probes = tokio::task::JoinSet::new();
            for (i, def) in defs.into_iter().enumerate() {
                probes.spawn(async move { (i, probe(&def, port).await) });
            }
            let mut results: Vec<(usize, CheckResult)> = probes.join_all().await;
            results.sort_by_key(|(i, _)| *i);
            if !platform.store_checks(&id, generation, results.into_iter().map(|(_, r)| r).collect()) {
                return;
            }
        }
    });
}

async fn probe(def: &CheckDef, port: u16) -> CheckResult {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (passing, output) = if def.kind == "tcp" {
        match tokio::time::timeout(def.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => (true, format!("TCP connect {addr}: Success")),
            Ok(Err(e)) => (false, format!("TCP connect {addr}: {e}")),
            Err(_) => (false, format!("TCP connect {addr}: timed out after {:?}", def.timeout)),
        }
    } else {
        http_probe(def, addr).await
    };
    CheckResult { name: def.name.clone(), passing, output, updated_at: ids::rfc3339(SystemTime::now()) }
}

async fn http_probe(def: &CheckDef, addr: SocketAddr) -> (bool, String) {
    let what = format!("HTTP {} {}", def.method, def.path);
    let mut request =
        hyper::Request::builder().method(def.method.as_str()).uri(def.path.as_str()).header("host", addr.to_string());
    for (name, value) in &def.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = match request.body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(e) => {
            return (false, format!("{what}: cannot build the request ({e}); fix the check's method, path or headers"))
        }
    };
    match client::send(addr, request, def.timeout).await {
        Ok(reply) => {
            let body: String = reply.text().chars().take(200).collect();
            ((200..300).contains(&reply.status), format!("{what}: {} Output: {body:?}", reply.status))
        }
        Err(e) => (false, format!("{what}: {}", e.message)),
    }
}
