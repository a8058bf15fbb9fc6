//! Fused loss kernels, forward and backward: mean squared error, binary cross
//! entropy with logits, cross entropy over class logits, cosine similarity.
//!
//! Each forward either returns the per-element losses (reduction "none") or
//! their sum in one pass (the op layer divides for "mean"); each backward
//! takes the upstream gradient as a [`LossGrad`] and writes the input gradient
//! in one pass, so a training step never materialises intermediate tensors.

use super::PARALLEL_MIN;
use crate::backend::op::sigmoid;
use crate::tensor::Float;
use rayon::prelude::*;

/// How the upstream gradient reaches each element (or sample) of a loss.
#[derive(Clone, Copy, Debug)]
pub enum LossGrad<'a, T> {
    /// Every element gets the same factor: `g / count` for a mean, `g` for a sum.
    Uniform(T),
    /// Reduction "none": one factor per element.
    PerElement(&'a [T]),
}

impl<T: Float> LossGrad<'_, T> {
    #[inline(always)]
    fn at(&self, i: usize) -> T {
        match self {
            LossGrad::Uniform(g) => *g,
            LossGrad::PerElement(g) => g[i],
        }
    }
}

/// Elements per parallel task of the elementwise losses.
const CHUNK: usize = PARALLEL_MIN / 4;

/// `Σ_i f(i)` over `0..n`, in fixed chunks (the result does not depend on the
/// thread count).
fn sum_indexed<T: Float>(n: usize, f: impl Fn(usize) -> T + Sync) -> T {
    let chunk_sum = |c: usize| {
        let mut acc = T::zero();
        for i in c * CHUNK..((c + 1) * CHUNK).min(n) {
            acc += f(i);
        }
        acc
    };
    let chunks = n.div_ceil(CHUNK);
    if n >= PARALLEL_MIN {
        (0..chunks).into_par_iter().map(chunk_sum).collect::<Vec<_>>().into_iter().fold(T::zero(), |a, b| a + b)
    } else {
        (0..chunks).map(chunk_sum).fold(T::zero(), |a, b| a + b)
    }
}

/// `[f(0), …, f(n-1)]`, in parallel when large.
fn map_indexed<T: Float>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    let fill = |c: usize, o: &mut [T]| {
        for (k, o) in o.iter_mut().enumerate() {
            *o = f(c * CHUNK + k);
        }
    };
    if n >= PARALLEL_MIN {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| fill(c, o));
    } else {
        out.chunks_mut(CHUNK).enumerate().for_each(|(c, o)| fill(c, o));
    }
    out
}

/// Per-element values of `f`, or their sum as a one-element vector.
fn reduce_or_map<T: Float>(n: usize, sum: bool, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if sum {
        vec![sum_indexed(n, f)]
    } else {
        map_indexed(n, f)
    }
}

// ----- mean squared error ------------------------------------------------

/// `(p - t)²` per element, or its sum when `sum`.
pub fn mse_loss_fwd<T: Float>(pred: &[T], target: &[T], sum: bool) -> Vec<T> {
    reduce_or_map(pred.len(), sum, |i| {
        let d = pred[i] - target[i];
        d * d
    })
}

/// d/dpred of the MSE loss: `2 (p - t) g`; the target's gradient is its negation.
pub fn mse_loss_bwd<T: Float>(pred: &[T], target: &[T], g: LossGrad<'_, T>) -> Vec<T> {
    let two = T::from_f64(2.0);
    map_indexed(pred.len(), |i| two * (pred[i] - target[i]) * g.at(i))
}

// ----- binary cross entropy with logits -----------------------------------

/// `log(1 + e^{-x})` without overflow: `log1p(e^{-|x|}) + max(-x, 0)`.
#[inline(always)]
fn softplus_neg<T: Float>(x: T) -> T {
    (-x.abs()).exp().ln_1p() + (-x).max(T::zero())
}

/// PyTorch's BCEWithLogitsLoss per element,
/// `(1 - y) x + (1 + (w - 1) y) · log(1 + e^{-x})` with `w` the positive-class
/// weight (1 when absent), which without `w` is `max(x, 0) - x y + log1p(e^{-|x|})`;
/// or its sum when `sum`. `pos_weight`, when given, is already broadcast to the
/// logits' length.
pub fn bce_with_logits_fwd<T: Float>(x: &[T], y: &[T], pos_weight: Option<&[T]>, sum: bool) -> Vec<T> {
    let one = T::one();
    match pos_weight {
        None => reduce_or_map(x.len(), sum, |i| (one - y[i]) * x[i] + softplus_neg(x[i])),
        Some(w) => reduce_or_map(x.len(), sum, |i| (one - y[i]) * x[i] + (one + (w[i] - one) * y[i]) * softplus_neg(x[i])),
    }
}

/// Gradients of [`bce_with_logits_fwd`] for the inputs asked for, as
/// `(logits, targets, pos_weight)` (the last broadcast to the logits' length):
/// `dx = g ((1 - y) - (1 + (w - 1) y) σ(-x))`, `dy = g ((w - 1) log(1 + e^{-x}) - x)`,
/// `dw = g y log(1 + e^{-x})`.
#[allow(clippy::type_complexity)]
pub fn bce_with_logits_bwd<T: Float>(
    x: &[T],
    y: &[T],
    pos_weight: Option<&[T]>,
    g: LossGrad<'_, T>,
    need: [bool; 3],
) -> (Option<Vec<T>>, Option<Vec<T>>, Option<Vec<T>>) {
    let one = T::one();
    let w = |i: usize| pos_weight.map_or(one, |w| w[i]);
    let dx = need[0].then(|| map_indexed(x.len(), |i| g.at(i) * ((one - y[i]) - (one + (w(i) - one) * y[i]) * sigmoid(-x[i]))));
    let dy = need[1].then(|| map_indexed(x.len(), |i| g.at(i) * ((w(i) - one) * softplus_neg(x[i]) - x[i])));
    let dw = (need[2] && pos_weight.is_some()).then(|| map_indexed(x.len(), |i| g.at(i) * y[i] * softplus_neg(x[i])));
    (dx, dy, dw)
}

// ----- cross entropy ------------------------------------------------------

/// Logits `[n, classes, inner]` (contiguous) with one target per `(n, inner)`
/// sample; `inner = 1` for the usual `[N, C]` case.
#[derive(Clone, Copy, Debug)]
pub struct ClassShape {
    /// Batch size.
    pub n: usize,
    /// Number of classes (the softmax axis).
    pub classes: usize,
    /// Product of the spatial dims after the class dim.
    pub inner: usize,
}

impl ClassShape {
    fn samples(&self) -> usize {
        self.n * self.inner
    }
    /// Offset of class 0 of sample `k`; class `c` is at `+ c * inner`.
    #[inline(always)]
    fn base(&self, k: usize) -> usize {
        (k / self.inner) * self.classes * self.inner + k % self.inner
    }
}

/// Samples per parallel task, so each task touches about `PARALLEL_MIN / 4` logits.
fn samples_per_task(shape: &ClassShape) -> usize {
    (CHUNK / shape.classes.max(1)).max(1)
}

/// Cross entropy of each sample, `(1 - ε) (lse - z_t) + ε (lse - mean_c z_c)`
/// with `lse = log Σ_c e^{z_c}` taken after subtracting the row maximum
/// (torch.nn.functional.cross_entropy with `label_smoothing = ε`), and the
/// `lse` of each sample for the backward pass. Samples whose target is
/// `ignore_index` get loss 0. Targets are in range (checked by the caller).
pub fn cross_entropy_fwd<T: Float>(
    logits: &[T],
    targets: &[i64],
    shape: ClassShape,
    label_smoothing: f64,
    ignore_index: Option<i64>,
) -> (Vec<T>, Vec<T>) {
    let samples = shape.samples();
    let (c, stride) = (shape.classes, shape.inner);
    let (eps, keep) = (T::from_f64(label_smoothing), T::from_f64(1.0 - label_smoothing));
    let inv_c = T::one() / T::from_f64(c as f64);
    let mut loss = vec![T::zero(); samples];
    let mut lse = vec![T::zero(); samples];
    let fill = |k0: usize, loss: &mut [T], lse: &mut [T]| {
        for (j, (l, s)) in loss.iter_mut().zip(lse.iter_mut()).enumerate() {
            let k = k0 + j;
            let base = shape.base(k);
            let z = |class: usize| logits[base + class * stride];
            let mut max = T::neg_infinity();
            let mut total = T::zero();
            for class in 0..c {
                max = max.max(z(class));
                total += z(class);
            }
            let mut sum_exp = T::zero();
            for class in 0..c {
                sum_exp += (z(class) - max).exp();
            }
            let log_sum_exp = max + sum_exp.ln();
            *s = log_sum_exp;
            let t = targets[k];
            *l = if Some(t) == ignore_index {
                T::zero()
            } else {
                keep * (log_sum_exp - z(t as usize)) + eps * (log_sum_exp - total * inv_c)
            };
        }
    };
    let per = samples_per_task(&shape);
    if samples * c >= PARALLEL_MIN && samples > 1 {
        loss.par_chunks_mut(per).zip(lse.par_chunks_mut(per)).enumerate().for_each(|(t, (l, s))| fill(t * per, l, s));
    } else {
        fill(0, &mut loss, &mut lse);
    }
    (loss, lse)
}

/// d/dlogits of [`cross_entropy_fwd`]: for each sample with factor `w`,
/// `w (softmax_c - (1 - ε) [c = t] - ε / C)`; ignored samples get 0.
pub fn cross_entropy_bwd<T: Float>(
    logits: &[T],
    lse: &[T],
    targets: &[i64],
    shape: ClassShape,
    label_smoothing: f64,
    ignore_index: Option<i64>,
    g: LossGrad<'_, T>,
) -> Vec<T> {
    let (c, inner) = (shape.classes, shape.inner);
    let (keep, smooth) = (T::from_f64(1.0 - label_smoothing), T::from_f64(label_smoothing / c as f64));
    let row = c * inner;
    let mut out = vec![T::zero(); logits.len()];
    if out.is_empty() {
        return out;
    }
    // One task writes whole `[classes, inner]` blocks, i.e. the samples of some `n`.
    let fill = |n0: usize, block: &mut [T]| {
        for (b, dst) in block.chunks_exact_mut(row).enumerate() {
            let n = n0 + b;
            let src = &logits[n * row..(n + 1) * row];
            for s in 0..inner {
                let k = n * inner + s;
                let t = targets[k];
                if Some(t) == ignore_index {
                    continue;
                }
                let w = g.at(k);
                let m = lse[k];
                for class in 0..c {
                    let i = class * inner + s;
                    dst[i] = w * ((src[i] - m).exp() - smooth);
                }
                dst[t as usize * inner + s] -= w * keep;
            }
        }
    };
    let per = (CHUNK / row).max(1);
    if logits.len() >= PARALLEL_MIN && shape.n > 1 {
        out.par_chunks_mut(per * row).enumerate().for_each(|(t, block)| fill(t * per, block));
    } else {
        fill(0, &mut out);
    }
    out
}

// ----- cosine similarity -------------------------------------------------

/// Rows of `len` elements handed to one parallel task.
fn rows_per_task(len: usize) -> usize {
    (CHUNK / len.max(1)).max(1)
}

/// Norms of the two rows clamped below by `eps`, and the unclamped norms.
#[inline(always)]
fn clamped_norms<T: Float>(a: &[T], b: &[T], eps: T) -> (T, T, T, T) {
    let (mut saa, mut sbb) = (T::zero(), T::zero());
    for (&x, &y) in a.iter().zip(b) {
        saa += x * x;
        sbb += y * y;
    }
    let (na, nb) = (saa.sqrt(), sbb.sqrt());
    (na.max(eps), nb.max(eps), na, nb)
}

#[inline(always)]
fn cosine_row<T: Float>(a: &[T], b: &[T], eps: T) -> T {
    let (na, nb, _, _) = clamped_norms(a, b, eps);
    // PyTorch normalises each vector before the dot product, which keeps
    // |result| ≤ 1 and avoids overflow in the product of large norms.
    let (ra, rb) = (na.recip(), nb.recip());
    a.iter().zip(b).map(|(&x, &y)| (x * ra) * (y * rb)).sum()
}

/// Cosine similarity of each pair of rows of contiguous `[rows, len]`
/// matrices, as torch.nn.functional.cosine_similarity:
/// `Σ (a / max(‖a‖, eps)) · (b / max(‖b‖, eps))`.
///
/// `rows` is explicit because rows of length 0 (similarity 0) leave no elements.
pub fn cosine_similarity_fwd<T: Float>(a: &[T], b: &[T], rows: usize, len: usize, eps: f64) -> Vec<T> {
    let eps = T::from_f64(eps);
    if len == 0 {
        return vec![T::zero(); rows];
    }
    let per = rows_per_task(len);
    let mut out = vec![T::zero(); rows];
    let fill = |r0: usize, o: &mut [T]| {
        for (j, o) in o.iter_mut().enumerate() {
            let r = r0 + j;
            *o = cosine_row(&a[r * len..(r + 1) * len], &b[r * len..(r + 1) * len], eps);
        }
    };
    if a.len() >= PARALLEL_MIN && rows > 1 {
        out.par_chunks_mut(per).enumerate().for_each(|(t, o)| fill(t * per, o));
    } else {
        fill(0, &mut out);
    }
    out
}

/// Gradients of [`cosine_similarity_fwd`] with respect to both inputs. With
/// `n_a = max(‖a‖, eps)` and `y` the similarity,
/// `da = g (b / (n_a n_b) - [‖a‖ > eps] y a / n_a²)` (the clamp is constant
/// below `eps`), and symmetrically for `b`.
pub fn cosine_similarity_bwd<T: Float>(a: &[T], b: &[T], len: usize, eps: f64, g: &[T]) -> (Vec<T>, Vec<T>) {
    let eps_t = T::from_f64(eps);
    let mut da = vec![T::zero(); a.len()];
    let mut db = vec![T::zero(); b.len()];
    if len == 0 || a.is_empty() {
        return (da, db);
    }
    let fill = |r0: usize, da: &mut [T], db: &mut [T]| {
        for (j, (da, db)) in da.chunks_exact_mut(len).zip(db.chunks_exact_mut(len)).enumerate() {
            let r = r0 + j;
            let (ar, br) = (&a[r * len..(r + 1) * len], &b[r * len..(r + 1) * len]);
            let (na, nb, raw_a, raw_b) = clamped_norms(ar, br, eps_t);
            let y = cosine_row(ar, br, eps_t);
            let cross = g[r] / (na * nb);
            let self_a = if raw_a > eps_t { g[r] * y / (na * na) } else { T::zero() };
            let self_b = if raw_b > eps_t { g[r] * y / (nb * nb) } else { T::zero() };
            for i in 0..len {
                da[i] = cross * br[i] - self_a * ar[i];
                db[i] = cross * ar[i] - self_b * br[i];
            }
        }
    };
    let per = rows_per_task(len);
    if a.len() >= PARALLEL_MIN && a.len() > len {
        da.par_chunks_mut(per * len).zip(db.par_chunks_mut(per * len)).enumerate().for_each(|(t, (x, y))| fill(t * per, x, y));
    } else {
        fill(0, &mut da, &mut db);
    }
    (da, db)
}
