//! The `safe-deploy` binary: a thin shell around `cli::main`, which owns the roles and
//! returns the exit code (0 deployed or planned, 1 failed, 2 bad input, 3 rollback
//! failed or state unknown, 130 cancelled).

use std::io::Write;

fn main() {
    // The sandbox's test app runs as this same binary, so the demo and the container
    // image need nothing else. It builds its own runtime.
    let args: Vec<_> = std::env::args_os().collect();
    #[cfg(feature = "sandbox")]
    if args.get(1).is_some_and(|a| a == "__sandbox-app") {
        let rest = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(sandbox::app::run_process(rest));
    }
    // The hosts rig's `docker` stand-in, for the same reason; it needs no async runtime.
    #[cfg(feature = "sandbox")]
    if args.get(1).is_some_and(|a| a == "__sandbox-runtime") {
        let rest = args[2..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(sandbox::hosts::run_runtime(rest));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "safe-deploy: cannot start the async runtime: {e}");
            std::process::exit(3);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let code = runtime.block_on(safe_deploy::cli::main(args, &env));
    // Leave at once: a task still waiting on a hung request must not hold the exit.
    runtime.shutdown_background();
    std::process::exit(code);
}
