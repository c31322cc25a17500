//! The test application as its own binary, for the Fly emulator's tests: the same
//! program `safe-deploy __sandbox-app` runs.

fn main() {
    std::process::exit(sandbox::app::run_process(std::env::args().skip(1).collect()));
}
