//! Ctrl-C at a terminal. On a runner the post step finishes what a cancelled run left
//! open; a person has no post step, so the CLI puts the recorded release back itself,
//! saying so. A second Ctrl-C stops at once and prints the exact command that finishes
//! the restore later.

use std::ffi::OsString;
use std::path::Path;

use crate::report::exit;
use crate::runner::Runner;
use crate::secret::Redactor;
use crate::shutdown::Shutdown;

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
    let mut flag = String::new();
    for arg in rest {
        has_state |= arg == "--state-file" || arg.starts_with("--state-file=");
        // Each value is made safe to show before it is quoted: quoting may change a
        // secret's characters so that the redactor no longer knows it.
        let (name, value) = match arg.split_once('=').filter(|_| arg.starts_with("--")) {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None if arg.starts_with("--") => (arg.clone(), None),
            None => (std::mem::take(&mut flag), Some(arg.clone())),
        };
        match value {
            Some(value) => {
                let shown = shown_value(&name, &value, redactor);
                words.push(if arg.starts_with("--") { format!("{name}={shown}") } else { shown });
                flag.clear();
            }
            None => {
                words.push(arg.clone());
                flag = name;
            }
        }
    }
    if !has_state {
        words.push("--state-file".into());
        words.push(state.display().to_string());
    }
    let quoted: Vec<String> =
        words.iter().map(|w| shlex::try_quote(w).map(|q| q.into_owned()).unwrap_or_else(|_| w.clone())).collect();
    quoted.join(" ")
}

/// A flag's value as the printed command may show it: secrets and header values as
/// `***`, a health URL without its query or credentials, anything else redacted.
fn shown_value(flag: &str, value: &str, redactor: &Redactor) -> String {
    let secret = crate::inputs::INPUTS.iter().any(|i| i.secret && flag == format!("--{}", i.name));
    if secret || flag == "--health-headers" {
        return "***".into();
    }
    if matches!(flag, "--health-url" | "--version-url") {
        if let Ok(url) = url::Url::parse(value) {
            return redactor.redact(&crate::http::shown(&url));
        }
    }
    redactor.redact(value)
}

/// Once the first signal has stopped the run (`first`), a second Ctrl-C (or SIGTERM,
/// SIGHUP) ends the process at once, printing how to finish the restore. Armed before
/// the run starts, so a second press while the run winds down is not lost.
pub fn second_signal_exits(first: Shutdown, runner: Runner, command: String) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        first.recv().await;
        // Listened to only now: a listener made earlier would take the first signal
        // for the second.
        let kinds = [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup()];
        let Ok(mut streams) = kinds.into_iter().map(signal).collect::<std::io::Result<Vec<_>>>() else {
            return;
        };
        let [int, term, hup] = &mut streams[..] else { return };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
        crate::terminal::stop_live();
        runner.say("Stopped before the restore finished. To finish it, run:");
        runner.say(&format!("  {command}"));
        if command.contains("***") || command.contains("?…") {
            runner.say("  (*** and ?… stand for values not printed, such as secrets: give them again)");
        }
        std::process::exit(exit::CANCELLED);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_finishing_command_is_post_with_the_state_file_and_nothing_secret() {
        let r = Redactor::default();
        let secret = r"to\k'en$1";
        r.add(secret);
        let args: Vec<OsString> = [
            "safe-deploy",
            "deploy",
            "--token",
            secret,
            "--health-url=https://u:p@app.example.com/health?key=abc",
            "--health-headers",
            "Authorization: Bearer xyz",
            "--dry-run",
            "--app",
            "web app",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let command = finishing_command(&args, Path::new("/tmp/s.state"), &r);
        assert_eq!(
            command,
            "safe-deploy post --token '***' '--health-url=https://app.example.com/health?…' --health-headers '***' \
             --dry-run --app 'web app' --state-file /tmp/s.state"
        );
    }
}
