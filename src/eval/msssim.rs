//! Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003) between
//! grey images, and the diversity of a set as its mean MS-SSIM over random
//! pairs (lower = more diverse), as generative-model papers report it.
//!
//! Conventions follow `pytorch_msssim`: an 11-tap Gaussian window with σ 1.5,
//! valid filtering, K₁ = 0.01, K₂ = 0.03, data range 1, the five weights
//! (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and 2×2 average pooling between
//! scales, with negative contrast-structure terms clamped to zero so that
//! fractional powers stay real. Images too small for five scales (64×64 in the
//! demo fits three: 64, 32, 16) use as many scales as keep the window inside
//! the image, with the leading weights renormalised to sum to one.

use crate::data::Image;
use crate::{Error, Result, Rng};

/// The standard per-scale weights.
pub const MS_SSIM_WEIGHTS: [f64; 5] = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333];
const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

fn gaussian_window() -> [f64; WINDOW] {
    let mut w = [0.0; WINDOW];
    let centre = (WINDOW / 2) as f64;
    for (i, v) in w.iter_mut().enumerate() {
        *v = (-((i as f64 - centre).powi(2)) / (2.0 * SIGMA * SIGMA)).exp();
    }
    let s: f64 = w.iter().sum();
    w.map(|v| v / s)
}

/// Separable valid Gaussian filtering of an `h × w` plane.
fn filter(x: &[f64], h: usize, w: usize, g: &[f64; WINDOW]) -> (Vec<f64>, usize, usize) {
    let (oh, ow) = (h + 1 - WINDOW, w + 1 - WINDOW);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x0 in 0..ow {
            rows[y * ow + x0] = (0..WINDOW).map(|k| g[k] * x[y * w + x0 + k]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y0 in 0..oh {
        for x0 in 0..ow {
            out[y0 * ow + x0] = (0..WINDOW).map(|k| g[k] * rows[(y0 + k) * ow + x0]).sum();
        }
    }
    (out, oh, ow)
}

/// Mean SSIM and mean contrast-structure term of two same-sized planes.
fn ssim_and_cs(a: &[f64], b: &[f64], h: usize, w: usize, g: &[f64; WINDOW]) -> (f64, f64) {
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<f64>>();
    let (mu_a, ..) = filter(a, h, w, g);
    let (mu_b, ..) = filter(b, h, w, g);
    let (aa, ..) = filter(&prod(a, a), h, w, g);
    let (bb, ..) = filter(&prod(b, b), h, w, g);
    let (ab, ..) = filter(&prod(a, b), h, w, g);
    let (mut ssim, mut cs) = (0.0, 0.0);
    for i in 0..mu_a.len() {
        let (ma, mb) = (mu_a[i], mu_b[i]);
        let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
        let cs_map = (2.0 * cov + C2) / (va + vb + C2);
        cs += cs_map;
        ssim += (2.0 * ma * mb + C1) / (ma * ma + mb * mb + C1) * cs_map;
    }
    let n = mu_a.len() as f64;
    (ssim / n, cs / n)
}

fn avg_pool2(x: &[f64], h: usize, w: usize) -> (Vec<f64>, usize, usize) {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for x0 in 0..ow {
            let at = |yy: usize, xx: usize| x[(2 * y + yy) * w + 2 * x0 + xx];
            out[y * ow + x0] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0;
        }
    }
    (out, oh, ow)
}

/// Scales that fit an image whose shorter side is `side` (at most five, at least one).
pub fn scales_for(side: usize) -> usize {
    (1..=5).rev().find(|&s| side >> (s - 1) >= WINDOW).unwrap_or(0)
}

/// MS-SSIM of two grey images of the same size (values in [0, 1]); RGB is reduced to luminance.
pub fn ms_ssim(a: &Image, b: &Image) -> Result<f64> {
    if (a.width, a.height) != (b.width, b.height) {
        return Err(Error::msg(format!("MS-SSIM: image sizes differ ({}×{} vs {}×{})", a.width, a.height, b.width, b.height)));
    }
    let scales = scales_for(a.width.min(a.height));
    if scales == 0 {
        return Err(Error::msg(format!("MS-SSIM: images must be at least {WINDOW}×{WINDOW}, got {}×{}", a.width, a.height)));
    }
    let weights = &MS_SSIM_WEIGHTS[..scales];
    let total: f64 = weights.iter().sum();
    let g = gaussian_window();
    let (mut pa, mut pb): (Vec<f64>, Vec<f64>) =
        (a.to_grey().data.iter().map(|&v| v as f64).collect(), b.to_grey().data.iter().map(|&v| v as f64).collect());
    let (mut h, mut w) = (a.height, a.width);
    let mut value = 1.0;
    for (s, &wt) in weights.iter().enumerate() {
        let (ssim, cs) = ssim_and_cs(&pa, &pb, h, w, &g);
        let term = if s + 1 == scales { ssim } else { cs };
        value *= term.max(0.0).powf(wt / total);
        if s + 1 < scales {
            let (na, nh, nw) = avg_pool2(&pa, h, w);
            pb = avg_pool2(&pb, h, w).0;
            (pa, h, w) = (na, nh, nw);
        }
    }
    Ok(value)
}

/// Mean MS-SSIM over up to `pairs` random pairs of distinct images (seeded); lower means a more diverse set.
pub fn ms_ssim_diversity(images: &[Image], pairs: usize, seed: u64) -> Result<f64> {
    if images.len() < 2 {
        return Err(Error::msg(format!("MS-SSIM diversity needs at least 2 images, got {}", images.len())));
    }
    let mut rng = Rng::new(seed);
    let chosen: Vec<(usize, usize)> = (0..pairs.max(1))
        .map(|_| {
            let i = rng.below(images.len());
            let j = (i + 1 + rng.below(images.len() - 1)) % images.len();
            (i, j)
        })
        .collect();
    use rayon::prelude::*;
    let values = chosen.par_iter().map(|&(i, j)| ms_ssim(&images[i], &images[j])).collect::<Result<Vec<f64>>>()?;
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}
