//! The long fuzz run: the property tests' generators (`bench/src/strategies.rs`) fed to
//! the same targets (`safe_deploy::fuzz`) for as long as asked, round after round, each
//! round from a seed in `bench/fuzz-seeds.txt`, so any failure can be replayed. A panic
//! in a target fails the run and prints the seed and the shrunk input.
//!
//! Usage: fuzz [MINUTES] [SEEDS_FILE]   (default 10 minutes, bench/fuzz-seeds.txt)

use std::time::{Duration, Instant};

use bench::strategies;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use safe_deploy::fuzz;

/// Cases per target per round: small rounds, so the time limit is kept closely.
const CASES: u32 = 2_000;

fn round<S: Strategy>(seed: &[u8; 32], strategy: S, test: impl Fn(S::Value) -> bool) -> Result<u32, String>
where
    S::Value: std::fmt::Debug,
{
    let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, seed));
    runner
        .run(&strategy, |v| {
            proptest::prop_assert!(test(v));
            Ok(())
        })
        .map(|()| CASES)
        .map_err(|e| e.to_string())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let minutes: f64 = args.next().and_then(|m| m.parse().ok()).unwrap_or(10.0);
    let seeds_file = args.next().unwrap_or_else(|| "bench/fuzz-seeds.txt".into());
    let seeds: Vec<[u8; 32]> = std::fs::read_to_string(&seeds_file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut seed = [0u8; 32];
            for (i, b) in l.trim().as_bytes().chunks(2).take(32).enumerate() {
                seed[i] = u8::from_str_radix(std::str::from_utf8(b).unwrap_or("0"), 16).unwrap_or(0);
            }
            seed
        })
        .collect();
    if seeds.is_empty() {
        eprintln!("fuzz: no seeds in {seeds_file}; each line is 64 hex digits");
        std::process::exit(2);
    }
    // A panic inside a target is what we look for: keep its message short.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let workspace = std::path::Path::new("/nonexistent-workspace");
    let (mut rounds, mut cases) = (0u64, 0u64);
    let mut pass = 0u64;
    'run: loop {
        for (n, base) in seeds.iter().enumerate() {
            if Instant::now() >= until {
                break 'run;
            }
            // Each pass over the seeds explores further: the pass number is folded in.
            let mut seed = *base;
            for (b, p) in seed.iter_mut().zip(pass.to_le_bytes()) {
                *b ^= p;
            }
            let seed = &seed;
            let results = [
                (
                    "inputs",
                    round(seed, strategies::inputs(), |p| {
                        fuzz::inputs(&p, workspace);
                        true
                    }),
                ),
                (
                    "values",
                    round(seed, strategies::text(), |t| {
                        fuzz::values(&t);
                        true
                    }),
                ),
                (
                    "fly answers",
                    round(seed, strategies::answer(), |b| {
                        fuzz::fly_answer(&b);
                        true
                    }),
                ),
                (
                    "fly.toml",
                    round(seed, (strategies::fly_toml(), strategies::answer()), |(t, e)| {
                        fuzz::fly_toml(&t, &e);
                        true
                    }),
                ),
                (
                    "health bodies",
                    round(seed, (strategies::text(), strategies::text()), |(b, v)| {
                        fuzz::health_body(&b, &v);
                        true
                    }),
                ),
                (
                    "github payloads",
                    round(seed, strategies::answer(), |b| {
                        fuzz::github_payload(&b);
                        true
                    }),
                ),
                ("redaction", round(seed, ("[!-~]{8,40}", strategies::text()), |(s, t)| fuzz::redaction(&s, &t))),
            ];
            for (target, result) in results {
                match result {
                    Ok(n) => cases += u64::from(n),
                    Err(e) => {
                        println!("fuzz: {target} FAILED with seed {} (line {}, pass {pass}): {e}", hex(seed), n + 3);
                        std::process::exit(1);
                    }
                }
            }
            rounds += 1;
        }
        pass += 1;
        if Instant::now() >= until {
            break;
        }
        println!("fuzz: {cases} cases in {rounds} rounds so far");
    }
    println!("fuzz: {cases} cases in {rounds} rounds over {minutes} min, 7 targets: no panic, no surviving secret");
}

fn hex(seed: &[u8; 32]) -> String {
    seed.iter().map(|b| format!("{b:02x}")).collect()
}
