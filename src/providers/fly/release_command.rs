//! The release command (e.g. migrations): run once in a throw-away machine with the
//! new image, restart policy "no", destroyed when it exits. Its exit code decides
//! whether any app machine is touched.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::api::{Machine, LAUNCH_TAG, RELEASE_COMMAND_GROUP};
use super::client::FlyClient;
use crate::providers::{Context, ProviderError};

pub struct ReleaseCommand<'a> {
    pub client: &'a FlyClient,
    pub app: &'a str,
    pub command: &'a str,
    pub image: &'a str,
    /// An app machine whose region, guest and env the release machine borrows.
    pub template: &'a Machine,
    pub launch_id: &'a str,
    /// fly.toml's `[[files]]`, as the Machines API takes them.
    pub files: Option<Value>,
    /// release-command-timeout: how long the command may run.
    pub timeout: Duration,
}

impl ReleaseCommand<'_> {
    pub async fn run(&self, ctx: &Context) -> Result<(), ProviderError> {
        let sd = &ctx.shutdown;
        // A leftover from an earlier, interrupted run would confuse the exit code.
        for m in self.client.list(sd).await? {
            if m.process_group() == RELEASE_COMMAND_GROUP && !matches!(m.state.as_str(), "destroyed" | "destroying") {
                self.client.destroy(&m.id, None, sd).await?;
            }
        }
        let machine = self.client.create(self.request(), sd).await?;
        ctx.progress.instance(&machine.id, "created for the release command", Some(self.image));
        // Created with skip_launch, it settles in "stopped" before it can be started (as
        // flyctl waits for it).
        let mut poll = ctx.poll(format!("the release command machine {} to be created", machine.id), Duration::ZERO);
        // Older servers require the instance when waiting for "stopped".
        let instance = Some(machine.instance_id.as_str());
        while !self.client.wait(&machine.id, "stopped", instance, poll.left().min(Duration::from_secs(10)), sd).await? {
            poll.next("").await?;
        }
        self.client.start(&machine.id, None, sd).await?;
        ctx.progress.log("release command", &format!("`{}` started in machine {}", self.command, machine.id));
        let code = self.exit_code(&machine.id, ctx).await?;
        match code {
            0 => Ok(()),
            code => Err(ProviderError::Failed(format!(
                "release command `{}` exited with code {code} in machine {}; no app machine was changed. Its output: fly logs -a {} -i {}",
                self.command, machine.id, self.app, machine.id
            ))),
        }
    }

    fn request(&self) -> Value {
        let base = self.template.config().cloned().unwrap_or_else(|| json!({}));
        let mut env: Map<String, Value> = base.get("env").and_then(Value::as_object).cloned().unwrap_or_default();
        env.insert("RELEASE_COMMAND".into(), json!("1"));
        env.insert("FLY_PROCESS_GROUP".into(), json!(RELEASE_COMMAND_GROUP));
        let guest =
            base.get("guest").cloned().unwrap_or_else(|| json!({"cpu_kind": "shared", "cpus": 2, "memory_mb": 512}));
        let mut request = json!({
            "region": self.template.region,
            "skip_launch": true,
            "config": {
                "image": self.image,
                "init": { "cmd": shell_words(self.command) },
                "env": env,
                "guest": guest,
                "restart": { "policy": "no" },
                "auto_destroy": true,
                "dns": { "skip_registration": true },
                "metadata": {
                    "fly_process_group": RELEASE_COMMAND_GROUP,
                    "fly_platform_version": "v2",
                    LAUNCH_TAG: self.launch_id,
                },
            },
        });
        if let Some(files) = &self.files {
            request["config"]["files"] = files.clone();
        }
        request
    }

    /// Waits until the machine has exited, then reads its exit code from the events.
    async fn exit_code(&self, id: &str, ctx: &Context) -> Result<i64, ProviderError> {
        let sd = &ctx.shutdown;
        let mut poll = ctx
            .poll(format!("the release command in machine {id} to finish"), Duration::ZERO)
            .within(self.timeout, "release-command-timeout");
        loop {
            let done = self.client.wait(id, "destroyed", None, poll.left().min(Duration::from_secs(10)), sd).await?;
            let m = self.client.get(id, sd).await?;
            if done || matches!(m.state.as_str(), "stopped" | "destroyed" | "failed") {
                let events = if m.events.is_empty() { self.client.events(id, sd).await? } else { m.events };
                let exit = events.iter().filter(|e| e.kind == "exit").max_by_key(|e| e.timestamp);
                return exit.and_then(|e| e.exit_code()).ok_or_else(|| {
                    ProviderError::Failed(format!(
                        "the release command machine {id} ended without an exit code; check fly logs -i {id}"
                    ))
                });
            }
            if let Err(e) = poll.next(&m.state).await {
                // A command past its time must not run on by itself beside the old release.
                if matches!(e, ProviderError::Timeout { .. }) {
                    let _ = self.client.destroy(id, None, sd).await;
                }
                return Err(e);
            }
        }
    }
}

/// Splits a command line as a POSIX shell would for simple cases: spaces separate
/// words, single and double quotes group them, a backslash escapes one character.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn commands_split_like_a_shell_would() {
        assert_eq!(shell_words("bin/rails db:migrate"), ["bin/rails", "db:migrate"]);
        assert_eq!(shell_words(r#"sh -c "echo 'hi there'""#), ["sh", "-c", "echo 'hi there'"]);
        assert_eq!(shell_words(r"a\ b ''"), ["a b", ""]);
        assert!(shell_words("   ").is_empty());
    }
}
