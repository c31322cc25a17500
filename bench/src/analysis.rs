//! The analysis's figures: on the Fly sandbox (three machines, steady traffic through the
//! router), the failed requests users saw while a release that fails one request in
//! twenty went out, with the health gate alone and with the analysis, side by side over
//! the same span; then, on the provider double, how many of 50 deploys of a release as
//! good as the live one the analysis rolled back (goal: none).

use std::time::{Duration, Instant};

use bench::{Seen, Traffic};
use sandbox::app::{analysis_releases, ReleaseSpec};
use sandbox::double::State;
use sandbox::Handle;

use crate::as_the_runner;

/// Traffic is counted this long from each deploy's start, whatever the run does, so both
/// ways are measured over the same span: a release left live keeps failing users.
const SPAN: Duration = Duration::from_secs(45);
const GOOD_RUNS: usize = 50;

pub async fn run(binary: &str, dir: &std::path::Path) {
    side_by_side(binary, dir).await;
    good_releases(binary, dir).await;
}

async fn side_by_side(binary: &str, dir: &std::path::Path) {
    let token = crate::FLY_TOKEN;
    for (label, analysis) in [("the health gate alone", false), ("with the analysis", true)] {
        let fly = crate::fly_sandbox(binary).await;
        let erring = "registry.fly.io/web:v5";
        fly.add_release(erring, ReleaseSpec { error_per_mille: 50, ..Default::default() });
        let traffic = Traffic::judging(format!("{}/", fly.app_url()), &[]);
        let started = Instant::now();
        let mut command = as_the_runner(binary, dir, dir, &fly.app_url(), "30s");
        command
            .env("INPUT_PROVIDER", "fly")
            .env("INPUT_APP", "web")
            .env("INPUT_TOKEN", token)
            .env("INPUT_IMAGE", erring)
            .env("INPUT_API-URL", fly.api_url());
        if analysis {
            command
                .env("INPUT_ANALYSIS", "true")
                .env("INPUT_ANALYSIS-WINDOW", "10s")
                .env("INPUT_ANALYSIS-RATE", "60")
                .env("INPUT_ANALYSIS-URLS", format!("{}/", fly.app_url()));
        }
        let status = command.status().await.expect("the binary runs");
        let wall = started.elapsed();
        tokio::time::sleep(SPAN.saturating_sub(wall)).await;
        let seen = Seen::stop(traffic).await;
        let ended = match status.code() {
            Some(0) => "deployed: the release stays live",
            Some(1) => "rolled back",
            _ => "ended otherwise",
        };
        println!(
            "fly, 3 machines, a release failing 1 request in 20, {label}: {seen} through the router in the {} s from the deploy's start; {ended} (exit {:?}) after {:.1} s; machines that ran it: {} of 3",
            SPAN.as_secs(),
            status.code(),
            wall.as_secs_f64(),
            fly.machines_that_ran(erring)
        );
        fly.stop().await;
    }
}

async fn good_releases(binary: &str, dir: &std::path::Path) {
    let state_path = dir.join("analysis-double.json");
    let app = sandbox::double::serve_app("127.0.0.1:0".parse().unwrap(), state_path.clone()).await.unwrap();
    let (mut rolled_back, mut other) = (0, 0);
    let started = Instant::now();
    for run in 0..GOOD_RUNS {
        let mut state = State::new("web:calm");
        for (name, spec) in analysis_releases() {
            state.releases.insert(format!("web:{name}"), spec);
        }
        state.save(&state_path).unwrap();
        let mut command = as_the_runner(binary, dir, dir, &app.url(), "10s");
        command
            .env("INPUT_PROVIDER", "memory")
            .env("INPUT_APP", "web")
            .env("INPUT_IMAGE", "web:calm2")
            .env("INPUT_API-URL", url::Url::from_file_path(&state_path).unwrap().to_string())
            .env("INPUT_ANALYSIS", "true")
            .env("INPUT_ANALYSIS-WINDOW", "3s")
            .env("INPUT_ANALYSIS-RATE", "100")
            .env("INPUT_ANALYSIS-URLS", format!("{}/", app.url()));
        match command.status().await.expect("the binary runs").code() {
            Some(0) => {}
            Some(1) => {
                rolled_back += 1;
                println!("  run {run}: rolled back");
            }
            code => {
                other += 1;
                println!("  run {run}: exit {code:?}");
            }
        }
    }
    println!(
        "double, a release as good as the live one (both 20 ms), {GOOD_RUNS} deploys with the analysis (300 answers a side, half the health check, half the home page): {rolled_back} rolled back, {other} ended otherwise (goal: none) in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
