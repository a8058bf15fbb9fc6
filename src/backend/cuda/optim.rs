//! Multi-tensor optimizer kernels (kernels/optim.cu): AdamW over a whole
//! parameter group in one launch, the EMA update, and the squared L2 norm of
//! many gradients (for clipping) as per-chunk f64 partials summed on device.
//! CPU twins: src/nn/optim.rs, src/nn/ema.rs, src/nn/clip.rs.

use super::{alloc, check_float, dptr, dtype_suffix, launch, reduce, rows_config, same_device, upload_i64, Arg, CudaStorage};
use crate::backend::op::ReduceOp;
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::DeviceRepr;

/// Elements per chunk: one block handles one chunk.
pub const CHUNK_ELEMENTS: usize = 1 << 16;

/// The per-step scalars of an AdamW update (f64; kernels round them to the
/// compute type, as the CPU rounds to its element type). Mirrors `AdamScalars`
/// in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    /// `1 − lr·weight_decay`.
    pub decay: f64,
    /// `1 − beta1` (the lerp weight of the first moment).
    pub lerp_weight: f64,
    /// `beta2`.
    pub beta2: f64,
    /// `1 − beta2`.
    pub one_minus_beta2: f64,
    /// `−lr / (1 − beta1^step)`.
    pub neg_step_size: f64,
    /// `sqrt(1 − beta2^step)`.
    pub bias_correction2_sqrt: f64,
    /// `eps`.
    pub eps: f64,
}

// SAFETY: #[repr(C)] struct of seven f64 in the order of the C struct (56 bytes, no padding).
unsafe impl DeviceRepr for AdamScalars {}

/// An element range of a buffer: `len` elements from `offset`.
#[derive(Clone, Copy, Debug)]
pub struct Span<'a> {
    /// The buffer.
    pub storage: &'a CudaStorage,
    /// First element.
    pub offset: usize,
    /// Element count.
    pub len: usize,
}

impl<'a> Span<'a> {
    /// The whole of a packed tensor's range `offset..offset + len` of `storage`.
    pub fn new(storage: &'a CudaStorage, offset: usize, len: usize) -> Span<'a> {
        Span { storage, offset, len }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.offset + self.len > self.storage.len() {
            return Err(Error::bad_shape(
                op,
                format!("range {}..{} is outside a buffer of {}", self.offset, self.offset + self.len, self.storage.len()),
            ));
        }
        Ok(())
    }
}

/// The chunk table (kernels/optim.cu `Chunk`: a, b, c, d, start, len as u64) of
/// tensors given as up to four spans of equal length each.
fn chunk_table(op: &'static str, tensors: &[[Option<Span<'_>>; 4]]) -> Result<(Vec<i64>, usize)> {
    let mut table = Vec::new();
    let mut chunks = 0;
    for spans in tensors {
        let first = spans[0].ok_or_else(|| Error::msg(format!("{op}: internal: a tensor without its first operand")))?;
        for s in spans.iter().flatten() {
            s.check(op)?;
            same_device(op, first.storage, s.storage)?;
            if s.len != first.len || s.storage.dtype() != first.storage.dtype() {
                return Err(Error::msg(format!("{op}: operands of one tensor differ in length or dtype")));
            }
        }
        let mut start = 0;
        while start < first.len {
            let len = CHUNK_ELEMENTS.min(first.len - start);
            // Each pointer is the span's base; the chunk start adds its offset.
            for s in spans {
                table.push(s.map_or(0, |s| (dptr(s.storage) + (s.offset * s.storage.dtype().size_in_bytes()) as u64) as i64));
            }
            table.push(start as i64);
            table.push(len as i64);
            start += len;
            chunks += 1;
        }
    }
    Ok((table, chunks))
}

/// One AdamW step over tensors `(param, exp_avg, exp_avg_sq, grad)` of one
/// dtype, all updated in place by a single launch.
pub fn adamw(tensors: &[[Span<'_>; 4]], scalars: AdamScalars) -> Result<()> {
    const OP: &str = "adamw";
    let Some(first) = tensors.first() else { return Ok(()) };
    check_float(OP, first[0].storage)?;
    let spans: Vec<[Option<Span<'_>>; 4]> = tensors.iter().map(|t| t.map(Some)).collect();
    let (table, chunks) = chunk_table(OP, &spans)?;
    run(OP, "adamw", first[0].storage, &table, chunks, Arg::Adam(scalars))
}

/// `average −= one_minus_decay·(average − param)` over `(average, param)` pairs of one dtype, in one launch.
pub fn ema(pairs: &[[Span<'_>; 2]], one_minus_decay: f64) -> Result<()> {
    const OP: &str = "ema";
    let Some(first) = pairs.first() else { return Ok(()) };
    check_float(OP, first[0].storage)?;
    let spans: Vec<[Option<Span<'_>>; 4]> = pairs.iter().map(|p| [Some(p[0]), Some(p[1]), None, None]).collect();
    let (table, chunks) = chunk_table(OP, &spans)?;
    run(OP, "ema", first[0].storage, &table, chunks, Arg::F64(one_minus_decay))
}

/// `Σ x²` over all elements of `tensors` (one dtype, one device), accumulated in f64.
pub fn sum_of_squares(tensors: &[Span<'_>]) -> Result<f64> {
    const OP: &str = "sum_of_squares";
    let Some(first) = tensors.first() else { return Ok(0.0) };
    check_float(OP, first.storage)?;
    let spans: Vec<[Option<Span<'_>>; 4]> = tensors.iter().map(|t| [Some(*t), None, None, None]).collect();
    let (table, chunks) = chunk_table(OP, &spans)?;
    if chunks == 0 {
        return Ok(0.0);
    }
    let partial = alloc(&first.storage.device, DType::F64, chunks, OP)?;
    run(OP, "sum_squares", first.storage, &table, chunks, Arg::U64(dptr(&partial)))?;
    let total = reduce(ReduceOp::Sum, &partial, &Layout::contiguous(&[chunks]), &[0])?;
    let bytes = super::download(&total)?;
    Ok(f64::from_le_bytes(bytes[..8].try_into().expect("one f64")))
}

fn run(op: &'static str, kernel: &str, like: &CudaStorage, table: &[i64], chunks: usize, last: Arg) -> Result<()> {
    if chunks == 0 {
        return Ok(());
    }
    let dev = &like.device;
    let t = upload_i64(dev, table, op)?;
    let args = [Arg::U64(chunks as u64), Arg::U64(dptr(&t)), last];
    // SAFETY: {kernel}_T(chunks, table, scalar-or-pointer) with T the operands' common dtype
    // (checked per tensor); the table holds `chunks` entries of six u64 whose pointers
    // address live buffers of this device and whose ranges lie inside them (checked);
    // for sum_squares the last argument is an f64 buffer of `chunks` elements.
    unsafe {
        launch(dev, "optim", &format!("{kernel}_{}", dtype_suffix(like.dtype())), rows_config(dev, chunks, CHUNK_ELEMENTS), op, &args)
    }
}
