//! Distribution distances between two sets of image features: the Fréchet
//! distance (FID, Heusel et al. 2017) and the kernel inception distance (KID,
//! Bińkowski et al. 2018).
//!
//! FID fits a Gaussian to each set and measures
//! `|μ₁ − μ₂|² + Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁ Σ₂)^{1/2}`. The trace of the matrix
//! square root is where implementations lose precision (scipy's `sqrtm` of a
//! non-symmetric product returns complex parts, and singular covariances make
//! it worse), so it is computed here from symmetric eigendecompositions only:
//! `Tr (Σ₁ Σ₂)^{1/2} = Tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}`, because `Σ₁ Σ₂` is
//! similar to the symmetric positive semi-definite `Σ₁^{1/2} Σ₂ Σ₁^{1/2}`, whose
//! eigenvalues are clamped at zero before their square roots are summed.

use crate::{Error, Result, Rng};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

/// A set of feature vectors: `n` rows of `dim` values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// Number of samples.
    pub n: usize,
    /// Width of each feature vector.
    pub dim: usize,
    /// `n × dim` values.
    pub data: Vec<f64>,
}

impl Features {
    /// Features from row-major values; errors when the length is not `n × dim`.
    pub fn new(n: usize, dim: usize, data: Vec<f64>) -> Result<Features> {
        if data.len() != n * dim {
            return Err(Error::msg(format!("features: {} values cannot be {n} rows of {dim}", data.len())));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::msg(format!("features: value {} of row {} is {}", i % dim.max(1), i / dim.max(1), data[i])));
        }
        Ok(Features { n, dim, data })
    }

    /// Features from rows of equal length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Features> {
        let dim = rows.first().map_or(0, Vec::len);
        if let Some(r) = rows.iter().position(|r| r.len() != dim) {
            return Err(Error::msg(format!("features: row {r} has {} values, row 0 has {dim}", rows[r].len())));
        }
        Features::new(rows.len(), dim, rows.concat())
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// As an `n × dim` matrix.
    pub fn matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.n, self.dim, &self.data)
    }
}

/// Mean and covariance of a feature set (the Gaussian FID fits).
#[derive(Clone, Debug)]
pub struct GaussianStats {
    /// Mean vector.
    pub mean: DVector<f64>,
    /// Unbiased covariance (divided by n − 1, as `numpy.cov`).
    pub cov: DMatrix<f64>,
    /// Samples the statistics came from.
    pub n: usize,
}

impl GaussianStats {
    /// Mean and unbiased covariance; needs at least two samples.
    pub fn of(features: &Features) -> Result<GaussianStats> {
        if features.n < 2 {
            return Err(Error::msg(format!("FID statistics need at least 2 samples, got {}", features.n)));
        }
        let x = features.matrix();
        let mean = x.row_mean().transpose();
        let centred = DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - mean[j]);
        let cov = centred.transpose() * &centred / (features.n - 1) as f64;
        Ok(GaussianStats { mean, cov, n: features.n })
    }
}

/// The parts of a Fréchet distance, so a report can say where the distance comes from.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrechetDistance {
    /// The distance `mean_term + trace_term`.
    pub value: f64,
    /// `|μ₁ − μ₂|²`.
    pub mean_term: f64,
    /// `Tr Σ₁ + Tr Σ₂ − 2 Tr (Σ₁ Σ₂)^{1/2}`.
    pub trace_term: f64,
}

/// The symmetric square root of a symmetric positive semi-definite matrix
/// (negative eigenvalues from rounding are clamped to zero).
pub fn sqrt_psd(m: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (m + m.transpose()) * 0.5;
    let eig = SymmetricEigen::new(sym);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// `Tr (a b)^{1/2}` for symmetric positive semi-definite `a` and `b`.
pub fn trace_sqrt_product(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    let ra = sqrt_psd(a);
    let inner = &ra * b * &ra;
    let sym = (&inner + inner.transpose()) * 0.5;
    SymmetricEigen::new(sym).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum()
}

/// Fréchet distance between two Gaussians.
pub fn frechet_distance(a: &GaussianStats, b: &GaussianStats) -> Result<FrechetDistance> {
    if a.mean.len() != b.mean.len() {
        return Err(Error::msg(format!("FID: feature widths differ ({} vs {})", a.mean.len(), b.mean.len())));
    }
    let mean_term = (&a.mean - &b.mean).norm_squared();
    let trace_term = a.cov.trace() + b.cov.trace() - 2.0 * trace_sqrt_product(&a.cov, &b.cov);
    // Rounding can leave a tiny negative trace term for identical sets; a distance is never negative.
    let trace_term = trace_term.max(0.0);
    Ok(FrechetDistance { value: mean_term + trace_term, mean_term, trace_term })
}

/// FID between two feature sets.
pub fn fid(a: &Features, b: &Features) -> Result<FrechetDistance> {
    frechet_distance(&GaussianStats::of(a)?, &GaussianStats::of(b)?)
}

/// How KID is estimated.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KidSettings {
    /// Random subsets averaged over.
    pub subsets: usize,
    /// Samples per subset (capped at the smaller set's size).
    pub max_subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidSettings {
    /// torch-fidelity's and clean-fid's defaults: 100 subsets of at most 1000.
    fn default() -> Self {
        KidSettings { subsets: 100, max_subset_size: 1000, seed: 0 }
    }
}

/// KID: mean and standard deviation over subsets of the unbiased MMD² estimate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kid {
    /// Mean over subsets.
    pub mean: f64,
    /// Standard deviation over subsets (population, as torch-fidelity reports it).
    pub std: f64,
    /// Samples per subset.
    pub subset_size: usize,
    /// Subsets drawn.
    pub subsets: usize,
}

/// The cubic polynomial kernel of KID, `(x·y / d + 1)³`.
fn poly_kernel(x: &[f64], y: &[f64]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
    (dot / x.len() as f64 + 1.0).powi(3)
}

/// Unbiased MMD² with the cubic polynomial kernel between the rows `ia` of `a` and `ib` of `b` (equal counts m ≥ 2):
/// `[Σ_{i≠j} k(xᵢ,xⱼ) + Σ_{i≠j} k(yᵢ,yⱼ)] / (m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m²`.
pub fn mmd2_unbiased(a: &Features, ia: &[usize], b: &Features, ib: &[usize]) -> f64 {
    let m = ia.len() as f64;
    let within = |f: &Features, idx: &[usize]| -> f64 {
        let mut s = 0.0;
        for (p, &i) in idx.iter().enumerate() {
            for &j in &idx[p + 1..] {
                s += 2.0 * poly_kernel(f.row(i), f.row(j));
            }
        }
        s
    };
    let cross: f64 = ia.iter().map(|&i| ib.iter().map(|&j| poly_kernel(a.row(i), b.row(j))).sum::<f64>()).sum();
    (within(a, ia) + within(b, ib)) / (m * (m - 1.0)) - 2.0 * cross / (m * m)
}

/// KID between two feature sets: the unbiased MMD² on `subsets` random
/// subsets of `min(n_a, n_b, max_subset_size)` samples each, drawn without
/// replacement.
pub fn kid(a: &Features, b: &Features, settings: &KidSettings) -> Result<Kid> {
    if a.dim != b.dim {
        return Err(Error::msg(format!("KID: feature widths differ ({} vs {})", a.dim, b.dim)));
    }
    let m = a.n.min(b.n).min(settings.max_subset_size);
    if m < 2 || settings.subsets == 0 {
        return Err(Error::msg(format!("KID needs at least 2 samples per set and 1 subset (got {m} and {})", settings.subsets)));
    }
    let mut rng = Rng::new(settings.seed);
    let mut draw = |n: usize| -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut all);
        all.truncate(m);
        all
    };
    let values: Vec<f64> = (0..settings.subsets)
        .map(|_| {
            let (ia, ib) = (draw(a.n), draw(b.n));
            mmd2_unbiased(a, &ia, b, &ib)
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    Ok(Kid { mean, std, subset_size: m, subsets: settings.subsets })
}
