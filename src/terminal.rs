//! Where every line the program prints to the terminal goes: above the live display
//! when one is drawn, so that the two never garble each other, and plainly otherwise.
//! The runner's lines and the progress display both write through here.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressDrawTarget};

/// The terminal's live display, once one is drawn: every line printed while it is up
/// goes above it, so the two never garble each other.
static LIVE: OnceLock<MultiProgress> = OnceLock::new();

/// The live display, drawn on stdout from the first time it is asked for.
pub fn live() -> MultiProgress {
    LIVE.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout())).clone()
}

/// Set once the live display is taken down for good (a second Ctrl-C).
static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Takes the live display down for good, so the last lines printed are plain ones.
pub fn stop_live() {
    if let Some(live) = LIVE.get() {
        let _ = live.clear();
        live.set_draw_target(ProgressDrawTarget::hidden());
    }
    STOPPED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Prints one line on stdout, above the live display when there is one.
pub fn print_line(text: &str) {
    use std::io::Write;
    match LIVE.get().filter(|_| !STOPPED.load(std::sync::atomic::Ordering::SeqCst)) {
        Some(live) => {
            let _ = live.println(text);
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

/// Runs `f` (a write to stderr) with the live display out of the way.
pub fn suspended<T>(f: impl FnOnce() -> T) -> T {
    match LIVE.get() {
        Some(live) => live.suspend(f),
        None => f(),
    }
}
