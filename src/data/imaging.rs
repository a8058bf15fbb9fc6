//! Decoded images as f32 in [0, 1]: decoding (PNG, JPEG; 8- and 16-bit; grey
//! and RGB), antialiased resizing, centre cropping, and PNG encoding.

use super::error::{DataError, DataResult};
use ::image::{DynamicImage, ImageFormat};
use std::path::Path;

/// A decoded image: `channels` (1 = grey, 3 = RGB) interleaved per pixel, row-major, values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<f32>,
}

/// Decodes PNG or JPEG bytes. 16-bit samples keep their precision (÷65535); an
/// alpha channel is dropped; a 0×0 image is an error.
pub fn decode(bytes: &[u8]) -> Result<Image, String> {
    let format = ::image::guess_format(bytes).map_err(|_| "is not a PNG or JPEG file (unknown signature)".to_string())?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg) {
        return Err(format!("is {format:?}; only PNG and JPEG are supported"));
    }
    // The PNG decoder rejects a 0×0 header with a generic message; say what is wrong.
    if format == ImageFormat::Png && bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        if w == 0 || h == 0 {
            return Err(format!("has zero size ({w}×{h})"));
        }
    }
    let dynamic = ::image::load_from_memory_with_format(bytes, format).map_err(|e| format!("cannot be decoded as {format:?} ({e})"))?;
    let (width, height) = (dynamic.width() as usize, dynamic.height() as usize);
    if width == 0 || height == 0 {
        return Err(format!("has zero size ({width}×{height})"));
    }
    let (channels, data): (usize, Vec<f32>) = match dynamic {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw().into_iter().map(|v| v as f32 / 255.0).collect()),
        DynamicImage::ImageLuma16(b) => (1, b.into_raw().into_iter().map(|v| v as f32 / 65535.0).collect()),
        DynamicImage::ImageLumaA8(b) => (1, b.into_raw().chunks_exact(2).map(|p| p[0] as f32 / 255.0).collect()),
        DynamicImage::ImageLumaA16(b) => (1, b.into_raw().chunks_exact(2).map(|p| p[0] as f32 / 65535.0).collect()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw().into_iter().map(|v| v as f32 / 255.0).collect()),
        DynamicImage::ImageRgb16(b) => (3, b.into_raw().into_iter().map(|v| v as f32 / 65535.0).collect()),
        other => (3, other.to_rgb32f().into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect()),
    };
    Ok(Image { width, height, channels, data })
}

/// Reads and decodes an image file; errors name the file.
pub fn read_image(path: &Path) -> DataResult<Image> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode(&bytes).map_err(|msg| DataError::ImageFile { path: path.to_path_buf(), msg })
}

/// Per-output-sample filter taps: first source index and weights.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

/// Triangle-filter taps for resampling `src` samples to `dst`; the filter widens
/// with the reduction factor so downscaling averages (no aliasing), like PIL's bilinear.
fn taps(src: usize, dst: usize) -> Taps {
    let scale = src as f64 / dst as f64;
    let support = scale.max(1.0);
    let mut start = Vec::with_capacity(dst);
    let mut weights = Vec::with_capacity(dst);
    for o in 0..dst {
        let centre = (o as f64 + 0.5) * scale;
        let lo = ((centre - support).floor().max(0.0)) as usize;
        let hi = ((centre + support).ceil() as usize).min(src);
        let mut w: Vec<f32> = (lo..hi).map(|s| (1.0 - ((s as f64 + 0.5 - centre) / support).abs()).max(0.0) as f32).collect();
        let sum: f32 = w.iter().sum();
        if sum > 0.0 {
            w.iter_mut().for_each(|x| *x /= sum);
        } else {
            // Only when the centre falls between taps of an upscale's edge: take the nearest sample.
            w.iter_mut().for_each(|x| *x = 0.0);
            let nearest = (centre as usize).min(src - 1).max(lo) - lo;
            if nearest < w.len() {
                w[nearest] = 1.0;
            }
        }
        start.push(lo);
        weights.push(w);
    }
    Taps { start, weights }
}

impl Image {
    /// A grey image from values in [0, 1].
    pub fn grey(width: usize, height: usize, data: Vec<f32>) -> Image {
        debug_assert_eq!(data.len(), width * height);
        Image { width, height, channels: 1, data }
    }

    /// Luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B); a grey image is returned as is.
    pub fn to_grey(&self) -> Image {
        if self.channels == 1 {
            return self.clone();
        }
        let data = self.data.chunks_exact(3).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).collect();
        Image::grey(self.width, self.height, data)
    }

    /// Three channels (grey replicated); an RGB image is returned as is.
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Image { width: self.width, height: self.height, channels: 3, data }
    }

    /// Separable Gaussian blur with standard deviation `sigma` pixels, edges clamped;
    /// `sigma ≤ 0` returns a copy.
    pub fn gaussian_blur(&self, sigma: f64) -> Image {
        let img = self;
        if sigma <= 0.0 {
            return img.clone();
        }
        let radius = (3.0 * sigma).ceil() as isize;
        let mut kernel: Vec<f32> = (-radius..=radius).map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp() as f32).collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);
        let (w, h, c) = (img.width as isize, img.height as isize, img.channels);
        let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
            let mut out = vec![0f32; src.len()];
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        let mut acc = 0f32;
                        for (k, &weight) in kernel.iter().enumerate() {
                            let d = k as isize - radius;
                            let (sx, sy) = if horizontal { ((x + d).clamp(0, w - 1), y) } else { (x, (y + d).clamp(0, h - 1)) };
                            acc += weight * src[(sy * w + sx) as usize * c + ch];
                        }
                        out[(y * w + x) as usize * c + ch] = acc;
                    }
                }
            }
            out
        };
        let data = pass(&pass(&img.data, true), false);
        Image { data, ..img.clone() }
    }

    /// Resamples to `width`×`height` with an antialiased triangle filter (separable, two passes).
    pub fn resize(&self, width: usize, height: usize) -> Image {
        assert!(width > 0 && height > 0, "resize target must be non-empty");
        if width == self.width && height == self.height {
            return self.clone();
        }
        let c = self.channels;
        let tx = taps(self.width, width);
        let mut rows = vec![0f32; self.height * width * c];
        for y in 0..self.height {
            let src = &self.data[y * self.width * c..(y + 1) * self.width * c];
            let dst = &mut rows[y * width * c..(y + 1) * width * c];
            for x in 0..width {
                let s0 = tx.start[x];
                for (k, &w) in tx.weights[x].iter().enumerate() {
                    let s = (s0 + k) * c;
                    for ch in 0..c {
                        dst[x * c + ch] += w * src[s + ch];
                    }
                }
            }
        }
        let ty = taps(self.height, height);
        let row_len = width * c;
        let mut out = vec![0f32; height * row_len];
        for y in 0..height {
            let dst = &mut out[y * row_len..(y + 1) * row_len];
            let s0 = ty.start[y];
            for (k, &w) in ty.weights[y].iter().enumerate() {
                let src = &rows[(s0 + k) * row_len..(s0 + k + 1) * row_len];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += w * s;
                }
            }
        }
        Image { width, height, channels: c, data: out }
    }

    /// The centred `width`×`height` window (must fit inside the image).
    pub fn center_crop(&self, width: usize, height: usize) -> Image {
        let (width, height) = (width.min(self.width), height.min(self.height));
        let (x0, y0) = ((self.width - width) / 2, (self.height - height) / 2);
        let c = self.channels;
        let mut data = Vec::with_capacity(width * height * c);
        for y in y0..y0 + height {
            let row = &self.data[(y * self.width + x0) * c..(y * self.width + x0 + width) * c];
            data.extend_from_slice(row);
        }
        Image { width, height, channels: c, data }
    }

    /// Scales the shorter side to `size`, then takes the centred `size`×`size` square.
    pub fn resize_center_crop(&self, size: usize) -> Image {
        let short = self.width.min(self.height) as f64;
        let w = ((self.width as f64 * size as f64 / short).round() as usize).max(size);
        let h = ((self.height as f64 * size as f64 / short).round() as usize).max(size);
        self.resize(w, h).center_crop(size, size)
    }

    /// Encodes as an 8-bit PNG (grey or RGB).
    pub fn to_png(&self) -> Vec<u8> {
        let bytes: Vec<u8> = self.data.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        let color = if self.channels == 1 { ::image::ExtendedColorType::L8 } else { ::image::ExtendedColorType::Rgb8 };
        let mut out = Vec::new();
        use ::image::ImageEncoder;
        ::image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&bytes, self.width as u32, self.height as u32, color)
            .expect("PNG encoding into memory cannot fail for a well-formed image");
        out
    }

    /// Writes an 8-bit PNG atomically.
    pub fn save_png(&self, path: &Path) -> DataResult<()> {
        super::atomic::write_atomic(path, &self.to_png())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscaling_averages() {
        let img = Image::grey(4, 2, vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        let small = img.resize(2, 1);
        for v in small.data {
            assert!((v - 0.5).abs() < 0.2, "{v}");
        }
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let img = Image::grey(7, 5, vec![0.25; 35]);
        for (w, h) in [(3, 2), (16, 11), (7, 5)] {
            assert!(img.resize(w, h).data.iter().all(|v| (v - 0.25).abs() < 1e-6));
        }
    }

    #[test]
    fn centre_crop_of_a_wide_image_is_square() {
        let img = Image::grey(8, 4, (0..32).map(|v| v as f32 / 32.0).collect());
        let sq = img.resize_center_crop(4);
        assert_eq!((sq.width, sq.height), (4, 4));
        assert_eq!(sq.data[0], img.data[2]);
    }
}
