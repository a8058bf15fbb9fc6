//! CPU kernels: plain slices in, plain vectors out, multithreaded with rayon.
//! Every op of the runtime has its reference implementation here.

pub mod attention;
pub mod concat;
pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod geglu;
pub mod gemm;
pub mod host_alloc;
pub mod indexing;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod scratch;
pub mod select;
pub mod siamese_head;
pub mod softmax;
pub mod upsample;
pub mod vmath;

/// Below this many elements a kernel runs on one thread (rayon's overhead wins otherwise).
pub const PARALLEL_MIN: usize = 1 << 15;

/// A new vector of `len` elements, written chunk by chunk (`chunk` elements
/// each, the last one shorter; on the rayon pool when `parallel`) by
/// `fill(first_index, chunk)`, and never zero-filled first: `vec![0; len]`
/// followed by a kernel that overwrites it was 5–9 % of a demo-UNet forward
/// in profiles, as memset.
///
/// # Safety
/// `fill` must initialise every element of every chunk it is given.
pub(crate) unsafe fn new_vec_by_chunks<T, F>(len: usize, chunk: usize, parallel: bool, fill: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize, &mut [std::mem::MaybeUninit<T>]) + Sync + Send,
{
    use rayon::prelude::*;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let chunk = chunk.max(1);
    let spare = &mut out.spare_capacity_mut()[..len];
    if parallel {
        spare.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i * chunk, c));
    } else {
        spare.chunks_mut(chunk).enumerate().for_each(|(i, c)| fill(i * chunk, c));
    }
    // SAFETY: the chunks cover 0..len and the caller guarantees `fill` initialised each.
    unsafe { out.set_len(len) };
    out
}

/// Call `$body` with `$T` bound to the Rust type of a float dtype (f32 or f64),
/// or return an `Unsupported` error naming `$op`.
#[macro_export]
macro_rules! dispatch_float {
    ($dtype:expr, $op:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            other => {
                return Err($crate::Error::Unsupported {
                    op: $op,
                    dtype: other,
                    device: $crate::Device::Cpu,
                    hint: " (CPU compute is f32/f64: cast f16/bf16 tensors with to_dtype(F32) first)",
                })
            }
        }
    };
}

/// Like [`dispatch_float!`] but for every dtype.
#[macro_export]
macro_rules! dispatch_any {
    ($dtype:expr, |$T:ident| $body:expr) => {
        match $dtype {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
        }
    };
}

/// The storage offset of row `row` (row-major over all dims but the last)
/// of a view with `shape` and `strides`.
#[inline]
pub fn row_offset(shape: &[usize], strides: &[usize], mut row: usize, base: usize) -> usize {
    let mut off = base;
    for d in (0..shape.len().saturating_sub(1)).rev() {
        let i = row % shape[d];
        row /= shape[d];
        off += i * strides[d];
    }
    off
}
