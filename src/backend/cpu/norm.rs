//! Normalisation kernels: group norm (optionally fused with SiLU), layer norm
//! and batch norm, forward and backward, on contiguous data.
//!
//! Statistics are the biased mean and variance, computed in two passes
//! (mean, then squared deviations) with per-chunk sums accumulated in f64, so
//! f32 groups of tens of thousands of elements keep their precision. Each
//! backward is one closed-form kernel from the saved mean and reciprocal
//! standard deviation `rstd = 1/sqrt(var + eps)`:
//! with `x̂ = (x − mean)·rstd` and `ĝ = g·weight` over the `M` elements that
//! share the statistics,
//! `dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))`, `dweight = Σ g·x̂`, `dbias = Σ g`.

use super::reduce::sum_slice;
use super::softmax::{dot_slice, exp_inplace};
use super::PARALLEL_MIN;
use crate::tensor::Float;
use rayon::prelude::*;

/// Elements summed in the compute type before a partial sum joins the f64 total.
const SUM_CHUNK: usize = 4096;

/// Mean and biased variance over the concatenation of `parts`.
fn moments<'a, T: Float>(parts: impl Iterator<Item = &'a [T]> + Clone) -> (f64, f64) {
    let mut count = 0usize;
    let mut sum = 0.0f64;
    for p in parts.clone() {
        count += p.len();
        sum += p.chunks(SUM_CHUNK).map(|c| sum_slice(c).to_f64()).sum::<f64>();
    }
    if count == 0 {
        return (0.0, 0.0);
    }
    let mean = sum / count as f64;
    let mt = T::from_f64(mean);
    let mut sq = 0.0f64;
    for p in parts {
        for c in p.chunks(SUM_CHUNK) {
            let mut acc = [T::zero(); 8];
            let chunks = c.chunks_exact(8);
            let mut tail = T::zero();
            for &v in chunks.remainder() {
                tail += (v - mt) * (v - mt);
            }
            for ch in chunks {
                for k in 0..8 {
                    let d = ch[k] - mt;
                    acc[k] += d * d;
                }
            }
            sq += (acc.iter().copied().sum::<T>() + tail).to_f64();
        }
    }
    (mean, sq / count as f64)
}

/// `1/sqrt(var + eps)`.
#[inline]
fn rstd_of(var: f64, eps: f64) -> f64 {
    1.0 / (var + eps).sqrt()
}

/// `y = x·a + b` over a row, then SiLU in place when asked.
#[inline]
fn affine_row<T: Float>(x: &[T], y: &mut [T], a: T, b: T, silu: bool, scratch: &mut Vec<T>) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v * a + b;
    }
    if silu {
        silu_inplace(y, scratch);
    }
}

/// `y ← y·sigmoid(y)`, with the exponentials vectorised through `scratch`.
fn silu_inplace<T: Float>(y: &mut [T], scratch: &mut Vec<T>) {
    scratch.clear();
    scratch.extend(y.iter().map(|&v| -v));
    exp_inplace(scratch);
    for (o, &e) in y.iter_mut().zip(scratch.iter()) {
        *o /= T::one() + e;
    }
}

/// Output and saved statistics of a normalisation forward.
pub struct NormForward<T> {
    /// The normalised (and affine-transformed) output, shaped like the input.
    pub out: Vec<T>,
    /// Mean of each statistics group.
    pub mean: Vec<T>,
    /// `1/sqrt(var + eps)` of each statistics group.
    pub rstd: Vec<T>,
}

/// Gradients of a normalisation.
pub struct NormGrads<T> {
    /// Input gradient, shaped like the input.
    pub dx: Vec<T>,
    /// Per channel (group/batch norm) or per normalised element (layer norm).
    pub dweight: Vec<T>,
    /// Shaped like `dweight`.
    pub dbias: Vec<T>,
}

/// Dimensions of an `[N, C, spatial]` tensor.
#[derive(Clone, Copy, Debug)]
pub struct NcsDims {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Product of the dims after the channel dim.
    pub spatial: usize,
}

// ----- group norm ---------------------------------------------------------

/// Group norm of a contiguous `[N, C, spatial]` tensor with `groups` groups
/// of `C / groups` channels, per-channel affine `weight`/`bias`, followed by
/// SiLU when `silu` is set. Statistics are shaped `[N, groups]`.
pub fn group_norm_fwd<T: Float>(
    x: &[T],
    dims: NcsDims,
    groups: usize,
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    eps: f64,
    silu: bool,
) -> NormForward<T> {
    let NcsDims { n, c, spatial } = dims;
    let cg = c / groups;
    let group_len = cg * spatial;
    let mut out = vec![T::zero(); x.len()];
    if out.is_empty() || group_len == 0 {
        return NormForward { out, mean: vec![T::zero(); n * groups], rstd: vec![T::zero(); n * groups] };
    }
    let one_group = |ng: usize, ys: &mut [T]| -> (T, T) {
        let xs = &x[ng * group_len..(ng + 1) * group_len];
        let (mean, var) = moments(std::iter::once(xs));
        let rstd = rstd_of(var, eps);
        let mut scratch = Vec::new();
        let c0 = (ng % groups) * cg;
        for (ci, (xr, yr)) in xs.chunks_exact(spatial).zip(ys.chunks_exact_mut(spatial)).enumerate() {
            let w = weight.map_or(1.0, |w| w[c0 + ci].to_f64());
            let b = bias.map_or(0.0, |b| b[c0 + ci].to_f64());
            let a = rstd * w;
            affine_row(xr, yr, T::from_f64(a), T::from_f64(b - mean * a), silu, &mut scratch);
        }
        (T::from_f64(mean), T::from_f64(rstd))
    };
    let stats: Vec<(T, T)> = if x.len() >= PARALLEL_MIN {
        out.par_chunks_mut(group_len).enumerate().map(|(ng, ys)| one_group(ng, ys)).collect()
    } else {
        out.chunks_mut(group_len).enumerate().map(|(ng, ys)| one_group(ng, ys)).collect()
    };
    let (mean, rstd) = stats.into_iter().unzip();
    NormForward { out, mean, rstd }
}

/// Backward of [`group_norm_fwd`] from the input `x`, output gradient `g` and
/// the saved statistics. With `silu`, the pre-activation is recomputed from
/// `x` and the statistics, and `g` is first multiplied by SiLU's derivative
/// `σ(z)·(1 + z·(1 − σ(z)))`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_bwd<T: Float>(
    x: &[T],
    g: &[T],
    dims: NcsDims,
    groups: usize,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    silu: bool,
) -> NormGrads<T> {
    let NcsDims { n, c, spatial } = dims;
    let cg = c / groups;
    let group_len = cg * spatial;
    let mut dx = vec![T::zero(); x.len()];
    if dx.is_empty() || group_len == 0 {
        return NormGrads { dx, dweight: vec![T::zero(); c], dbias: vec![T::zero(); c] };
    }
    // Per (n, channel): (Σ g·x̂, Σ g) for the weight and bias gradients.
    let one_group = |ng: usize, dxs: &mut [T]| -> Vec<(f64, f64)> {
        let range = ng * group_len..(ng + 1) * group_len;
        let (xs, gs) = (&x[range.clone()], &g[range]);
        let (mu, rs) = (mean[ng].to_f64(), rstd[ng].to_f64());
        let c0 = (ng % groups) * cg;
        let w_of = |ci: usize| weight.map_or(1.0, |w| w[c0 + ci].to_f64());
        // With SiLU the effective output gradient is computed into `dxs` first.
        if silu {
            let mut scratch = Vec::new();
            for (ci, (xr, dr)) in xs.chunks_exact(spatial).zip(dxs.chunks_exact_mut(spatial)).enumerate() {
                let a = rs * w_of(ci);
                let b = bias.map_or(0.0, |b| b[c0 + ci].to_f64()) - mu * a;
                let (a, b) = (T::from_f64(a), T::from_f64(b));
                for (d, &v) in dr.iter_mut().zip(xr) {
                    *d = -(v * a + b);
                }
                scratch.clear();
                scratch.extend_from_slice(dr);
                exp_inplace(&mut scratch);
                let gr = &gs[ci * spatial..(ci + 1) * spatial];
                for (((d, &e), &v), &gv) in dr.iter_mut().zip(scratch.iter()).zip(xr).zip(gr) {
                    let z = v * a + b;
                    let sig = (T::one() + e).recip();
                    *d = gv * sig * (T::one() + z * (T::one() - sig));
                }
            }
        }
        let dy: &[T] = if silu { &*dxs } else { gs };
        let sums: Vec<(f64, f64)> = xs
            .chunks_exact(spatial)
            .zip(dy.chunks_exact(spatial))
            .map(|(xr, dr)| {
                let sdy = dr.chunks(SUM_CHUNK).map(|ch| sum_slice(ch).to_f64()).sum::<f64>();
                let sdyx = dr.chunks(SUM_CHUNK).zip(xr.chunks(SUM_CHUNK)).map(|(d, xv)| dot_slice(d, xv).to_f64()).sum::<f64>();
                // Σ dy·x̂ = rstd·(Σ dy·x − mean·Σ dy)
                (rs * (sdyx - mu * sdy), sdy)
            })
            .collect();
        let m = group_len as f64;
        let mean_ghat: f64 = sums.iter().enumerate().map(|(ci, s)| w_of(ci) * s.1).sum::<f64>() / m;
        let mean_ghat_xhat: f64 = sums.iter().enumerate().map(|(ci, s)| w_of(ci) * s.0).sum::<f64>() / m;
        // dx = rstd·w·dy + bx·x + c0, the closed form expanded per channel.
        let bx = T::from_f64(-rs * rs * mean_ghat_xhat);
        let cx = T::from_f64(rs * (mu * rs * mean_ghat_xhat - mean_ghat));
        for (ci, (xr, dr)) in xs.chunks_exact(spatial).zip(dxs.chunks_exact_mut(spatial)).enumerate() {
            let a = T::from_f64(rs * w_of(ci));
            if silu {
                for (d, &v) in dr.iter_mut().zip(xr) {
                    *d = a * *d + bx * v + cx;
                }
            } else {
                let gr = &gs[ci * spatial..(ci + 1) * spatial];
                for ((d, &v), &gv) in dr.iter_mut().zip(xr).zip(gr) {
                    *d = a * gv + bx * v + cx;
                }
            }
        }
        sums
    };
    let parts: Vec<Vec<(f64, f64)>> = if x.len() >= PARALLEL_MIN {
        dx.par_chunks_mut(group_len).enumerate().map(|(ng, d)| one_group(ng, d)).collect()
    } else {
        dx.chunks_mut(group_len).enumerate().map(|(ng, d)| one_group(ng, d)).collect()
    };
    let mut dweight = vec![0.0f64; c];
    let mut dbias = vec![0.0f64; c];
    for (ng, sums) in parts.iter().enumerate() {
        let c0 = (ng % groups) * cg;
        for (ci, &(sgx, sg)) in sums.iter().enumerate() {
            dweight[c0 + ci] += sgx;
            dbias[c0 + ci] += sg;
        }
    }
    debug_assert_eq!(parts.len(), n * groups);
    NormGrads { dx, dweight: dweight.into_iter().map(T::from_f64).collect(), dbias: dbias.into_iter().map(T::from_f64).collect() }
}

// ----- layer norm ---------------------------------------------------------

/// Rows handled by one rayon task for rows of `len` elements.
fn rows_per_task(len: usize) -> usize {
    (PARALLEL_MIN / 4 / len.max(1)).max(1)
}

/// Layer norm over the last `len` elements of a contiguous tensor (rows of
/// `len`), with elementwise affine `weight`/`bias` of length `len`.
pub fn layer_norm_fwd<T: Float>(x: &[T], len: usize, weight: Option<&[T]>, bias: Option<&[T]>, eps: f64) -> NormForward<T> {
    let mut out = vec![T::zero(); x.len()];
    if len == 0 || x.is_empty() {
        let rows = x.len().checked_div(len).unwrap_or(0);
        return NormForward { out, mean: vec![T::zero(); rows], rstd: vec![T::zero(); rows] };
    }
    let one_row = |xr: &[T], yr: &mut [T]| -> (T, T) {
        let (mean, var) = moments(std::iter::once(xr));
        let (mt, rt) = (T::from_f64(mean), T::from_f64(rstd_of(var, eps)));
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - mt) * rt;
        }
        if let Some(w) = weight {
            yr.iter_mut().zip(w).for_each(|(o, &wv)| *o *= wv);
        }
        if let Some(b) = bias {
            yr.iter_mut().zip(b).for_each(|(o, &bv)| *o += bv);
        }
        (mt, rt)
    };
    let stats: Vec<(T, T)> = if x.len() >= PARALLEL_MIN {
        out.par_chunks_mut(len).zip(x.par_chunks(len)).with_min_len(rows_per_task(len)).map(|(yr, xr)| one_row(xr, yr)).collect()
    } else {
        out.chunks_mut(len).zip(x.chunks(len)).map(|(yr, xr)| one_row(xr, yr)).collect()
    };
    let (mean, rstd) = stats.into_iter().unzip();
    NormForward { out, mean, rstd }
}

/// Backward of [`layer_norm_fwd`]; `dweight`/`dbias` have length `len`.
pub fn layer_norm_bwd<T: Float>(x: &[T], g: &[T], len: usize, mean: &[T], rstd: &[T], weight: Option<&[T]>) -> NormGrads<T> {
    let mut dx = vec![T::zero(); x.len()];
    if len == 0 || x.is_empty() {
        return NormGrads { dx, dweight: vec![T::zero(); len], dbias: vec![T::zero(); len] };
    }
    let inv_len = T::from_f64(1.0 / len as f64);
    // Each task handles a run of rows and returns its partial Σ g·x̂ and Σ g.
    let rows_task = |row0: usize, xs: &[T], gs: &[T], ds: &mut [T]| -> (Vec<T>, Vec<T>) {
        let mut dw = vec![T::zero(); len];
        let mut db = vec![T::zero(); len];
        let mut xhat = vec![T::zero(); len];
        let mut ghat = vec![T::zero(); len];
        for (r, ((xr, gr), dr)) in xs.chunks_exact(len).zip(gs.chunks_exact(len)).zip(ds.chunks_exact_mut(len)).enumerate() {
            let (mt, rt) = (mean[row0 + r], rstd[row0 + r]);
            for (h, &v) in xhat.iter_mut().zip(xr) {
                *h = (v - mt) * rt;
            }
            match weight {
                Some(w) => ghat.iter_mut().zip(gr).zip(w).for_each(|((o, &gv), &wv)| *o = gv * wv),
                None => ghat.copy_from_slice(gr),
            }
            for (((a, b), &gv), &h) in dw.iter_mut().zip(db.iter_mut()).zip(gr).zip(xhat.iter()) {
                *a += gv * h;
                *b += gv;
            }
            let m1 = sum_slice(&ghat) * inv_len;
            let m2 = dot_slice(&ghat, &xhat) * inv_len;
            for ((d, &gh), &h) in dr.iter_mut().zip(ghat.iter()).zip(xhat.iter()) {
                *d = rt * (gh - m1 - h * m2);
            }
        }
        (dw, db)
    };
    let per = rows_per_task(len);
    let chunk = per * len;
    let partials: Vec<(Vec<T>, Vec<T>)> = if x.len() >= PARALLEL_MIN {
        dx.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk).zip(g.par_chunks(chunk)))
            .enumerate()
            .map(|(t, (ds, (xs, gs)))| rows_task(t * per, xs, gs, ds))
            .collect()
    } else {
        vec![rows_task(0, x, g, &mut dx)]
    };
    let mut dweight = vec![T::zero(); len];
    let mut dbias = vec![T::zero(); len];
    for (dw, db) in partials {
        dweight.iter_mut().zip(&dw).for_each(|(a, &b)| *a += b);
        dbias.iter_mut().zip(&db).for_each(|(a, &b)| *a += b);
    }
    NormGrads { dx, dweight, dbias }
}

// ----- batch norm ---------------------------------------------------------

/// The `N` contiguous runs of channel `ch` in an `[N, C, spatial]` tensor.
fn channel_runs<T>(x: &[T], dims: NcsDims, ch: usize) -> impl Iterator<Item = &[T]> + Clone {
    let NcsDims { n, c, spatial } = dims;
    (0..n).map(move |i| &x[(i * c + ch) * spatial..(i * c + ch + 1) * spatial])
}

/// Per-channel mean and biased variance of an `[N, C, spatial]` tensor.
pub fn batch_norm_stats<T: Float>(x: &[T], dims: NcsDims) -> (Vec<f64>, Vec<f64>) {
    let stat = |ch: usize| moments(channel_runs(x, dims, ch));
    let v: Vec<(f64, f64)> =
        if x.len() >= PARALLEL_MIN { (0..dims.c).into_par_iter().map(stat).collect() } else { (0..dims.c).map(stat).collect() };
    v.into_iter().unzip()
}

/// `y = (x − mean[c])·rstd[c]·weight[c] + bias[c]` over an `[N, C, spatial]` tensor.
pub fn batch_norm_fwd<T: Float>(x: &[T], dims: NcsDims, mean: &[T], rstd: &[T], weight: Option<&[T]>, bias: Option<&[T]>) -> Vec<T> {
    let NcsDims { c, spatial, .. } = dims;
    let mut out = vec![T::zero(); x.len()];
    if out.is_empty() || spatial == 0 {
        return out;
    }
    let coef = |ch: usize| {
        let a = rstd[ch] * weight.map_or(T::one(), |w| w[ch]);
        (a, bias.map_or(T::zero(), |b| b[ch]) - mean[ch] * a)
    };
    let row = |r: usize, yr: &mut [T]| {
        let (a, b) = coef(r % c);
        for (o, &v) in yr.iter_mut().zip(&x[r * spatial..(r + 1) * spatial]) {
            *o = v * a + b;
        }
    };
    if x.len() >= PARALLEL_MIN {
        out.par_chunks_mut(spatial).enumerate().with_min_len(rows_per_task(spatial)).for_each(|(r, yr)| row(r, yr));
    } else {
        out.chunks_mut(spatial).enumerate().for_each(|(r, yr)| row(r, yr));
    }
    out
}

/// A per-channel affine map with optional ReLU over a channel-wise
/// concatenation: `out[n, c] = relu?(x[n, c]·scale[c] + shift[c])`, where `x`
/// is `parts` (each `(values, channels)`, contiguous `[N, channels, spatial]`)
/// joined along the channels. This is an eval-mode BatchNorm + ReLU reading a
/// DenseNet layer's inputs where they lie, so the concatenation is never
/// written out on its own: one pass over the data instead of three.
pub fn channel_affine<T: Float>(parts: &[(&[T], usize)], n: usize, spatial: usize, scale: &[T], shift: &[T], relu: bool) -> Vec<T> {
    let channels: usize = parts.iter().map(|&(_, c)| c).sum();
    assert_eq!(scale.len(), channels, "channel_affine: one scale per channel");
    assert_eq!(shift.len(), channels, "channel_affine: one shift per channel");
    for &(values, c) in parts {
        assert_eq!(values.len(), n * c * spatial, "channel_affine: a part is not [N, channels, spatial]");
    }
    let mut out = vec![T::zero(); n * channels * spatial];
    if out.is_empty() {
        return out;
    }
    // Source plane of every output row (image, channel), in output order.
    let sources: Vec<&[T]> = (0..n)
        .flat_map(|img| parts.iter().flat_map(move |&(values, c)| (0..c).map(move |ch| &values[(img * c + ch) * spatial..][..spatial])))
        .collect();
    let zero = T::zero();
    let row = |r: usize, dst: &mut [T]| {
        let (a, b) = (scale[r % channels], shift[r % channels]);
        if relu {
            dst.iter_mut().zip(sources[r]).for_each(|(o, &v)| *o = (v * a + b).max(zero));
        } else {
            dst.iter_mut().zip(sources[r]).for_each(|(o, &v)| *o = v * a + b);
        }
    };
    if out.len() >= PARALLEL_MIN {
        out.par_chunks_mut(spatial).enumerate().with_min_len(rows_per_task(spatial)).for_each(|(r, dst)| row(r, dst));
    } else {
        out.chunks_mut(spatial).enumerate().for_each(|(r, dst)| row(r, dst));
    }
    out
}

/// Backward of batch norm. In training the statistics were the batch's, so
/// the gradient flows through them (the full closed form); in evaluation they
/// were constants (running statistics) and `dx = g·weight·rstd`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_bwd<T: Float>(
    x: &[T],
    g: &[T],
    dims: NcsDims,
    mean: &[T],
    rstd: &[T],
    weight: Option<&[T]>,
    training: bool,
) -> NormGrads<T> {
    let NcsDims { n, c, spatial } = dims;
    let mut dx = vec![T::zero(); x.len()];
    if dx.is_empty() || spatial == 0 {
        return NormGrads { dx, dweight: vec![T::zero(); c], dbias: vec![T::zero(); c] };
    }
    // Per channel: Σ g and Σ g·(x − mean).
    let sums = |ch: usize| -> (f64, f64) {
        let m = mean[ch];
        let mut sg = 0.0;
        let mut sgx = 0.0;
        for (xr, gr) in channel_runs(x, dims, ch).zip(channel_runs(g, dims, ch)) {
            for (xc, gc) in xr.chunks(SUM_CHUNK).zip(gr.chunks(SUM_CHUNK)) {
                sg += sum_slice(gc).to_f64();
                let mut acc = T::zero();
                let mut lanes = [T::zero(); 8];
                let (xe, ge) = (xc.chunks_exact(8), gc.chunks_exact(8));
                for (&xv, &gv) in xe.remainder().iter().zip(ge.remainder()) {
                    acc += gv * (xv - m);
                }
                for (xs, gs) in xe.zip(ge) {
                    for k in 0..8 {
                        lanes[k] += gs[k] * (xs[k] - m);
                    }
                }
                sgx += (lanes.iter().copied().sum::<T>() + acc).to_f64();
            }
        }
        (sg, sgx)
    };
    let per_channel: Vec<(f64, f64)> =
        if x.len() >= PARALLEL_MIN { (0..c).into_par_iter().map(sums).collect() } else { (0..c).map(sums).collect() };
    let count = (n * spatial) as f64;
    // dx = a·g + bx·x + cx per channel.
    let coefs: Vec<(T, T, T)> = (0..c)
        .map(|ch| {
            let (rs, mu) = (rstd[ch].to_f64(), mean[ch].to_f64());
            let a = rs * weight.map_or(1.0, |w| w[ch].to_f64());
            if training {
                let (sg, sgx) = per_channel[ch];
                let bx = -a * rs * rs * sgx / count;
                (T::from_f64(a), T::from_f64(bx), T::from_f64(-a * sg / count - bx * mu))
            } else {
                (T::from_f64(a), T::zero(), T::zero())
            }
        })
        .collect();
    let row = |r: usize, dr: &mut [T]| {
        let (a, bx, cx) = coefs[r % c];
        let range = r * spatial..(r + 1) * spatial;
        for ((d, &gv), &xv) in dr.iter_mut().zip(&g[range.clone()]).zip(&x[range]) {
            *d = a * gv + bx * xv + cx;
        }
    };
    if x.len() >= PARALLEL_MIN {
        dx.par_chunks_mut(spatial).enumerate().with_min_len(rows_per_task(spatial)).for_each(|(r, dr)| row(r, dr));
    } else {
        dx.chunks_mut(spatial).enumerate().for_each(|(r, dr)| row(r, dr));
    }
    let dweight = per_channel.iter().enumerate().map(|(ch, &(_, sgx))| T::from_f64(sgx * rstd[ch].to_f64())).collect();
    let dbias = per_channel.iter().map(|&(sg, _)| T::from_f64(sg)).collect();
    NormGrads { dx, dweight, dbias }
}
