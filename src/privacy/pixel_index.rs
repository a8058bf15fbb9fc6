//! Pixel-space similarity between chest X-rays, without any learned network:
//! the ground truth of "is this sample a copy?" that the audit measures the
//! filter against, and the descriptor of the copy gate
//! ([`super::copy_gate`]) that drops near-copies the re-identification
//! network misses.

use crate::data::Image;
use crate::Result;
use rayon::prelude::*;

/// Pixel-space nearest neighbours among real images, independent of the
/// re-identification network.
///
/// Chest X-rays all look alike — two patients' raw pixels correlate at 0.85 —
/// so images are compared on what sets them apart: each is reduced to a small
/// grey thumbnail (`side`×`side`, which also forgives the autoencoder's blur),
/// the mean thumbnail of the real images is subtracted, and the residuals'
/// Pearson correlation is the similarity. A copy that only differs in
/// brightness or contrast still scores near 1.
pub struct PixelIndex {
    side: usize,
    smoothing: f64,
    mean: Vec<f32>,
    residuals: Vec<Vec<f32>>,
}

impl PixelIndex {
    /// Index `references` at `side`×`side` (16 is a good choice for 32–256 px X-rays).
    pub fn new(references: &[Image], side: usize) -> Result<PixelIndex> {
        PixelIndex::smoothed(references, side, 0.0)
    }

    /// Like [`PixelIndex::new`], with every thumbnail blurred by a Gaussian of
    /// `smoothing` thumbnail pixels, so detail finer than that — what a decoder
    /// smooths away — does not count.
    pub fn smoothed(references: &[Image], side: usize, smoothing: f64) -> Result<PixelIndex> {
        if references.is_empty() || side == 0 || !(smoothing >= 0.0 && smoothing.is_finite()) {
            return Err(crate::Error::msg("pixel index: needs reference images, a side ≥ 1 and a finite smoothing ≥ 0"));
        }
        let thumbnails: Vec<Vec<f32>> = references.par_iter().map(|img| smoothed_thumbnail(img, side, smoothing)).collect();
        let mut mean = vec![0f32; side * side];
        for t in &thumbnails {
            mean.iter_mut().zip(t).for_each(|(m, v)| *m += v / thumbnails.len() as f32);
        }
        let residuals = thumbnails.iter().map(|t| standardised_residual(t, &mean)).collect();
        Ok(PixelIndex { side, smoothing, mean, residuals })
    }

    /// The thumbnail side images are compared at.
    pub fn side(&self) -> usize {
        self.side
    }

    /// Reference images indexed.
    pub fn len(&self) -> usize {
        self.residuals.len()
    }

    /// Whether the index is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.residuals.is_empty()
    }

    /// The most similar reference of each image: `(index, correlation)`.
    pub fn nearest(&self, images: &[Image]) -> Vec<(usize, f64)> {
        images
            .par_iter()
            .map(|img| {
                let q = standardised_residual(&smoothed_thumbnail(img, self.side, self.smoothing), &self.mean);
                self.most_similar(&q, |_| true)
            })
            .collect()
    }

    /// For every reference, its correlation with the most similar reference of
    /// another patient (`patients[i]` is reference i's): how alike two patients'
    /// images can be. A near-copy threshold must sit above these.
    pub fn nearest_other_patient(&self, patients: &[&str]) -> Vec<f64> {
        self.nearest_other_patient_of(&(0..self.len()).collect::<Vec<_>>(), patients)
    }

    /// [`PixelIndex::nearest_other_patient`] for the references `queries` only
    /// (each is still compared with every reference).
    pub fn nearest_other_patient_of(&self, queries: &[usize], patients: &[&str]) -> Vec<f64> {
        queries.par_iter().map(|&i| self.most_similar(&self.residuals[i], |j| patients[j] != patients[i]).1).collect()
    }

    fn most_similar(&self, q: &[f32], eligible: impl Fn(usize) -> bool) -> (usize, f64) {
        let n = q.len() as f64;
        let mut best = (usize::MAX, f64::NEG_INFINITY);
        for (j, r) in self.residuals.iter().enumerate() {
            if !eligible(j) {
                continue;
            }
            let corr = q.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / n;
            if corr > best.1 {
                best = (j, corr);
            }
        }
        best
    }
}

/// [`thumbnail`], then a Gaussian blur of `smoothing` thumbnail pixels.
fn smoothed_thumbnail(img: &Image, side: usize, smoothing: f64) -> Vec<f32> {
    let t = thumbnail(img, side);
    if smoothing > 0.0 {
        Image::grey(side, side, t).gaussian_blur(smoothing).data
    } else {
        t
    }
}

/// Grey pixels averaged down (box filter) to `side`×`side`.
fn thumbnail(img: &Image, side: usize) -> Vec<f32> {
    let grey: Vec<f32> = img.data.chunks(img.channels).map(|px| px.iter().sum::<f32>() / px.len() as f32).collect();
    let mut out = vec![0f32; side * side];
    let mut counts = vec![0u32; side * side];
    for y in 0..img.height {
        for x in 0..img.width {
            let at = (y * side / img.height) * side + x * side / img.width;
            out[at] += grey[y * img.width + x];
            counts[at] += 1;
        }
    }
    // A thumbnail larger than the image leaves cells empty: fill them from the nearest pixel.
    for (at, (v, c)) in out.iter_mut().zip(&counts).enumerate() {
        *v = if *c > 0 {
            *v / *c as f32
        } else {
            let (ty, tx) = (at / side, at % side);
            grey[(ty * img.height / side) * img.width + tx * img.width / side]
        };
    }
    out
}

/// `t − mean`, shifted and scaled to zero mean and unit variance.
fn standardised_residual(t: &[f32], mean: &[f32]) -> Vec<f32> {
    let r: Vec<f32> = t.iter().zip(mean).map(|(a, m)| a - m).collect();
    let n = r.len() as f32;
    let mu = r.iter().sum::<f32>() / n;
    let std = (r.iter().map(|v| (v - mu).powi(2)).sum::<f32>() / n).sqrt().max(1e-6);
    r.iter().map(|v| (v - mu) / std).collect()
}
