//! The siamese re-identification head, fused: branch sigmoid, |a − b|,
//! Linear(D → 1) and (optionally) binary cross-entropy, in one pass over the
//! embeddings — forward and backward.

use crate::backend::op::sigmoid;
use crate::tensor::Float;

/// Forward: logits [N] from pre-sigmoid embeddings a, b [N, D], weight [D], bias.
pub fn siamese_head_fwd<T: Float>(a: &[T], b: &[T], weight: &[T], bias: T, d: usize) -> Vec<T> {
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(ra, rb)| {
            let mut acc = bias;
            for j in 0..d {
                acc += (sigmoid(ra[j]) - sigmoid(rb[j])).abs() * weight[j];
            }
            acc
        })
        .collect()
}

/// Gradients of the head given dL/dlogit [N]: (da, db, dweight, dbias).
pub fn siamese_head_bwd<T: Float>(a: &[T], b: &[T], weight: &[T], grad_logit: &[T], d: usize) -> (Vec<T>, Vec<T>, Vec<T>, T) {
    let n = grad_logit.len();
    let (mut da, mut db) = (vec![T::zero(); n * d], vec![T::zero(); n * d]);
    let mut dw = vec![T::zero(); d];
    let mut dbias = T::zero();
    for i in 0..n {
        let g = grad_logit[i];
        dbias += g;
        for j in 0..d {
            let (sa, sb) = (sigmoid(a[i * d + j]), sigmoid(b[i * d + j]));
            let diff = sa - sb;
            dw[j] += g * diff.abs();
            // d|x|/dx = sign(x), 0 at 0 (as torch).
            let sign = if diff > T::zero() {
                T::one()
            } else if diff < T::zero() {
                -T::one()
            } else {
                T::zero()
            };
            let gd = g * weight[j] * sign;
            da[i * d + j] = gd * sa * (T::one() - sa);
            db[i * d + j] = -gd * sb * (T::one() - sb);
        }
    }
    (da, db, dw, dbias)
}

/// Mean binary cross-entropy of logits against 0/1 targets, and dL/dlogit.
pub fn bce_from_logits<T: Float>(logits: &[T], targets: &[T]) -> (T, Vec<T>) {
    let n = T::from_f64(logits.len().max(1) as f64);
    let mut loss = T::zero();
    let grad = logits
        .iter()
        .zip(targets)
        .map(|(&x, &y)| {
            // max(x, 0) − x·y + log(1 + e^−|x|): stable for large |x|.
            loss += x.max(T::zero()) - x * y + (-x.abs()).exp().ln_1p();
            (sigmoid(x) - y) / n
        })
        .collect();
    (loss / n, grad)
}
