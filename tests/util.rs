//! Test helpers: a provider double with its app on loopback, and a way to run the
//! real binary as the runner would (INPUT_* variables, file commands in temp files).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use safe_deploy::runner::files;
use sandbox::app::{HealthMode, ReleaseSpec};
use sandbox::double::State;
use sandbox::server::Server;

pub const BIN: &str = env!("CARGO_BIN_EXE_safe-deploy");

/// The provider double, its state file, and the app it serves.
pub struct Double {
    pub dir: tempfile::TempDir,
    pub state_path: PathBuf,
    pub app: Server,
}

impl Double {
    /// A double with `live` live, and nothing else remembered.
    pub async fn start(live: &str) -> Double {
        Double::with_history(&[live]).await
    }

    /// A double that has had `history` live, in order; the last one is live.
    pub async fn with_history(history: &[&str]) -> Double {
        Double::with(history, 1).await
    }

    /// A double with `count` instances on `live`: it rolls out in two batches.
    pub async fn with_instances(live: &str, count: usize) -> Double {
        Double::with(&[live], count).await
    }

    async fn with(history: &[&str], count: usize) -> Double {
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("double.json");
        let mut state = State::with_instances(history[0], count);
        for r in &history[1..] {
            state.make_live(r);
        }
        state.save(&state_path).unwrap();
        let app = sandbox::double::serve_app("127.0.0.1:0".parse().unwrap(), state_path.clone()).await.unwrap();
        Double { dir, state_path, app }
    }

    pub fn state(&self) -> State {
        State::load(&self.state_path).unwrap()
    }

    pub fn change(&self, f: impl FnOnce(&mut State)) {
        State::update(&self.state_path, f).unwrap();
    }

    /// Makes `release` answer its health check with `mode`.
    pub fn release(&self, release: &str, spec: ReleaseSpec) {
        self.change(|s| {
            s.releases.insert(release.into(), spec);
        });
    }

    pub fn broken(&self, release: &str, mode: HealthMode) {
        self.release(release, ReleaseSpec { health: mode, ..Default::default() });
    }

    pub fn api_url(&self) -> String {
        url::Url::from_file_path(&self.state_path).unwrap().to_string()
    }

    /// The inputs of a fast deploy of `image` to this double.
    pub fn inputs(&self, image: &str) -> Vec<(String, String)> {
        [
            ("provider", "memory".to_string()),
            ("app", "web".to_string()),
            ("image", image.to_string()),
            ("health-url", format!("{}/health", self.app.url())),
            ("check-string", "ok".to_string()),
            ("health-interval", "50ms".to_string()),
            ("health-successes", "3".to_string()),
            ("health-deadline", "2s".to_string()),
            ("health-timeout", "500ms".to_string()),
            ("api-url", self.api_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Sets (or replaces) one input.
/// The inputs every platform story starts from: `provider`'s API at `api`, the app's
/// health and version on `app_url`, and waits short enough for tests.
pub fn platform_inputs(provider: &str, app: &str, token: &str, api: &str, app_url: &str) -> Vec<(String, String)> {
    [
        ("provider", provider.to_string()),
        ("app", app.to_string()),
        ("token", token.to_string()),
        ("api-url", api.to_string()),
        ("health-url", format!("{app_url}/health")),
        ("check-string", "ok".to_string()),
        ("version-url", format!("{app_url}/version")),
        ("health-interval", "100ms".to_string()),
        ("health-deadline", "6s".to_string()),
        ("health-timeout", "1s".to_string()),
        ("deploy-timeout", "60s".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn with(mut inputs: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    inputs.retain(|(k, _)| k != name);
    inputs.push((name.to_string(), value.to_string()));
    inputs
}

/// What one run of the binary left behind.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub outputs: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
    pub summary: String,
    /// Raw file contents, for scans.
    pub files: Vec<String>,
}

impl Ran {
    pub fn output(&self, name: &str) -> &str {
        self.outputs.get(name).map(String::as_str).unwrap_or("")
    }

    /// Everything this run wrote anywhere, for secret scans.
    pub fn everything(&self) -> String {
        format!("{}\n{}\n{}\n{}", self.stdout, self.stderr, self.summary, self.files.join("\n"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}\n--- summary\n{}",
            self.code, self.stdout, self.stderr, self.summary
        )
    }
}

/// A synthetic runner: the temp files the runner makes for one step.
pub struct Step {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Step {
    /// The main step of the action, with these inputs.
    pub fn main(inputs: &[(String, String)]) -> Step {
        let dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("GITHUB_ACTIONS".into(), "true".into()),
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("RUNNER_TEMP".into(), dir.path().display().to_string()),
            ("GITHUB_WORKSPACE".into(), dir.path().display().to_string()),
        ];
        for (name, file) in [("GITHUB_OUTPUT", "output"), ("GITHUB_STATE", "state"), ("GITHUB_STEP_SUMMARY", "summary")]
        {
            let path = dir.path().join(file);
            std::fs::write(&path, "").unwrap();
            env.push((name.into(), path.display().to_string()));
        }
        // The runner sets every input action.yml declares, at its default when the
        // workflow leaves it out: so does every test.
        for spec in safe_deploy::inputs::INPUTS.iter() {
            let value = inputs.iter().rev().find(|(k, _)| k == spec.name).map_or(spec.default, |(_, v)| v.as_str());
            env.push((safe_deploy::inputs::env_name(spec.name), value.to_string()));
        }
        for (k, v) in inputs.iter().filter(|(k, _)| safe_deploy::inputs::INPUTS.iter().all(|s| s.name != k)) {
            env.push((format!("INPUT_{}", k.to_uppercase()), v.clone()));
        }
        Step { dir, env, program: PathBuf::from(BIN), args: vec![] }
    }

    /// The CLI as a person runs it: `safe-deploy COMMAND --input value ...`, off a
    /// runner, with a summary file in the step's folder.
    pub fn cli_with(command: &str, inputs: &[(String, String)]) -> Step {
        let mut step = Step::cli(&flags(command, inputs).iter().map(String::as_str).collect::<Vec<_>>());
        let summary = step.dir.path().join("summary").display().to_string();
        step.args.extend(["--summary-file".to_string(), summary]);
        step
    }

    /// The post step: same inputs, the main step's saved state as STATE_* variables,
    /// and the binary under its post name, as action.yml's post-entrypoint runs it.
    pub fn post(inputs: &[(String, String)], saved: &BTreeMap<String, String>) -> Step {
        let mut step = Step::main(inputs);
        for (k, v) in saved {
            step.env.push((format!("STATE_{k}"), v.clone()));
        }
        let link = step.dir.path().join("safe-deploy-post");
        std::os::unix::fs::symlink(BIN, &link).unwrap();
        step.program = link;
        step
    }

    /// A person at a terminal typing `safe-deploy ARGS`: no runner, no `INPUT_*`
    /// variables, only `PATH`. Run it with [`Step::run_in_dir`], whose folder is then
    /// the workspace (fly.toml, .do/app.yaml).
    pub fn cli(args: &[&str]) -> Step {
        let dir = tempfile::tempdir().unwrap();
        // The temp folder is the step's own: the state and summary files a run makes by
        // default go there, and with it.
        let env = vec![
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("TMPDIR".into(), dir.path().display().to_string()),
        ];
        Step { dir, env, program: PathBuf::from(BIN), args: args.iter().map(|a| a.to_string()).collect() }
    }

    pub fn env(mut self, name: &str, value: &str) -> Step {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the step, waits until `ready` holds, then sends `signal` as the runner's
    /// cancellation does; returns what the step left and how long it took to exit.
    pub async fn interrupt_when(&self, signal: &str, what: &str, ready: impl FnMut() -> bool) -> (Ran, Duration) {
        let child = self.command().spawn().expect("the binary starts");
        let pid = child.id().expect("a running child has a pid");
        eventually(Duration::from_secs(30), what, ready).await;
        let signalled = std::time::Instant::now();
        kill(pid, signal).await;
        let ran = self.collect(child).await;
        (ran, signalled.elapsed())
    }

    pub async fn run(&self) -> Ran {
        let child = self.command().spawn().expect("the binary starts");
        self.collect(child).await
    }

    /// Runs the step with its folder as the current directory.
    pub async fn run_in_dir(&self) -> Ran {
        let child = self.command().current_dir(self.dir.path()).spawn().expect("the binary starts");
        self.collect(child).await
    }

    pub async fn collect(&self, child: tokio::process::Child) -> Ran {
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the binary finishes within 60 s")
            .unwrap();
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // Off a runner with no --summary-file, the summary is where the run's last line says.
        let summary = match read("summary") {
            s if s.is_empty() => stdout
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("summary: "))
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .unwrap_or_default(),
            s => s,
        };
        let parse = |name: &str| {
            files::parse(&read(name)).unwrap_or_else(|e| panic!("{name} is not a valid file command file: {e}"))
        };
        let ran = Ran {
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            outputs: parse("output"),
            state: parse("state"),
            summary,
            files: ["output", "state", "summary"].iter().map(|f| read(f)).collect(),
        };
        self.scan_for_secrets(&ran);
        ran
    }

    /// Every run of every test is scanned: no secret this step was given (token,
    /// github-token, a token variable, or the flags) may appear in any output, in plain,
    /// URL-encoded or base64 form. Short secrets are redacted only as whole tokens, so a
    /// substring scan cannot judge them; they have their own tests.
    fn scan_for_secrets(&self, ran: &Ran) {
        use base64::Engine;
        let secret_names = [
            "INPUT_TOKEN",
            "INPUT_GITHUB-TOKEN",
            "FLY_API_TOKEN",
            "FLY_ACCESS_TOKEN",
            "HEROKU_API_KEY",
            "DIGITALOCEAN_ACCESS_TOKEN",
        ];
        let from_flags = self
            .args
            .windows(2)
            .filter(|w| w[0] == "--token" || w[0] == "--github-token")
            .map(|w| ("flag".to_string(), w[1].clone()));
        let given: Vec<(String, String)> = self.env.iter().cloned().chain(from_flags).collect();
        let secrets = given
            .iter()
            .filter(|(k, v)| (k == "flag" || secret_names.contains(&k.as_str())) && v.trim().chars().count() >= 8)
            .map(|(_, v)| v.trim().to_string());
        // The mask commands carry the secret to the runner by design; nothing else may.
        let stdout: String =
            ran.stdout.lines().filter(|l| !l.starts_with("::add-mask::")).collect::<Vec<_>>().join("\n");
        for secret in secrets {
            let url: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
            for form in [secret.as_str(), url.as_str(), b64.as_str()] {
                for (what, text) in [("stdout", stdout.as_str()), ("stderr", ran.stderr.as_str())]
                    .into_iter()
                    .chain(ran.files.iter().map(|f| ("a runner file", f.as_str())))
                {
                    assert!(!text.contains(form), "{what} leaks a secret (as {form}):\n{ran}");
                }
            }
        }
    }
}

/// Runs the main step with these inputs.
pub async fn run_main(inputs: &[(String, String)]) -> Ran {
    Step::main(inputs).run().await
}

/// Waits until `check` holds, polling; panics after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Sends `signal` (e.g. "INT", "TERM") to a process, as the runner's cancellation does.
pub async fn kill(pid: u32, signal: &str) {
    let status =
        tokio::process::Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().await.unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

/// `COMMAND --name value ...` for these inputs.
pub fn flags(command: &str, inputs: &[(String, String)]) -> Vec<String> {
    let mut args = vec![command.to_string()];
    for (name, value) in inputs {
        args.push(format!("--{name}"));
        args.push(value.clone());
    }
    args
}

/// Runs `safe-deploy ARGS` with stdin, stdout and stderr on a pseudo-terminal, as a
/// person at a terminal would, through util-linux's `script`; only `PATH` and `env` are
/// set. Returns the exit code and what the terminal showed (stdout and stderr, in order).
pub async fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let command = shlex::try_join(std::iter::once(BIN).chain(args.iter().copied())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the binary finishes within 30 s")
        .expect("util-linux's script (Debian: bsdutils) runs a command on a pseudo-terminal");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"))
}
