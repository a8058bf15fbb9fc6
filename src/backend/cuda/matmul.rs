//! Batched matrix multiply through cuBLAS (strided-batched GEMM; f16/bf16 with
//! f32 accumulation). Operands that are plain row-major matrices or plain
//! transposes are passed in place with the matching `op`; anything else
//! (general strides, or batch dims cuBLAS cannot step through with one stride,
//! such as a broadcast stride 0) is made contiguous first.

use super::copy::{check_extent, copy_strided};
use super::{alloc, CudaStorage};
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::DeviceRepr;
use half::{bf16, f16};

/// How one row-major operand of shape batch × [rows, cols] is handed to cuBLAS.
struct Operand {
    /// Element offset of the first matrix.
    offset: usize,
    /// Elements between consecutive matrices of the flattened batch.
    batch_stride: usize,
    /// Whether the matrix is stored transposed (column-major rows × cols).
    transposed: bool,
    /// Leading dimension of the stored matrix.
    ld: usize,
}

/// The in-place plan for view `l` (shape batch × [rows, cols]), or `None` when it must be copied.
fn plan(l: &Layout) -> Option<Operand> {
    let r = l.rank();
    let (rows, cols) = (l.shape()[r - 2], l.shape()[r - 1]);
    let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
    let (batch_shape, batch_strides) = Layout::coalesced(&l.shape()[..r - 2], &[&l.strides()[..r - 2]]);
    let batch: usize = l.shape()[..r - 2].iter().product();
    let batch_stride = if batch <= 1 {
        rows * cols
    } else if batch_shape.len() == 1 && batch_strides[0][0] != 0 {
        batch_strides[0][0]
    } else {
        return None;
    };
    // A size-1 dim's stride is free: pick the one that makes the layout plain.
    let row_major = (if rows == 1 { cols.max(1) } else { rs }, if cols == 1 { 1 } else { cs });
    if row_major.1 == 1 && row_major.0 >= cols.max(1) {
        return Some(Operand { offset: l.offset(), batch_stride, transposed: false, ld: row_major.0 });
    }
    let col_major = (if rows == 1 { 1 } else { rs }, if cols == 1 { rows.max(1) } else { cs });
    if col_major.0 == 1 && col_major.1 >= rows.max(1) {
        return Some(Operand { offset: l.offset(), batch_stride, transposed: true, ld: col_major.1 });
    }
    None
}

/// The operand in place, or a contiguous copy of it (owned) when cuBLAS cannot read the view.
fn prepare(s: &CudaStorage, l: &Layout) -> Result<(Option<CudaStorage>, Operand)> {
    if let Some(p) = plan(l) {
        return Ok((None, p));
    }
    let r = l.rank();
    let (rows, cols) = (l.shape()[r - 2], l.shape()[r - 1]);
    let copy = copy_strided(s, l)?;
    Ok((Some(copy), Operand { offset: 0, batch_stride: rows * cols, transposed: false, ld: cols.max(1) }))
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Cuda(format!("matmul: {what} = {v} exceeds cuBLAS's 32-bit limit")))
}

fn op_of(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// `a @ b` for views `la` = batch × [m, k] and `lb` = batch × [k, n] (batch
/// dims already broadcast by the caller); output batch × [m, n], contiguous.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &CudaStorage,
    la: &Layout,
    b: &CudaStorage,
    lb: &Layout,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Result<CudaStorage> {
    const OP: &str = "matmul";
    super::same_device(OP, a, b)?;
    if a.dtype != b.dtype {
        return Err(Error::DTypeMismatch { op: OP, lhs: a.dtype, rhs: b.dtype });
    }
    if !matches!(a.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(super::unsupported_dtype(OP, a.dtype, a.ordinal()));
    }
    let mut want_a = batch.to_vec();
    want_a.extend([m, k]);
    let mut want_b = batch.to_vec();
    want_b.extend([k, n]);
    if la.shape() != want_a.as_slice() || lb.shape() != want_b.as_slice() {
        return Err(Error::ShapeMismatch { op: OP, lhs: la.shape().to_vec(), rhs: lb.shape().to_vec() });
    }
    check_extent(OP, la, a)?;
    check_extent(OP, lb, b)?;
    let dev = a.device.clone();
    let count: usize = batch.iter().product();
    let out = alloc(&dev, a.dtype, count * m * n, OP)?;
    if count * m * n == 0 {
        return Ok(out);
    }
    if k == 0 {
        // An empty sum: zeros, without asking cuBLAS about k = 0.
        let mut out = out;
        dev.stream.memset_zeros(&mut *out.buf).map_err(|e| super::driver_error(OP, e))?;
        return Ok(out);
    }
    let (a_copy, pa) = prepare(a, la)?;
    let (b_copy, pb) = prepare(b, lb)?;
    let a_src = a_copy.as_ref().unwrap_or(a);
    let b_src = b_copy.as_ref().unwrap_or(b);
    let mut out = out;
    dev.with_blas(|blas| match a.dtype {
        DType::F32 => gemm::<f32>(blas, a_src, &pa, b_src, &pb, &mut out, count, m, k, n, 1.0, 0.0),
        DType::F64 => gemm::<f64>(blas, a_src, &pa, b_src, &pb, &mut out, count, m, k, n, 1.0, 0.0),
        DType::F16 => gemm::<f16>(blas, a_src, &pa, b_src, &pb, &mut out, count, m, k, n, f16::ONE, f16::ZERO),
        DType::BF16 => gemm::<bf16>(blas, a_src, &pa, b_src, &pb, &mut out, count, m, k, n, bf16::ONE, bf16::ZERO),
        other => Err(super::unsupported_dtype(OP, other, a.ordinal())),
    })?;
    Ok(out)
}

/// Row-major C = A·B as column-major Cᵀ = Bᵀ·Aᵀ: cuBLAS's first operand is
/// our B, its second our A, and Cᵀ (n × m, ld n) is C row-major.
#[allow(clippy::too_many_arguments)]
fn gemm<T: DeviceRepr>(
    blas: &CudaBlas,
    a: &CudaStorage,
    pa: &Operand,
    b: &CudaStorage,
    pb: &Operand,
    out: &mut CudaStorage,
    count: usize,
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    beta: T,
) -> Result<()>
where
    CudaBlas: Gemm<T>,
{
    let cfg = StridedBatchedConfig {
        gemm: GemmConfig {
            transa: op_of(pb.transposed),
            transb: op_of(pa.transposed),
            m: to_i32("n", n)?,
            n: to_i32("m", m)?,
            k: to_i32("k", k)?,
            alpha,
            lda: to_i32("ld(b)", pb.ld)?,
            ldb: to_i32("ld(a)", pa.ld)?,
            beta,
            ldc: to_i32("n", n.max(1))?,
        },
        batch_size: to_i32("batch", count)?,
        stride_a: pb.batch_stride as i64,
        stride_b: pa.batch_stride as i64,
        stride_c: (m * n) as i64,
    };
    let a_view = a.typed_view::<T>(pa.offset)?;
    let b_view = b.typed_view::<T>(pb.offset)?;
    let out_len = out.len;
    // SAFETY: the output was allocated for out.len elements of T (dtype checked by the caller).
    let mut c_view =
        unsafe { out.buf.transmute_mut::<T>(out_len) }.ok_or_else(|| Error::Cuda("matmul: internal: output view out of bounds".into()))?;
    // SAFETY: every matrix cuBLAS reads lies inside its view: the plans come
    // from views whose extent was checked against their storages (or from
    // contiguous copies), with ld and batch strides taken from those views;
    // C holds count·m·n elements written with ldc = n and stride m·n.
    unsafe { blas.gemm_strided_batched(cfg, &b_view, &a_view, &mut c_view) }.map_err(|e| Error::Cuda(format!("matmul: cuBLAS: {e:?}")))
}
