//! Medians, paired-ratio bootstrap intervals, log-log slopes and the three-state verdicts.
//!
//! A comparison of optimizers `a` and `b` on one criterion uses the paired ratios
//! `b_s / a_s` over reporting seeds `s` (both at their own tuned rate on the same instance).
//! Steps never reached count as `cap` (the budget + 1), which understates the ratio in favour of
//! whoever did not reach; a pair where neither reached is a tie (ratio 1). The statistic is the
//! median ratio; its 95% interval is a percentile bootstrap over seeds (2000 resamples, seeded).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Median (`+inf` values sort last; empty gives NaN).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else if v[n / 2].is_infinite() {
        f64::INFINITY
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// `(median, lo, hi)` of the statistic `stat` over bootstrap resamples of `n` seeds.
pub fn bootstrap(n: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> (f64, f64, f64) {
    let all: Vec<usize> = (0..n).collect();
    let point = stat(&all);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reps: Vec<f64> = (0..2000)
        .map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            stat(&idx)
        })
        .collect();
    reps.sort_by(|a, b| a.total_cmp(b));
    (point, reps[50], reps[1949])
}

/// Paired ratios `b / a` with unreached (`+inf`) values capped at `cap`.
pub fn paired_ratios(a: &[f64], b: &[f64], cap: f64) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x.is_infinite() && y.is_infinite() {
                1.0
            } else {
                y.min(cap) / x.min(cap)
            }
        })
        .collect()
}

/// `(median ratio b/a, 95% lo, 95% hi)`.
pub fn ratio_ci(a: &[f64], b: &[f64], cap: f64, seed: u64) -> (f64, f64, f64) {
    let r = paired_ratios(a, b, cap);
    bootstrap(r.len(), seed, |idx| {
        let v: Vec<f64> = idx.iter().map(|&i| r[i]).collect();
        median(&v)
    })
}

/// Least-squares slope of `y` on `x`.
pub fn slope(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx) * (a - mx)).sum();
    sxy / sxx
}

/// A claim's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Fails,
    Inconclusive,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The smallest ratio counted as a win: differences below 20% are not read as an ordering.
pub const MIN_EFFECT: f64 = 1.2;

/// "`a` beats `b`" from the interval of the ratio `b / a`: holds when the whole interval is
/// above [`MIN_EFFECT`], fails when it is below, inconclusive when it straddles it.
pub fn beats(lo: f64, hi: f64) -> Verdict {
    if lo > MIN_EFFECT {
        Verdict::Holds
    } else if hi < MIN_EFFECT {
        Verdict::Fails
    } else {
        Verdict::Inconclusive
    }
}

/// All of `parts` hold: holds; any fails: fails; otherwise inconclusive.
pub fn all_of(parts: &[Verdict]) -> Verdict {
    if parts.contains(&Verdict::Fails) {
        Verdict::Fails
    } else if parts.iter().all(|&v| v == Verdict::Holds) {
        Verdict::Holds
    } else {
        Verdict::Inconclusive
    }
}
