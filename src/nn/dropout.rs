//! `nn.Dropout`: in training, zero each element with probability `p` and
//! scale the survivors by 1/(1−p); in evaluation, the identity.

use crate::{Error, Result, Rng, Tensor};

/// Inverted dropout with drop probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// A dropout layer; `p` must lie in [0, 1].
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::msg(format!("dropout probability must be in [0, 1], got {p}")));
        }
        Ok(Dropout { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Apply dropout when `train` is set, drawing the mask from `rng` (one
    /// uniform per element, so the stream position is part of a checkpoint).
    /// In evaluation, or with p = 0, returns `x` and draws nothing.
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        // With p = 1 nothing survives (as torch does), and the scale must not be infinite.
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        let mask: Vec<f64> = rng.uniform_vec(x.numel()).into_iter().map(|u| if u < keep { scale } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, x.shape())?.to_dtype(x.dtype())?.to_device(x.device())?;
        x.mul(&mask)
    }
}
