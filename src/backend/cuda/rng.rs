//! Philox 4×32-10 streams on the GPU (kernels/rng.cu), the same function of
//! (seed, word offset) as [`crate::rng`]: the same seed and offset give the
//! same numbers on every device. Values are produced in f64, as the CPU does
//! before its cast.

use super::{alloc, device, dptr, grid_for, launch, Arg, CudaStorage};
use crate::tensor::DType;
use crate::Result;

#[allow(clippy::too_many_arguments)]
fn fill(op: &'static str, kernel: &str, n: usize, seed: u64, offset: u64, a: f64, b: f64, ordinal: usize) -> Result<CudaStorage> {
    let dev = device::device(op, ordinal)?;
    let out = alloc(&dev, DType::F64, n, op)?;
    if n > 0 {
        let args = [Arg::U64(n as u64), Arg::U64(seed), Arg::U64(offset), Arg::F64(a), Arg::F64(b), Arg::U64(dptr(&out))];
        // SAFETY: philox_{uniform,normal}_f64(n, seed, offset, a, b, out): out holds n f64.
        unsafe { launch(&dev, "rng", kernel, grid_for(&dev, n), op, &args)? };
    }
    Ok(out)
}

/// `n` f64 values `lo + (hi − lo)·u` from stream words `offset..offset + n` of `seed`.
pub fn philox_uniform(n: usize, seed: u64, offset: u64, lo: f64, hi: f64, ordinal: usize) -> Result<CudaStorage> {
    fill("rand", "philox_uniform_f64", n, seed, offset, lo, hi, ordinal)
}

/// `n` f64 normals `mean + std·z` from stream words `offset..offset + 2n` of `seed`.
pub fn philox_normal(n: usize, seed: u64, offset: u64, mean: f64, std: f64, ordinal: usize) -> Result<CudaStorage> {
    fill("randn", "philox_normal_f64", n, seed, offset, mean, std, ordinal)
}

/// The raw 32-bit stream words `offset..offset + n` of `seed` (as i32 bits), for known-answer tests.
pub fn philox_words(n: usize, seed: u64, offset: u64, ordinal: usize) -> Result<CudaStorage> {
    const OP: &str = "philox_words";
    let dev = device::device(OP, ordinal)?;
    let out = alloc(&dev, DType::I32, n, OP)?;
    if n > 0 {
        let args = [Arg::U64(n as u64), Arg::U64(seed), Arg::U64(offset), Arg::U64(dptr(&out))];
        // SAFETY: philox_words(n, seed, offset, out): out holds n 32-bit words.
        unsafe { launch(&dev, "rng", "philox_words", grid_for(&dev, n), OP, &args)? };
    }
    Ok(out)
}
