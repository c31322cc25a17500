//! One integration-test binary (ripgrep's layout): each module is a topic, and each
//! test reads as the story it checks. Tests run the real `safe-deploy` binary with a
//! synthetic runner environment against the sandbox, on loopback only.

mod util;

mod action_yml;
mod analysis;
mod aws_credentials;
mod cli;
mod conformance;
mod deploy_stories;
mod digitalocean;
mod ecs;
mod fly;
mod github;
mod health_gate;
mod heroku;
mod hosts;
mod hosts_real;
mod http_layer;
mod input_errors;
mod properties;
mod readme;
mod secrets;
mod signals;
mod summaries;
mod terminal;
