//! Progress events as a person sees them. On a runner, or when piped: one plain line
//! per event, each saying what happened or what is awaited, for how long so far and how
//! long is left (a wait's lines at most every 10 s). On a terminal: a live status, one
//! line per instance or host with its state, and a spinner for the current wait with
//! its elapsed and remaining time; log lines scroll above it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use crate::inputs::human;
use crate::providers::{Event, Observer};
use crate::runner::Runner;

/// How often a wait that goes on is spoken of again in the log.
const WAIT_LINE_EVERY: Duration = Duration::from_secs(10);

/// Writes every event as a line through the runner (redacted like every other line).
pub struct LogLines {
    pub runner: Runner,
    /// The wait last spoken of, and when.
    last_wait: Mutex<Option<(String, Instant)>>,
}

impl LogLines {
    pub fn new(runner: Runner) -> Self {
        LogLines { runner, last_wait: Mutex::new(None) }
    }

    /// A wait is said when it starts, then at most every 10 s (the engine's heartbeat
    /// makes sure it is said at least that often).
    fn worth_saying(&self, what: &str) -> bool {
        let mut last = self.last_wait.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = match &*last {
            Some((said, at)) => said != what || at.elapsed() >= WAIT_LINE_EVERY,
            None => true,
        };
        if fresh {
            *last = Some((what.to_string(), Instant::now()));
        }
        fresh
    }
}

impl Observer for LogLines {
    fn event(&self, event: Event) {
        let line = match event {
            // The runner's log groups already show the steps.
            Event::StepStarted { .. } | Event::StepEnded { .. } => return,
            // The gate's own health lines say each attempt already.
            Event::Attempt { .. } => return,
            Event::Instance { id, state, release: Some(r) } => format!("instance {id} is {state} on {r}"),
            Event::Instance { id, state, release: None } => format!("instance {id} is {state}"),
            // Outside text: a prefix keeps any line of it from reading as a workflow command.
            Event::Log { source, line } => format!("[{source}] {line}"),
            Event::Waiting { what, elapsed, remaining } => {
                if !self.worth_saying(&what) {
                    return;
                }
                waiting_line(&what, elapsed, remaining)
            }
        };
        self.runner.say(&line);
    }
}

fn waiting_line(what: &str, elapsed: Duration, remaining: Option<Duration>) -> String {
    match remaining {
        Some(left) => format!("waiting for {what}: {} so far, {} left", human(elapsed), human(left)),
        None => format!("waiting for {what}: {} so far", human(elapsed)),
    }
}

/// The live status on a terminal.
pub struct Live {
    runner: Runner,
    multi: MultiProgress,
    /// The current step or wait: a spinner, what it is, elapsed and time left.
    current: ProgressBar,
    /// When the current wait began and must end: its own elapsed time and countdown.
    deadline: Arc<Mutex<Option<Instant>>>,
    since: Arc<Mutex<Option<Instant>>>,
    instances: Mutex<HashMap<String, ProgressBar>>,
    /// The current step or wait, and its latest detail (a gate's last attempt).
    status: Mutex<(String, String)>,
}

impl Live {
    /// Draws on stdout (a terminal); from now on every line goes above the display.
    pub fn start(runner: Runner) -> Live {
        let multi = crate::terminal::live();
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::default();
        let since: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (left, began) = (deadline.clone(), since.clone());
        let style = ProgressStyle::with_template("{spinner} {msg} {took}{left}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("took", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let took = began.lock().unwrap_or_else(|e| e.into_inner()).map_or(state.elapsed(), |s| s.elapsed());
                let _ = write!(w, "{}", human(took));
            })
            .with_key("left", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                if let Some(d) = *left.lock().unwrap_or_else(|e| e.into_inner()) {
                    let _ = write!(w, ", {} left", human(d.saturating_duration_since(Instant::now())));
                }
            });
        let current = multi.add(ProgressBar::new_spinner().with_style(style));
        current.enable_steady_tick(Duration::from_millis(120));
        Live { runner, multi, current, deadline, since, instances: Mutex::default(), status: Mutex::default() }
    }

    fn instance(&self, id: &str, text: String) {
        let mut bars = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(id.to_string()).or_insert_with(|| {
            let style = ProgressStyle::with_template("  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
            self.multi.insert_before(&self.current, ProgressBar::new_spinner().with_style(style))
        });
        bar.set_message(self.runner.redactor().redact(&text));
    }

    /// Shows what is under way and, when there is one, its latest detail.
    fn show(&self, what: Option<String>, detail: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = what {
            *status = (w, String::new());
        }
        if let Some(d) = detail {
            status.1 = d;
        }
        // "health gate: new release; attempt 7: body does not contain 'ok' (0 of 3 in a
        // row); 3.5s, 16.5s left"
        let text = match status.1.is_empty() {
            true => status.0.clone(),
            false => format!("{}; {};", status.0.trim_end_matches(':'), status.1),
        };
        self.current.set_message(self.runner.redactor().redact(&text));
    }

    /// Takes the display down, leaving each instance's last state on screen as a line.
    pub fn finish(&self) {
        self.current.finish_and_clear();
        self.multi.remove(&self.current);
        let mut bars: Vec<(String, ProgressBar)> =
            self.instances.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        bars.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, bar) in bars {
            let last = bar.message();
            bar.finish_and_clear();
            self.multi.remove(&bar);
            crate::terminal::print_line(&format!("  {last}"));
        }
    }
}

impl Observer for Live {
    fn event(&self, event: Event) {
        match event {
            Event::StepStarted { step } => {
                *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *self.since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.current.reset_elapsed();
                self.show(Some(step), None);
            }
            Event::StepEnded { .. } => {
                *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *self.since.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.show(Some(String::new()), None);
            }
            Event::Attempt { text, left } => {
                *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + left);
                self.show(None, Some(text));
            }
            Event::Instance { id, state, release } => {
                let on = release.map(|r| format!(" on {r}")).unwrap_or_default();
                self.instance(&id, format!("{id}  {state}{on}"));
            }
            Event::Log { source, line } => self.runner.say(&format!("[{source}] {line}")),
            Event::Waiting { what, elapsed, remaining } => {
                *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = remaining.map(|r| Instant::now() + r);
                *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now().checked_sub(elapsed);
                // A heartbeat of the same wait keeps the detail; a new wait starts bare.
                let same = self.status.lock().unwrap_or_else(|e| e.into_inner()).0 == format!("waiting for {what}:");
                match same {
                    true => self.show(None, None),
                    false => self.show(Some(format!("waiting for {what}:")), None),
                }
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
pub mod testing {
    //! An observer that keeps every event, for tests.

    use std::sync::Mutex;

    use crate::providers::{Event, Observer};

    #[derive(Default)]
    pub struct Recorded(pub Mutex<Vec<Event>>);

    impl Observer for Recorded {
        fn event(&self, event: Event) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        }
    }
}
