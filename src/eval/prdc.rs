//! Fidelity and diversity as two numbers: improved precision and recall
//! (Kynkäänniemi et al., NeurIPS 2019) and density and coverage (Naeem et
//! al., ICML 2020), all from k-nearest-neighbour balls in feature space.
//!
//! Each real sample gets a ball whose radius is the distance to its k-th
//! nearest other real sample; the union of the balls estimates the real
//! manifold. Precision is the share of generated samples inside it; recall
//! swaps the roles (balls around generated samples, real samples counted).
//! Density counts how many real balls hold each generated sample (divided by
//! k); coverage is the share of real balls that hold any generated sample.

use crate::eval::fid::Features;
use crate::{Error, Result};
use rayon::prelude::*;

/// The four k-NN manifold metrics.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prdc {
    /// Share of generated samples inside the real manifold.
    pub precision: f64,
    /// Share of real samples inside the generated manifold.
    pub recall: f64,
    /// Mean number of real balls holding a generated sample, divided by k.
    pub density: f64,
    /// Share of real balls holding at least one generated sample.
    pub coverage: f64,
    /// Neighbourhood size.
    pub k: usize,
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Squared distance from each sample to its k-th nearest other sample in the same set.
pub fn kth_neighbour_radii(set: &Features, k: usize) -> Result<Vec<f64>> {
    if k == 0 || set.n <= k {
        return Err(Error::msg(format!("k-NN radii need more than k = {k} samples, got {}", set.n)));
    }
    Ok((0..set.n)
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<f64> = (0..set.n).filter(|&j| j != i).map(|j| squared_distance(set.row(i), set.row(j))).collect();
            d.select_nth_unstable_by(k - 1, f64::total_cmp);
            d[k - 1]
        })
        .collect())
}

/// Precision, recall, density and coverage of `fake` against `real` with k nearest neighbours
/// (ball membership is `distance ≤ radius`, as the reference implementations test it).
pub fn prdc(real: &Features, fake: &Features, k: usize) -> Result<Prdc> {
    if real.dim != fake.dim {
        return Err(Error::msg(format!("precision/recall: feature widths differ ({} vs {})", real.dim, fake.dim)));
    }
    let real_radii = kth_neighbour_radii(real, k)?;
    let fake_radii = kth_neighbour_radii(fake, k)?;
    // For each fake sample: how many real balls hold it.
    let holding: Vec<usize> = (0..fake.n)
        .into_par_iter()
        .map(|j| (0..real.n).filter(|&i| squared_distance(real.row(i), fake.row(j)) <= real_radii[i]).count())
        .collect();
    let precision = holding.iter().filter(|&&c| c > 0).count() as f64 / fake.n as f64;
    let density = holding.iter().sum::<usize>() as f64 / (k as f64 * fake.n as f64);
    let recall =
        (0..real.n).into_par_iter().filter(|&i| (0..fake.n).any(|j| squared_distance(real.row(i), fake.row(j)) <= fake_radii[j])).count()
            as f64
            / real.n as f64;
    let coverage =
        (0..real.n).into_par_iter().filter(|&i| (0..fake.n).any(|j| squared_distance(real.row(i), fake.row(j)) <= real_radii[i])).count()
            as f64
            / real.n as f64;
    Ok(Prdc { precision, recall, density, coverage, k })
}
