//! Talking to the GitHub Actions runner, or to a person at a terminal.
//!
//! On a runner: workflow commands on stdout (masks, groups, annotations), and the
//! file commands (`GITHUB_OUTPUT`, `GITHUB_STATE`, `GITHUB_STEP_SUMMARY`). On a
//! terminal: plain lines, and files only where flags ask for them. Every line passes
//! the redactor first.

pub mod commands;
pub mod files;

use std::io::Write;
use std::path::PathBuf;

use crate::secret::Redactor;
use commands::{escape_data, escape_property, visible};

/// Where the run's files go, read from the runner's variables or given by flags.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub output: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    /// `RUNNER_TEMP`: shared by the main and post steps for the whole job.
    pub temp: Option<PathBuf>,
    /// The state file is this program's own (made new by this run, or a state file it
    /// wrote, given to `post`): it may be removed once nothing is left to resume.
    pub state_ours: bool,
    /// Off a runner, a restore after Ctrl-C: its summary replaces what the stopped run
    /// wrote after this length, when it is written (not before, so that a second Ctrl-C
    /// leaves the stopped run's summary, not an empty file).
    pub summary_from: Option<u64>,
    /// The summary file is one this run made in the temp folder (none was named): a run
    /// that stops at bad input, said on the terminal already, takes it away again.
    pub summary_ours: bool,
}

#[derive(Clone)]
pub struct Runner {
    /// `GITHUB_ACTIONS=true`: speak workflow commands.
    pub on_runner: bool,
    pub paths: Paths,
    /// Colour on stdout: a terminal, not a runner (it has its own), and no `NO_COLOR`.
    pub colour: bool,
    /// stdout is a terminal a person watches (not a runner, not a pipe): a live status.
    pub terminal: bool,
    redactor: Redactor,
}

impl Runner {
    pub fn new(on_runner: bool, paths: Paths, redactor: Redactor) -> Self {
        let (terminal, colour) = terminal(on_runner, |name| std::env::var(name).ok());
        Runner { on_runner, paths, colour, terminal, redactor }
    }

    /// Reads `GITHUB_ACTIONS`, `GITHUB_OUTPUT`, `GITHUB_STATE` and `GITHUB_STEP_SUMMARY`.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>, redactor: Redactor) -> Self {
        let path = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let on_runner = lookup("GITHUB_ACTIONS").as_deref() == Some("true");
        let (terminal, colour) = terminal(on_runner, &lookup);
        Runner {
            on_runner,
            colour,
            terminal,
            paths: Paths {
                output: path("GITHUB_OUTPUT"),
                state: path("GITHUB_STATE"),
                summary: path("GITHUB_STEP_SUMMARY"),
                temp: path("RUNNER_TEMP"),
                state_ours: false,
                summary_from: None,
                summary_ours: false,
            },
            redactor,
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Registers a secret: masked by the runner from now on, and redacted by us.
    pub fn mask(&self, secret: &str) {
        if self.redactor.add(secret) && self.on_runner {
            raw_line(&format!("::add-mask::{}", escape_data(secret.trim())));
            // Each line of a multi-line secret too, since logs are masked line by line.
            let lines: Vec<&str> = secret.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            if lines.len() > 1 {
                for line in lines {
                    self.redactor.add(line);
                    raw_line(&format!("::add-mask::{}", escape_data(line)));
                }
            }
        }
    }

    /// A progress line.
    pub fn say(&self, text: &str) {
        raw_line(&self.redactor.redact(text));
    }

    /// The run's last line on a terminal: the outcome, in its colour when colour is on.
    pub fn outcome(&self, outcome: crate::report::Outcome, text: &str) {
        use crate::report::Outcome;
        let text = self.redactor.redact(text);
        if !self.colour {
            return raw_line(&text);
        }
        let style = match outcome {
            Outcome::Deployed => console::Style::new().green().bold(),
            Outcome::Planned => console::Style::new().cyan().bold(),
            Outcome::Cancelled => console::Style::new().yellow().bold(),
            Outcome::RolledBack | Outcome::Failed => console::Style::new().red().bold(),
            Outcome::RollbackFailed => console::Style::new().white().on_red().bold(),
        };
        raw_line(&style.force_styling(true).apply_to(text).to_string());
    }

    pub fn group(&self, title: &str) {
        if self.on_runner {
            raw_line(&format!("::group::{}", escape_data(&self.redactor.redact(title))));
        } else {
            raw_line(&format!("== {}", self.redactor.redact(title)));
        }
    }

    pub fn end_group(&self) {
        if self.on_runner {
            raw_line("::endgroup::");
        }
    }

    pub fn error(&self, title: &str, message: &str) {
        self.annotate("error", title, message);
    }

    pub fn warning(&self, title: &str, message: &str) {
        self.annotate("warning", title, message);
    }

    pub fn notice(&self, title: &str, message: &str) {
        self.annotate("notice", title, message);
    }

    fn annotate(&self, kind: &str, title: &str, message: &str) {
        let title = visible(&self.redactor.redact(title));
        let message = visible(&self.redactor.redact(message));
        if self.on_runner {
            raw_line(&format!("::{kind} title={}::{}", escape_property(&title), escape_data(&message)));
        } else {
            crate::terminal::suspended(|| writeln!(std::io::stderr().lock(), "{kind}: {title}: {message}").ok());
        }
    }

    /// Prints text that came from outside (response bodies, logs) so that no line of it
    /// can be taken for a workflow command.
    pub fn untrusted(&self, text: &str) {
        let text = self.redactor.redact(text);
        if self.on_runner {
            let token = commands::stop_token();
            raw_line(&format!("::stop-commands::{token}"));
            raw_line(&text);
            raw_line(&format!("::{token}::"));
        } else {
            raw_line(&text);
        }
    }

    pub fn set_output(&self, name: &str, value: &str) -> std::io::Result<()> {
        match &self.paths.output {
            Some(path) => files::append(path, name, &self.redactor.redact(value)),
            None => Ok(()),
        }
    }

    pub fn save_state(&self, name: &str, value: &str) -> std::io::Result<()> {
        match &self.paths.state {
            Some(path) => files::append(path, name, &self.redactor.redact(value)),
            None => Ok(()),
        }
    }
}

/// Whether stdout is a terminal a person watches (not a runner, which has its own
/// rendering; not a pipe; not TERM=dumb), and whether to colour it (not with NO_COLOR).
fn terminal(on_runner: bool, lookup: impl Fn(&str) -> Option<String>) -> (bool, bool) {
    let dumb = lookup("TERM").as_deref() == Some("dumb");
    let terminal = !on_runner && !dumb && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let no_colour = lookup("NO_COLOR").is_some_and(|v| !v.is_empty());
    (terminal, terminal && !no_colour)
}

/// One line on stdout, flushed at once so it keeps its place among the others (and
/// above the terminal's live status, when one is drawn).
fn raw_line(text: &str) {
    crate::terminal::print_line(text);
}
