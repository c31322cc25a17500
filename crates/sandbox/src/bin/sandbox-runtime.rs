//! The container runtime stand-in as its own binary, for the sandbox's tests: the
//! same program `safe-deploy __sandbox-runtime` runs.

fn main() {
    std::process::exit(sandbox::hosts::run_runtime(std::env::args().skip(1).collect()));
}
