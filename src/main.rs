//! The `safe-deploy` binary: a thin shell around `cli::main`, which owns the roles and
//! returns the exit code (0 deployed or planned, 1 failed, 2 bad input, 3 rollback
//! failed or state unknown, 130 cancelled).

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("safe-deploy: cannot start the async runtime: {e}");
            std::process::exit(3);
        }
    };
    let args: Vec<_> = std::env::args_os().collect();
    let env = |name: &str| std::env::var(name).ok();
    let code = runtime.block_on(safe_deploy::cli::main(args, &env));
    // Leave at once: a task still waiting on a hung request must not hold the exit.
    runtime.shutdown_background();
    std::process::exit(code);
}
