//! ResNet with Bottleneck blocks (torchvision's ResNet-50, v1.5: the stride
//! sits on the 3×3 conv), with torchvision's parameter names:
//! `conv1`, `bn1`, `layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3,downsample.0,downsample.1}`, `fc`.

use crate::nn::{BatchNorm2d, Conv2d, Linear, ParamPath};
use crate::tensor::ops::conv::Conv2dParams;
use crate::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// Constructor arguments, as `torchvision.models.ResNet` takes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Bottleneck blocks per stage; `[3, 4, 6, 3]` is ResNet-50.
    pub layers: [usize; 4],
    pub num_classes: usize,
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "sixty_four")]
    pub width_per_group: usize,
    /// Planes of the first stage (the stem's width); torchvision fixes it at 64.
    /// Smaller values give the same architecture at a fraction of the size (tests).
    #[serde(default = "sixty_four")]
    pub base_planes: usize,
}

fn three() -> usize {
    3
}
fn sixty_four() -> usize {
    64
}

impl ResNetConfig {
    /// torchvision's `resnet50(num_classes)`.
    pub fn resnet50(num_classes: usize) -> Self {
        ResNetConfig { layers: [3, 4, 6, 3], num_classes, in_channels: 3, width_per_group: 64, base_planes: 64 }
    }

    /// Width of the pooled features (the input of `fc`).
    pub fn feature_dim(&self) -> usize {
        8 * self.base_planes * Bottleneck::EXPANSION
    }
}

struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

impl Bottleneck {
    const EXPANSION: usize = 4;

    fn new(vs: &ParamPath, inplanes: usize, planes: usize, stride: usize, base_width: usize) -> Result<Self> {
        let width = planes * base_width / 64;
        let out = planes * Self::EXPANSION;
        let downsample = if stride != 1 || inplanes != out {
            let d = vs.pp("downsample");
            Some((
                Conv2d::new(&d.pp(0), inplanes, out, 1, Conv2dParams::new(stride, 0), false)?,
                BatchNorm2d::new(&d.pp(1), out, 1e-5, Some(0.1), true)?,
            ))
        } else {
            None
        };
        Ok(Bottleneck {
            conv1: Conv2d::new(&vs.pp("conv1"), inplanes, width, 1, Conv2dParams::default(), false)?,
            bn1: BatchNorm2d::new(&vs.pp("bn1"), width, 1e-5, Some(0.1), true)?,
            conv2: Conv2d::new(&vs.pp("conv2"), width, width, 3, Conv2dParams::new(stride, 1), false)?,
            bn2: BatchNorm2d::new(&vs.pp("bn2"), width, 1e-5, Some(0.1), true)?,
            conv3: Conv2d::new(&vs.pp("conv3"), width, out, 1, Conv2dParams::default(), false)?,
            bn3: BatchNorm2d::new(&vs.pp("bn3"), out, 1e-5, Some(0.1), true)?,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some((conv, bn)) => conv.forward_batch_norm(x, bn, train, None, false)?,
            None => x.clone(),
        };
        let h = self.conv1.forward_batch_norm(x, &self.bn1, train, None, true)?;
        let h = self.conv2.forward_batch_norm(&h, &self.bn2, train, None, true)?;
        self.conv3.forward_batch_norm(&h, &self.bn3, train, Some(&identity), true)
    }
}

/// A torchvision ResNet with Bottleneck blocks.
pub struct ResNet {
    config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    stages: Vec<Vec<Bottleneck>>,
    fc: Linear,
}

/// The outputs of a ResNet or DenseNet forward pass.
pub struct ClassifierOutput {
    /// `fc`/`classifier` outputs, [N, num_classes].
    pub logits: Tensor,
    /// The globally pooled features before the classifier, [N, feature_dim].
    pub features: Tensor,
}

impl ResNet {
    /// Create the parameters under `vs` (names as torchvision's state_dict).
    pub fn new(vs: &ParamPath, config: &ResNetConfig) -> Result<Self> {
        let p = config.base_planes;
        let conv1 = Conv2d::new(&vs.pp("conv1"), config.in_channels, p, 7, Conv2dParams::new(2, 3), false)?;
        let bn1 = BatchNorm2d::new(&vs.pp("bn1"), p, 1e-5, Some(0.1), true)?;
        let mut inplanes = p;
        let mut stages = Vec::new();
        for (s, &blocks) in config.layers.iter().enumerate() {
            let planes = p << s;
            let stride = if s == 0 { 1 } else { 2 };
            let lv = vs.pp(format!("layer{}", s + 1));
            let mut stage = Vec::new();
            for b in 0..blocks {
                stage.push(Bottleneck::new(&lv.pp(b), inplanes, planes, if b == 0 { stride } else { 1 }, config.width_per_group)?);
                inplanes = planes * Bottleneck::EXPANSION;
            }
            stages.push(stage);
        }
        let fc = Linear::new(&vs.pp("fc"), inplanes, config.num_classes, true)?;
        Ok(ResNet { config: config.clone(), conv1, bn1, stages, fc })
    }

    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// The pooled features [N, feature_dim]; `train` selects batch statistics in BatchNorm.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        crate::autograd::on_workers(|| self.layer4(x, train)?.adaptive_avg_pool2d([1, 1])?.flatten(1, -1))
    }

    /// The activations of the last stage (`layer4`), [N, C, h, w]: Grad-CAM's target layer.
    pub fn layer4(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv1.forward_batch_norm(x, &self.bn1, train, None, true)?;
        let mut h = h.max_pool2d([3, 3], [2, 2], [1, 1])?;
        for stage in &self.stages {
            for block in stage {
                h = block.forward(&h, train)?;
            }
        }
        Ok(h)
    }

    /// Logits and pooled features.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<ClassifierOutput> {
        crate::autograd::on_workers(|| {
            let features = self.features(x, train)?;
            Ok(ClassifierOutput { logits: self.fc.forward(&features)?, features })
        })
    }

    /// The classifier head applied to pooled features.
    pub fn head(&self, features: &Tensor) -> Result<Tensor> {
        self.fc.forward(features)
    }
}
