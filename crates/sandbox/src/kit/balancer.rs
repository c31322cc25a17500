//! A load balancer with active health checks, as cloud load balancers run them: one
//! URL, each request sent round-robin to a member that is healthy now, and every
//! member probed on its own clock (every `interval`, each probe given `timeout`).
//! A member turns unhealthy after `unhealthy` failed probes in a row and healthy
//! again after `healthy` passes in a row (`checks::Thresholds`).
//!
//! Members present at start are healthy; a member added later starts unhealthy and
//! earns its traffic, as a droplet newly added to a DigitalOcean load balancer does.
//! A removed member gets no new request from that moment; requests in flight finish.
//! An HTTP check passes on 200–399, DigitalOcean's rule.
//!
//! The forwarding itself is the kit's `router`; this module knows no provider's API.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::HeaderMap;
use tokio::task::JoinHandle;

use super::checks::{self, Thresholds};
use super::router::{self, Backend, Backends, RoundRobin};
use super::watched::Watched;
use crate::server::{self, text, Request, Response, Server};

/// The header on every answer a member gave, naming it: not a provider's header, it
/// lets a test see who answered.
pub const MEMBER_HEADER: &str = "sandbox-lb-member";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Passes on an answer 200–399 to `GET path`.
    Http,
    /// The same over TLS, any certificate taken (a balancer does not verify backends).
    Https,
    /// Passes when a TCP connection opens.
    Tcp,
}

/// The active health check every member gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub protocol: Protocol,
    /// The HTTP path; ignored for TCP.
    pub path: String,
    /// The member's port the check goes to (may equal the target port).
    pub port: u16,
    /// Time between the starts of two probes of one member.
    pub interval: Duration,
    /// How long one probe may take before it counts as a failure.
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy member healthy (0 counts as 1).
    pub healthy: u32,
    /// Failures in a row that make a healthy member unhealthy (0 counts as 1).
    pub unhealthy: u32,
    /// The statuses that pass, both ends included; `None`: 200–399, DigitalOcean's rule
    /// (an ALB's matcher is 200 alone by default).
    pub matcher: Option<(u16, u16)>,
}

impl Check {
    /// `GET /health` on `port` every `interval` (each given `interval` to answer), with
    /// DigitalOcean's smallest thresholds: healthy after 2, unhealthy after 2.
    pub fn health(port: u16, interval: Duration) -> Check {
        Check {
            protocol: Protocol::Http,
            path: "/health".into(),
            port,
            interval,
            timeout: interval,
            healthy: 2,
            unhealthy: 2,
            matcher: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub ip: Ipv4Addr,
    /// Its own port for traffic and checks (an ECS task's, each on a port of its own);
    /// `None`: the balancer's target port and the check's port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct BalancerOptions {
    pub check: Check,
    pub members: Vec<Member>,
    /// The port traffic goes to on each member's ip.
    pub target_port: u16,
}

/// One member as the balancer sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStats {
    pub id: String,
    pub ip: Ipv4Addr,
    pub port: Option<u16>,
    pub healthy: bool,
    /// Requests this member answered (any status).
    pub served: u64,
    /// Probes run so far, and the output of the last one.
    pub probes: u64,
    pub last_probe: Option<String>,
    /// When health changed, and to what; members present at start begin healthy with
    /// no entry, a member added later begins unhealthy with none.
    pub transitions: Vec<(Instant, bool)>,
}

struct Slot {
    stats: MemberStats,
    thresholds: Thresholds,
    task: JoinHandle<()>,
}

struct State {
    check: Check,
    target_port: u16,
    slots: Vec<Slot>,
}

struct Inner {
    state: Watched<State>,
    next: RoundRobin,
    served: AtomicU64,
    failed: AtomicU64,
}

pub struct Balancer {
    inner: Arc<Inner>,
    server: Server,
}

impl Balancer {
    /// Starts checking every member and serving on 127.0.0.1 (any free port).
    pub async fn start(opts: BalancerOptions) -> std::io::Result<Balancer> {
        let inner = Arc::new(Inner {
            state: Watched::new(State { check: opts.check, target_port: opts.target_port, slots: Vec::new() }),
            next: RoundRobin::default(),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        add_members(&inner, opts.members, true);
        let handler = inner.clone();
        let server = server::serve(SocketAddr::from(([127, 0, 0, 1], 0)), move |request| {
            let inner = handler.clone();
            async move { inner.answer(request).await }
        })
        .await;
        match server {
            Ok(server) => Ok(Balancer { inner, server }),
            Err(e) => {
                stop_checks(&inner);
                Err(e)
            }
        }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Makes `members` the members: ones already in (same id and ip) keep their health
    /// and counts, new ones start unhealthy, missing ones get no new request from now.
    pub fn set_members(&self, members: Vec<Member>) {
        let added: Vec<Member> = {
            let mut s = self.inner.state.lock();
            let mut kept = Vec::new();
            for slot in s.slots.drain(..) {
                if members.iter().any(|m| m.id == slot.stats.id && m.ip == slot.stats.ip) {
                    kept.push(slot);
                } else {
                    slot.task.abort();
                }
            }
            s.slots = kept;
            members.into_iter().filter(|m| !s.slots.iter().any(|slot| slot.stats.id == m.id)).collect()
        };
        add_members(&self.inner, added, false);
        self.inner.state.notify();
    }

    /// Changes the check from each member's next probe on; health so far is kept.
    pub fn set_check(&self, check: Check) {
        let mut s = self.inner.state.lock();
        for slot in &mut s.slots {
            let fresh = Thresholds::new(check.healthy, check.unhealthy);
            slot.thresholds = if slot.thresholds.healthy() { fresh.healthy_at_start() } else { fresh };
        }
        s.check = check;
    }

    pub fn check(&self) -> Check {
        self.inner.state.lock().check.clone()
    }

    /// The ids of the members, in the order they were added.
    pub fn members(&self) -> Vec<String> {
        self.inner.state.lock().slots.iter().map(|s| s.stats.id.clone()).collect()
    }

    /// The ids of the members that get traffic now.
    pub fn healthy(&self) -> Vec<String> {
        let s = self.inner.state.lock();
        s.slots.iter().filter(|slot| slot.stats.healthy).map(|slot| slot.stats.id.clone()).collect()
    }

    pub fn stats(&self) -> Vec<MemberStats> {
        self.inner.state.lock().slots.iter().map(|s| s.stats.clone()).collect()
    }

    /// Requests a member answered, whatever its status.
    pub fn served(&self) -> u64 {
        self.inner.served.load(Ordering::SeqCst)
    }

    /// Requests the balancer answered 5xx itself: no healthy member, or none reachable
    /// or answering in time.
    pub fn failed(&self) -> u64 {
        self.inner.failed.load(Ordering::SeqCst)
    }

    /// Waits until the healthy members are exactly `ids` (any order); false at `timeout`.
    pub async fn wait_healthy(&self, ids: &[&str], timeout: Duration) -> bool {
        let mut want: Vec<&str> = ids.to_vec();
        want.sort_unstable();
        self.inner
            .state
            .wait_until(timeout, |s| {
                let mut now: Vec<&str> =
                    s.slots.iter().filter(|slot| slot.stats.healthy).map(|slot| slot.stats.id.as_str()).collect();
                now.sort_unstable();
                now == want
            })
            .await
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.server.stop();
        stop_checks(&self.inner);
    }
}

fn stop_checks(inner: &Inner) {
    for slot in inner.state.lock().slots.drain(..) {
        slot.task.abort();
    }
}

fn add_members(inner: &Arc<Inner>, members: Vec<Member>, healthy: bool) {
    let mut s = inner.state.lock();
    for member in members {
        if s.slots.iter().any(|slot| slot.stats.id == member.id) {
            continue;
        }
        let thresholds = Thresholds::new(s.check.healthy, s.check.unhealthy);
        let thresholds = if healthy { thresholds.healthy_at_start() } else { thresholds };
        // The task holds a weak handle so a dropped balancer does not live on in it.
        let task = tokio::spawn(check_loop(Arc::downgrade(inner), member.id.clone(), s.check.interval));
        let stats = MemberStats {
            id: member.id,
            ip: member.ip,
            port: member.port,
            healthy,
            served: 0,
            probes: 0,
            last_probe: None,
            transitions: Vec::new(),
        };
        s.slots.push(Slot { stats, thresholds, task });
    }
}

/// Probes member `id` every interval (the first one interval after it joined) until
/// it leaves; the check is read afresh each time so `set_check` applies at once.
async fn check_loop(inner: std::sync::Weak<Inner>, id: String, first: Duration) {
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::time::sleep_until(next).await;
        let Some(strong) = inner.upgrade() else { return };
        let Some((check, addr)) = ({
            let s = strong.state.lock();
            let slot = s.slots.iter().find(|slot| slot.stats.id == id);
            slot.map(|slot| {
                (s.check.clone(), SocketAddr::from((slot.stats.ip, slot.stats.port.unwrap_or(s.check.port))))
            })
        }) else {
            return;
        };
        // Paced from the probe's start, so a slow probe does not stretch the interval.
        next += check.interval;
        drop(strong);
        let outcome = match check.protocol {
            Protocol::Tcp => checks::tcp(addr, check.timeout).await,
            Protocol::Http | Protocol::Https => {
                let (low, high) = check.matcher.unwrap_or((200, 399));
                let passes = |status: u16| (low..=high).contains(&status);
                let tls = check.protocol == Protocol::Https;
                checks::http_passing(addr, "GET", &check.path, &[], check.timeout, tls, passes).await
            }
        };
        let Some(strong) = inner.upgrade() else { return };
        let mut s = strong.state.lock();
        let Some(slot) = s.slots.iter_mut().find(|slot| slot.stats.id == id) else { return };
        let healthy = slot.thresholds.observe(outcome.passing);
        slot.stats.probes += 1;
        slot.stats.last_probe = Some(outcome.output);
        let changed = healthy != slot.stats.healthy;
        if changed {
            slot.stats.healthy = healthy;
            slot.stats.transitions.push((Instant::now(), healthy));
        }
        drop(s);
        if changed {
            strong.state.notify();
        }
        // A loop that fell behind (a probe longer than the interval) starts afresh.
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
    }
}

impl Inner {
    async fn answer(&self, request: Request) -> Response {
        let response = router::forward(self, request).await;
        if response.headers().contains_key(MEMBER_HEADER) {
            self.served.fetch_add(1, Ordering::SeqCst);
        } else if response.status().is_server_error() {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        response
    }
}

impl Backends for Inner {
    fn noun(&self) -> &'static str {
        "member"
    }

    fn pick(&self, _request: &Request, tried: &[String]) -> Option<Backend> {
        let s = self.state.lock();
        let healthy = s.slots.iter().map(|slot| &slot.stats).filter(|m| m.healthy);
        let open = healthy
            .map(|m| Backend { id: m.id.clone(), addr: SocketAddr::from((m.ip, m.port.unwrap_or(s.target_port))) });
        self.next.pick(open, tried)
    }

    fn none_available(&self) -> Response {
        text(503, "503 Service Unavailable: no healthy backends\n")
    }

    fn forward(&self, headers: &mut HeaderMap) {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }

    fn decorate(&self, headers: &mut HeaderMap, member: &str) {
        if let Ok(v) = HeaderValue::from_str(member) {
            headers.insert(MEMBER_HEADER, v);
        }
        let mut s = self.state.lock();
        if let Some(slot) = s.slots.iter_mut().find(|slot| slot.stats.id == member) {
            slot.stats.served += 1;
        }
    }

    fn answer_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::call;
    use std::sync::atomic::AtomicU16;

    const INTERVAL: Duration = Duration::from_millis(100);
    /// Scheduling and probe time on a loaded machine, on top of the thresholds' time.
    const SLACK: Duration = Duration::from_millis(300);

    /// A member on `ip:port`: `/health` answers the status in `health`, anything else 200.
    async fn member(ip: Ipv4Addr, port: u16, health: Arc<AtomicU16>) -> std::io::Result<Server> {
        server::serve(SocketAddr::from((ip, port)), move |request: Request| {
            let status = if request.path == "/health" { health.load(Ordering::SeqCst) } else { 200 };
            async move { text(status, "ok\n") }
        })
        .await
    }

    /// Members "a", "b"... on 127.0.0.2, 127.0.0.3... sharing one port, each with its
    /// health status (200 to begin with).
    async fn members(n: u8) -> (u16, Vec<(Member, Server, Arc<AtomicU16>)>) {
        'again: loop {
            let mut out = Vec::new();
            let mut port = 0;
            for i in 0..n {
                let ip = Ipv4Addr::new(127, 0, 0, 2 + i);
                let health = Arc::new(AtomicU16::new(200));
                // The first binds any port; the others take the same one or we start over.
                let Ok(server) = member(ip, port, health.clone()).await else { continue 'again };
                port = server.addr.port();
                out.push((Member { id: ((b'a' + i) as char).to_string(), ip, port: None }, server, health));
            }
            return (port, out);
        }
    }

    fn check(port: u16) -> Check {
        Check {
            protocol: Protocol::Http,
            path: "/health".into(),
            port,
            interval: INTERVAL,
            timeout: Duration::from_millis(80),
            healthy: 2,
            unhealthy: 3,
            matcher: None,
        }
    }

    async fn get(b: &Balancer) -> (u16, String) {
        let r = call("GET", &format!("{}/", b.url()), &[], None).await.expect("the balancer answers");
        (r.status, r.header(MEMBER_HEADER).unwrap_or_default().to_string())
    }

    fn within(elapsed: Duration, at_least: Duration, at_most: Duration) -> bool {
        elapsed >= at_least && elapsed <= at_most + SLACK
    }

    #[tokio::test]
    async fn a_failing_member_leaves_after_unhealthy_checks_and_returns_after_healthy_ones() {
        let (port, m) = members(2).await;
        // 302 passes: DigitalOcean counts 2xx and 3xx.
        m[1].2.store(302, Ordering::SeqCst);
        let opts =
            BalancerOptions { check: check(port), members: vec![m[0].0.clone(), m[1].0.clone()], target_port: port };
        let b = Balancer::start(opts).await.expect("starts");
        assert_eq!(b.healthy(), ["a", "b"], "members present at start are healthy");
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(get(&b).await.1);
        }
        seen.sort();
        assert_eq!(seen, ["a", "a", "b", "b"], "round-robin over both");

        let failing = Instant::now();
        m[0].2.store(503, Ordering::SeqCst);
        assert!(b.wait_healthy(&["b"], Duration::from_secs(3)).await, "{:?}", b.stats());
        let out = failing.elapsed();
        assert!(within(out, INTERVAL * 2, INTERVAL * 3), "unhealthy 3 × 100ms, took {out:?}");
        for _ in 0..3 {
            assert_eq!(get(&b).await, (200, "b".to_string()));
        }

        let passing = Instant::now();
        m[0].2.store(200, Ordering::SeqCst);
        assert!(b.wait_healthy(&["a", "b"], Duration::from_secs(3)).await, "{:?}", b.stats());
        let back = passing.elapsed();
        assert!(within(back, INTERVAL, INTERVAL * 2), "healthy 2 × 100ms, took {back:?}");
        let a = &b.stats()[0];
        assert_eq!(a.transitions.iter().map(|t| t.1).collect::<Vec<_>>(), [false, true]);
        assert!(a.served >= 2 && b.failed() == 0, "{:?}", b.stats());
    }

    #[tokio::test]
    async fn a_member_added_later_earns_its_traffic_and_a_removed_one_gets_none_at_once() {
        let (port, m) = members(2).await;
        let opts = BalancerOptions { check: check(port), members: vec![m[0].0.clone()], target_port: port };
        let b = Balancer::start(opts).await.expect("starts");
        let added = Instant::now();
        b.set_members(vec![m[0].0.clone(), m[1].0.clone()]);
        assert_eq!(b.members(), ["a", "b"]);
        assert_eq!(b.healthy(), ["a"], "a new member starts unhealthy");
        assert_eq!(get(&b).await.1, "a");
        assert!(b.wait_healthy(&["a", "b"], Duration::from_secs(3)).await, "{:?}", b.stats());
        let took = added.elapsed();
        assert!(within(took, INTERVAL * 2, INTERVAL * 2), "healthy 2 × 100ms from joining, took {took:?}");

        b.set_members(vec![m[1].0.clone()]);
        for _ in 0..4 {
            assert_eq!(get(&b).await, (200, "b".to_string()), "a left: nothing more goes there");
        }
        assert_eq!(b.stats().len(), 1);
    }

    #[tokio::test]
    async fn draining_one_of_two_members_fails_no_request() {
        let (port, mut m) = members(2).await;
        let opts =
            BalancerOptions { check: check(port), members: vec![m[0].0.clone(), m[1].0.clone()], target_port: port };
        let b = Arc::new(Balancer::start(opts).await.expect("starts"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let load = {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    answers.push(get(&b).await);
                }
                answers
            })
        };
        tokio::time::sleep(INTERVAL * 2).await;
        // Drain a: its health says 503 while it keeps serving, until it is out.
        m[0].2.store(503, Ordering::SeqCst);
        assert!(b.wait_healthy(&["b"], Duration::from_secs(3)).await);
        b.set_members(vec![m[1].0.clone()]);
        let (_, a, _) = m.remove(0);
        a.shutdown().await;
        tokio::time::sleep(INTERVAL * 3).await;
        stop.store(true, Ordering::SeqCst);
        let answers = load.await.expect("the load ran");
        assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
        let last_a = answers.iter().rposition(|(_, who)| who == "a").expect("a served before it drained");
        assert!(answers.len() - last_a > 5, "b served alone afterwards");
        assert_eq!(b.failed(), 0);
        assert_eq!(b.served(), answers.len() as u64);
    }

    #[tokio::test]
    async fn a_tcp_check_takes_out_a_member_nothing_listens_for_and_then_the_balancer_answers_503() {
        let (port, m) = members(1).await;
        let closed = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("binds").local_addr().expect("addr");
        let tcp = Check { protocol: Protocol::Tcp, port: closed.port(), unhealthy: 1, ..check(port) };
        let opts = BalancerOptions { check: tcp, members: vec![m[0].0.clone()], target_port: port };
        let b = Balancer::start(opts).await.expect("starts");
        assert_eq!(get(&b).await, (200, "a".to_string()));
        assert!(b.wait_healthy(&[], Duration::from_secs(2)).await, "{:?}", b.stats());
        assert_eq!(get(&b).await.0, 503);
        assert_eq!((b.served(), b.failed()), (1, 1));
        b.set_check(Check { protocol: Protocol::Tcp, healthy: 1, ..check(port) });
        assert!(b.wait_healthy(&["a"], Duration::from_secs(2)).await, "the new check's port listens");
        assert!(b.stats()[0].last_probe.as_deref().unwrap_or_default().contains("Success"));
    }
}
