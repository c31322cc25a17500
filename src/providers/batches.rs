//! How a roll-out over instances (Fly machines, hosts) is cut into batches: one policy
//! for every provider that has batches, read from one input, `max-unavailable`.

use crate::inputs::{self, Group, InputSpec};

/// The providers whose roll-out has batches of instances.
pub const BATCHED: &[&str] = &["fly", "ssh", "digitalocean-droplets"];

/// The input every batched provider reads: in its `Registration::inputs`.
pub const INPUTS: &[InputSpec] = &[
    inputs::of(BATCHED, Group::Rollout, "max-unavailable", "", "Fly (rolling), hosts over SSH and droplets: how many machines or hosts change at once after the first, which always goes alone: a count (2) or a fraction of them all (0.33). Never all of them at once: one keeps serving. Empty: Fly: fly.toml's [deploy] max_unavailable, else 0.33; hosts: max-parallel, else 1."),
];

/// How many instances may change at once: a count, or a fraction of them all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSize {
    Count(usize),
    Fraction(f64),
}

/// The fix every batch size error gives.
pub const BATCH_SIZE_FIX: &str = "Give a count of instances such as 2, or a fraction of them such as 0.33.";

impl BatchSize {
    /// `2` or `0.33`: a whole count above zero, or a fraction between 0 and 1.
    pub fn parse(text: &str) -> Result<BatchSize, String> {
        let text = text.trim();
        if let Ok(count) = text.parse::<usize>() {
            return match count {
                0 => Err("0 would never change anything".into()),
                c => Ok(BatchSize::Count(c)),
            };
        }
        match text.parse::<f64>() {
            Ok(f) if f > 0.0 && f < 1.0 => Ok(BatchSize::Fraction(f)),
            _ => Err(format!("'{text}' is not a fraction between 0 and 1 or a whole count")),
        }
    }

    /// How many of `total` instances change together: at least one.
    pub fn of(self, total: usize) -> usize {
        let n = match self {
            BatchSize::Count(c) => c,
            BatchSize::Fraction(f) => (f * total as f64).ceil() as usize,
        };
        n.clamp(1, total.max(1))
    }
}

/// How many of `total` instances may change (or be put back) together: the size, but
/// never all of them while there are two or more.
pub fn most_at_once(total: usize, size: BatchSize) -> usize {
    size.of(total).min(total.saturating_sub(1)).max(1)
}

/// The instances' indexes, batch by batch. The first instance goes alone: a release
/// that fails then fails on one. The rest go `size` at a time, and never every instance
/// in one batch while there are two or more: one always keeps serving the old release.
pub fn cut(total: usize, size: BatchSize) -> Vec<Vec<usize>> {
    if total == 0 {
        return Vec::new();
    }
    let at_once = most_at_once(total, size);
    let rest: Vec<usize> = (1..total).collect();
    std::iter::once(vec![0]).chain(rest.chunks(at_once).map(<[usize]>::to_vec)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_instance_goes_alone_then_the_size_at_a_time() {
        assert_eq!(cut(4, BatchSize::Count(1)), [vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(cut(5, BatchSize::Count(2)), [vec![0], vec![1, 2], vec![3, 4]]);
        assert_eq!(cut(6, BatchSize::Fraction(0.33)), [vec![0], vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(cut(1, BatchSize::Count(3)), [vec![0]]);
        assert!(cut(0, BatchSize::Count(1)).is_empty());
    }

    #[test]
    fn no_batch_ever_holds_every_instance() {
        for total in 2..12 {
            for size in [BatchSize::Count(1), BatchSize::Count(total), BatchSize::Count(99), BatchSize::Fraction(0.99)]
            {
                let batches = cut(total, size);
                assert!(batches.iter().all(|b| b.len() < total), "{total} {size:?}: {batches:?}");
                let all: Vec<usize> = batches.concat();
                assert_eq!(all, (0..total).collect::<Vec<_>>(), "every instance once, in order");
            }
        }
    }

    #[test]
    fn at_most_all_but_one_change_together() {
        assert_eq!(most_at_once(4, BatchSize::Count(9)), 3);
        assert_eq!(most_at_once(4, BatchSize::Fraction(0.99)), 3);
        assert_eq!(most_at_once(4, BatchSize::Count(2)), 2);
        assert_eq!(most_at_once(1, BatchSize::Count(9)), 1);
        assert_eq!(most_at_once(0, BatchSize::Count(1)), 1);
    }

    #[test]
    fn a_size_is_a_count_or_a_fraction() {
        assert_eq!(BatchSize::parse("2"), Ok(BatchSize::Count(2)));
        assert_eq!(BatchSize::parse("0.5").map(|s| s.of(5)), Ok(3));
        assert_eq!(BatchSize::parse("9").map(|s| s.of(3)), Ok(3));
        for bad in ["0", "1.0", "-1", "1.5", "half", ""] {
            assert!(BatchSize::parse(bad).is_err(), "{bad}");
        }
    }
}
