//! How a bad input is said: each problem names its input, what is wrong and the fix,
//! worded for where the inputs came from (the action's `with:` or the CLI's flags), and
//! all of them are collected so that a run reports every one at once.

use std::fmt;
use std::time::Duration;

use super::values::{parse_duration, parse_positive_duration, DURATION_FIX};
use super::{Kind, RawInputs, Surface};

/// One thing wrong with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub input: &'static str,
    pub problem: String,
    pub fix: String,
    /// Whom the message speaks to: it names the action's input or the flag.
    pub surface: Surface,
}

impl InputError {
    pub fn new(surface: Surface, input: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        // A problem often quotes the value given; one line, whatever the value held, so a
        // line break in it can never start a line of its own (a fake `::error::`).
        let problem: String = problem
            .into()
            .chars()
            .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
            .collect();
        InputError { input, problem, fix: fix.into(), surface }
    }

    /// The title of the error: `input health-url`, or `--health-url`.
    pub fn label(&self) -> String {
        self.surface.label(self.input)
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.surface {
            Surface::Action => write!(f, "input '{}': {}. {}", self.input, self.problem, self.fix),
            Surface::Cli => write!(f, "{}: {}. {}", self.surface.name(self.input), self.problem, self.fix),
        }
    }
}

/// Collects problems so that all of them are reported together, worded for the
/// surface the inputs came from.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<InputError>, Surface);

impl Problems {
    pub fn new(surface: Surface) -> Self {
        Problems(Vec::new(), surface)
    }

    pub fn surface(&self) -> Surface {
        self.1
    }

    /// How a message names an input here: `health-url` or `--health-url`.
    pub fn name(&self, input: &str) -> String {
        self.1.name(input)
    }

    /// How a message says to set an input here: `dry-run: true` or `--dry-run`.
    pub fn setting(&self, input: &str, value: &str) -> String {
        self.1.setting(input, value)
    }

    pub fn add(&mut self, input: &'static str, problem: impl Into<String>, fix: impl Into<String>) {
        self.0.push(InputError::new(self.1, input, problem, fix));
    }

    /// Runs a parser over an input's value (or default); records its error.
    pub fn parse<T>(
        &mut self,
        raw: &RawInputs,
        input: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        fix: &str,
    ) -> Option<T> {
        let value = raw.get(input)?;
        match parse(value) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.add(input, problem, fix);
                None
            }
        }
    }

    /// Reads a duration input: every one takes the same forms (see [`parse_duration`])
    /// and says the same fix. `positive`: zero is refused too.
    pub fn duration(&mut self, raw: &RawInputs, input: &'static str, positive: bool) -> Option<Duration> {
        debug_assert_eq!(super::spec(input).kind, Kind::Duration, "bug: {input} is not a duration input");
        let parse = if positive { parse_positive_duration } else { parse_duration };
        self.parse(raw, input, parse, DURATION_FIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::INPUTS;

    fn raw(pairs: &[(&str, &str)]) -> RawInputs {
        RawInputs::of(pairs)
    }

    #[test]
    fn a_bare_number_is_seconds_for_every_duration_input() {
        for spec in INPUTS.iter().filter(|i| i.kind == Kind::Duration) {
            let mut p = Problems::new(Surface::Action);
            assert_eq!(p.duration(&raw(&[(spec.name, "7")]), spec.name, true), Some(Duration::from_secs(7)));
            assert_eq!(p.duration(&raw(&[(spec.name, "7s")]), spec.name, true), Some(Duration::from_secs(7)));
            assert_eq!(p.duration(&raw(&[(spec.name, "7 s")]), spec.name, false), None);
            assert_eq!(p.0.len(), 1);
            assert!(p.0[0].fix.contains("a bare number of seconds"), "{}", p.0[0]);
        }
    }
}
