//! Cheap per-pixel Gaussian noise for augmentation and phantom rendering.
//!
//! Philox per pixel (`Rng::normal_vec`) costs more than everything else an
//! augmentation does, so pixel noise comes from a SplitMix64 stream whose seed
//! is drawn from the sample's [`Rng`]: still a pure function of that Rng.

use crate::Rng;

/// A SplitMix64 stream (Steele, Lea & Flood 2014).
pub(crate) struct PixelNoise(u64);

impl PixelNoise {
    /// A stream seeded by 48 bits drawn from `rng` (advancing it by two words).
    pub(crate) fn from_rng(rng: &mut Rng) -> PixelNoise {
        let hi = (rng.uniform() * 16_777_216.0) as u64;
        let lo = (rng.uniform() * 16_777_216.0) as u64;
        PixelNoise((hi << 24) | lo)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `n` standard normals (Box–Muller, both branches).
    pub(crate) fn normals(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = 1.0 - self.uniform();
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
            out.push(r * c);
            out.push(r * s);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_variance_and_are_seeded() {
        let a = PixelNoise::from_rng(&mut Rng::new(1)).normals(20_001);
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert_eq!(a, PixelNoise::from_rng(&mut Rng::new(1)).normals(20_001));
        assert_ne!(a[..10], PixelNoise::from_rng(&mut Rng::new(2)).normals(10)[..]);
    }
}
