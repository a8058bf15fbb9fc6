//! What each model expects its input pixels to be: one named function per
//! consumer, each returning a `[C, H, W]` f32 tensor, and [`Contract`] for
//! batches `[N, C, H, W]`.
//!
//! | consumer | function | channels | size | values |
//! |---|---|---|---|---|
//! | latent diffusion (VAE encoder) | [`ldm_input`] | 1 or 3 | any | [-1, 1] |
//! | re-identification (siamese ResNet-50) | [`reid_input`] | 3 | 256 in the paper | ImageNet mean/std |
//! | FID features (torchxrayvision DenseNet-121) | [`fid_input`] | 1 | 224 | [-1024, 1024] |
//! | downstream 5-pathology classifier | [`classifier_input`] | 1 | any | [-1024, 1024] |
//!
//! Every contract first scales the shorter side to the size and takes the
//! centred square. The classifier follows the torchxrayvision convention (grey,
//! [-1024, 1024]) so it can start from chest X-ray pretrained DenseNet weights,
//! the same network family the FID features come from.

use super::error::{DataError, DataResult};
use super::imaging::Image;
use crate::Tensor;

/// ImageNet channel means (torchvision's normalisation).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// torchxrayvision's input size.
pub const FID_SIZE: usize = 224;
/// The re-identification network's input size in Privacy Distillation.
pub const PAPER_REID_SIZE: usize = 256;

/// A consumer's input contract.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Contract {
    /// Latent diffusion: [-1, 1], 1 (grey) or 3 (grey replicated, or RGB kept) channels.
    Ldm { size: usize, channels: usize },
    /// Re-identification: 3 channels normalised with ImageNet mean/std.
    Reid { size: usize },
    /// FID features: grey, [-1024, 1024], 224×224.
    Fid,
    /// Downstream classifier: grey, [-1024, 1024].
    Classifier { size: usize },
}

/// Planar pixels `[channels, height, width]`, ready to become a tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Planar {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Planar {
    /// As a `[C, H, W]` f32 tensor.
    pub fn into_tensor(self) -> DataResult<Tensor> {
        Ok(Tensor::from_vec(self.data, &[self.channels, self.height, self.width])?)
    }
}

impl Contract {
    /// The square side length.
    pub fn size(&self) -> usize {
        match *self {
            Contract::Ldm { size, .. } | Contract::Reid { size } | Contract::Classifier { size } => size,
            Contract::Fid => FID_SIZE,
        }
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        match *self {
            Contract::Ldm { channels, .. } => channels,
            Contract::Reid { .. } => 3,
            Contract::Fid | Contract::Classifier { .. } => 1,
        }
    }

    /// Checks the parameters (a size of 0 or an LDM channel count other than 1 or 3 is an error).
    pub fn validate(&self) -> DataResult<()> {
        if self.size() == 0 {
            return Err(DataError::Invalid(format!("{self:?}: the image size must be at least 1")));
        }
        if !matches!(self.channels(), 1 | 3) {
            return Err(DataError::Invalid(format!("{self:?}: the LDM takes 1 or 3 channels")));
        }
        Ok(())
    }

    /// Resizes + centre crops, then maps values to this contract.
    pub fn apply(&self, img: &Image) -> DataResult<Planar> {
        self.validate()?;
        let size = self.size();
        let square = if img.width == size && img.height == size { img.clone() } else { img.resize_center_crop(size) };
        Ok(self.normalise(&square))
    }

    /// Maps an image that already has this contract's size (e.g. after augmentation) to its values.
    pub fn normalise(&self, square: &Image) -> Planar {
        let channels = self.channels();
        let mut data = vec![0f32; channels * square.height * square.width];
        self.normalise_into(square, &mut data);
        Planar { channels, height: square.height, width: square.width, data }
    }

    /// [`Contract::normalise`] into `out` (`channels × height × width` values), so a
    /// batch can be filled in place. Grey is replicated to 3 channels and RGB
    /// reduced to luminance as the contract needs.
    pub fn normalise_into(&self, square: &Image, out: &mut [f32]) {
        let channels = self.channels();
        let plane_len = square.height * square.width;
        assert_eq!(out.len(), channels * plane_len, "normalise_into: output length");
        let grey;
        let src = if channels == 1 && square.channels == 3 {
            grey = square.to_grey();
            &grey
        } else {
            square
        };
        for (c, plane) in out.chunks_exact_mut(plane_len).enumerate() {
            let (scale, shift) = match *self {
                Contract::Ldm { .. } => (2.0, -1.0),
                Contract::Reid { .. } => (1.0 / IMAGENET_STD[c], -IMAGENET_MEAN[c] / IMAGENET_STD[c]),
                Contract::Fid | Contract::Classifier { .. } => (2048.0, -1024.0),
            };
            let (stride, offset) = if src.channels == 1 { (1, 0) } else { (3, c) };
            for (o, px) in plane.iter_mut().zip(src.data[offset..].iter().step_by(stride)) {
                *o = px * scale + shift;
            }
        }
    }

    /// A batch `[N, C, H, W]` from images.
    pub fn batch(&self, images: &[Image]) -> DataResult<Tensor> {
        let planars = images.iter().map(|i| self.apply(i)).collect::<DataResult<Vec<_>>>()?;
        stack(&planars)
    }
}

/// Stacks same-shaped planar images into an `[N, C, H, W]` tensor.
pub fn stack(planars: &[Planar]) -> DataResult<Tensor> {
    let Some(first) = planars.first() else {
        return Err(DataError::Invalid("cannot stack an empty batch".into()));
    };
    let shape = (first.channels, first.height, first.width);
    let mut data = Vec::with_capacity(planars.len() * first.data.len());
    for p in planars {
        if (p.channels, p.height, p.width) != shape {
            return Err(DataError::Invalid(format!("batch images differ in shape: {shape:?} vs {:?}", (p.channels, p.height, p.width))));
        }
        data.extend_from_slice(&p.data);
    }
    Ok(Tensor::from_vec(data, &[planars.len(), shape.0, shape.1, shape.2])?)
}

/// The latent diffusion model's input: `[channels, size, size]` in [-1, 1] (`channels` is 1 or 3).
pub fn ldm_input(img: &Image, size: usize, channels: usize) -> DataResult<Tensor> {
    Contract::Ldm { size, channels }.apply(img)?.into_tensor()
}

/// The re-identification network's input: `[3, size, size]`, ImageNet mean/std (the paper uses 256).
pub fn reid_input(img: &Image, size: usize) -> DataResult<Tensor> {
    Contract::Reid { size }.apply(img)?.into_tensor()
}

/// The FID feature network's input (torchxrayvision): `[1, 224, 224]` in [-1024, 1024].
pub fn fid_input(img: &Image) -> DataResult<Tensor> {
    Contract::Fid.apply(img)?.into_tensor()
}

/// The downstream classifier's input: `[1, size, size]` in [-1024, 1024] (torchxrayvision convention).
pub fn classifier_input(img: &Image, size: usize) -> DataResult<Tensor> {
    Contract::Classifier { size }.apply(img)?.into_tensor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_replicated_and_rgb_reduced_to_luminance() {
        let rgb = Image { width: 1, height: 1, channels: 3, data: vec![1.0, 0.0, 0.0] };
        let ldm = Contract::Ldm { size: 1, channels: 1 }.normalise(&rgb);
        assert!((ldm.data[0] - (0.299 * 2.0 - 1.0)).abs() < 1e-6);
        let kept = Contract::Ldm { size: 1, channels: 3 }.normalise(&rgb);
        assert_eq!(kept.data, vec![1.0, -1.0, -1.0]);
        let grey = Image::grey(1, 1, vec![0.5]);
        let reid = Contract::Reid { size: 1 }.normalise(&grey);
        for c in 0..3 {
            assert!((reid.data[c] - (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]).abs() < 1e-6);
        }
    }
}
