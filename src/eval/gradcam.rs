//! Grad-CAM++ (Chattopadhay et al., WACV 2018) for the re-identification
//! network: where in each image of a pair the siamese ResNet looks when it
//! decides "same patient" (Privacy Distillation, Fig. 5a).
//!
//! With activations A (channels k, positions ij) of ResNet `layer4` and the
//! pair's logit Y, Grad-CAM++ weighs each channel by
//! `w_k = Σ_ij α_kij · relu(∂Y/∂A_kij)` with
//! `α_kij = g² / (2g² + Σ_ab A_kab · g³)`, `g = ∂Y/∂A_kij`. These α are the
//! closed form of the second- and third-order derivatives of exp(Y) (the
//! paper's exponential trick), so one backward pass gives them. The map is
//! `relu(Σ_k w_k A_k)`, bilinearly upsampled to the image and scaled to [0, 1].
//! The arithmetic is pytorch-grad-cam's `GradCAMPlusPlus` (eps 1e-6, α = 0
//! where the gradient is 0).

use crate::autograd::no_grad;
use crate::data::Image;
use crate::models::siamese::SiameseReid;
use crate::{Error, Result, Tensor};

/// One class-activation map at the target layer's resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Cam {
    /// Map height (layer4's).
    pub height: usize,
    /// Map width.
    pub width: usize,
    /// `relu(Σ_k w_k A_k)`, row-major, not normalised.
    pub values: Vec<f32>,
}

/// Grad-CAM++ map from activations and gradients of one image, both `[K, h, w]` row-major.
pub fn gradcam_pp(activations: &[f32], grads: &[f32], channels: usize, height: usize, width: usize) -> Result<Cam> {
    let plane = height * width;
    if activations.len() != channels * plane || grads.len() != activations.len() {
        return Err(Error::msg(format!(
            "Grad-CAM++: {} activations and {} gradients do not make [{channels}, {height}, {width}]",
            activations.len(),
            grads.len()
        )));
    }
    let mut cam = vec![0f64; plane];
    for k in 0..channels {
        let a = &activations[k * plane..(k + 1) * plane];
        let g = &grads[k * plane..(k + 1) * plane];
        let sum_a: f64 = a.iter().map(|&v| v as f64).sum();
        let weight: f64 = g
            .iter()
            .map(|&gv| {
                let gv = gv as f64;
                if gv == 0.0 {
                    return 0.0;
                }
                let (g2, g3) = (gv * gv, gv * gv * gv);
                let alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-6);
                alpha * gv.max(0.0)
            })
            .sum();
        for (c, &av) in cam.iter_mut().zip(a) {
            *c += weight * av as f64;
        }
    }
    Ok(Cam { height, width, values: cam.into_iter().map(|v| v.max(0.0) as f32).collect() })
}

/// Grad-CAM++ maps of both images of a pair (each `[1, 3, H, W]` in the re-id input contract), for the
/// pair's logit; the other branch's embedding is held fixed. Runs the network in evaluation mode.
pub fn siamese_gradcam_pp(model: &SiameseReid, a: &Tensor, b: &Tensor) -> Result<(Cam, Cam, f64)> {
    let backbone = model.backbone();
    let (ea, eb) = no_grad(|| Ok::<_, Error>((model.embed(a, false)?, model.embed(b, false)?)))?;
    let branch = |x: &Tensor, other: &Tensor, first: bool| -> Result<(Cam, f64)> {
        // The layer4 output becomes a leaf, so the backward pass stops there and hands back ∂Y/∂A.
        let act = no_grad(|| backbone.layer4(x, false))?.to_variable();
        let emb = backbone.head(&act.adaptive_avg_pool2d([1, 1])?.flatten(1, -1)?)?;
        let logit = if first { model.head_logit(&emb, other)? } else { model.head_logit(other, &emb)? };
        let grads = logit.sum_all()?.backward()?;
        let g = grads.get(&act).ok_or_else(|| Error::msg("Grad-CAM++: no gradient reached layer4"))?;
        let (k, h, w) = (act.shape()[1], act.shape()[2], act.shape()[3]);
        let cam = gradcam_pp(&act.to_vec_f32()?, &g.to_vec_f32()?, k, h, w)?;
        Ok((cam, logit.to_vec_f64()?[0]))
    };
    if a.shape().first() != Some(&1) || b.shape().first() != Some(&1) {
        return Err(Error::msg(format!("Grad-CAM++ takes one pair at a time, got {:?} and {:?}", a.shape(), b.shape())));
    }
    let (cam_a, logit) = branch(a, &eb, true)?;
    let (cam_b, _) = branch(b, &ea, false)?;
    Ok((cam_a, cam_b, logit))
}

impl Cam {
    /// The map bilinearly resized to `size × size` (align_corners = false, as OpenCV and torch resize) and
    /// scaled to [0, 1] by its maximum (all zeros stay zeros).
    pub fn upsampled(&self, width: usize, height: usize) -> Vec<f32> {
        let sample = |src: usize, dst: usize, i: usize| -> (usize, usize, f32) {
            let x = ((i as f32 + 0.5) * src as f32 / dst as f32 - 0.5).max(0.0);
            let x0 = (x.floor() as usize).min(src - 1);
            let x1 = (x0 + 1).min(src - 1);
            (x0, x1, x - x0 as f32)
        };
        let mut out = vec![0f32; width * height];
        for y in 0..height {
            let (y0, y1, fy) = sample(self.height, height, y);
            for x in 0..width {
                let (x0, x1, fx) = sample(self.width, width, x);
                let v = |yy: usize, xx: usize| self.values[yy * self.width + xx];
                out[y * width + x] =
                    (1.0 - fy) * ((1.0 - fx) * v(y0, x0) + fx * v(y0, x1)) + fy * ((1.0 - fx) * v(y1, x0) + fx * v(y1, x1));
            }
        }
        let max = out.iter().copied().fold(0f32, f32::max);
        if max > 0.0 {
            out.iter_mut().for_each(|v| *v /= max);
        }
        out
    }
}

/// The jet colour map at t ∈ [0, 1] (blue → cyan → yellow → red), as OpenCV's COLORMAP_JET.
pub fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let channel = |centre: f32| (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// The image (grey or RGB, any size) with the map laid over it in jet colours: `(1 − s)·image + s·jet(map)`
/// with `s = strength` (pytorch-grad-cam's `show_cam_on_image` uses 0.5). The map is resized to the image.
pub fn overlay(image: &Image, cam: &Cam, strength: f32) -> Image {
    let rgb = image.to_rgb();
    let heat = cam.upsampled(rgb.width, rgb.height);
    let mut data = Vec::with_capacity(rgb.data.len());
    for (px, &h) in rgb.data.chunks_exact(3).zip(&heat) {
        let colour = jet(h);
        for c in 0..3 {
            data.push((1.0 - strength) * px[c] + strength * colour[c]);
        }
    }
    Image { width: rgb.width, height: rgb.height, channels: 3, data }
}
