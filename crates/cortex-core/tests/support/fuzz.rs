//! The fuzz harnesses' runner, shared by `cortex-core/tests/fuzz.rs` and
//! `cortex-gateway/src/fuzz.rs` (included there by path): proptest cases
//! for a time budget of `CORTEX_FUZZ_SECS` seconds (default 1), with a
//! fresh seed every round.

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// Seconds each harness runs for.
pub fn budget() -> Duration {
    let secs = std::env::var("CORTEX_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs.max(0.0))
}

/// Run `test` on values of `strategy` until the budget is spent, a new
/// seed each round of 32 cases.
pub fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let deadline = Instant::now() + budget();
    let mut round = 0u64;
    loop {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&round.to_le_bytes());
        seed[8..16].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
        let config = Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}, round {round} (seed {seed:?}): {e}");
        }
        round += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz {name}: {} cases", round * 32);
}
