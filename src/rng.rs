//! Counter-based random numbers (Philox 4×32-10, Salmon et al. 2011).
//!
//! A draw is a pure function of (seed, position in the stream), so the same
//! numbers come out whatever the thread count, a checkpoint stores just two
//! integers, and a CUDA kernel computing the same function produces the same
//! noise.
//!
//! Stream definition (shared with `kernels/rng.cu`): 32-bit word `i` of the
//! stream is word `i % 4` of `philox(counter = [i/4 as u64 lo, hi, 0, 0],
//! key = [seed lo, seed hi])`. A uniform is `(word >> 8) · 2⁻²⁴` in [0, 1).
//! Normal `j` uses uniform words `2j` and `2j+1` by Box–Muller's cosine branch.

use crate::tensor::{DType, Device, Tensor};
use crate::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Ten rounds of Philox 4×32.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

/// Word `i` of the stream of `seed`.
#[inline]
pub fn stream_word(seed: u64, i: u64) -> u32 {
    let block = i / 4;
    philox4x32_10([block as u32, (block >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])[(i % 4) as usize]
}

#[inline]
fn word_to_uniform(w: u32) -> f64 {
    (w >> 8) as f64 * (1.0 / 16_777_216.0)
}

/// A seeded generator: the seed and how many words have been used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    pub seed: u64,
    pub offset: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { seed, offset: 0 }
    }

    /// An independent generator derived from this one's seed and a label
    /// (e.g. one per data-loader worker or per sample).
    pub fn fork(&self, label: u64) -> Rng {
        let a = stream_word(self.seed ^ 0x5851_F42D_4C95_7F2D, label.wrapping_mul(2));
        let b = stream_word(self.seed ^ 0x5851_F42D_4C95_7F2D, label.wrapping_mul(2) + 1);
        Rng::new(((a as u64) << 32) | b as u64)
    }

    /// `n` uniforms in [0, 1), advancing the stream by `n` words.
    pub fn uniform_vec(&mut self, n: usize) -> Vec<f64> {
        let (seed, start) = (self.seed, self.offset);
        self.offset += n as u64;
        let mut out = vec![0.0; n];
        out.par_chunks_mut(4096).enumerate().for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                *o = word_to_uniform(stream_word(seed, start + (c * 4096 + j) as u64));
            }
        });
        out
    }

    /// `n` standard normals, advancing the stream by `2n` words.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f64> {
        let (seed, start) = (self.seed, self.offset);
        self.offset += 2 * n as u64;
        let mut out = vec![0.0; n];
        out.par_chunks_mut(4096).enumerate().for_each(|(c, chunk)| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let k = start + 2 * (c * 4096 + j) as u64;
                let u1 = 1.0 - word_to_uniform(stream_word(seed, k)); // (0, 1]: log is finite
                let u2 = word_to_uniform(stream_word(seed, k + 1));
                *o = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            }
        });
        out
    }

    /// One uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        let w = stream_word(self.seed, self.offset);
        self.offset += 1;
        word_to_uniform(w)
    }

    /// An integer in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// One standard normal.
    pub fn normal(&mut self) -> f64 {
        self.normal_vec(1)[0]
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

impl Tensor {
    /// Uniform samples in [lo, hi).
    pub fn rand(shape: &[usize], lo: f64, hi: f64, dtype: DType, device: Device, rng: &mut Rng) -> Result<Tensor> {
        let n = shape.iter().product();
        if let Device::Cuda(ordinal) = device {
            // The same stream words, generated on the device (kernels/rng.cu).
            let values = crate::backend::cuda::philox_uniform(n, rng.seed, rng.offset, lo, hi, ordinal)?;
            rng.offset += n as u64;
            return Tensor::from_storage(crate::tensor::Storage::Cuda(values), shape).to_dtype(dtype);
        }
        let v: Vec<f64> = rng.uniform_vec(n).into_iter().map(|u| lo + (hi - lo) * u).collect();
        Tensor::from_vec(v, shape)?.to_dtype(dtype)?.to_device(device)
    }

    /// Normal samples with the given mean and standard deviation.
    pub fn randn(shape: &[usize], mean: f64, std: f64, dtype: DType, device: Device, rng: &mut Rng) -> Result<Tensor> {
        let n = shape.iter().product();
        if let Device::Cuda(ordinal) = device {
            let values = crate::backend::cuda::philox_normal(n, rng.seed, rng.offset, mean, std, ordinal)?;
            rng.offset += 2 * n as u64;
            return Tensor::from_storage(crate::tensor::Storage::Cuda(values), shape).to_dtype(dtype);
        }
        let v: Vec<f64> = rng.normal_vec(n).into_iter().map(|z| mean + std * z).collect();
        Tensor::from_vec(v, shape)?.to_dtype(dtype)?.to_device(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_published_known_answer() {
        // Random123's kat_vectors: philox4x32_10 with zero counter and key.
        assert_eq!(philox4x32_10([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([0xffffffff; 4], [0xffffffff; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    }

    #[test]
    fn draws_do_not_depend_on_how_they_are_split() {
        let mut a = Rng::new(7);
        let all = a.normal_vec(10);
        let mut b = Rng::new(7);
        let mut parts = b.normal_vec(3);
        parts.extend(b.normal_vec(7));
        assert_eq!(all, parts);
        assert_eq!(a, b);
    }
}
