//! The GitHub deployments emulator as its own process, for drivers outside the test
//! suite such as `.ci/conformance-github`: prints `GITHUB_API_URL=...` once it
//! listens, then serves until SIGINT or SIGTERM.
//!
//! Flags: `--port N` (default 0, any free port), `--owner`, `--repo`, `--token`.

use sandbox::github::{GitHubOptions, GitHubSandbox};
use sandbox::Handle;
use tokio::signal::unix::{signal, SignalKind};

fn options(args: &[String]) -> Result<GitHubOptions, String> {
    let mut opts = GitHubOptions::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => opts.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--owner" => opts.owner = value()?,
            "--repo" => opts.repo = value()?,
            "--token" => opts.token = Some(value()?),
            other => return Err(format!("unknown flag {other} (expected --port, --owner, --repo, --token)")),
        }
    }
    Ok(opts)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = options(&args).unwrap_or_else(|e| {
        eprintln!("github-sandbox: {e}");
        std::process::exit(2);
    });
    let (owner, repo) = (opts.owner.clone(), opts.repo.clone());
    let github = GitHubSandbox::start(opts).await.unwrap_or_else(|e| {
        eprintln!("github-sandbox: cannot listen: {e}");
        std::process::exit(1);
    });
    // Drivers wait for these lines before they send anything; flush so they never
    // sit in a buffer while the driver waits.
    println!("GITHUB_API_URL={}", github.api_url());
    println!("GITHUB_REPOSITORY={owner}/{repo}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let (mut interrupt, mut terminate) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(i), Ok(t)) => (i, t),
        _ => {
            eprintln!("github-sandbox: cannot install signal handlers");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    github.stop().await;
}
