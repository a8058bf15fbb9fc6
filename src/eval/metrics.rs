//! Scalar metrics shared by training reports and the evaluation: ROC AUC
//! (ties handled as the Mann–Whitney statistic does), ROC curves, accuracy at a
//! threshold, percentile-bootstrap confidence intervals, and the retrieval
//! metrics mAP@R and Precision@1 (Musgrave et al., "A Metric Learning Reality
//! Check", 2020).

use crate::{Error, Result, Rng};

/// Area under the ROC curve of `scores` for binary `labels` (true = positive):
/// the probability that a random positive scores above a random negative,
/// counting ties as one half. Errors when either class is absent.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    check_lengths(scores, labels, "roc_auc")?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::msg(format!("roc_auc: needs both classes, got {n_pos} positives and {n_neg} negatives")));
    }
    // Rank-sum form with average ranks for ties: O(n log n) and exact.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum_pos += average_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Ok(u / (n_pos as f64 * n_neg as f64))
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RocPoint {
    /// Scores ≥ this count as positive. JSON has no infinity, so the first point's +∞ is written as
    /// `null` and read back as +∞.
    #[serde(deserialize_with = "threshold_or_infinity")]
    pub threshold: f64,
    /// False-positive rate.
    pub fpr: f64,
    /// True-positive rate.
    pub tpr: f64,
}

fn threshold_or_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The ROC curve, from (0, 0) at threshold +∞ to (1, 1), one point per
/// distinct score.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>> {
    check_lengths(scores, labels, "roc_curve")?;
    let n_pos = labels.iter().filter(|&&l| l).count() as f64;
    let n_neg = labels.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return Err(Error::msg("roc_curve: needs both classes"));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![RocPoint { threshold: f64::INFINITY, fpr: 0.0, tpr: 0.0 }];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let threshold = scores[order[i]];
        while i < order.len() && scores[order[i]] == threshold {
            if labels[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        points.push(RocPoint { threshold, fpr: fp / n_neg, tpr: tp / n_pos });
    }
    Ok(points)
}

/// Fraction of predictions `score ≥ threshold` that equal the label.
pub fn accuracy_at(scores: &[f64], labels: &[bool], threshold: f64) -> Result<f64> {
    check_lengths(scores, labels, "accuracy_at")?;
    if scores.is_empty() {
        return Err(Error::msg("accuracy_at: no scores"));
    }
    let correct = scores.iter().zip(labels).filter(|(&s, &l)| (s >= threshold) == l).count();
    Ok(correct as f64 / scores.len() as f64)
}

/// A statistic with its percentile-bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    /// The statistic on the full sample.
    pub value: f64,
    /// Lower end of the interval.
    pub lo: f64,
    /// Upper end of the interval.
    pub hi: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Resamples that gave a defined statistic (resamples lacking a class are skipped).
    pub resamples: usize,
}

/// Percentile bootstrap of `statistic` over `n` items: `resamples` draws of
/// `n` indices with replacement (seeded), the statistic on each, and the
/// `(1 - level) / 2` and `(1 + level) / 2` quantiles (linear interpolation).
/// Resamples on which the statistic errors (e.g. an AUC resample with one
/// class) are skipped and not counted; errors if none succeed.
pub fn bootstrap_ci(n: usize, resamples: usize, level: f64, seed: u64, statistic: impl Fn(&[usize]) -> Result<f64>) -> Result<Estimate> {
    if !(level > 0.0 && level < 1.0) {
        return Err(Error::msg(format!("bootstrap_ci: level {level} must lie in (0, 1)")));
    }
    let all: Vec<usize> = (0..n).collect();
    let value = statistic(&all)?;
    let mut rng = Rng::new(seed);
    let mut values = Vec::with_capacity(resamples);
    let mut idx = vec![0usize; n];
    for _ in 0..resamples {
        for slot in idx.iter_mut() {
            *slot = rng.below(n);
        }
        if let Ok(v) = statistic(&idx) {
            if v.is_finite() {
                values.push(v);
            }
        }
    }
    if values.is_empty() {
        return Err(Error::msg("bootstrap_ci: no resample gave a defined statistic"));
    }
    values.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    Ok(Estimate { value, lo: quantile(&values, alpha), hi: quantile(&values, 1.0 - alpha), level, resamples: values.len() })
}

/// ROC AUC with a percentile-bootstrap interval (resampling score/label pairs).
pub fn roc_auc_ci(scores: &[f64], labels: &[bool], resamples: usize, level: f64, seed: u64) -> Result<Estimate> {
    check_lengths(scores, labels, "roc_auc_ci")?;
    bootstrap_ci(scores.len(), resamples, level, seed, |idx| {
        let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
        let l: Vec<bool> = idx.iter().map(|&i| labels[i]).collect();
        roc_auc(&s, &l)
    })
}

/// Quantile `q` ∈ [0, 1] of sorted values, linear interpolation between order
/// statistics (numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Retrieval quality over a query set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RetrievalMetrics {
    /// Mean average precision at R (R = number of other items of the query's class).
    pub map_at_r: f64,
    /// Fraction of queries whose nearest neighbour has the query's class.
    pub precision_at_1: f64,
    /// Queries that had at least one other item of their class (the rest are skipped).
    pub queries: usize,
}

/// mAP@R and Precision@1 with every item as a query against all the others
/// (leave-one-out), ranked by ascending `distance(i, j)`; ties broken by index.
/// For query q with R other items of its class: AP@R = (1/R) Σ_{i ≤ R} P(i)·rel(i).
pub fn retrieval_metrics(labels: &[usize], distance: impl Fn(usize, usize) -> f64) -> Result<RetrievalMetrics> {
    let n = labels.len();
    let (mut map_sum, mut p1_sum, mut queries) = (0.0, 0.0, 0usize);
    for q in 0..n {
        let r = labels.iter().enumerate().filter(|&(j, &l)| j != q && l == labels[q]).count();
        if r == 0 {
            continue;
        }
        let mut others: Vec<(f64, usize)> = (0..n).filter(|&j| j != q).map(|j| (distance(q, j), j)).collect();
        others.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut hits = 0usize;
        let mut ap = 0.0;
        for (rank, &(_, j)) in others.iter().take(r).enumerate() {
            if labels[j] == labels[q] {
                hits += 1;
                ap += hits as f64 / (rank + 1) as f64;
            }
        }
        map_sum += ap / r as f64;
        p1_sum += f64::from(u8::from(labels[others[0].1] == labels[q]));
        queries += 1;
    }
    if queries == 0 {
        return Err(Error::msg("retrieval_metrics: no class has two or more items"));
    }
    Ok(RetrievalMetrics { map_at_r: map_sum / queries as f64, precision_at_1: p1_sum / queries as f64, queries })
}

fn check_lengths(scores: &[f64], labels: &[bool], op: &str) -> Result<()> {
    if scores.len() != labels.len() {
        return Err(Error::msg(format!("{op}: {} scores but {} labels", scores.len(), labels.len())));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(Error::msg(format!("{op}: score {i} is {}", scores[i])));
    }
    Ok(())
}
