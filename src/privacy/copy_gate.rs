//! The copy gate: a second filter rule, beside s_reid ≥ δ, that drops a
//! synthetic sample when it is closer to some real image than real images of
//! different patients ever are to each other.
//!
//! Why it exists: the audit showed that the copies a memorising LDM emits are
//! the training image with its exposure shifted and its detail smoothed by the
//! decoder, and a re-identification network — trained to match two
//! acquisitions of one patient, not an image with itself — passes some of
//! them. Near-duplicate detection in pixel space (as in Carlini et al. 2023,
//! "Extracting training data from diffusion models") needs no training and
//! catches exactly that failure.
//!
//! The score is calibrated on the real data, so it means the same on every
//! dataset: `s_copy` is the fraction of real images whose most similar image
//! *of another patient* is no more similar than this sample is to its most
//! similar real image. The rule `s_copy ≥ q` (default q = 0.99) then drops a
//! sample that would be among the top 1 % of "how alike two patients look" —
//! the false-positive rate on real images of new patients is about 1 − q,
//! which `audit` measures on held-out patients.
//!
//! The gate compares 32×32 thumbnails ([`DEFAULT_SIDE`]) blurred by a
//! Gaussian of one thumbnail pixel ([`DEFAULT_SMOOTHING`]: a decoder's
//! smoothing must not hide a copy) with a quantile threshold, while the
//! audit's ground truth of a near-copy uses unblurred 16×16 thumbnails and the
//! largest other-patient similarity: related measures, deliberately not the
//! same test.

use super::pixel_index::PixelIndex;
use crate::data::Image;
use crate::{Error, Result};

/// The thumbnail side the gate compares images at.
pub const DEFAULT_SIDE: usize = 32;

/// The Gaussian blur of the thumbnails, in thumbnail pixels.
pub const DEFAULT_SMOOTHING: f64 = 1.0;

/// At most this many real images calibrate the gate (evenly spaced through the
/// set); each is still compared with every real image, so calibration costs
/// O(min(N, 4096) · N) comparisons rather than O(N²).
pub const MAX_CALIBRATION_QUERIES: usize = 4096;

/// One image's result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CopyScore {
    /// The calibrated score in [0, 1] (see the module documentation).
    pub s_copy: f64,
    /// Index of the most similar real image.
    pub nearest: usize,
    /// Residual pixel correlation with it.
    pub correlation: f64,
}

/// Real images indexed at one thumbnail side, with the calibration of their
/// other-patient similarities.
pub struct CopyGate {
    index: PixelIndex,
    /// Each calibration image's correlation with its most similar other-patient image, sorted.
    calibration: Vec<f64>,
}

impl CopyGate {
    /// Index `real` (patient `patients[i]` for image i) at `side`×`side` thumbnails blurred by
    /// `smoothing` thumbnail pixels, and calibrate. Needs images of at least two patients.
    pub fn build(real: &[Image], patients: &[&str], side: usize, smoothing: f64) -> Result<CopyGate> {
        if real.len() != patients.len() {
            return Err(Error::msg(format!("copy gate: {} images but {} patient ids", real.len(), patients.len())));
        }
        if patients.iter().all(|p| *p == patients[0]) {
            return Err(Error::msg("copy gate: the real images must come from at least two patients to calibrate the gate"));
        }
        let index = PixelIndex::smoothed(real, side, smoothing)?;
        let n = real.len();
        let queries: Vec<usize> = if n <= MAX_CALIBRATION_QUERIES {
            (0..n).collect()
        } else {
            (0..MAX_CALIBRATION_QUERIES).map(|k| k * n / MAX_CALIBRATION_QUERIES).collect()
        };
        let mut calibration: Vec<f64> = index.nearest_other_patient_of(&queries, patients).into_iter().filter(|c| c.is_finite()).collect();
        calibration.sort_by(f64::total_cmp);
        Ok(CopyGate { index, calibration })
    }

    /// The thumbnail side.
    pub fn side(&self) -> usize {
        self.index.side()
    }

    /// The sorted other-patient similarities the gate is calibrated on.
    pub fn calibration(&self) -> &[f64] {
        &self.calibration
    }

    /// `s_copy` of a correlation: the fraction of calibration values ≤ it.
    pub fn s_copy_of(&self, correlation: f64) -> f64 {
        let at_most = self.calibration.partition_point(|&c| c <= correlation);
        at_most as f64 / self.calibration.len() as f64
    }

    /// The smallest correlation with `s_copy ≥ quantile`: the gate's threshold in
    /// correlation units (for reports). `None` if no correlation reaches it.
    pub fn threshold(&self, quantile: f64) -> Option<f64> {
        let needed = (quantile * self.calibration.len() as f64).ceil().max(1.0) as usize;
        self.calibration.get(needed - 1).copied()
    }

    /// Scores `images` against every real image.
    pub fn score(&self, images: &[Image]) -> Vec<CopyScore> {
        self.index
            .nearest(images)
            .into_iter()
            .map(|(nearest, correlation)| CopyScore { s_copy: self.s_copy_of(correlation), nearest, correlation })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// A smooth random "X-ray": a few Gaussian blobs on a gradient, so thumbnails differ between images.
    fn blobs(seed: u64, side: usize) -> Image {
        let mut rng = Rng::new(seed);
        let centres: Vec<(f32, f32, f32)> = (0..6).map(|_| (rng.uniform() as f32, rng.uniform() as f32, rng.uniform() as f32)).collect();
        let mut data = vec![0f32; side * side];
        for y in 0..side {
            for x in 0..side {
                let (u, v) = (x as f32 / side as f32, y as f32 / side as f32);
                let mut value = 0.3 + 0.2 * v;
                for &(cx, cy, a) in &centres {
                    value += 0.4 * a * (-((u - cx).powi(2) + (v - cy).powi(2)) / 0.02).exp();
                }
                data[y * side + x] = value.min(1.0);
            }
        }
        Image::grey(side, side, data)
    }

    #[test]
    fn s_copy_is_the_empirical_cdf_of_the_calibration() {
        let real: Vec<Image> = (0..6).map(|s| blobs(s, 32)).collect();
        let patients = ["a", "a", "b", "b", "c", "c"];
        let gate = CopyGate::build(&real, &patients, 16, 0.0).unwrap();
        let cal = gate.calibration().to_vec();
        assert_eq!(cal.len(), 6);
        assert!(cal.windows(2).all(|w| w[0] <= w[1]));
        // Hand-computed: below the smallest → 0, at the k-th value → k/6, above all → 1.
        assert_eq!(gate.s_copy_of(cal[0] - 1e-9), 0.0);
        assert_eq!(gate.s_copy_of(cal[2]), 3.0 / 6.0);
        assert_eq!(gate.s_copy_of(cal[5]), 1.0);
        assert_eq!(gate.s_copy_of(1.0), 1.0);
        assert_eq!(gate.threshold(1.0), Some(cal[5]));
        assert_eq!(gate.threshold(0.5), Some(cal[2]));
        assert_eq!(gate.threshold(0.0), Some(cal[0]));
    }

    #[test]
    fn an_exposure_shifted_smoothed_copy_scores_1_and_a_new_image_does_not() {
        let real: Vec<Image> = (0..20).map(|s| blobs(s, 32)).collect();
        let patients: Vec<String> = (0..20).map(|i| format!("p{}", i / 2)).collect();
        let ids: Vec<&str> = patients.iter().map(String::as_str).collect();
        let gate = CopyGate::build(&real, &ids, DEFAULT_SIDE, DEFAULT_SMOOTHING).unwrap();
        let mut copy = real[7].gaussian_blur(0.8);
        copy.data.iter_mut().for_each(|v| *v = (0.8 * *v + 0.1).clamp(0.0, 1.0));
        let stranger = blobs(999, 32);
        let scored = gate.score(&[copy, stranger]);
        assert_eq!(scored[0].nearest, 7);
        assert!(scored[0].correlation > 0.95, "{:?}", scored[0]);
        assert_eq!(scored[0].s_copy, 1.0);
        assert!(scored[1].s_copy < 1.0, "{:?}", scored[1]);
    }

    #[test]
    fn one_patient_or_mismatched_ids_are_errors() {
        let real: Vec<Image> = (0..3).map(|s| blobs(s, 16)).collect();
        assert!(CopyGate::build(&real, &["a", "a", "a"], 8, 1.0).err().expect("an error").to_string().contains("two patients"));
        assert!(CopyGate::build(&real, &["a", "b"], 8, 1.0).err().expect("an error").to_string().contains("patient ids"));
    }
}
