//! Seeded training augmentations on decoded images (values in [0, 1]):
//! random resized crop, small rotation, optional horizontal flip,
//! Gaussian blur, brightness/contrast, Gaussian noise.
//!
//! Geometry is one inverse mapping per output pixel (crop, rotation and flip
//! composed) with bilinear sampling, after an antialiased pre-shrink so a large
//! crop is not aliased. Draws come from the [`Rng`] passed in: give each sample
//! its own (e.g. `Rng::new(seed).fork(epoch).fork(index)`) and the result does
//! not depend on which worker thread made it.

use super::imaging::Image;
use crate::Rng;

/// Augmentation ranges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Range of the crop's area as a fraction of the image's.
    pub crop_scale: (f32, f32),
    /// Range of the crop's aspect ratio (width / height), drawn log-uniformly.
    pub crop_ratio: (f32, f32),
    /// Rotation drawn uniformly in ±this many degrees.
    pub max_rotation_deg: f32,
    /// Probability of a horizontal flip. Chest X-rays have a laterality (heart on
    /// the left, side markers), so the chest X-ray default is 0.
    pub hflip_prob: f32,
    /// Additive brightness drawn uniformly in ±this.
    pub brightness: f32,
    /// Contrast factor drawn uniformly in 1 ± this (about the image mean).
    pub contrast: f32,
    /// Gaussian noise with a standard deviation drawn uniformly in [0, this].
    pub noise_std: f32,
    /// Gaussian blur with a standard deviation drawn uniformly in [0, this] output
    /// pixels: the smoothing a latent diffusion model's decoder leaves, which a
    /// re-identification net must see through. 0 draws nothing.
    pub max_blur_sigma: f32,
}

impl Augment {
    /// Mild, anatomy-preserving defaults for chest X-rays.
    pub fn chest_xray() -> Augment {
        Augment {
            crop_scale: (0.8, 1.0),
            crop_ratio: (0.9, 1.0 / 0.9),
            max_rotation_deg: 5.0,
            hflip_prob: 0.0,
            brightness: 0.05,
            contrast: 0.1,
            noise_std: 0.01,
            max_blur_sigma: 0.0,
        }
    }

    /// The identity: apply only resizes.
    pub fn none() -> Augment {
        Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            max_rotation_deg: 0.0,
            hflip_prob: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            noise_std: 0.0,
            max_blur_sigma: 0.0,
        }
    }

    /// An augmented `size`×`size` view of `img`.
    pub fn apply(&self, img: &Image, size: usize, rng: &mut Rng) -> Image {
        let area = (img.width * img.height) as f64;
        let scale = lerp(self.crop_scale.0 as f64, self.crop_scale.1 as f64, rng.uniform());
        let log_ratio = lerp((self.crop_ratio.0 as f64).ln(), (self.crop_ratio.1 as f64).ln(), rng.uniform());
        let ratio = log_ratio.exp();
        let crop_w = (area * scale * ratio).sqrt().min(img.width as f64);
        let crop_h = (area * scale / ratio).sqrt().min(img.height as f64);
        let cx = crop_w / 2.0 + rng.uniform() * (img.width as f64 - crop_w);
        let cy = crop_h / 2.0 + rng.uniform() * (img.height as f64 - crop_h);
        let angle = (rng.uniform() * 2.0 - 1.0) * (self.max_rotation_deg as f64).to_radians();
        let flip = rng.uniform() < self.hflip_prob as f64;
        let brightness = (rng.uniform() * 2.0 - 1.0) * self.brightness as f64;
        let contrast = 1.0 + (rng.uniform() * 2.0 - 1.0) * self.contrast as f64;
        let noise_std = rng.uniform() * self.noise_std as f64;

        // Shrink first so the bilinear sampler never skips source pixels.
        let shrink = (size as f64 / crop_w.min(crop_h)).min(1.0);
        let src = if shrink < 1.0 {
            img.resize(((img.width as f64 * shrink).round() as usize).max(1), ((img.height as f64 * shrink).round() as usize).max(1))
        } else {
            img.clone()
        };
        let (sx, sy) = (src.width as f64 / img.width as f64, src.height as f64 / img.height as f64);
        let (cos, sin) = (angle.cos(), angle.sin());
        let c = src.channels;
        let mut out = vec![0f32; size * size * c];
        for oy in 0..size {
            for ox in 0..size {
                let mut u = ((ox as f64 + 0.5) / size as f64 - 0.5) * crop_w;
                let v = ((oy as f64 + 0.5) / size as f64 - 0.5) * crop_h;
                if flip {
                    u = -u;
                }
                let x = (cx + cos * u - sin * v) * sx - 0.5;
                let y = (cy + sin * u + cos * v) * sy - 0.5;
                bilinear(&src, x, y, &mut out[(oy * size + ox) * c..(oy * size + ox + 1) * c]);
            }
        }
        let mut view = Image { width: size, height: size, channels: c, data: out };
        // Drawn only when enabled, so configs without blur keep their exact random stream.
        if self.max_blur_sigma > 0.0 {
            view = view.gaussian_blur(rng.uniform() * self.max_blur_sigma as f64);
        }
        let mean = view.data.iter().map(|&v| v as f64).sum::<f64>() / view.data.len() as f64;
        let noise = if noise_std > 0.0 { super::noise::PixelNoise::from_rng(rng).normals(view.data.len()) } else { Vec::new() };
        for (i, v) in view.data.iter_mut().enumerate() {
            let mut x = (*v as f64 - mean) * contrast + mean + brightness;
            if let Some(z) = noise.get(i) {
                x += z * noise_std;
            }
            *v = x.clamp(0.0, 1.0) as f32;
        }
        view
    }
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// Bilinear sample at (x, y) in pixel-centre coordinates, edges clamped.
fn bilinear(img: &Image, x: f64, y: f64, out: &mut [f32]) {
    let xc = x.clamp(0.0, (img.width - 1) as f64);
    let yc = y.clamp(0.0, (img.height - 1) as f64);
    let (x0, y0) = (xc.floor() as usize, yc.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(img.width - 1), (y0 + 1).min(img.height - 1));
    let (fx, fy) = ((xc - x0 as f64) as f32, (yc - y0 as f64) as f32);
    let c = img.channels;
    let at = |xx: usize, yy: usize, ch: usize| img.data[(yy * img.width + xx) * c + ch];
    for (ch, o) in out.iter_mut().enumerate() {
        let top = at(x0, y0, ch) * (1.0 - fx) + at(x1, y0, ch) * fx;
        let bottom = at(x0, y1, ch) * (1.0 - fx) + at(x1, y1, ch) * fx;
        *o = top * (1.0 - fy) + bottom * fy;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Image {
        Image::grey(n, n, (0..n * n).map(|i| (i % n) as f32 / n as f32).collect())
    }

    #[test]
    fn same_seed_same_view_different_seed_different_view() {
        let img = ramp(32);
        let aug = Augment::chest_xray();
        let a = aug.apply(&img, 16, &mut Rng::new(3));
        let b = aug.apply(&img, 16, &mut Rng::new(3));
        let c = aug.apply(&img, 16, &mut Rng::new(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn identity_augment_is_a_resize() {
        let img = ramp(16);
        let out = Augment::none().apply(&img, 16, &mut Rng::new(0));
        for (a, b) in out.data.iter().zip(&img.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn flip_mirrors_the_ramp() {
        let img = ramp(8);
        let aug = Augment { hflip_prob: 1.0, ..Augment::none() };
        let out = aug.apply(&img, 8, &mut Rng::new(0));
        assert!((out.data[0] - img.data[7]).abs() < 1e-5);
    }

    fn total_variation(img: &Image) -> f32 {
        let n = img.width;
        (0..n * n).filter(|i| i % n + 1 < n).map(|i| (img.data[i + 1] - img.data[i]).abs()).sum()
    }

    #[test]
    fn blur_smooths_and_leaves_the_geometry_draws_alone() {
        let checker = Image::grey(16, 16, (0..256).map(|i| ((i % 16 + i / 16) % 2) as f32).collect());
        let sharp = Augment { crop_scale: (0.8, 1.0), max_rotation_deg: 5.0, ..Augment::none() };
        let soft = Augment { max_blur_sigma: 2.0, ..sharp };
        // Same seed: the geometry is drawn first, so each blurred view is its sharp view, blurred.
        let (mut tv_sharp, mut tv_soft) = (0.0, 0.0);
        for seed in 0..8 {
            let (a, b) = (sharp.apply(&checker, 16, &mut Rng::new(seed)), soft.apply(&checker, 16, &mut Rng::new(seed)));
            assert!(total_variation(&b) <= total_variation(&a) + 1e-3, "seed {seed}: a blur never adds variation");
            (tv_sharp, tv_soft) = (tv_sharp + total_variation(&a), tv_soft + total_variation(&b));
        }
        assert!(tv_soft < 0.8 * tv_sharp, "{tv_soft} vs {tv_sharp}");
        let (a, b) = (sharp.apply(&checker, 16, &mut Rng::new(0)), soft.apply(&checker, 16, &mut Rng::new(0)));
        let mean = |img: &Image| img.data.iter().sum::<f32>() / img.data.len() as f32;
        assert!((mean(&a) - mean(&b)).abs() < 0.02, "a blur keeps the mean grey level");
    }
}
