//! Metrics against values computed by hand.

use privdistill::eval::metrics::{accuracy_at, bootstrap_ci, quantile, retrieval_metrics, roc_auc, roc_auc_ci, roc_curve};

#[test]
fn auc_counts_pairs_and_ties() {
    // Positives 0.9, 0.5; negatives 0.5, 0.1. Pairs: (0.9>0.5) 1, (0.9>0.1) 1, (0.5=0.5) 1/2, (0.5>0.1) 1 -> 3.5/4.
    let auc = roc_auc(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
    assert!((auc - 0.875).abs() < 1e-12, "{auc}");
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, false]).unwrap(), 0.0);
    assert_eq!(roc_auc(&[0.3, 0.3, 0.3], &[true, false, true]).unwrap(), 0.5);
    assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_err());
    assert!(roc_auc(&[0.1, f64::NAN], &[true, false]).is_err());
    assert!(roc_auc(&[0.1], &[true, false]).is_err());
}

#[test]
fn roc_curve_steps_through_distinct_scores() {
    let pts = roc_curve(&[0.9, 0.5, 0.5, 0.1], &[true, true, false, false]).unwrap();
    let got: Vec<(f64, f64)> = pts.iter().map(|p| (p.fpr, p.tpr)).collect();
    assert_eq!(got, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    // Trapezoid area under the curve equals the rank AUC.
    let area: f64 = got.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
    assert!((area - 0.875).abs() < 1e-12);
}

#[test]
fn accuracy_and_quantile() {
    assert_eq!(accuracy_at(&[0.9, 0.4, 0.6, 0.2], &[true, true, false, false], 0.5).unwrap(), 0.5);
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
    assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.0), 1.0);
    assert!((quantile(&[0.0, 10.0], 0.975) - 9.75).abs() < 1e-12);
}

#[test]
fn bootstrap_is_seeded_and_brackets_the_value() {
    let data: Vec<f64> = (0..50).map(|i| (i as f64 * 0.37).sin()).collect();
    let mean = |idx: &[usize]| Ok(idx.iter().map(|&i| data[i]).sum::<f64>() / idx.len() as f64);
    let a = bootstrap_ci(data.len(), 500, 0.95, 7, mean).unwrap();
    let b = bootstrap_ci(data.len(), 500, 0.95, 7, mean).unwrap();
    assert_eq!(a, b);
    assert!(a.lo < a.value && a.value < a.hi);
    // The bootstrap standard error of a mean is about sd/sqrt(n); the 95% interval spans ~3.9 of them.
    let m = a.value;
    let sd = (data.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / data.len() as f64).sqrt();
    let width = a.hi - a.lo;
    let expected = 2.0 * 1.96 * sd / (data.len() as f64).sqrt();
    assert!((width / expected - 1.0).abs() < 0.25, "width {width}, expected about {expected}");
    assert!(bootstrap_ci(3, 10, 1.5, 0, mean).is_err());
    // Perfect separation: every defined resample has AUC 1.
    let ci = roc_auc_ci(&[0.9, 0.8, 0.2, 0.1], &[true, true, false, false], 200, 0.95, 1).unwrap();
    assert_eq!((ci.value, ci.lo, ci.hi), (1.0, 1.0, 1.0));
    assert!(ci.resamples < 200, "resamples with one class are skipped");
}

#[test]
fn retrieval_metrics_by_hand() {
    // Points on a line; classes a = {0, 1, 5}, b = {2, 3}; item 4 is alone in class c.
    let pos: [f64; 6] = [0.0, 1.0, 2.0, 3.0, 10.0, 1.5];
    let labels = [0, 0, 1, 1, 2, 0];
    let m = retrieval_metrics(&labels, |i, j| (pos[i] - pos[j]).abs()).unwrap();
    // Query 0 (R=2): ranked 1(a) 5(a) -> AP 1.  Query 1 (R=2): 0 and 5 tie at 1.0 vs 0.5 -> 5(a), 0(a) -> AP 1.
    // Query 5 (R=2): 1 (0.5,a), 2 (0.5,b) tie -> index order 1 then 2; top-2 = 1(a), 2(b) -> AP (1/1)/2 = 0.5.
    // Query 2 (R=1): nearest is 5 (0.5, a) -> AP 0.  Query 3 (R=1): nearest 2 (b) -> AP 1.
    // Item 4 has no other of its class: skipped.
    assert_eq!(m.queries, 5);
    assert!((m.map_at_r - (1.0 + 1.0 + 0.5 + 0.0 + 1.0) / 5.0).abs() < 1e-12, "{m:?}");
    // P@1: queries 0 (1,a) yes, 1 (5,a) yes, 5 (1,a) yes, 2 (5,a) no, 3 (2,b) yes -> 4/5.
    assert!((m.precision_at_1 - 0.8).abs() < 1e-12);
    assert!(retrieval_metrics(&[0, 1, 2], |_, _| 0.0).is_err());
}
