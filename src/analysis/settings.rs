//! The analysis inputs become an [`AnalysisConfig`], or problems that name them.

use std::time::Duration;

use crate::config::{parse_probe_url, Command, HealthConfig};
use crate::inputs::{human, parse_bool, Problems, RawInputs};

use super::external::{Condition, PrometheusCheck, WebCheck};
use super::AnalysisConfig;

/// The most answers a side the analysis keeps (about 3 MB with the verdict's working).
const MOST_SAMPLES: usize = 100_000;

pub fn from_inputs(
    raw: &RawInputs,
    p: &mut Problems,
    health: Option<&HealthConfig>,
    command: Option<Command>,
) -> Option<AnalysisConfig> {
    let builtin = p.parse(raw, "analysis", parse_bool, "Use true or false.");
    let mut urls: Vec<url::Url> = health.map(|h| vec![h.url.clone()]).unwrap_or_default();
    if let Some(text) = raw.get("analysis-urls") {
        for one in text.split(['\n', ',']).map(str::trim).filter(|t| !t.is_empty()) {
            match parse_probe_url(one) {
                Ok(u) if !urls.contains(&u) => urls.push(u),
                Ok(_) => {}
                Err(problem) => p.add(
                    "analysis-urls",
                    problem,
                    "Give full URLs of the app, one per line or separated by commas, e.g. https://app.example.com/.",
                ),
            }
        }
    }
    let window = p.duration(raw, "analysis-window", true);
    let rate = p.parse(
        raw,
        "analysis-rate",
        |t| match t.parse::<f64>() {
            Ok(r) if (0.1..=100.0).contains(&r) => Ok(r),
            _ => Err(format!("'{t}' is not a number of requests a second from 0.1 to 100")),
        },
        "Use a number such as 5.",
    );
    let min_samples = p.parse(
        raw,
        "analysis-min-samples",
        |t| match t.parse::<usize>() {
            Ok(n @ 10..=100_000) => Ok(n),
            _ => Err(format!("'{t}' is not a whole number from 10 to 100000")),
        },
        "Use a whole number such as 100: fewer answers than that cannot tell a 1-point rise in errors from chance.",
    );
    let max_error_increase = p.parse(
        raw,
        "analysis-max-error-increase",
        fraction,
        "Use a percentage such as 1% or a fraction such as 0.01.",
    );
    let percentile = p.parse(
        raw,
        "analysis-percentile",
        |t| match t.trim_start_matches(['p', 'P']).parse::<f64>() {
            Ok(n) if [50.0, 90.0, 95.0, 99.0].contains(&n) => Ok(n),
            _ => Err(format!("'{t}' is not one of 50, 90, 95 or 99")),
        },
        "Use 95 (or 50, 90, 99).",
    );
    let max_latency_ratio = p.parse(
        raw,
        "analysis-max-latency-ratio",
        |t| match t.trim_end_matches(['x', '×']).parse::<f64>() {
            Ok(r) if (1.0..=100.0).contains(&r) => Ok(r),
            _ => Err(format!("'{t}' is not a ratio from 1 to 100")),
        },
        "Use a ratio such as 1.5.",
    );
    let min_latency_increase = p.duration(raw, "analysis-min-latency-increase", false);

    if let (Some(true), Some(w), Some(r), Some(min)) = (builtin, window, rate, min_samples) {
        let most = (w.as_secs_f64() * r).floor() as usize;
        // Every answer is kept until the verdict: bounded, so a long window at a high rate
        // cannot take the runner's memory.
        if most > MOST_SAMPLES {
            p.add(
                "analysis-window",
                format!(
                    "{} at {} {r} a second is {most} requests a side, more than the {MOST_SAMPLES} the analysis keeps",
                    human(w),
                    p.name("analysis-rate")
                ),
                format!("Lower {} or {}.", p.name("analysis-window"), p.name("analysis-rate")),
            );
        }
        if most < min {
            p.add(
                "analysis-min-samples",
                format!(
                    "{min} answers cannot come from {} {} at {} {} a second (at most {most})",
                    p.name("analysis-window"),
                    human(w),
                    p.name("analysis-rate"),
                    r
                ),
                format!(
                    "Raise {} or {} so that their product reaches {min}, or lower {}.",
                    p.name("analysis-window"),
                    p.name("analysis-rate"),
                    p.name("analysis-min-samples")
                ),
            );
        }
        if health.is_some_and(|h| !h.probe_first) && matches!(command, Some(Command::Deploy | Command::Plan)) {
            p.add(
                "analysis",
                format!("needs the live release's baseline, which {} skips", p.setting("health-probe", "false")),
                format!(
                    "Set {} (the baseline is sampled from the live release before the first change), or turn the analysis off for a first deploy.",
                    p.setting("health-probe", "true")
                ),
            );
        }
    }

    let prometheus = prometheus(raw, p);
    let web = web(raw, p, health);
    // A setting of the built-in analysis given without it is a forgotten `analysis: true`,
    // not a wish to be ignored.
    if builtin == Some(false) {
        let external = matches!(prometheus, Some(Some(_))) || matches!(web, Some(Some(_)));
        let builtin_only = [
            "analysis-urls",
            "analysis-rate",
            "analysis-min-samples",
            "analysis-max-error-increase",
            "analysis-percentile",
            "analysis-max-latency-ratio",
            "analysis-min-latency-increase",
        ];
        let window = (!external).then_some("analysis-window");
        for name in builtin_only.into_iter().chain(window).filter(|n| raw.given(n)) {
            p.add(
                name,
                format!("has no effect unless {} is set", p.setting("analysis", "true")),
                format!(
                    "Set {} to compare the new release with the live one, or leave {} out.",
                    p.setting("analysis", "true"),
                    p.name(name)
                ),
            );
        }
    }
    Some(AnalysisConfig {
        builtin: builtin?,
        urls,
        headers: health.map(|h| h.headers.clone()).unwrap_or_default(),
        timeout: health.map_or(Duration::from_secs(10), |h| h.timeout),
        window: window?,
        rate: rate?,
        min_samples: min_samples?,
        max_error_increase: max_error_increase?,
        percentile: percentile?,
        max_latency_ratio: max_latency_ratio?,
        min_latency_increase: min_latency_increase?,
        prometheus: prometheus?,
        web: web?,
        surface: p.surface(),
    })
}

/// A share written as people do: `1%`, or a fraction `0.01`.
fn fraction(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.trim().strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (text.trim(), 1.0),
    };
    match number.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&(f / scale)) => Ok(f / scale),
        _ => Err(format!("'{text}' is not a percentage from 0% to 100% or a fraction from 0 to 1")),
    }
}

/// Inputs that only mean something together: every one of `names` given, or none.
fn all_or_none(raw: &RawInputs, p: &mut Problems, names: &[&'static str]) -> bool {
    let given: Vec<&str> = names.iter().copied().filter(|n| raw.get(n).is_some()).collect();
    if given.is_empty() {
        return false;
    }
    for missing in names.iter().copied().filter(|n| !given.contains(n)) {
        p.add(
            missing,
            format!(
                "is required when {} {} set",
                given.iter().map(|g| p.name(g)).collect::<Vec<_>>().join(" and "),
                if given.len() > 1 { "are" } else { "is" }
            ),
            format!("Set {} together.", names.iter().map(|n| p.name(n)).collect::<Vec<_>>().join(", ")),
        );
    }
    given.len() == names.len()
}

fn prometheus(raw: &RawInputs, p: &mut Problems) -> Option<Option<PrometheusCheck>> {
    if !all_or_none(raw, p, &["analysis-prometheus-url", "analysis-query", "analysis-max"]) {
        return Some(None);
    }
    let url = p.parse(
        raw,
        "analysis-prometheus-url",
        parse_probe_url,
        "Give Prometheus's base URL, e.g. https://prometheus.example.com.",
    );
    let max = p.parse(
        raw,
        "analysis-max",
        |t| t.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(|| format!("'{t}' is not a number")),
        "Give the most the query may give, e.g. 0.01.",
    );
    let query = raw.get("analysis-query").unwrap_or_default().to_string();
    Some(Some(PrometheusCheck { url: url?, query, max: max? }))
}

fn web(raw: &RawInputs, p: &mut Problems, health: Option<&HealthConfig>) -> Option<Option<WebCheck>> {
    if !all_or_none(raw, p, &["analysis-web-url", "analysis-web-success"]) {
        if raw.get("analysis-web-json-path").is_some() && raw.get("analysis-web-url").is_none() {
            p.add(
                "analysis-web-url",
                format!("is required when {} is set", p.name("analysis-web-json-path")),
                "Set the URL the JSON path reads.",
            );
        }
        return Some(None);
    }
    let url =
        p.parse(raw, "analysis-web-url", parse_probe_url, "Give a full URL such as https://app.example.com/stats.");
    let json_path = match raw.get("analysis-web-json-path") {
        None => Some(None),
        Some(_) => p
            .parse(
                raw,
                "analysis-web-json-path",
                |t| serde_json_path::JsonPath::parse(t).map_err(|e| format!("'{t}' is not a JSON path ({e})")),
                "Write a JSON path such as $.data.successRate.",
            )
            .map(Some),
    };
    let success_text = raw.get("analysis-web-success").unwrap_or_default().to_string();
    let success = p.parse(
        raw,
        "analysis-web-success",
        Condition::parse,
        "Write a comparison and a value, e.g. '>= 0.99' or '== \"ok\"'.",
    );
    // Sent with health-headers, which the health gate has read already.
    let headers = health.map(|h| h.headers.clone()).unwrap_or_default();
    Some(Some(WebCheck { url: url?, headers, json_path: json_path?, success: success?, success_text }))
}
