//! The real Prometheus, scraping the test app's `/metrics`, for the tests of the analysis's
//! Prometheus gate: Debian's `prometheus` with a generated config and its own data
//! folder, on 127.0.0.1. Killed when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where prometheus is: Debian's place, else the first on PATH. None when not installed.
pub fn prometheus_path() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("prometheus")).collect::<Vec<_>>())
        .unwrap_or_default();
    std::iter::once(PathBuf::from("/usr/bin/prometheus")).chain(on_path).find(|p| p.is_file())
}

pub struct Prometheus {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `every`, and returns once it is ready.
    pub async fn start(targets: &[SocketAddr], every: Duration) -> anyhow::Result<Prometheus> {
        let program = prometheus_path()
            .ok_or_else(|| anyhow::anyhow!("prometheus is not installed (apt-get install prometheus)"))?;
        let dir = tempfile::Builder::new().prefix("sandbox-prometheus-").tempdir()?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config_path = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let seconds = every.as_millis();
        std::fs::write(
            &config_path,
            format!(
                "global:\n  scrape_interval: {seconds}ms\n  evaluation_interval: {seconds}ms\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new(program)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut prometheus = Prometheus { addr, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !prometheus.ready().await {
            if let Some(status) = prometheus.child.try_wait()? {
                anyhow::bail!("prometheus exited ({status}): {}", prometheus.log().trim());
            }
            anyhow::ensure!(Instant::now() < deadline, "prometheus was never ready on {addr}: {}", prometheus.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(prometheus)
    }

    async fn ready(&self) -> bool {
        let url = format!("{}/-/ready", self.url());
        crate::client::call("GET", &url, &[], None).await.is_ok_and(|r| r.status == 200)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What prometheus printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The answer to an instant query, as Prometheus gives it.
    pub async fn query(&self, query: &str) -> anyhow::Result<String> {
        let query: String = form_urlencoded::Serializer::new(String::new()).append_pair("query", query).finish();
        let reply = crate::client::call("GET", &format!("{}/api/v1/query?{query}", self.url()), &[], None).await?;
        Ok(reply.text())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
