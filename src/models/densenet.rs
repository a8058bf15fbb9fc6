//! DenseNet (torchvision's `DenseNet`, DenseNet-121 by default: growth 32,
//! blocks 6-12-24-16, bn_size 4, compression 0.5), with torchvision's names:
//! `features.{conv0,norm0,denseblockN.denselayerM.{norm1,conv1,norm2,conv2},transitionN.{norm,conv},norm5}`, `classifier`.

use crate::models::resnet::ClassifierOutput;
use crate::nn::{BatchNorm2d, Conv2d, Linear, ParamPath};
use crate::tensor::ops::conv::Conv2dParams;
use crate::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Constructor arguments, as `torchvision.models.DenseNet` takes them (plus the stem's input channels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseNetConfig {
    pub growth_rate: usize,
    pub block_config: Vec<usize>,
    pub num_init_features: usize,
    pub bn_size: usize,
    pub num_classes: usize,
    #[serde(default = "three")]
    pub in_channels: usize,
}

fn three() -> usize {
    3
}

impl DenseNetConfig {
    /// torchvision's `densenet121(num_classes)` with `in_channels` input channels.
    pub fn densenet121(num_classes: usize, in_channels: usize) -> Self {
        DenseNetConfig { growth_rate: 32, block_config: vec![6, 12, 24, 16], num_init_features: 64, bn_size: 4, num_classes, in_channels }
    }

    /// Width of the pooled features (1024 for DenseNet-121).
    pub fn feature_dim(&self) -> usize {
        let mut nf = self.num_init_features;
        for (i, &n) in self.block_config.iter().enumerate() {
            nf += n * self.growth_rate;
            if i + 1 != self.block_config.len() {
                nf /= 2;
            }
        }
        nf
    }
}

struct DenseLayer {
    norm1: BatchNorm2d,
    conv1: Conv2d,
    norm2: BatchNorm2d,
    conv2: Conv2d,
}

impl DenseLayer {
    /// The layer's new features from `inputs`, the block's features so far
    /// (concatenated along the channels).
    fn forward(&self, inputs: &[Tensor], train: bool) -> Result<Tensor> {
        let h = self.norm1.forward_cat_relu(inputs, train)?;
        let h = self.conv1.forward_batch_norm(&h, &self.norm2, train, None, true)?;
        self.conv2.forward(&h)
    }
}

struct Transition {
    norm: BatchNorm2d,
    conv: Conv2d,
}

/// A torchvision DenseNet.
pub struct DenseNet {
    config: DenseNetConfig,
    conv0: Conv2d,
    norm0: BatchNorm2d,
    blocks: Vec<(Vec<DenseLayer>, Option<Transition>)>,
    norm5: BatchNorm2d,
    classifier: Linear,
}

impl DenseNet {
    /// Create the parameters under `vs` (names as torchvision's state_dict).
    pub fn new(vs: &ParamPath, config: &DenseNetConfig) -> Result<Self> {
        let f = vs.pp("features");
        let conv0 = Conv2d::new(&f.pp("conv0"), config.in_channels, config.num_init_features, 7, Conv2dParams::new(2, 3), false)?;
        let norm0 = BatchNorm2d::new(&f.pp("norm0"), config.num_init_features, 1e-5, Some(0.1), true)?;
        let (g, inner) = (config.growth_rate, config.bn_size * config.growth_rate);
        let mut nf = config.num_init_features;
        let mut blocks = Vec::new();
        for (i, &n) in config.block_config.iter().enumerate() {
            let bv = f.pp(format!("denseblock{}", i + 1));
            let mut layers = Vec::new();
            for j in 0..n {
                let lv = bv.pp(format!("denselayer{}", j + 1));
                let nin = nf + j * g;
                layers.push(DenseLayer {
                    norm1: BatchNorm2d::new(&lv.pp("norm1"), nin, 1e-5, Some(0.1), true)?,
                    conv1: Conv2d::new(&lv.pp("conv1"), nin, inner, 1, Conv2dParams::default(), false)?,
                    norm2: BatchNorm2d::new(&lv.pp("norm2"), inner, 1e-5, Some(0.1), true)?,
                    conv2: Conv2d::new(&lv.pp("conv2"), inner, g, 3, Conv2dParams::new(1, 1), false)?,
                });
            }
            nf += n * g;
            let transition = if i + 1 != config.block_config.len() {
                let tv = f.pp(format!("transition{}", i + 1));
                let t = Transition {
                    norm: BatchNorm2d::new(&tv.pp("norm"), nf, 1e-5, Some(0.1), true)?,
                    conv: Conv2d::new(&tv.pp("conv"), nf, nf / 2, 1, Conv2dParams::default(), false)?,
                };
                nf /= 2;
                Some(t)
            } else {
                None
            };
            blocks.push((layers, transition));
        }
        let norm5 = BatchNorm2d::new(&f.pp("norm5"), nf, 1e-5, Some(0.1), true)?;
        let classifier = Linear::new(&vs.pp("classifier"), nf, config.num_classes, true)?;
        Ok(DenseNet { config: config.clone(), conv0, norm0, blocks, norm5, classifier })
    }

    pub fn config(&self) -> &DenseNetConfig {
        &self.config
    }

    /// The globally pooled features [N, feature_dim] (after the final norm and ReLU).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        crate::autograd::on_workers(|| {
            let h = self.conv0.forward_batch_norm(x, &self.norm0, train, None, true)?.max_pool2d([3, 3], [2, 2], [1, 1])?;
            let mut parts = vec![h];
            for (layers, transition) in &self.blocks {
                // Each layer sees the concatenation of everything before it in the block;
                // the normalisation that opens each consumer reads the parts where they lie.
                for layer in layers {
                    let new_features = layer.forward(&parts, train)?;
                    parts.push(new_features);
                }
                if let Some(t) = transition {
                    let h = t.conv.forward(&t.norm.forward_cat_relu(&parts, train)?)?.avg_pool2d([2, 2], [2, 2], [0, 0])?;
                    parts = vec![h];
                }
            }
            self.norm5.forward_cat_relu(&parts, train)?.adaptive_avg_pool2d([1, 1])?.flatten(1, -1)
        })
    }

    /// Logits and pooled features.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<ClassifierOutput> {
        crate::autograd::on_workers(|| {
            let features = self.features(x, train)?;
            Ok(ClassifierOutput { logits: self.classifier.forward(&features)?, features })
        })
    }
}
