//! Row gathers (embedding, index_select) and their scatter-add gradients
//! (kernels/indexing.cu). Indices come from the host, already range-checked
//! by the op layer, and are uploaded as i64. CPU twin: src/backend/cpu/indexing.rs.

use super::{accumulator, check_float, dense, dptr, dtype_suffix, grid_for, launch, upload_i64, zeros, Arg, CudaStorage, Operand};
use crate::{Error, Result};

/// `out[o, j, :] = src[o, idx[j], :]` for `src` viewed as `[outer, size, inner]`;
/// the output is `[outer, idx.len(), inner]`, packed. Any dtype.
pub fn index_select_rows(src: Operand<'_>, outer: usize, size: usize, inner: usize, idx: &[i64]) -> Result<CudaStorage> {
    const OP: &str = "index_select";
    if src.numel() != outer * size * inner {
        return Err(Error::bad_shape(OP, format!("source of {} elements is not [{outer}, {size}, {inner}]", src.numel())));
    }
    if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as u64 >= size as u64) {
        return Err(Error::msg(format!("{OP}: index {bad} is out of range for {size} rows")));
    }
    let sd = dense(OP, src)?;
    let dev = &sd.device;
    let n = outer * idx.len() * inner;
    let out = super::alloc(dev, sd.dtype, n, OP)?;
    if n == 0 {
        return Ok(out);
    }
    let ids = upload_i64(dev, idx, OP)?;
    let bytes = sd.dtype.size_in_bytes();
    let args = [
        Arg::U64(outer as u64),
        Arg::U64(size as u64),
        Arg::U64(inner as u64),
        Arg::U64(idx.len() as u64),
        Arg::U64(dptr(&sd)),
        Arg::U64(dptr(&ids)),
        Arg::U64(dptr(&out)),
    ];
    // SAFETY: index_select_rows_bN(outer, size, inner, n_idx, src, idx, out) with N the
    // element size; src holds outer·size·inner packed elements (checked), every index
    // is in 0..size (checked), out holds outer·n_idx·inner.
    unsafe { launch(dev, "indexing", &format!("index_select_rows_b{bytes}"), grid_for(dev, n), OP, &args)? };
    Ok(out)
}

/// `out[o, s, :] = Σ_{j: idx[j] = s} grad[o, j, :]` for `grad` viewed as
/// `[outer, idx.len(), inner]`; the output is `[outer, size, inner]`, packed.
/// Accumulates in f32 (f64 for f64) with atomics, then casts to the dtype.
pub fn index_add_rows(grad: Operand<'_>, outer: usize, size: usize, inner: usize, idx: &[i64]) -> Result<CudaStorage> {
    const OP: &str = "index_add_rows";
    check_float(OP, grad.storage)?;
    if grad.numel() != outer * idx.len() * inner {
        return Err(Error::bad_shape(OP, format!("gradient of {} elements is not [{outer}, {}, {inner}]", grad.numel(), idx.len())));
    }
    if let Some(bad) = idx.iter().find(|&&i| i < 0 || i as u64 >= size as u64) {
        return Err(Error::msg(format!("{OP}: index {bad} is out of range for {size} rows")));
    }
    let gd = dense(OP, grad)?;
    let (dev, dtype) = (&gd.device, gd.dtype);
    let acc_dtype = accumulator(dtype);
    let acc = zeros(dev, acc_dtype, outer * size * inner, OP)?;
    if grad.numel() > 0 {
        let ids = upload_i64(dev, idx, OP)?;
        let args = [
            Arg::U64(outer as u64),
            Arg::U64(size as u64),
            Arg::U64(inner as u64),
            Arg::U64(idx.len() as u64),
            Arg::U64(dptr(&gd)),
            Arg::U64(dptr(&ids)),
            Arg::U64(dptr(&acc)),
        ];
        // SAFETY: index_add_rows_T(outer, size, inner, n_idx, grad, idx, acc): grad packed
        // outer·n_idx·inner (checked), indices in 0..size (checked), acc outer·size·inner
        // elements of the accumulator type the kernel uses (Num<T>::C).
        unsafe { launch(dev, "indexing", &format!("index_add_rows_{}", dtype_suffix(dtype)), grid_for(dev, grad.numel()), OP, &args)? };
    }
    if acc_dtype == dtype {
        return Ok(acc);
    }
    let layout = crate::tensor::Layout::contiguous(&[outer * size * inner]);
    super::cast(&acc, &layout, dtype)
}
