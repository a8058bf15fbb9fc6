//! Deep AUC maximisation (Yuan et al., ICCV 2021; LibAUC): the AUC-margin
//! min-max loss and the PESG optimizer, as LibAUC trains its CheXpert models
//! after a cross-entropy warm-up.
//!
//! For each label c with positive share p, scores s = sigmoid(logit) and the
//! auxiliary a_c, b_c (minimised) and α_c (maximised):
//!
//! ```text
//! L_c = (1−p)·mean[(s − a)²·1(y=1)] + p·mean[(s − b)²·1(y=0)]
//!     + 2α·(p(1−p)·m + mean[p·s·1(y=0) − (1−p)·s·1(y=1)]) − p(1−p)·α²
//! ```
//!
//! summed over labels (LibAUC's `AUCM_MultiLabel`). PESG (proximal epoch
//! stochastic gradient) descends on the network and a, b and ascends on α:
//!
//! ```text
//! w ← w − lr·(clip(∇w, ±c) + (w − w_ref)/γ + λ·w)       (every parameter, a and b)
//! α ← clamp(α + lr·∇α, 0, 999)
//! ```
//!
//! and at the end of chosen epochs `lr ← lr / decay` and `w_ref ← w`
//! (LibAUC's `update_regularizer`). The reference point starts at the initial
//! weights.

use crate::autograd::no_grad;
use crate::{DType, Device, Error, Gradients, Result, Tensor};
use serde::{Deserialize, Serialize};

/// LibAUC's recipe for the AUC-M stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PesgConfig {
    /// The margin m of the AUC-M loss.
    pub margin: f64,
    /// Step size.
    pub lr: f64,
    /// Strength 1/γ of the pull towards the epoch's reference point.
    pub gamma: f64,
    /// L2 weight decay λ.
    pub weight_decay: f64,
    /// Gradients are clipped to ±this before the update.
    pub clip_value: f64,
    /// The learning rate is divided by this at each epoch in `decay_epochs`.
    pub decay_factor: f64,
    /// Epochs (1-based) after which the learning rate decays and the reference point moves.
    pub decay_epochs: Vec<usize>,
}

impl Default for PesgConfig {
    fn default() -> Self {
        PesgConfig { margin: 1.0, lr: 0.1, gamma: 500.0, weight_decay: 1e-5, clip_value: 1.0, decay_factor: 10.0, decay_epochs: vec![1, 2] }
    }
}

/// The AUC-M loss over `labels` outputs, with its auxiliary variables.
pub struct AucmLoss {
    /// Margin m.
    pub margin: f64,
    /// Positive share of each label in the training set, `[C]`.
    pub imratio: Vec<f64>,
    /// `[C]`, minimised.
    pub a: Tensor,
    /// `[C]`, minimised.
    pub b: Tensor,
    /// `[C]`, maximised.
    pub alpha: Tensor,
}

impl AucmLoss {
    /// a, b and α start at zero, as in LibAUC.
    pub fn new(margin: f64, imratio: Vec<f64>) -> Result<AucmLoss> {
        if let Some(p) = imratio.iter().find(|p| !(**p > 0.0 && **p < 1.0)) {
            return Err(Error::msg(format!("AUC-M loss: every label needs positives and negatives in training (positive share {p})")));
        }
        let c = imratio.len();
        let var = || Ok::<_, Error>(Tensor::zeros(&[c], DType::F32, Device::Cpu)?.to_variable());
        Ok(AucmLoss { margin, imratio, a: var()?, b: var()?, alpha: var()? })
    }

    /// The loss of scores `[N, C]` (probabilities) against 0/1 targets `[N, C]`, summed over labels.
    pub fn forward(&self, scores: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let c = self.imratio.len();
        if scores.rank() != 2 || scores.shape()[1] != c || targets.shape() != scores.shape() {
            return Err(Error::bad_shape(
                "aucm_loss",
                format!("scores {:?} and targets {:?} must both be [N, {c}]", scores.shape(), targets.shape()),
            ));
        }
        let p = Tensor::from_vec(self.imratio.iter().map(|&v| v as f32).collect::<Vec<f32>>(), &[c])?.to_device(scores.device())?;
        let q = p.affine(-1.0, 1.0)?; // 1 − p
        let pq = p.mul(&q)?;
        let pos = targets.clone();
        let neg = targets.affine(-1.0, 1.0)?;
        let mean0 = |t: Tensor| t.mean(&[0], false);
        let sq_a = mean0(scores.sub(&self.a)?.square()?.mul(&pos)?)?.mul(&q)?;
        let sq_b = mean0(scores.sub(&self.b)?.square()?.mul(&neg)?)?.mul(&p)?;
        let gap = mean0(scores.mul(&neg)?.mul(&p)?.sub(&scores.mul(&pos)?.mul(&q)?)?)?;
        let margin_term = self.alpha.mul_scalar(2.0)?.mul(&pq.mul_scalar(self.margin)?.add(&gap)?)?;
        let alpha_sq = pq.mul(&self.alpha.square()?)?;
        sq_a.add(&sq_b)?.add(&margin_term)?.sub(&alpha_sq)?.sum_all()
    }
}

/// PESG over named parameters plus the loss's a and b (descent) and α (ascent).
pub struct Pesg {
    config: PesgConfig,
    lr: f64,
    params: Vec<(String, Tensor)>,
    reference: Vec<Tensor>,
    alpha: Tensor,
}

impl Pesg {
    /// An optimizer over `params` and the auxiliary variables of `loss`; the reference point is their current value.
    pub fn new(mut params: Vec<(String, Tensor)>, loss: &AucmLoss, config: PesgConfig) -> Result<Pesg> {
        params.push(("aucm.a".into(), loss.a.clone()));
        params.push(("aucm.b".into(), loss.b.clone()));
        let reference = no_grad(|| params.iter().map(|(_, p)| p.affine(1.0, 0.0)).collect::<Result<Vec<_>>>())?;
        Ok(Pesg { lr: config.lr, config, params, reference, alpha: loss.alpha.clone() })
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// One PESG step from the gradients of the AUC-M loss.
    pub fn step(&mut self, grads: &Gradients) -> Result<()> {
        no_grad(|| {
            let (lr, c) = (self.lr, self.config.clip_value);
            for ((name, p), r) in self.params.iter().zip(&self.reference) {
                let Some(g) = grads.get(p) else { continue };
                if g.shape() != p.shape() {
                    return Err(Error::msg(format!("PESG: gradient of `{name}` has shape {:?}, the parameter {:?}", g.shape(), p.shape())));
                }
                let d =
                    g.clamp(-c, c)?.add(&p.sub(r)?.mul_scalar(1.0 / self.config.gamma)?)?.add(&p.mul_scalar(self.config.weight_decay)?)?;
                p.assign(&p.sub(&d.mul_scalar(lr)?)?)?;
            }
            if let Some(g) = grads.get(&self.alpha) {
                self.alpha.assign(&self.alpha.add(&g.mul_scalar(lr)?)?.clamp(0.0, 999.0)?)?;
            }
            Ok(())
        })
    }

    /// End of epoch `epoch` (1-based): decay the learning rate and move the reference point when the recipe says so.
    pub fn end_epoch(&mut self, epoch: usize) -> Result<()> {
        if self.config.decay_epochs.contains(&epoch) {
            self.update_regularizer(self.config.decay_factor)?;
        }
        Ok(())
    }

    /// LibAUC's `update_regularizer(decay_factor)`: `lr /= decay_factor` and the reference point becomes the current weights.
    pub fn update_regularizer(&mut self, decay_factor: f64) -> Result<()> {
        self.lr /= decay_factor;
        no_grad(|| {
            for ((_, p), r) in self.params.iter().zip(&self.reference) {
                r.assign(p)?;
            }
            Ok(())
        })
    }
}
