//! CUDA backend (scaffold): device storage and the entry points the op API
//! calls. Without a driver every entry point returns a clear error.

use crate::backend::op::{BinaryOp, CmpOp, ReduceOp, UnaryOp};
use crate::tensor::{DType, Layout};
use crate::{Error, Result};

/// A buffer in device memory.
#[derive(Debug)]
pub struct CudaStorage {
    dtype: DType,
    ordinal: usize,
}

impl CudaStorage {
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
}

fn off(op: &'static str) -> Error {
    Error::Cuda(format!("{op}: the CUDA backend is not available in this build"))
}

pub fn upload(_bytes: &[u8], _dtype: DType, _ordinal: usize) -> Result<CudaStorage> {
    Err(off("upload"))
}
pub fn download(_s: &CudaStorage) -> Result<Vec<u8>> {
    Err(off("download"))
}
pub fn copy_strided(_s: &CudaStorage, _l: &Layout) -> Result<CudaStorage> {
    Err(off("copy_strided"))
}
pub fn copy_into(_dst: &mut CudaStorage, _dl: &Layout, _src: &CudaStorage) -> Result<()> {
    Err(off("copy_into"))
}
pub fn cast(_s: &CudaStorage, _l: &Layout, _to: DType) -> Result<CudaStorage> {
    Err(off("cast"))
}
pub fn unary(_op: UnaryOp, _s: &CudaStorage, _l: &Layout) -> Result<CudaStorage> {
    Err(off("unary"))
}
pub fn unary_backward(
    _op: UnaryOp,
    _x: &CudaStorage,
    _lx: &Layout,
    _y: &CudaStorage,
    _ly: &Layout,
    _g: &CudaStorage,
    _lg: &Layout,
) -> Result<CudaStorage> {
    Err(off("unary_backward"))
}
pub fn binary(_op: BinaryOp, _a: &CudaStorage, _la: &Layout, _b: &CudaStorage, _lb: &Layout, _shape: &[usize]) -> Result<CudaStorage> {
    Err(off("binary"))
}
pub fn compare(_op: CmpOp, _a: &CudaStorage, _la: &Layout, _b: &CudaStorage, _lb: &Layout, _shape: &[usize]) -> Result<CudaStorage> {
    Err(off("compare"))
}
pub fn reduce(_op: ReduceOp, _s: &CudaStorage, _l: &Layout, _dims: &[usize]) -> Result<CudaStorage> {
    Err(off("reduce"))
}
pub fn arg_reduce(_s: &CudaStorage, _l: &Layout, _dim: usize, _largest: bool) -> Result<CudaStorage> {
    Err(off("arg_reduce"))
}
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    _a: &CudaStorage,
    _la: &Layout,
    _b: &CudaStorage,
    _lb: &Layout,
    _batch: &[usize],
    _m: usize,
    _k: usize,
    _n: usize,
) -> Result<CudaStorage> {
    Err(off("matmul"))
}
