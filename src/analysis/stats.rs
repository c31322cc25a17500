//! The two tests the built-in analysis decides with, so a noisy app or machine does not
//! flap: a release is worse only when it is past the threshold *and* the difference is
//! unlikely to be chance.
//!
//! - Errors: Fisher's exact test, one-sided. Error counts are small (0 to a few dozen in
//!   a few hundred requests), where the normal approximation of a two-proportion z-test
//!   is poor; the exact hypergeometric tail is cheap at these sizes.
//! - Latency: the Mann-Whitney U test, one-sided, with the normal approximation and the
//!   correction for ties. Latencies are skewed and long-tailed, so a test on ranks, not
//!   on means, is the honest one (Kayenta compares series the same way).

/// The probability of seeing at least `new_errors` errors among `new_total` answers of
/// the new release if both releases failed at the same rate: small means the new one is
/// worse. 1 when there is nothing to compare.
pub fn fisher_worse(base_errors: usize, base_total: usize, new_errors: usize, new_total: usize) -> f64 {
    let population = base_total + new_total;
    let failures = base_errors + new_errors;
    if population == 0 || new_total == 0 || failures == 0 {
        return 1.0;
    }
    let ln_fact = LnFactorials::upto(population);
    let ln_choose = |n: usize, k: usize| ln_fact.get(n) - ln_fact.get(k) - ln_fact.get(n - k);
    let whole = ln_choose(population, new_total);
    let most = failures.min(new_total);
    // The new release's draws hold k of the failures: hypergeometric.
    let p: f64 = (new_errors..=most)
        .filter(|&k| new_total - k <= population - failures)
        .map(|k| (ln_choose(failures, k) + ln_choose(population - failures, new_total - k) - whole).exp())
        .sum();
    p.min(1.0)
}

/// The probability that the new latencies rank this high above the baseline's by
/// chance: small means the new release is slower. 1 when either side is empty.
pub fn mann_whitney_slower(baseline: &[f64], new: &[f64]) -> f64 {
    let (n1, n2) = (new.len() as f64, baseline.len() as f64);
    if new.is_empty() || baseline.is_empty() {
        return 1.0;
    }
    // Rank both together; equal values share the mean of their ranks.
    let mut all: Vec<(f64, bool)> =
        new.iter().map(|&v| (v, true)).chain(baseline.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum_new, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let shared = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum_new += shared * all[i..=j].iter().filter(|(_, is_new)| *is_new).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_new - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let nn = n as f64;
    let variance = n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)));
    if variance <= 0.0 {
        // Every value the same: no side ranks higher.
        return 1.0;
    }
    let z = (u - mean - 0.5) / variance.sqrt();
    upper_tail(z)
}

/// P(Z > z) for a standard normal Z.
fn upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// ln(k!) for k up to a bound, summed once.
struct LnFactorials(Vec<f64>);

impl LnFactorials {
    fn upto(n: usize) -> Self {
        let mut v = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        v.push(0.0);
        for k in 1..=n {
            acc += (k as f64).ln();
            v.push(acc);
        }
        LnFactorials(v)
    }

    fn get(&self, k: usize) -> f64 {
        self.0[k]
    }
}

/// The `p`-th percentile (0 to 100) of sorted values, by the nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fisher_matches_the_textbook_tea_tasting_table() {
        // Fisher's lady tasting tea: 3 of 4 right, one-sided p = 17/70.
        assert!((fisher_worse(1, 4, 3, 4) - 17.0 / 70.0).abs() < 1e-9);
        // Nothing failed on either side: no evidence at all.
        assert_eq!(fisher_worse(0, 300, 0, 300), 1.0);
    }

    #[test]
    fn five_percent_errors_against_none_is_significant_and_one_error_is_not() {
        assert!(fisher_worse(0, 300, 15, 300) < 0.001);
        assert!(fisher_worse(0, 300, 1, 300) > 0.4);
        // Both at 5 %: the new one is not worse.
        assert!(fisher_worse(15, 300, 15, 300) > 0.4);
    }

    #[test]
    fn mann_whitney_tells_a_slower_series_from_the_same_one() {
        let base: Vec<f64> = (0..200).map(|i| 10.0 + (i % 7) as f64).collect();
        let slower: Vec<f64> = base.iter().map(|v| v * 3.0).collect();
        assert!(mann_whitney_slower(&base, &slower) < 1e-6);
        assert!(mann_whitney_slower(&base, &base) > 0.4);
        // Faster is not slower.
        assert!(mann_whitney_slower(&slower, &base) > 0.99);
        // All equal: ties everywhere, no verdict.
        assert_eq!(mann_whitney_slower(&[5.0; 10], &[5.0; 10]), 1.0);
    }

    #[test]
    fn mann_whitney_agrees_with_a_known_small_example() {
        // U for new = {4, 5, 6} over base = {1, 2, 3} is 9 (every pair), the largest
        // possible; the normal approximation's one-sided p is about 0.04.
        let p = mann_whitney_slower(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert!((0.03..0.05).contains(&p), "{p}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
