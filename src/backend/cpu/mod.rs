//! CPU kernels: plain slices in, plain vectors out, multithreaded with rayon.
//! Every op of the runtime has its reference implementation here.

pub mod attention;
pub mod concat;
pub mod conv;
pub mod copy;
pub mod elementwise;
pub mod gemm;
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
