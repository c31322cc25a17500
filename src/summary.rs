//! The job summary: Markdown rendered from the report. First line: the outcome and
//! what is live now. Then the timeline, the health attempts, the rollback, and a
//! mermaid gantt chart of the phases. Kept well under the runner's 1 MiB limit.

use std::fmt::Write;
use std::time::Duration;

use crate::gate::{GateKind, GateReport, GateResult};
use crate::health::Attempt;
use crate::inputs::human;
use crate::markdown::{escape, escape_code};
use crate::report::{Outcome, PhaseResult, Report};

/// The runner refuses a summary over 1 MiB; stay well below it.
pub const MAX_BYTES: usize = 900 * 1024;

/// The timeline's rows: a run of steps that each passed in a moment is one row (three
/// "0ms ok" rows say less than one), every other step a row of its own.
fn folded(phases: &[crate::report::Phase]) -> Vec<&[crate::report::Phase]> {
    let quick =
        |p: &crate::report::Phase| p.result == PhaseResult::Ok && p.duration < std::time::Duration::from_millis(10);
    let mut rows = Vec::new();
    let mut start = 0;
    while start < phases.len() {
        let mut end = start + 1;
        if quick(&phases[start]) {
            while end < phases.len() && quick(&phases[end]) {
                end += 1;
            }
        }
        rows.push(&phases[start..end]);
        start = end;
    }
    rows
}

/// "Changed anything", answered with what changed and what is live because of it.
fn changes(report: &Report) -> String {
    if !report.changed {
        return "no".into();
    }
    let target = code(report.target.as_deref());
    let previous = code(report.previous.as_deref());
    match report.outcome {
        Outcome::Deployed => format!("yes: {target} went out and is live"),
        Outcome::RolledBack if report.stopped => {
            format!("yes: {target} went out part-way, the run was stopped, and {previous} was put back")
        }
        Outcome::RolledBack => format!("yes: {target} went out, then {previous} was put back"),
        Outcome::RollbackFailed => format!("yes: {target} went out, and putting {previous} back FAILED"),
        Outcome::Cancelled => {
            format!("yes: {target} went out part-way before the run was stopped; {previous} is not back yet")
        }
        Outcome::Failed if report.replaced_by.is_some() => {
            format!(
                "yes: {target} went out, then another deploy replaced it with {}",
                code(report.replaced_by.as_deref())
            )
        }
        Outcome::Failed => format!("yes: {target} went out and was left in place"),
        Outcome::Planned => "yes".into(),
    }
}

pub fn render(report: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## {}\n", report.headline());
    if report.outcome == Outcome::RollbackFailed {
        let how = match report.surface {
            crate::inputs::Surface::Action => "re-run this workflow with `command: rollback`",
            crate::inputs::Surface::Cli => "run `safe-deploy rollback` with this run's flags",
        };
        let _ = writeln!(
            md,
            "> [!CAUTION]\n> The app may be serving a broken release. Check it now, then {how} or fix forward.\n"
        );
    }

    if let Some(reason) = &report.reason {
        let _ = writeln!(md, "**Why:** {}\n", inline(reason));
    }
    if !report.input_errors.is_empty() {
        let _ = writeln!(md, "### Input problems\n");
        for e in &report.input_errors {
            let _ = writeln!(md, "- {}", inline(e));
        }
        md.push('\n');
    }

    // The first pair is the header row: GFM needs one, and an empty one reads as a gap.
    let _ = writeln!(md, "| Status | <code>{}</code> |\n|---|---|", report.outcome.status());
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
    row(&mut md, "Changed anything", &changes(report));
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
        for rows in folded(&report.phases) {
            let (p, last) = (&rows[0], &rows[rows.len() - 1]);
            let result = match (p.result, &p.detail) {
                (PhaseResult::Ok, _) => "ok".to_string(),
                (r, Some(d)) if said(report, d) => format!("{} (see Why)", phase_word(r)),
                (r, Some(d)) => format!("{} — {}", phase_word(r), inline(d)),
                (r, None) => phase_word(r).to_string(),
            };
            let names: Vec<String> = rows.iter().map(|r| inline(&r.name)).collect();
            let took = (last.start + last.duration).saturating_sub(p.start);
            let _ = writeln!(md, "| {} | +{} | {} | {} |", names.join(", "), human(p.start), human(took), result);
        }
        md.push('\n');
        gantt(&mut md, report);
    }

    for gate in &report.gates {
        render_gate(&mut md, gate, report);
    }

    if let Some(rb) = &report.rollback {
        let _ = writeln!(md, "### Rollback\n");
        if !said(report, &rb.reason) {
            let _ = writeln!(md, "- Reason: {}", inline(&rb.reason));
        }
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

fn render_gate(md: &mut String, gate: &GateReport, report: &Report) {
    let result = match gate.result {
        GateResult::Passed => "passed",
        GateResult::Failed => "FAILED",
        GateResult::Cancelled => "cancelled",
    };
    match gate.kind {
        GateKind::Health => {}
        GateKind::Analysis | GateKind::External => return render_analysis(md, gate, report, result),
    }
    let counted = crate::markdown::counted(gate.total_attempts, "attempt");
    gate_heading(md, report, gate, &format!("Health checks: {} — {result}", inline(&gate.label)), &counted, "against");
    attempts_table(md, &gate.attempts);
}

/// A gate's heading and its first paragraph: how many tries, how long, of what, and
/// why it failed unless the Why line says it already.
fn gate_heading(md: &mut String, report: &Report, gate: &GateReport, heading: &str, counted: &str, of: &str) {
    let _ = write!(md, "### {heading}\n\n{counted} in {} {of} {}.", human(gate.duration), inline(&gate.url));
    match &gate.reason {
        Some(reason) if said(report, reason) => md.push_str(" The failure is the one under Why."),
        Some(reason) => {
            let _ = write!(md, " {}", inline(reason));
        }
        None => {}
    }
    md.push_str("\n\n");
}

/// An analysis: what was asked, the numbers that decided side by side, and the
/// latency of both releases over the window as a chart.
fn render_analysis(md: &mut String, gate: &GateReport, report: &Report, result: &str) {
    let (unit, of) = match gate.kind {
        GateKind::External => ("request", "asking"),
        _ => ("answer", "sampling"),
    };
    let counted = crate::markdown::counted(gate.total_attempts, unit);
    gate_heading(md, report, gate, &format!("Analysis: {} — {result}", inline(&gate.label)), &counted, of);
    let Some(a) = &gate.analysis else { return };
    if !a.decisions.is_empty() {
        let _ = writeln!(
            md,
            "| Measure | Live release (baseline) | New release | Allowed | p | Verdict |\n|---|---|---|---|---|---|"
        );
        for d in &a.decisions {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                inline(&d.metric),
                inline(&d.baseline),
                inline(&d.new),
                inline(&d.limit),
                d.p_value.map(crate::analysis::p_value).unwrap_or_default(),
                match (d.failed, d.over_limit) {
                    (true, _) => "**worse**",
                    (false, true) => "ok: past the limit, but by no more than chance",
                    (false, false) => "ok",
                }
            );
        }
        md.push('\n');
    } else if let Some(b) = &a.baseline {
        let _ = writeln!(md, "Baseline: {}.\n", b.line(a.percentile));
    }
    if let (Some(b), Some(n)) = (&a.baseline, &a.new) {
        latency_chart(md, a.window, a.percentile, &b.curve_ms, &n.curve_ms);
    }
}

/// Both releases' latency percentile, tenth by tenth of the window, as a mermaid
/// xychart: the baseline first, the new release second.
fn latency_chart(md: &mut String, window: Duration, percentile: f64, baseline: &[f64], new: &[f64]) {
    let slices = baseline.len().max(new.len()).max(1);
    let slice = window / slices as u32;
    let labels: Vec<String> = (1..=slices).map(|i| format!("\"{}\"", human(slice * i as u32))).collect();
    let top = baseline.iter().chain(new).copied().fold(1.0_f64, f64::max) * 1.1;
    let series = |v: &[f64]| v.iter().map(|ms| format!("{ms}")).collect::<Vec<_>>().join(", ");
    let _ = writeln!(
        md,
        "```mermaid\nxychart-beta\n    title \"p{percentile} latency (ms): live release, then new release\"\n    x-axis [{}]\n    y-axis \"ms\" 0 --> {}\n    line [{}]\n    line [{}]\n```\n",
        labels.join(", "),
        top.ceil(),
        series(baseline),
        series(new)
    );
    let _ = writeln!(md, "<sub>First line: the live release before the change; second: the new release, over each tenth of the window.</sub>\n");
}

/// Attempts shown one per row at each end of a health gate; the rest fold.
const SHOWN_AT_EACH_END: usize = 3;

/// The attempts as a table: the first few and the last few in full, everything between
/// folded into one row, and spelled out below in `<details>`, where a run of identical
/// attempts is one row.
fn attempts_table(md: &mut String, attempts: &[Attempt]) {
    const HEADER: &str = "| # | At | Status | Latency | Body | Result |\n|---|---|---|---|---|---|\n";
    md.push_str(HEADER);
    let n = attempts.len();
    if n <= 2 * SHOWN_AT_EACH_END + 1 {
        runs(md, attempts, false);
        md.push('\n');
        return;
    }
    let (head, rest) = attempts.split_at(SHOWN_AT_EACH_END);
    let (middle, tail) = rest.split_at(rest.len() - SHOWN_AT_EACH_END);
    runs(md, head, false);
    let span = numbers(middle);
    let groups = group(middle);
    if groups.len() == 1 && contiguous(middle) {
        // One run of the same answer: one line says it all.
        runs(md, middle, true);
    } else {
        let _ = writeln!(md, "| {span} | | | | | attempts {span}, listed below |");
    }
    runs(md, tail, false);
    md.push('\n');
    if groups.len() > 1 || !contiguous(middle) {
        let _ = write!(md, "<details><summary>Attempts {span}</summary>\n\n{HEADER}");
        runs(md, middle, true);
        md.push_str("\n</details>\n\n");
    }
}

/// Writes attempts as rows; with `fold`, consecutive identical attempts are one row.
fn runs(md: &mut String, attempts: &[Attempt], fold: bool) {
    let groups = if fold { group(attempts) } else { attempts.chunks(1).collect() };
    let mut previous: Option<usize> = None;
    for g in groups {
        let (first, last) = (&g[0], &g[g.len() - 1]);
        if let Some(p) = previous.filter(|p| first.number > p + 1) {
            let _ = writeln!(
                md,
                "| {}–{} | | | | | not kept (only the first and the latest are) |",
                p + 1,
                first.number - 1
            );
        }
        previous = Some(last.number);
        let status = first.status.map_or("—".to_string(), |s| s.to_string());
        let body = format!("<code>{}</code>", escape_code(&first.excerpt));
        if g.len() == 1 {
            let _ = writeln!(
                md,
                "| {} | +{} | {status} | {}ms | {body} | {} |",
                first.number,
                human(first.at),
                first.latency.as_millis(),
                result(first)
            );
        } else {
            let (fast, slow) = g
                .iter()
                .fold((u128::MAX, 0), |(lo, hi), a| (lo.min(a.latency.as_millis()), hi.max(a.latency.as_millis())));
            let latency = if fast == slow { format!("{fast}ms") } else { format!("{fast}–{slow}ms") };
            let _ = writeln!(
                md,
                "| {span} | +{} to +{} | {status} | {latency} | {body} | attempts {span}: same {} |",
                human(first.at),
                human(last.at),
                if first.failure.is_some() { "failure" } else { "answer, ok" },
                span = numbers(g),
            );
        }
    }
}

fn result(a: &Attempt) -> String {
    match &a.failure {
        None => "ok".to_string(),
        Some(f) => format!("{}: {}", f.label(), inline(&f.explain())),
    }
}

/// Consecutive attempts that got the same answer (status, body and verdict).
fn group(attempts: &[Attempt]) -> Vec<&[Attempt]> {
    let key = |a: &Attempt| (a.status, a.excerpt.clone(), result(a));
    attempts.chunk_by(|a, b| b.number == a.number + 1 && key(a) == key(b)).collect()
}

fn contiguous(attempts: &[Attempt]) -> bool {
    attempts.windows(2).all(|w| w[1].number == w[0].number + 1)
}

/// "4–57", or "4" for one attempt.
fn numbers(attempts: &[Attempt]) -> String {
    match (attempts.first(), attempts.last()) {
        (Some(a), Some(b)) if a.number != b.number => format!("{}–{}", a.number, b.number),
        (Some(a), _) => a.number.to_string(),
        _ => String::new(),
    }
}

/// Whether the summary's Why already says `text`: then it is referred to, not repeated.
fn said(report: &Report, text: &str) -> bool {
    !text.trim().is_empty() && report.reason.as_deref().is_some_and(|why| why.contains(text.trim()))
}

/// A mermaid gantt chart of the phases. Short runs are drawn in seconds since the
/// start (no time zone can shift seconds); long ones at the wall-clock time they ran,
/// which mermaid shows in the reader's own time zone. The tick step is chosen so that
/// the axis has a handful of distinct labels, whatever the run's length.
fn gantt(md: &mut String, report: &Report) {
    let span = report.phases.iter().map(|p| p.start + p.duration).max().unwrap_or_default();
    let axis = Axis::for_span(span);
    let origin: u128 = match axis.clock {
        Clock::SinceStart => 0,
        Clock::WallClock => {
            report.started_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default()
        }
    };
    let _ = writeln!(
        md,
        "```mermaid\ngantt\n    title {} {} ({})\n    dateFormat x\n    axisFormat {}\n    tickInterval {}\n    section run",
        mermaid_text(&report.command),
        mermaid_text(&report.app),
        axis.clock.words(),
        axis.format,
        axis.tick
    );
    for (i, p) in report.phases.iter().enumerate() {
        let start = origin + p.start.as_millis();
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    SinceStart,
    WallClock,
}

impl Clock {
    fn words(self) -> &'static str {
        match self {
            Clock::SinceStart => "seconds since the start",
            Clock::WallClock => "your local time",
        }
    }
}

/// A gantt axis: mermaid's tick step, the label format (d3's), and what the times mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Axis {
    tick: &'static str,
    format: &'static str,
    clock: Clock,
}

impl Axis {
    fn for_span(span: Duration) -> Axis {
        // (longest span, tick step, label format): at most about ten ticks, each label
        // precise enough to differ from its neighbours.
        const STEPS: &[(u64, &str, &str)] = &[
            (100, "10millisecond", "%S.%Ls"),
            (250, "25millisecond", "%S.%Ls"),
            (500, "50millisecond", "%S.%Ls"),
            (1_000, "100millisecond", "%S.%Ls"),
            (2_000, "200millisecond", "%S.%Ls"),
            (5_000, "500millisecond", "%S.%Ls"),
            (10_000, "1second", "%Ss"),
            (50_000, "5second", "%Ss"),
            (300_000, "30second", "%H:%M:%S"),
            (600_000, "1minute", "%H:%M"),
            (3_000_000, "5minute", "%H:%M"),
            (6_000_000, "10minute", "%H:%M"),
            (18_000_000, "30minute", "%H:%M"),
        ];
        let ms = span.as_millis();
        let (tick, format) = STEPS
            .iter()
            .find(|(limit, _, _)| ms <= u128::from(*limit))
            .map_or(("1hour", "%H:%M"), |(_, tick, format)| (*tick, *format));
        let clock = if format.starts_with("%S") { Clock::SinceStart } else { Clock::WallClock };
        Axis { tick, format, clock }
    }
}

/// Mermaid ends a task name at ':' and a line at ';', starts comments at '#' and '%%',
/// and reads '<' as markup: each becomes a look-alike character (a ratio sign for the colon),
/// so "batch 1: host a" keeps its colon and its meaning.
fn mermaid_text(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ':' => '∶',
            '#' => '＃',
            ';' => '；',
            '%' => '％',
            '<' => '‹',
            '>' => '›',
            '&' => '＆',
            '\n' | '\r' => ' ',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

fn inline(text: &str) -> String {
    escape(text)
}

fn code(value: Option<&str>) -> String {
    match value {
        Some(v) => format!("<code>{}</code>", escape_code(v)),
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
    use crate::health::Failure;
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
            kind: GateKind::Health,
            analysis: None,
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
        assert!(md.contains("    health gate∶ new release :crit, p0, 40, 940"), "{md}");
        assert!(md.contains("    tickInterval 100millisecond\n"), "a 0.9 s run ticks every 100 ms: {md}");
    }

    #[test]
    fn a_huge_summary_is_cut_below_the_limit() {
        let mut r = report();
        r.warnings = (0..20_000).map(|i| format!("warning number {i} {}", "é".repeat(40))).collect();
        let md = render(&r);
        assert!(md.len() <= MAX_BYTES);
        assert!(md.ends_with("limit._\n"));
    }
    fn attempt(number: usize, body: &str, failure: Option<Failure>) -> Attempt {
        Attempt {
            number,
            at: Duration::from_millis(number as u64 * 20),
            status: Some(200),
            latency: Duration::from_millis(1),
            excerpt: body.into(),
            failure,
        }
    }

    fn table(attempts: &[Attempt]) -> String {
        let mut md = String::new();
        attempts_table(&mut md, attempts);
        md
    }

    #[test]
    fn sixty_identical_attempts_read_as_one_line_between_the_first_and_last_few() {
        let bad = || Some(Failure::BodyMismatch { missing: "ok".into() });
        let attempts: Vec<Attempt> = (1..=60).map(|n| attempt(n, "degraded", bad())).collect();
        let md = table(&attempts);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| #")).collect();
        assert_eq!(rows.len(), 7, "3 + one folded line + 3:\n{md}");
        assert!(rows[3].starts_with("| 4–57 |") && rows[3].ends_with("attempts 4–57: same failure |"), "{md}");
        assert!(!md.contains("<details>"), "nothing left to unfold: {md}");
    }

    #[test]
    fn varied_attempts_fold_into_details_with_runs_collapsed() {
        let bad = |n: usize| if n % 20 < 10 { Some(Failure::BodyMismatch { missing: "ok".into() }) } else { None };
        let attempts: Vec<Attempt> =
            (1..=60).map(|n| attempt(n, if bad(n).is_some() { "no" } else { "ok" }, bad(n))).collect();
        let md = table(&attempts);
        let (visible, folded) = md.split_once("<details>").expect("the middle folds");
        assert!(visible.contains("| 4–57 | | | | | attempts 4–57, listed below |"), "{md}");
        assert!(folded.starts_with("<summary>Attempts 4–57</summary>\n\n| # |"), "{folded}");
        assert!(
            folded.contains(
                "| 10–19 | +200ms to +380ms | 200 | 1ms | <code>ok</code> | attempts 10–19: same answer, ok |"
            ),
            "{folded}"
        );
        assert!(folded.contains("\n\n</details>"), "{folded}");
    }

    #[test]
    fn attempts_that_were_not_kept_are_named() {
        let ok = |n| attempt(n, "ok", None);
        let attempts: Vec<Attempt> = (1..=5).chain(90..=95).map(ok).collect();
        let md = table(&attempts);
        assert!(md.contains("| 6–89 | | | | | not kept (only the first and the latest are) |"), "{md}");
    }

    #[test]
    fn every_run_length_gets_a_handful_of_distinct_ticks() {
        let tick_ms = |tick: &str| {
            let digits: String = tick.chars().take_while(char::is_ascii_digit).collect();
            let n: u128 = digits.parse().unwrap();
            let unit = &tick[digits.len()..];
            n * match unit {
                "millisecond" => 1,
                "second" => 1_000,
                "minute" => 60_000,
                "hour" => 3_600_000,
                other => panic!("unknown unit {other}"),
            }
        };
        for ms in
            [40u64, 104, 300, 700, 1_600, 4_000, 9_000, 45_000, 240_000, 540_000, 2_400_000, 7_200_000, 36_000_000]
        {
            let axis = Axis::for_span(Duration::from_millis(ms));
            let step = tick_ms(axis.tick);
            assert!(u128::from(ms) / step <= 12, "{ms} ms in steps of {}: too many ticks", axis.tick);
            // The label shows the tick's own unit, so neighbours differ.
            let finest = if step < 1_000 {
                "%L"
            } else if step < 60_000 {
                "%S"
            } else {
                "%M"
            };
            assert!(axis.format.contains(finest), "{ms} ms: {} cannot show steps of {}", axis.format, axis.tick);
            // Seconds since the start are only used below a minute: %S wraps at 60.
            assert!(axis.clock == Clock::WallClock || ms < 60_000, "{ms} ms");
        }
    }

    #[test]
    fn labels_keep_their_colons_in_a_form_mermaid_accepts() {
        assert_eq!(mermaid_text("batch 1: host a#1; 50% <b>&"), "batch 1∶ host a＃1； 50％ ‹b›＆");
    }
}
