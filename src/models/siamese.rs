//! The siamese patient re-identification network (Packhäuser et al. 2022, as
//! Privacy Distillation uses it): a shared ResNet-50 trunk whose `fc` maps to
//! a 128-d embedding, a sigmoid on each branch, |a − b|, and a Linear(128 → 1)
//! head; score = sigmoid(logit) is the probability that both images show the
//! same patient. Names: `backbone.*` (torchvision) and `head.weight`, `head.bias`.

use crate::models::resnet::{ResNet, ResNetConfig};
use crate::nn::{Linear, ParamPath};
use crate::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// `{"backbone": {…resnet…}, "embedding_dim": 128}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiameseConfig {
    pub backbone: ResNetConfig,
    #[serde(default = "default_dim")]
    pub embedding_dim: usize,
}

fn default_dim() -> usize {
    128
}

/// Logit and score of each pair.
pub struct SiameseOutput {
    /// [N, 1]
    pub logit: Tensor,
    /// sigmoid(logit), [N, 1]
    pub score: Tensor,
}

pub struct SiameseReid {
    backbone: ResNet,
    head: Linear,
}

impl SiameseReid {
    pub fn new(vs: &ParamPath, config: &SiameseConfig) -> Result<Self> {
        let mut backbone_cfg = config.backbone.clone();
        backbone_cfg.num_classes = config.embedding_dim;
        Ok(SiameseReid {
            backbone: ResNet::new(&vs.pp("backbone"), &backbone_cfg)?,
            head: Linear::new(&vs.pp("head"), config.embedding_dim, 1, true)?,
        })
    }

    /// The pre-sigmoid embedding of a batch of images [N, embedding_dim].
    /// Each branch runs separately (own BatchNorm statistics in training), as the reference does.
    pub fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.backbone.forward(x, train).map(|o| o.logits)
    }

    /// The backbone (for Grad-CAM at layer4).
    pub fn backbone(&self) -> &ResNet {
        &self.backbone
    }

    /// Logits from two embeddings, through the fused head op.
    pub fn head_logit(&self, ea: &Tensor, eb: &Tensor) -> Result<Tensor> {
        Tensor::siamese_head(ea, eb, &self.head.weight, self.head.bias.as_ref().expect("head has a bias"))
    }

    /// Mean BCE of the pair labels (1 = same patient), through the fused head+loss op.
    pub fn loss(&self, ea: &Tensor, eb: &Tensor, target: &Tensor) -> Result<Tensor> {
        Tensor::siamese_head_bce(ea, eb, &self.head.weight, self.head.bias.as_ref().expect("head has a bias"), target)
    }

    pub fn forward(&self, a: &Tensor, b: &Tensor, train: bool) -> Result<SiameseOutput> {
        crate::autograd::on_workers(|| {
            let (ea, eb) = (self.embed(a, train)?, self.embed(b, train)?);
            let logit = self.head_logit(&ea, &eb)?;
            Ok(SiameseOutput { score: logit.sigmoid()?, logit })
        })
    }
}
