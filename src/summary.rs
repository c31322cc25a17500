//! The job summary: Markdown rendered from the report. First line: the outcome and
//! what is live now. Then the timeline, the health attempts, the rollback, and a
//! mermaid gantt chart of the phases. Kept well under the runner's 1 MiB limit.

use std::fmt::Write;
use std::time::Duration;

use crate::config::human;
use crate::health::{GateReport, GateResult};
use crate::report::{Outcome, PhaseResult, Report};

/// The runner refuses a summary over 1 MiB; stay well below it.
pub const MAX_BYTES: usize = 900 * 1024;

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n", report.headline());
    if let Some(reason) = &report.reason {
        let _ = writeln!(md, "**Why:** {}\n", inline(reason));
    }
    if report.outcome == Outcome::RollbackFailed {
        let _ = writeln!(
            md,
            "> [!CAUTION]\n> The app may be serving a broken release. Check it now, then re-run this workflow with `command: rollback` or fix forward.\n"
        );
    }

    if !report.input_errors.is_empty() {
        let _ = writeln!(md, "### Input problems\n");
        for e in &report.input_errors {
            let _ = writeln!(md, "- {}", inline(e));
        }
        md.push('\n');
    }

    let _ = writeln!(md, "| | |\n|---|---|");
    row(&mut md, "Status", &format!("`{}`", report.outcome.status()));
    row(&mut md, "Command", &report.command);
    row(&mut md, "Provider", &report.provider);
    row(&mut md, "App", &format!("{} (environment {})", inline(&report.app), inline(&report.environment)));
    row(&mut md, "Target release", &code(report.target.as_deref()));
    row(&mut md, "Live before", &code(report.previous.as_deref()));
    row(&mut md, "Live now", &code(report.live.as_deref()));
    if let Some(url) = &report.url {
        row(&mut md, "URL", &inline(url));
    }
    row(&mut md, "Duration", &human(report.duration));
    row(&mut md, "Changed anything", if report.changed { "yes" } else { "no" });
    if let Some(n) = report.api_calls {
        row(&mut md, "Provider API requests", &n.to_string());
    }
    md.push('\n');

    if !report.plan.is_empty() {
        let _ = writeln!(md, "### Plan\n");
        for (i, step) in report.plan.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, inline(step));
        }
        md.push('\n');
    }

    if !report.findings.is_empty() {
        let _ = writeln!(md, "### Preflight\n");
        for f in &report.findings {
            let _ = writeln!(md, "- {}", inline(f));
        }
        md.push('\n');
    }

    if !report.phases.is_empty() {
        let _ = writeln!(md, "### Timeline\n\n| Phase | Started | Took | Result |\n|---|---|---|---|");
        for p in &report.phases {
            let result = match (p.result, &p.detail) {
                (PhaseResult::Ok, _) => "ok".to_string(),
                (r, Some(d)) => format!("{} — {}", phase_word(r), inline(d)),
                (r, None) => phase_word(r).to_string(),
            };
            let _ = writeln!(md, "| {} | +{} | {} | {} |", inline(&p.name), human(p.start), human(p.duration), result);
        }
        md.push('\n');
        gantt(&mut md, report);
    }

    for gate in &report.gates {
        render_gate(&mut md, gate);
    }

    if let Some(rb) = &report.rollback {
        let _ = writeln!(md, "### Rollback\n");
        let _ = writeln!(md, "- Reason: {}", inline(&rb.reason));
        let _ = writeln!(md, "- Restoring: `{}`", inline(&rb.to));
        let _ = writeln!(md, "- Result: {}", if rb.succeeded { "restored and healthy" } else { "**FAILED**" });
        if let Some(d) = &rb.detail {
            let _ = writeln!(md, "- Detail: {}", inline(d));
        }
        md.push('\n');
    }

    if let Some(d) = &report.deployment {
        let _ = writeln!(
            md,
            "### GitHub deployment\n\nDeployment {} in environment `{}`: **{}** — [deployments]({})\n",
            d.id,
            inline(&d.environment),
            inline(&d.state),
            d.url.replace(')', "%29")
        );
    }

    if !report.warnings.is_empty() {
        let _ = writeln!(md, "### Warnings\n");
        for w in &report.warnings {
            let _ = writeln!(md, "- {}", inline(w));
        }
        md.push('\n');
    }

    let _ = writeln!(md, "<sub>safe-deploy {}</sub>", env!("CARGO_PKG_VERSION"));
    cap(md)
}

fn row(md: &mut String, name: &str, value: &str) {
    let _ = writeln!(md, "| {name} | {value} |");
}

fn phase_word(r: PhaseResult) -> &'static str {
    match r {
        PhaseResult::Ok => "ok",
        PhaseResult::Failed => "**failed**",
        PhaseResult::Cancelled => "cancelled",
    }
}

fn render_gate(md: &mut String, gate: &GateReport) {
    let result = match gate.result {
        GateResult::Passed => "passed",
        GateResult::Failed => "FAILED",
        GateResult::Cancelled => "cancelled",
    };
    let _ = writeln!(
        md,
        "### Health checks: {} — {result}\n\n{} attempts in {} against {}.",
        inline(&gate.label),
        gate.total_attempts,
        human(gate.duration),
        inline(&gate.url)
    );
    if let Some(reason) = &gate.reason {
        let _ = writeln!(md, " {}", inline(reason));
    }
    if gate.attempts.len() < gate.total_attempts {
        let _ = writeln!(
            md,
            "\nShowing the first and the latest {} of {} attempts.",
            gate.attempts.len(),
            gate.total_attempts
        );
    }
    let _ = writeln!(md, "\n| # | At | Status | Latency | Body | Result |\n|---|---|---|---|---|---|");
    for a in &gate.attempts {
        let status = a.status.map_or("—".to_string(), |s| s.to_string());
        let result = match &a.failure {
            None => "ok".to_string(),
            Some(f) => format!("{}: {}", f.label(), inline(&f.explain())),
        };
        let _ = writeln!(
            md,
            "| {} | +{} | {} | {}ms | <code>{}</code> | {} |",
            a.number,
            human(a.at),
            status,
            a.latency.as_millis(),
            escape(&a.excerpt),
            result
        );
    }
    md.push('\n');
}

/// A mermaid gantt chart of the phases, in milliseconds since the start.
fn gantt(md: &mut String, report: &Report) {
    let _ = writeln!(
        md,
        "```mermaid\ngantt\n    title {} {}\n    dateFormat x\n    axisFormat %M:%S\n    section run",
        report.command,
        mermaid_text(&report.app)
    );
    for (i, p) in report.phases.iter().enumerate() {
        let start = p.start.as_millis();
        // A zero-length bar does not render; give every phase at least 1 ms.
        let end = start + p.duration.max(Duration::from_millis(1)).as_millis();
        let tag = match p.result {
            PhaseResult::Ok => "done",
            PhaseResult::Failed => "crit",
            PhaseResult::Cancelled => "active",
        };
        let _ = writeln!(md, "    {} :{tag}, p{i}, {start}, {end}", mermaid_text(&p.name));
    }
    let _ = writeln!(md, "```\n");
}

/// Mermaid task names end at ':' and comments start at '#' or '%%'.
fn mermaid_text(text: &str) -> String {
    text.chars().map(|c| if matches!(c, ':' | '#' | ';' | '%' | '\n' | '\r') { ' ' } else { c }).collect()
}

/// Text from outside, made safe for a Markdown table cell: no HTML, no pipes, one line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn inline(text: &str) -> String {
    escape(text)
}

fn code(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("<code>{}</code>", escape(v)),
        None => "unknown".into(),
    }
}

/// Cuts an oversized summary at a line boundary, and says so.
fn cap(mut md: String) -> String {
    if md.len() <= MAX_BYTES {
        return md;
    }
    let mut cut = MAX_BYTES - 200;
    while !md.is_char_boundary(cut) {
        cut -= 1;
    }
    if let Some(nl) = md[..cut].rfind('\n') {
        cut = nl + 1;
    }
    md.truncate(cut);
    md.push_str("\n\n_The summary was cut here to stay under GitHub's 1 MiB limit._\n");
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Attempt;
    use crate::report::Phase;

    fn report() -> Report {
        let mut r = Report::new("deploy", "memory", "web", "production");
        r.target = Some("web:2".into());
        r.previous = Some("web:1".into());
        r.live = Some("web:1".into());
        r.outcome = Outcome::RolledBack;
        r.phases.push(Phase {
            name: "health gate: new release".into(),
            start: Duration::from_millis(40),
            duration: Duration::from_millis(900),
            result: PhaseResult::Failed,
            detail: Some("body mismatch".into()),
        });
        r
    }

    #[test]
    fn the_first_line_says_the_outcome_and_what_is_live() {
        let md = render(&report());
        let first = md.lines().next().unwrap();
        assert!(first.contains("FAILED and was rolled back"), "{first}");
        assert!(first.contains("`web:1` is live"), "{first}");
    }

    #[test]
    fn bodies_from_outside_cannot_break_the_table_or_inject_html() {
        let mut r = report();
        r.gates.push(GateReport {
            label: "new release".into(),
            url: "http://x/health".into(),
            result: GateResult::Failed,
            reason: None,
            duration: Duration::from_secs(1),
            total_attempts: 1,
            attempts: vec![Attempt {
                number: 1,
                at: Duration::ZERO,
                status: Some(200),
                latency: Duration::from_millis(3),
                excerpt: "<script>x</script> | `tick`".into(),
                failure: None,
            }],
        });
        let md = render(&r);
        assert!(md.contains("&lt;script&gt;x&lt;/script&gt; &#124; &#96;tick&#96;"));
        assert!(!md.contains("<script>"));
    }

    #[test]
    fn the_gantt_chart_lists_every_phase_in_milliseconds() {
        let md = render(&report());
        assert!(md.contains("```mermaid\ngantt"));
        assert!(md.contains("    health gate  new release :crit, p0, 40, 940"), "{md}");
    }

    #[test]
    fn a_huge_summary_is_cut_below_the_limit() {
        let mut r = report();
        r.warnings = (0..20_000).map(|i| format!("warning number {i} {}", "é".repeat(40))).collect();
        let md = render(&r);
        assert!(md.len() <= MAX_BYTES);
        assert!(md.ends_with("limit._\n"));
    }
}
