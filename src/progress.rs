//! Progress events as the runner log shows them: one plain line per event, each
//! saying what happened or what is awaited, for how long so far and how long is left.
//! (A live terminal rendering comes later; it will be another `Observer`.)

use crate::config::human;
use crate::providers::{Event, Observer};
use crate::runner::Runner;

/// Writes every event as a line through the runner (redacted like every other line).
pub struct LogLines {
    pub runner: Runner,
}

impl Observer for LogLines {
    fn event(&self, event: Event) {
        let line = match event {
            // The runner's log groups already show the steps.
            Event::StepStarted { .. } | Event::StepEnded { .. } => return,
            Event::Instance { id, state, release: Some(r) } => format!("instance {id} is {state} on {r}"),
            Event::Instance { id, state, release: None } => format!("instance {id} is {state}"),
            // Outside text: a prefix keeps any line of it from reading as a workflow command.
            Event::Log { source, line } => format!("[{source}] {line}"),
            Event::Waiting { what, elapsed, remaining } => match remaining {
                Some(left) => format!("waiting for {what}: {} so far, {} left", human(elapsed), human(left)),
                None => format!("waiting for {what}: {} so far", human(elapsed)),
            },
        };
        self.runner.say(&line);
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
