//! The external analyses: a number from somewhere else, held against a limit. A
//! Prometheus instant query under `analysis-max`, and a web check in the shape of Argo
//! Rollouts' `web` provider (a URL, a JSON path into its answer, a condition).
//!
//! An answer that proves nothing (an empty vector, NaN, a path that finds nothing, an
//! error from Prometheus) fails the gate: no data is not a pass.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{AnalysisReport, Decision};
use crate::gate::{Gate, GateKind, GateReport, GateResult};
use crate::health::{excerpt, Probe};
use crate::shutdown::Shutdown;

/// Tries of a request that got no answer, or a 5xx, a second apart.
const TRIES: usize = 3;

#[derive(Debug, Clone)]
pub struct PrometheusCheck {
    /// Prometheus's base URL (the query goes to `api/v1/query` under it).
    pub url: url::Url,
    pub query: String,
    pub max: f64,
}

impl PrometheusCheck {
    /// The instant query's URL.
    pub fn query_url(&self) -> url::Url {
        let mut u = self.url.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1", "query"]);
        }
        u.query_pairs_mut().append_pair("query", &self.query);
        u
    }

    /// Every value the query gives, or why it gives none that counts.
    pub fn values(body: &str) -> Result<Vec<f64>, String> {
        let v: Value = serde_json::from_str(body)
            .map_err(|e| format!("Prometheus's answer is not JSON ({e}): {}", excerpt(body)))?;
        if v["status"] != "success" {
            return Err(format!(
                "Prometheus refused the query: {} ({})",
                v["error"].as_str().unwrap_or("no error given"),
                v["errorType"].as_str().unwrap_or("no type")
            ));
        }
        let number = |pair: &Value| -> Result<f64, String> {
            let text = pair.get(1).and_then(Value::as_str).ok_or("a sample without a value")?;
            let n: f64 = text.parse().map_err(|_| format!("'{text}' is not a number"))?;
            if n.is_nan() {
                return Err("NaN (a ratio over no requests?): no data is not a pass".into());
            }
            Ok(n)
        };
        let data = &v["data"];
        match data["resultType"].as_str() {
            Some("scalar") => Ok(vec![number(&data["result"])?]),
            Some("vector") => {
                let series = data["result"].as_array().ok_or("a vector without a result list")?;
                if series.is_empty() {
                    return Err("the query found no series: no data is not a pass; check the query, and that Prometheus scrapes the app".into());
                }
                series.iter().map(|s| number(&s["value"])).collect()
            }
            other => Err(format!(
                "the query answers a {}, not a number: write an instant query that gives a scalar or a vector (e.g. sum(rate(...[1m])))",
                other.unwrap_or("nothing")
            )),
        }
    }
}

/// A condition on one value, as Argo writes them: `result >= 0.99`, `== "ok"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Op,
    pub value: Literal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        let t = t.strip_prefix("result").map(str::trim_start).unwrap_or(t);
        let ops = [(">=", Op::Ge), ("<=", Op::Le), ("==", Op::Eq), ("!=", Op::Ne), (">", Op::Gt), ("<", Op::Lt)];
        let Some((op, rest)) = ops.iter().find_map(|(s, op)| t.strip_prefix(s).map(|rest| (*op, rest.trim()))) else {
            return Err(format!("'{text}' does not start with a comparison (<, <=, >, >=, == or !=)"));
        };
        let value = match rest {
            "" => return Err(format!("'{text}' compares with nothing")),
            "true" => Literal::Bool(true),
            "false" => Literal::Bool(false),
            q if q.len() >= 2
                && (q.starts_with('"') && q.ends_with('"') || q.starts_with('\'') && q.ends_with('\'')) =>
            {
                Literal::Text(q[1..q.len() - 1].to_string())
            }
            n => match n.parse::<f64>() {
                Ok(f) if f.is_finite() => Literal::Number(f),
                _ => return Err(format!("'{n}' is not a number, true, false or a quoted text")),
            },
        };
        if !matches!(op, Op::Eq | Op::Ne) && !matches!(value, Literal::Number(_)) {
            return Err(format!("'{text}' orders by something that is not a number"));
        }
        Ok(Condition { op, value })
    }

    /// Whether `found` meets the condition; why not, when it is not comparable.
    pub fn holds(&self, found: &Value) -> Result<bool, String> {
        use std::cmp::Ordering;
        let ordering = match (&self.value, found) {
            (Literal::Number(want), found) => {
                let n = match found {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                let n = n.ok_or_else(|| format!("found {}, which is not a number", shown(found)))?;
                n.partial_cmp(want).ok_or("found NaN")?
            }
            (Literal::Text(want), Value::String(s)) => {
                return Ok(matches!(self.op, Op::Eq) == (s == want));
            }
            (Literal::Bool(want), Value::Bool(b)) => return Ok(matches!(self.op, Op::Eq) == (b == want)),
            (_, found) => {
                return Err(format!("found {}, which is not comparable with the condition's value", shown(found)))
            }
        };
        Ok(match self.op {
            Op::Lt => ordering == Ordering::Less,
            Op::Le => ordering != Ordering::Greater,
            Op::Gt => ordering == Ordering::Greater,
            Op::Ge => ordering != Ordering::Less,
            Op::Eq => ordering == Ordering::Equal,
            Op::Ne => ordering != Ordering::Equal,
        })
    }
}

#[derive(Debug, Clone)]
pub struct WebCheck {
    pub url: url::Url,
    pub headers: Vec<(String, String)>,
    /// Where in the JSON answer the value is; the whole answer without one.
    pub json_path: Option<serde_json_path::JsonPath>,
    pub success: Condition,
    /// The condition as written, for messages.
    pub success_text: String,
}

impl WebCheck {
    /// The value the check is about, from the answer's body.
    pub fn value(&self, body: &str) -> Result<Value, String> {
        let json: Option<Value> = serde_json::from_str(body).ok();
        match (&self.json_path, json) {
            (None, Some(v)) => Ok(v),
            (None, None) => Ok(Value::String(body.trim().to_string())),
            (Some(_), None) => Err(format!("the answer is not JSON: {}", excerpt(body))),
            (Some(path), Some(v)) => {
                let found = path.query(&v).all();
                match found.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] => Err(format!("the JSON path finds nothing in {}", excerpt(body))),
                    many => Err(format!("the JSON path finds {} values; it must find one", many.len())),
                }
            }
        }
    }
}

/// A value found, as a message shows it: short, on one line.
fn shown(value: &Value) -> String {
    excerpt(&value.to_string())
}

/// Which external check a gate runs.
pub enum External<'a> {
    Prometheus(&'a PrometheusCheck),
    Web(&'a WebCheck),
}

/// An external analysis as a gate: it waits `wait` first (when no built-in analysis
/// ran, so the new release has served a while), asks, and holds the answer to its limit.
pub struct ExternalGate<'a> {
    pub check: External<'a>,
    pub label: &'a str,
    pub wait: Duration,
    pub timeout: Duration,
}

impl ExternalGate<'_> {
    fn request(&self) -> (url::Url, Vec<(String, String)>) {
        match &self.check {
            External::Prometheus(p) => (p.query_url(), Vec::new()),
            External::Web(w) => (w.url.clone(), w.headers.clone()),
        }
    }

    /// What the answer says: the decision (the value found, the limit, whether it
    /// passes) and the sentence that says it; or why the answer proves nothing.
    fn judge(&self, body: &str) -> Result<(Decision, String), String> {
        let number = |v: f64| format!("{}", (v * 10000.0).round() / 10000.0);
        let (metric, found, limit, passed, said) = match &self.check {
            External::Prometheus(p) => {
                let values = PrometheusCheck::values(body)?;
                let worst = values.iter().copied().fold(f64::MIN, f64::max);
                let passed = worst <= p.max;
                let said = match passed {
                    true => format!("the query gives {} (at most {})", number(worst), number(p.max)),
                    false => format!("the query gives {} (over analysis-max {})", number(worst), number(p.max)),
                };
                (p.query.clone(), number(worst), format!("at most {}", number(p.max)), passed, said)
            }
            External::Web(w) => {
                let value = w.value(body)?;
                let passed = w.success.holds(&value)?;
                let meets = if passed { "meets" } else { "does not meet" };
                let said = format!("found {}, which {meets} '{}'", shown(&value), w.success_text);
                let metric = w.json_path.as_ref().map_or("the answer".to_string(), |p| p.to_string());
                (metric, shown(&value), w.success_text.clone(), passed, said)
            }
        };
        let decision = Decision {
            metric,
            baseline: "—".into(),
            new: found,
            limit,
            p_value: None,
            failed: !passed,
            over_limit: !passed,
        };
        Ok((decision, said))
    }
}

#[async_trait]
impl Gate for ExternalGate<'_> {
    fn name(&self) -> String {
        match self.check {
            External::Prometheus(_) => format!("analysis: Prometheus query on the {}", self.label),
            External::Web(_) => format!("analysis: web check on the {}", self.label),
        }
    }

    fn limit(&self) -> Duration {
        self.wait + (self.timeout + Duration::from_secs(1)) * TRIES as u32
    }

    async fn check(&self, probe: &dyn Probe, shutdown: &Shutdown, attempted: &(dyn Fn(String) + Sync)) -> GateReport {
        let started = tokio::time::Instant::now();
        let (url, headers) = self.request();
        let shown = match &self.check {
            External::Prometheus(p) => format!("{} {}", crate::http::shown(&p.url), p.query),
            External::Web(w) => crate::http::shown(&w.url),
        };
        let label = match self.check {
            External::Prometheus(_) => format!("Prometheus query on the {}", self.label),
            External::Web(_) => format!("web check on the {}", self.label),
        };
        let mut report = GateReport::new(GateKind::External, &label, shown);
        let done = |mut r: GateReport, result, reason: String| {
            r.result = result;
            r.reason = Some(reason);
            r.duration = started.elapsed();
            r
        };
        if !self.wait.is_zero() {
            attempted(format!("letting the new release serve for {} first", crate::inputs::human(self.wait)));
            if !shutdown.sleep(self.wait).await {
                return done(report, GateResult::Cancelled, "stopped by a signal".into());
            }
        }
        // Prometheus says why a query is bad in a 400's JSON body.
        let prometheus = matches!(self.check, External::Prometheus(_));
        let usable = |status: u16| (200..300).contains(&status) || (prometheus && (400..500).contains(&status));
        let mut last = String::new();
        for n in 1..=TRIES {
            report.total_attempts = n;
            let Some(answer) = shutdown.guard(Duration::ZERO, probe.get(&url, &headers, self.timeout)).await else {
                return done(report, GateResult::Cancelled, "stopped by a signal".into());
            };
            match answer {
                Ok((status, body)) if usable(status) => {
                    let cut = if body.len() >= crate::http::PROBE_BODY_LIMIT {
                        " (the first MiB of a longer answer)"
                    } else {
                        ""
                    };
                    let body = String::from_utf8_lossy(&body);
                    return match self.judge(&body) {
                        Ok((decision, said)) => {
                            tracing::info!("analysis: {said}");
                            let passed = !decision.failed;
                            report.analysis = Some(AnalysisReport { decisions: vec![decision], ..Default::default() });
                            let mut r =
                                done(report, if passed { GateResult::Passed } else { GateResult::Failed }, said);
                            if passed {
                                r.reason = None;
                            }
                            r
                        }
                        Err(why) => done(report, GateResult::Failed, format!("{why}{cut}")),
                    };
                }
                Ok((status @ 500.., _)) => last = format!("status {status}"),
                Ok((status, body)) => {
                    let body = excerpt(&String::from_utf8_lossy(&body));
                    let why = match status {
                        300..=399 => format!("status {status}: a redirect is not followed; give the URL it leads to"),
                        _ if body.is_empty() => format!("status {status}, with an empty body"),
                        _ => format!("status {status}: {body}"),
                    };
                    return done(report, GateResult::Failed, why);
                }
                Err((failure, detail)) => last = failure.plainly(&detail),
            }
            attempted(format!("try {n} of {TRIES}: {last}"));
            if n < TRIES && !shutdown.sleep(Duration::from_secs(1)).await {
                return done(report, GateResult::Cancelled, "stopped by a signal".into());
            }
        }
        done(report, GateResult::Failed, format!("no usable answer in {TRIES} tries: {last}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_vectors_scalars_and_empty_answers() {
        let vector =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.042"]}]}}"#;
        assert_eq!(PrometheusCheck::values(vector), Ok(vec![0.042]));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(PrometheusCheck::values(scalar), Ok(vec![3.0]));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(PrometheusCheck::values(empty).unwrap_err().contains("no data is not a pass"));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        assert!(PrometheusCheck::values(nan).unwrap_err().starts_with("NaN"));
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 4"}"#;
        assert_eq!(
            PrometheusCheck::values(bad).unwrap_err(),
            "Prometheus refused the query: parse error at char 4 (bad_data)"
        );
    }

    #[test]
    fn the_query_goes_under_the_base_url_encoded() {
        let p = PrometheusCheck {
            url: "http://127.0.0.1:9090/prom/".parse().unwrap(),
            query: "sum(rate(x[1m])) > 0".into(),
            max: 1.0,
        };
        assert_eq!(
            p.query_url().as_str(),
            "http://127.0.0.1:9090/prom/api/v1/query?query=sum%28rate%28x%5B1m%5D%29%29+%3E+0"
        );
    }

    #[test]
    fn conditions_read_as_argo_writes_them() {
        let c = Condition::parse("result >= 0.99").unwrap();
        assert!(c.holds(&serde_json::json!(0.995)).unwrap());
        assert!(!c.holds(&serde_json::json!(0.9)).unwrap());
        assert!(c.holds(&serde_json::json!("1")).unwrap(), "a number in a string compares as a number");
        let c = Condition::parse("== \"ok\"").unwrap();
        assert!(c.holds(&serde_json::json!("ok")).unwrap());
        assert!(!c.holds(&serde_json::json!("degraded")).unwrap());
        assert!(Condition::parse("!= true").unwrap().holds(&serde_json::json!(false)).unwrap());
        assert!(Condition::parse("about 3").is_err());
        assert!(Condition::parse("> \"a\"").is_err());
        assert!(Condition::parse("<").is_err());
        assert!(Condition::parse("< 0.5").unwrap().holds(&serde_json::json!({"a": 1})).is_err());
    }

    #[test]
    fn a_json_path_must_find_exactly_one_value() {
        let check = |path: &str| WebCheck {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            headers: Vec::new(),
            json_path: Some(serde_json_path::JsonPath::parse(path).unwrap()),
            success: Condition::parse("> 0").unwrap(),
            success_text: "> 0".into(),
        };
        let body = r#"{"checks":[{"ok":0.99},{"ok":0.5}]}"#;
        assert_eq!(check("$.checks[0].ok").value(body), Ok(serde_json::json!(0.99)));
        assert!(check("$.checks[*].ok").value(body).unwrap_err().contains("finds 2 values"));
        assert!(check("$.nothing").value(body).unwrap_err().contains("finds nothing"));
        assert!(check("$.a").value("plain text").unwrap_err().contains("not JSON"));
    }
}
