//! `safe-deploy demo`: the whole job on the built-in provider double, with no
//! credentials and no network. It deploys a healthy v2, then a v3 whose health
//! answer is wrong, and shows the automatic rollback, while a client sends steady
//! traffic to the app.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::double::{serve_app, State};

use crate::cli::deploy;
use crate::inputs::RawInputs;
use crate::runner::{Paths, Runner};
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

pub async fn run(summary_file: Option<PathBuf>, redactor: Redactor) -> i32 {
    match demo(summary_file, redactor).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo: {e:#}");
            1
        }
    }
}

async fn demo(summary_file: Option<PathBuf>, redactor: Redactor) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("safe-deploy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let state_path = dir.join("double.json");
    let mut state = State::new("demo:v1");
    state.releases.insert("demo:v3".into(), ReleaseSpec { health: HealthMode::WrongBody, ..Default::default() });
    state.save(&state_path)?;
    let app = serve_app("127.0.0.1:0".parse()?, state_path.clone()).await?;
    let summary = summary_file.unwrap_or_else(|| dir.join("summary.md"));
    let _ = std::fs::remove_file(&summary);

    println!("demo: the provider double serves demo:v1 at {}", app.url());
    println!("demo: this version runs on the provider double (one simulated instance); the Fly sandbox arrives with the Fly provider.");
    let traffic = Traffic::start(format!("{}/", app.url()));

    let runner = Runner::new(
        false,
        Paths { output: None, state: Some(dir.join("state")), summary: Some(summary.clone()) },
        redactor,
    );
    let inputs = |version: &str| {
        let mut raw = RawInputs::default();
        for (name, value) in [
            ("provider", "memory"),
            ("app", "demo"),
            ("image", &format!("demo:{version}")),
            ("health-url", &format!("{}/health", app.url())),
            ("check-string", "ok"),
            ("version-url", &format!("{}/version", app.url())),
            ("expect-version", version),
            ("health-interval", "200ms"),
            ("health-deadline", "5s"),
            ("api-url", url::Url::from_file_path(&state_path).map(|u| u.to_string()).unwrap_or_default().as_str()),
        ] {
            raw.set(name, value);
        }
        raw
    };

    println!("\ndemo: 1) deploy demo:v2, a healthy release");
    let first = deploy(inputs("v2"), runner.clone(), Shutdown::new()).await;
    println!("\ndemo: 2) deploy demo:v3, whose /health answers without 'ok'");
    let second = deploy(inputs("v3"), runner, Shutdown::new()).await;

    let (total, failed) = traffic.stop().await;
    let live = State::load(&state_path)?.live;
    println!("\ndemo: v2 exit code {first} (deployed), v3 exit code {second} (rolled back)");
    println!("demo: traffic during both deploys: {failed} failed / {total} requests");
    println!("demo: live now: {live}");
    println!("demo: job summary written to {}", summary.display());
    app.stop();
    let as_expected = first == 0 && second == 1 && live == "demo:v2";
    Ok(if as_expected { 0 } else { 1 })
}

/// A steady client: 20 requests a second to the app, counting failures.
struct Traffic {
    total: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(url: String) -> Traffic {
        let total = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Shutdown::new();
        let (t, f, s) = (total.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !s.is_shutdown() {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = s.recv() => break,
                }
                t.fetch_add(1, Ordering::Relaxed);
                let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Traffic { total, failed, stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.trigger("demo finished");
        let _ = self.task.await;
        (self.total.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}
