//! Ctrl-C at a terminal. On a runner the post step finishes what a cancelled run left
//! open; a person has no post step, so the CLI puts the recorded release back itself,
//! saying so. A second Ctrl-C stops at once and prints the exact command that finishes
//! the restore later.

use std::ffi::OsString;
use std::path::Path;

use crate::report::exit;
use crate::runner::Runner;
use crate::secret::Redactor;

/// The command that finishes the restore: the same invocation as `post`, with the
/// state file, and every secret shown as `***` (the person gives it again).
pub fn finishing_command(args: &[OsString], state: &Path, redactor: &Redactor) -> String {
    let mut words: Vec<String> = vec!["safe-deploy".into(), "post".into()];
    let mut rest = args.iter().skip(1).map(|a| a.to_string_lossy().into_owned()).peekable();
    // The subcommand is replaced by `post`; its flags are kept as given.
    if rest.peek().is_some_and(|a| !a.starts_with('-')) {
        rest.next();
    }
    let mut has_state = false;
    for arg in rest {
        has_state |= arg == "--state-file" || arg.starts_with("--state-file=");
        words.push(arg);
    }
    if !has_state {
        words.push("--state-file".into());
        words.push(state.display().to_string());
    }
    let quoted: Vec<String> =
        words.iter().map(|w| shlex::try_quote(w).map(|q| q.into_owned()).unwrap_or_else(|_| w.clone())).collect();
    redactor.redact(&quoted.join(" "))
}

/// From now on a second Ctrl-C (or SIGTERM) ends the process at once, printing how to
/// finish the restore.
pub fn second_signal_exits(runner: Runner, command: String) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        crate::progress::stop_live();
        runner.say("Stopped before the restore finished. To finish it, run:");
        runner.say(&format!("  {command}"));
        if command.contains("***") {
            runner.say("  (*** stands for a secret: give it again, or set it in its INPUT_ variable)");
        }
        std::process::exit(exit::CANCELLED);
    });
}
