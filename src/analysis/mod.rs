//! The analysis gates: proof that a new release serves *as well as* the one it
//! replaces, not only that it answers.
//!
//! - Built in (`analysis: true`): the app's own URLs are sampled at a steady rate,
//!   against the live release before the first change (the baseline) and against the
//!   new release after its health gate, for the same window. The new release fails
//!   when its error rate or its latency percentile is worse by more than the inputs
//!   allow *and* a statistical test says the difference is not chance (`stats`).
//! - External (`external`): a Prometheus instant query under a maximum, and a web
//!   check (a URL, a JSON path, a condition), as Argo Rollouts' `web` provider has it.
//!
//! A failed analysis rolls back like a failed health gate.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::gate::{Gate, GateKind, GateReport, GateResult};
use crate::health::Probe;
use crate::inputs::{human, Surface};
use crate::shutdown::Shutdown;

pub mod external;
mod sample;
mod settings;
pub mod stats;

pub use sample::{Sample, Sampling};
pub use settings::from_inputs;

/// A difference this unlikely to be chance (one-sided) counts as real: the usual 5 %,
/// since a release must also be past the limit a team set to fail; at the defaults
/// (300 answers a side, half of them a page besides the health check) 5 % errors on that
/// page against none is p ≈ 0.005, and 4 errors against none (p ≈ 0.06) is not enough.
pub const SIGNIFICANCE: f64 = 0.05;
/// The chart splits each window into this many slices.
const SLICES: usize = 10;

/// Everything the analysis gates need, from the inputs.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// The built-in comparison with the live release.
    pub builtin: bool,
    /// The health URL first, then `analysis-urls`.
    pub urls: Vec<url::Url>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub window: Duration,
    pub rate: f64,
    pub min_samples: usize,
    /// A fraction: 0.01 is one percentage point.
    pub max_error_increase: f64,
    pub percentile: f64,
    pub max_latency_ratio: f64,
    pub min_latency_increase: Duration,
    pub prometheus: Option<external::PrometheusCheck>,
    pub web: Option<external::WebCheck>,
    pub surface: Surface,
}

impl AnalysisConfig {
    pub fn any(&self) -> bool {
        self.builtin || self.prometheus.is_some() || self.web.is_some()
    }

    fn sampling<'a>(&'a self, urls: &'a [url::Url], headers: &'a [(String, String)]) -> Sampling<'a> {
        Sampling { urls, headers, timeout: self.timeout, window: self.window, rate: self.rate }
    }

    /// The plan's words for what the built-in analysis does.
    pub fn describe(&self) -> String {
        format!(
            "analysis: sample {} {} a second for {} against the live release before the change and the new release after its health gate; fail on an error rate over the baseline's + {} points or a p{} latency over {}× the baseline's and {} slower, when the difference is significant (p < {SIGNIFICANCE})",
            self.urls.iter().map(crate::http::shown).collect::<Vec<_>>().join(", "),
            self.rate,
            human(self.window),
            percent(self.max_error_increase),
            self.percentile,
            self.max_latency_ratio,
            human(self.min_latency_increase),
        )
    }
}

/// A fraction as a percentage with one decimal: "5.0".
pub fn percent(f: f64) -> String {
    format!("{:.1}", f * 100.0)
}

/// What one series measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SeriesStats {
    pub samples: usize,
    pub errors: usize,
    pub p50_ms: f64,
    #[serde(default)]
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// The gated percentile's latency, slice by slice of the window, for the chart.
    pub curve_ms: Vec<f64>,
}

impl SeriesStats {
    pub fn of(samples: &[Sample], window: Duration, percentile: f64) -> SeriesStats {
        let sorted = sorted_ms(samples);
        let slice = window.as_secs_f64() / SLICES as f64;
        let curve_ms = (0..SLICES)
            .map(|i| {
                let part: Vec<Sample> = samples
                    .iter()
                    .filter(|s| ((s.at.as_secs_f64() / slice) as usize).min(SLICES - 1) == i)
                    .copied()
                    .collect();
                round(stats::percentile(&sorted_ms(&part), percentile))
            })
            .collect();
        SeriesStats {
            samples: samples.len(),
            errors: samples.iter().filter(|s| s.error).count(),
            p50_ms: round(stats::percentile(&sorted, 50.0)),
            p90_ms: round(stats::percentile(&sorted, 90.0)),
            p95_ms: round(stats::percentile(&sorted, 95.0)),
            p99_ms: round(stats::percentile(&sorted, 99.0)),
            curve_ms,
        }
    }

    pub fn error_rate(&self) -> f64 {
        match self.samples {
            0 => 0.0,
            n => self.errors as f64 / n as f64,
        }
    }

    pub fn latency(&self, percentile: f64) -> f64 {
        match percentile as u32 {
            50 => self.p50_ms,
            90 => self.p90_ms,
            99 => self.p99_ms,
            _ => self.p95_ms,
        }
    }

    /// One line for the log and the live status: "300 answers, 15 errors (5.0 %), p95 12.3ms".
    pub fn line(&self, percentile: f64) -> String {
        format!(
            "{}, {} ({} %), p{percentile} {}ms",
            crate::markdown::counted(self.samples, "answer"),
            crate::markdown::counted(self.errors, "error"),
            percent(self.error_rate()),
            self.latency(percentile)
        )
    }
}

fn sorted_ms(samples: &[Sample]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64() * 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// One thing the analysis decided on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// "error rate", "p95 latency", "answers".
    pub metric: String,
    pub baseline: String,
    pub new: String,
    /// What the new release had to stay within.
    pub limit: String,
    /// The statistical test's one-sided p-value, where one was made.
    pub p_value: Option<f64>,
    pub failed: bool,
    /// Past the limit, whether or not the test found it more than chance.
    #[serde(default)]
    pub over_limit: bool,
}

/// What the built-in analysis measured and decided, for the summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnalysisReport {
    pub window: Duration,
    pub percentile: f64,
    pub baseline: Option<SeriesStats>,
    pub new: Option<SeriesStats>,
    pub decisions: Vec<Decision>,
}

impl AnalysisReport {
    pub fn redact(&mut self, r: &crate::secret::Redactor) {
        for d in &mut self.decisions {
            d.metric = r.redact(&d.metric);
            d.baseline = r.redact(&d.baseline);
            d.new = r.redact(&d.new);
            d.limit = r.redact(&d.limit);
        }
    }
}

/// Compares the new release's samples with the baseline's; the reason when it is worse.
pub fn compare(c: &AnalysisConfig, baseline: &[Sample], new: &[Sample]) -> (AnalysisReport, Option<String>) {
    let base = SeriesStats::of(baseline, c.window, c.percentile);
    let now = SeriesStats::of(new, c.window, c.percentile);
    let mut decisions = Vec::new();
    let mut why = Vec::new();

    let enough = now.samples >= c.min_samples;
    decisions.push(Decision {
        metric: "answers".into(),
        baseline: base.samples.to_string(),
        new: now.samples.to_string(),
        limit: format!("at least {}", c.min_samples),
        p_value: None,
        failed: !enough,
        over_limit: !enough,
    });
    if !enough {
        why.push(too_few(c, now.samples, "the new release", "too few to tell it serves as well as the live release"));
    }

    let p = stats::fisher_worse(base.errors, base.samples, now.errors, now.samples);
    let allowed = base.error_rate() + c.max_error_increase;
    let over = now.error_rate() > allowed + f64::EPSILON;
    let worse = over && p < SIGNIFICANCE;
    decisions.push(Decision {
        metric: "error rate".into(),
        baseline: format!("{} % ({} of {})", percent(base.error_rate()), base.errors, base.samples),
        new: format!("{} % ({} of {})", percent(now.error_rate()), now.errors, now.samples),
        limit: format!("at most {} %", percent(allowed)),
        p_value: Some(p),
        failed: enough && worse,
        over_limit: over,
    });
    if enough && worse {
        why.push(format!(
            "the error rate is {} % against the live release's {} % (at most {} % allowed by {}; Fisher's exact test {})",
            percent(now.error_rate()),
            percent(base.error_rate()),
            percent(allowed),
            c.surface.name("analysis-max-error-increase"),
            p_said(p)
        ));
    }

    let (b, n) = (base.latency(c.percentile), now.latency(c.percentile));
    let ms = |s: &[Sample]| s.iter().filter(|s| !s.error).map(|s| s.latency.as_secs_f64() * 1000.0).collect::<Vec<_>>();
    let p = stats::mann_whitney_slower(&ms(baseline), &ms(new));
    let floor = c.min_latency_increase.as_secs_f64() * 1000.0;
    let limit = (b * c.max_latency_ratio).max(b + floor);
    let over = n > limit;
    let slower = over && p < SIGNIFICANCE;
    decisions.push(Decision {
        metric: format!("p{} latency", c.percentile),
        baseline: format!("{b}ms"),
        new: format!("{n}ms"),
        limit: format!("at most {}ms ({}× and +{})", round(limit), c.max_latency_ratio, human(c.min_latency_increase)),
        p_value: Some(p),
        failed: enough && slower,
        over_limit: over,
    });
    if enough && slower {
        why.push(format!(
            "p{} latency is {n}ms against the live release's {b}ms (at most {}ms allowed by {} and {}; Mann-Whitney U test {})",
            c.percentile,
            round(limit),
            c.surface.name("analysis-max-latency-ratio"),
            c.surface.name("analysis-min-latency-increase"),
            p_said(p)
        ));
    }

    let report =
        AnalysisReport { window: c.window, percentile: c.percentile, baseline: Some(base), new: Some(now), decisions };
    let reason = (!why.is_empty()).then(|| why.join("; "));
    (report, reason)
}

/// Why a side with fewer than `analysis-min-samples` answers gives no verdict, and the fix.
fn too_few(c: &AnalysisConfig, answers: usize, whose: &str, so: &str) -> String {
    format!(
        "only {} from {whose} in {} (at least {} needed), {so}; raise {} or {}, or lower {}",
        crate::markdown::counted(answers, "answer"),
        human(c.window),
        c.min_samples,
        c.surface.name("analysis-window"),
        c.surface.name("analysis-rate"),
        c.surface.name("analysis-min-samples"),
    )
}

/// A p-value as people read it: "0.003", "under 0.0001" (words, not "<", which a
/// summary would have to escape).
pub fn p_value(p: f64) -> String {
    if p < 0.0001 {
        "under 0.0001".into()
    } else {
        format!("{}", (p * 10000.0).round() / 10000.0)
    }
}

/// "p = 0.003", "p under 0.0001".
fn p_said(p: f64) -> String {
    match p_value(p) {
        under if under.starts_with("under") => format!("p {under}"),
        n => format!("p = {n}"),
    }
}

/// The live release's samples, taken before the first change: the yardstick. It fails
/// only when there are too few to compare with, which stops the deploy with nothing changed.
pub struct Baseline<'a> {
    pub config: &'a AnalysisConfig,
    samples: Mutex<Vec<Sample>>,
}

impl<'a> Baseline<'a> {
    pub fn new(config: &'a AnalysisConfig) -> Self {
        Baseline { config, samples: Mutex::new(Vec::new()) }
    }

    /// What was sampled, once `check` has run.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl Gate for Baseline<'_> {
    fn name(&self) -> String {
        "analysis: the live release's baseline, before the roll-out".into()
    }

    /// The window: the last answers may take up to a timeout more, which the live
    /// status need not count.
    fn limit(&self) -> Duration {
        self.config.window
    }

    async fn check(&self, probe: &dyn Probe, shutdown: &Shutdown, attempted: &(dyn Fn(String) + Sync)) -> GateReport {
        let c = self.config;
        let started = tokio::time::Instant::now();
        let mut report = GateReport::new(GateKind::Analysis, "the live release (baseline)", shown(&c.urls));
        let live = |s: &[Sample]| attempted(SeriesStats::of(s, c.window, c.percentile).line(c.percentile));
        let Some(samples) = c.sampling(&c.urls, &c.headers).run(probe, shutdown, &live).await else {
            report.result = GateResult::Cancelled;
            report.reason = Some("stopped by a signal while sampling the baseline".into());
            return report;
        };
        let stats = SeriesStats::of(&samples, c.window, c.percentile);
        tracing::info!("analysis: baseline {}", stats.line(c.percentile));
        report.total_attempts = samples.len();
        report.duration = started.elapsed();
        if stats.samples < c.min_samples {
            report.reason =
                Some(too_few(c, stats.samples, "the live release", "nothing to compare the new release with"));
        } else {
            report.result = GateResult::Passed;
        }
        report.analysis = Some(AnalysisReport {
            window: c.window,
            percentile: c.percentile,
            baseline: Some(stats),
            new: None,
            decisions: Vec::new(),
        });
        if let Ok(mut kept) = self.samples.lock() {
            *kept = samples;
        }
        report
    }
}

/// The new release sampled the same way as the baseline, and compared with it.
pub struct Comparison<'a> {
    pub config: &'a AnalysisConfig,
    pub baseline: &'a [Sample],
    pub label: &'a str,
    /// The URLs and headers to sample, routed to one instance when a batch is gated alone.
    pub urls: Vec<url::Url>,
    pub headers: Vec<(String, String)>,
}

#[async_trait]
impl Gate for Comparison<'_> {
    fn name(&self) -> String {
        format!("analysis: {} against the baseline", self.label)
    }

    fn limit(&self) -> Duration {
        self.config.window
    }

    async fn check(&self, probe: &dyn Probe, shutdown: &Shutdown, attempted: &(dyn Fn(String) + Sync)) -> GateReport {
        let c = self.config;
        let started = tokio::time::Instant::now();
        let mut report = GateReport::new(GateKind::Analysis, self.label, shown(&self.urls));
        let base = SeriesStats::of(self.baseline, c.window, c.percentile);
        let live = |s: &[Sample]| {
            let now = SeriesStats::of(s, c.window, c.percentile);
            attempted(format!(
                "{}; baseline {} % errors, p{} {}ms",
                now.line(c.percentile),
                percent(base.error_rate()),
                c.percentile,
                base.latency(c.percentile)
            ))
        };
        let Some(samples) = c.sampling(&self.urls, &self.headers).run(probe, shutdown, &live).await else {
            report.result = GateResult::Cancelled;
            report.reason = Some("stopped by a signal while sampling the new release".into());
            return report;
        };
        let (analysis, reason) = compare(c, self.baseline, &samples);
        for d in &analysis.decisions {
            tracing::info!(
                "analysis: {}: new {}, baseline {}, {}{}{}",
                d.metric,
                d.new,
                d.baseline,
                d.limit,
                d.p_value.map(|p| format!(", {}", p_said(p))).unwrap_or_default(),
                if d.failed { " — FAILED" } else { "" }
            );
        }
        report.total_attempts = samples.len();
        report.duration = started.elapsed();
        report.result = if reason.is_some() { GateResult::Failed } else { GateResult::Passed };
        report.reason = reason;
        report.analysis = Some(analysis);
        report
    }
}

fn shown(urls: &[url::Url]) -> String {
    urls.iter().map(crate::http::shown).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnalysisConfig {
        AnalysisConfig {
            builtin: true,
            urls: vec!["http://127.0.0.1:1/health".parse().unwrap()],
            headers: Vec::new(),
            timeout: Duration::from_secs(1),
            window: Duration::from_secs(30),
            rate: 10.0,
            min_samples: 100,
            max_error_increase: 0.01,
            percentile: 95.0,
            max_latency_ratio: 1.5,
            min_latency_increase: Duration::from_millis(25),
            prometheus: None,
            web: None,
            surface: Surface::Action,
        }
    }

    /// `n` samples, a tenth of a second apart, of `ms` latency (plus a little spread),
    /// every `error_every`-th one an error.
    fn series(n: usize, ms: u64, error_every: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                at: Duration::from_millis(100 * i as u64),
                latency: Duration::from_micros(ms * 1000 + (i as u64 % 13) * 100),
                error: error_every > 0 && i % error_every == error_every - 1,
            })
            .collect()
    }

    #[test]
    fn the_same_release_twice_passes() {
        let (report, why) = compare(&config(), &series(300, 20, 0), &series(300, 20, 0));
        assert_eq!(why, None);
        assert!(report.decisions.iter().all(|d| !d.failed));
    }

    #[test]
    fn five_percent_errors_against_none_fails_on_the_error_rate() {
        let (report, why) = compare(&config(), &series(300, 20, 0), &series(300, 20, 20));
        let why = why.expect("worse");
        assert!(why.starts_with("the error rate is 5.0 % against the live release's 0.0 %"), "{why}");
        assert!(why.contains("Fisher's exact test p under 0.0001"), "{why}");
        assert!(report.decisions.iter().any(|d| d.metric == "error rate" && d.failed));
    }

    #[test]
    fn three_times_the_latency_fails_on_the_percentile() {
        let (_, why) = compare(&config(), &series(300, 40, 0), &series(300, 120, 0));
        let why = why.expect("slower");
        assert!(why.starts_with("p95 latency is 121.2ms against the live release's 41.2ms"), "{why}");
    }

    #[test]
    fn a_baseline_that_already_fails_is_the_yardstick_not_a_reason_to_fail() {
        // The live release flaps (a third of its answers are errors); the new one flaps
        // the same way: not worse, so not rolled back.
        let (_, why) = compare(&config(), &series(300, 20, 3), &series(300, 20, 3));
        assert_eq!(why, None);
    }

    #[test]
    fn a_small_slowdown_under_the_floor_is_noise_not_a_failure() {
        // 2ms against 1ms is twice as slow, but 1ms slower: under the 25ms floor.
        let (_, why) = compare(&config(), &series(300, 1, 0), &series(300, 2, 0));
        assert_eq!(why, None);
    }

    #[test]
    fn one_error_more_is_not_significant() {
        let mut new = series(300, 20, 0);
        new[10].error = true;
        new[20].error = true;
        new[30].error = true;
        new[40].error = true;
        // 4 of 300 is 1.3 %, over 0 % + 1 point, but 4 against 0 could be chance.
        let (report, why) = compare(&config(), &series(300, 20, 0), &new);
        assert_eq!(why, None, "{:?}", report.decisions);
    }

    #[test]
    fn too_few_answers_is_said_and_is_not_a_pass() {
        let (report, why) = compare(&config(), &series(300, 20, 0), &series(40, 20, 0));
        let why = why.expect("too few");
        assert!(why.starts_with("only 40 answers from the new release in 30s (at least 100 needed)"), "{why}");
        assert!(why.contains("raise analysis-window or analysis-rate"), "{why}");
        assert!(report.decisions[0].failed);
    }

    #[test]
    fn each_percentile_the_inputs_allow_is_the_one_compared() {
        let samples: Vec<Sample> = (1..=100)
            .map(|ms| Sample { at: Duration::ZERO, latency: Duration::from_millis(ms), error: false })
            .collect();
        let s = SeriesStats::of(&samples, Duration::from_secs(10), 95.0);
        let picked: Vec<f64> = [50.0, 90.0, 95.0, 99.0].iter().map(|p| s.latency(*p)).collect();
        assert_eq!(picked, vec![50.0, 90.0, 95.0, 99.0]);
    }

    #[test]
    fn the_chart_has_a_point_for_each_tenth_of_the_window() {
        let s = SeriesStats::of(&series(300, 20, 0), Duration::from_secs(30), 95.0);
        assert_eq!(s.curve_ms.len(), SLICES);
        assert!(s.curve_ms.iter().all(|ms| (20.0..22.0).contains(ms)), "{:?}", s.curve_ms);
    }
}
