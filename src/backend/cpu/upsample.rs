//! Nearest-neighbour 2-d upsampling over NCHW planes, forward and backward,
//! with PyTorch's `mode="nearest"` source indices.

use super::PARALLEL_MIN;
use crate::tensor::Float;
use rayon::prelude::*;

/// The source index of every destination index along one axis, as PyTorch's
/// `nearest` mode computes it: identity and halving for scale 1 and 2, else
/// `min(floor(dst · s), in − 1)` in f32 with `s = 1/scale` when a scale factor
/// was given and `in/out` otherwise.
pub fn nearest_source_indices(in_len: usize, out_len: usize, scale: Option<f64>) -> Vec<usize> {
    let ratio: f32 = match scale {
        Some(s) if s > 0.0 => (1.0 / s) as f32,
        _ => in_len as f32 / out_len as f32,
    };
    (0..out_len)
        .map(|o| {
            if out_len == in_len {
                o
            } else if out_len == 2 * in_len {
                o >> 1
            } else {
                ((o as f32 * ratio).floor() as usize).min(in_len.saturating_sub(1))
            }
        })
        .collect()
}

/// Upsample planes of `in_size` to `rows.len() × cols.len()`, output pixel
/// (r, c) copying input pixel (`rows[r]`, `cols[c]`).
pub fn upsample_nearest2d_fwd<T: Float>(x: &[T], in_size: [usize; 2], rows: &[usize], cols: &[usize]) -> Vec<T> {
    let (in_w, in_plane, out_w, out_plane) = (in_size[1], in_size[0] * in_size[1], cols.len(), rows.len() * cols.len());
    let planes = x.len().checked_div(in_plane).unwrap_or(0);
    let mut out = vec![T::zero(); planes * out_plane];
    if out.is_empty() {
        return out;
    }
    let fill = |(dst, src): (&mut [T], &[T])| {
        for (r, &ir) in rows.iter().enumerate() {
            // Repeated source rows (every other row at scale 2) are a copy of the row above.
            if r > 0 && rows[r - 1] == ir {
                let (done, rest) = dst.split_at_mut(r * out_w);
                rest[..out_w].copy_from_slice(&done[(r - 1) * out_w..]);
                continue;
            }
            let line = &src[ir * in_w..(ir + 1) * in_w];
            for (d, &ic) in dst[r * out_w..(r + 1) * out_w].iter_mut().zip(cols) {
                *d = line[ic];
            }
        }
    };
    if out.len() >= PARALLEL_MIN {
        out.par_chunks_mut(out_plane).zip(x.par_chunks(in_plane)).for_each(fill);
    } else {
        out.chunks_mut(out_plane).zip(x.chunks(in_plane)).for_each(fill);
    }
    out
}

/// Gradient of [`upsample_nearest2d_fwd`]: every output gradient is added to
/// the input pixel it was copied from.
pub fn upsample_nearest2d_bwd<T: Float>(dy: &[T], in_size: [usize; 2], rows: &[usize], cols: &[usize]) -> Vec<T> {
    let (in_w, in_plane, out_w, out_plane) = (in_size[1], in_size[0] * in_size[1], cols.len(), rows.len() * cols.len());
    let planes = dy.len().checked_div(out_plane).unwrap_or(0);
    let mut dx = vec![T::zero(); planes * in_plane];
    if dx.is_empty() || out_plane == 0 {
        return dx;
    }
    let gather = |(plane, g): (&mut [T], &[T])| {
        for (&ir, g_row) in rows.iter().zip(g.chunks_exact(out_w)) {
            let line = &mut plane[ir * in_w..(ir + 1) * in_w];
            for (&ic, &v) in cols.iter().zip(g_row) {
                line[ic] += v;
            }
        }
    };
    if dy.len() >= PARALLEL_MIN {
        dx.par_chunks_mut(in_plane).zip(dy.par_chunks(out_plane)).for_each(gather);
    } else {
        dx.chunks_mut(in_plane).zip(dy.chunks(out_plane)).for_each(gather);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_indices_follow_pytorch() {
        assert_eq!(nearest_source_indices(2, 4, Some(2.0)), vec![0, 0, 1, 1]);
        assert_eq!(nearest_source_indices(3, 5, None), vec![0, 0, 1, 1, 2]);
        assert_eq!(nearest_source_indices(5, 3, None), vec![0, 1, 3]);
        assert_eq!(nearest_source_indices(2, 6, Some(3.0)), vec![0, 0, 0, 1, 1, 1]);
    }
}
