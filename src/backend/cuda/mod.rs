//! CUDA backend through cudarc: device storage, the entry points the op API
//! calls, kernel launches (kernels/*.cu) and cuBLAS.
//!
//! Nothing links against CUDA at build time. The driver library is looked up
//! the first time a tensor goes to a GPU; without it (or without a device)
//! every entry point returns [`Error::Cuda`] saying why, never a panic. Every
//! op runs on its device's one stream, so ops are ordered without events;
//! downloads synchronise.

mod copy;
mod device;
mod elementwise;
pub mod kernels;
mod matmul;
mod reduce;

pub use copy::{cast, copy_into, copy_strided};
pub use device::{device_info, driver, DeviceInfo, DriverInfo};
pub use elementwise::{binary, compare, unary, unary_backward};
pub use matmul::matmul;
pub use reduce::{arg_reduce, reduce};

use crate::tensor::{DType, Layout};
use crate::{Device, Error, Result};
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, LaunchConfig};
use device::CudaDevice;
use std::sync::Arc;

/// A buffer in device memory: `len` elements of `dtype`, row-major, on one device.
pub struct CudaStorage {
    /// Raw bytes; kernels reinterpret them by dtype. Never empty (see [`alloc`]).
    buf: CudaSlice<u8>,
    dtype: DType,
    len: usize,
    device: Arc<CudaDevice>,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({} x {:?} on cuda:{})", self.len, self.dtype, self.device.ordinal)
    }
}

impl CudaStorage {
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.device.ordinal
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A typed view of elements `offset..self.len`, for cuBLAS.
    fn typed_view<T>(&self, offset: usize) -> Result<CudaView<'_, T>> {
        let size = std::mem::size_of::<T>();
        if size != self.dtype.size_in_bytes() || offset > self.len {
            return Err(Error::Cuda(format!("internal: view of {:?} storage as {size}-byte elements from {offset}", self.dtype)));
        }
        let bytes = self.buf.slice(offset * size..);
        // SAFETY: the element size matches the dtype (checked above), device
        // allocations are 256-byte aligned and `offset` is in whole elements,
        // and `len - offset` elements fit in the bytes from `offset` on.
        unsafe { bytes.transmute::<T>(self.len - offset) }.ok_or_else(|| Error::Cuda("internal: typed view out of bounds".into()))
    }
}

/// Error for an op that has no kernel for `dtype` on this device.
pub(crate) fn unsupported_dtype(op: &'static str, dtype: DType, ordinal: usize) -> Error {
    Error::Unsupported { op, dtype, device: Device::Cuda(ordinal), hint: " (CUDA kernels cover f32, f64, f16 and bf16)" }
}

/// The kernel-name suffix of a dtype: `unary_f32`, `cast_i64_f16`.
pub(crate) fn dtype_suffix(dtype: DType) -> &'static str {
    dtype.as_str()
}

/// A fresh, uninitialised buffer for `len` elements of `dtype`.
/// At least one byte is allocated: cuMemAlloc rejects zero-sized requests.
pub(crate) fn alloc(dev: &Arc<CudaDevice>, dtype: DType, len: usize, op: &str) -> Result<CudaStorage> {
    let bytes = (len * dtype.size_in_bytes()).max(1);
    // SAFETY: the caller writes every element before any read (each kernel
    // writes its whole output; copies fill the buffer).
    let buf = unsafe { dev.stream.alloc::<u8>(bytes) }.map_err(|e| {
        Error::Cuda(format!("{op}: allocating {bytes} bytes on cuda:{} failed: {}", dev.ordinal, device::describe_driver_error(&e)))
    })?;
    Ok(CudaStorage { buf, dtype, len, device: dev.clone() })
}

/// A driver error during `op`, as a crate error.
pub(crate) fn driver_error(op: &str, e: cudarc::driver::DriverError) -> Error {
    Error::Cuda(format!("{op}: {}", device::describe_driver_error(&e)))
}

/// Both storages on the same device, or an error.
pub(crate) fn same_device(op: &'static str, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if a.ordinal() != b.ordinal() {
        return Err(Error::DeviceMismatch { op, lhs: Device::Cuda(a.ordinal()), rhs: Device::Cuda(b.ordinal()) });
    }
    Ok(())
}

/// Highest rank a view may have after merging adjacent dims (kernels/common.cuh MAX_RANK).
pub(crate) const MAX_RANK: usize = 8;
/// Threads per block of elementwise kernels (kernels/common.cuh BLOCK).
pub(crate) const BLOCK: u32 = 256;

/// A strided view as a kernel argument; mirrors `StridedLayout` in kernels/common.cuh.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct StridedLayout {
    rank: u32,
    contiguous: u32,
    offset: u64,
    shape: [u64; MAX_RANK],
    strides: [u64; MAX_RANK],
}

// SAFETY: a #[repr(C)] struct of plain integers whose field order, sizes and
// alignment match the C struct of kernels/common.cuh (4+4+8+64+64 bytes, no padding).
unsafe impl DeviceRepr for StridedLayout {}

impl StridedLayout {
    /// From a (shape, strides, offset) after merging; `op` names errors.
    fn from_parts(op: &'static str, shape: &[usize], strides: &[usize], offset: usize) -> Result<StridedLayout> {
        if shape.len() > MAX_RANK {
            return Err(Error::bad_shape(
                op,
                format!("CUDA kernels take views of rank <= {MAX_RANK} after merging dims; got shape {shape:?}"),
            ));
        }
        let mut l =
            StridedLayout { rank: shape.len() as u32, contiguous: 0, offset: offset as u64, shape: [1; MAX_RANK], strides: [0; MAX_RANK] };
        for (i, (&d, &s)) in shape.iter().zip(strides).enumerate() {
            l.shape[i] = d as u64;
            l.strides[i] = s as u64;
        }
        l.contiguous = Layout::new(shape.to_vec(), strides.to_vec(), offset).is_contiguous() as u32;
        Ok(l)
    }

    /// The view `layout`, with adjacent dims merged.
    pub(crate) fn of(op: &'static str, layout: &Layout) -> Result<StridedLayout> {
        let (shape, strides) = Layout::coalesced(layout.shape(), &[layout.strides()]);
        StridedLayout::from_parts(op, &shape, &strides[0], layout.offset())
    }

    /// Several views of one shape, merged jointly so one flat index addresses all.
    pub(crate) fn joint<const N: usize>(op: &'static str, layouts: [&Layout; N]) -> Result<[StridedLayout; N]> {
        let shape = layouts[0].shape();
        if let Some(l) = layouts.iter().find(|l| l.shape() != shape) {
            return Err(Error::ShapeMismatch { op, lhs: shape.to_vec(), rhs: l.shape().to_vec() });
        }
        let strides: Vec<&[usize]> = layouts.iter().map(|l| l.strides()).collect();
        let (merged, merged_strides) = Layout::coalesced(shape, &strides);
        let mut out = [StridedLayout { rank: 0, contiguous: 1, offset: 0, shape: [1; MAX_RANK], strides: [0; MAX_RANK] }; N];
        for (k, l) in layouts.iter().enumerate() {
            out[k] = StridedLayout::from_parts(op, &merged, &merged_strides[k], l.offset())?;
        }
        Ok(out)
    }
}

/// Grid-stride launch over `n` elements: enough blocks to fill the GPU
/// (8 resident blocks of 256 threads per SM), never more than needed.
pub(crate) fn grid_for(dev: &CudaDevice, n: usize) -> LaunchConfig {
    let wanted = n.div_ceil(BLOCK as usize).max(1);
    let cap = (dev.multiprocessors as usize * 8).max(1);
    LaunchConfig { grid_dim: (wanted.min(cap) as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Whether CUDA device `ordinal` can be used; `Err` says why not.
pub fn is_available(ordinal: usize) -> std::result::Result<(), String> {
    device::open_device(ordinal).map(|_| ())
}

/// Copy host bytes (little-endian elements of `dtype`) to a new buffer on `cuda:{ordinal}`.
pub fn upload(bytes: &[u8], dtype: DType, ordinal: usize) -> Result<CudaStorage> {
    let dev = device::device("upload", ordinal)?;
    let size = dtype.size_in_bytes();
    if bytes.len() % size != 0 {
        return Err(Error::Cuda(format!("upload: {} bytes is not a whole number of {dtype:?} elements", bytes.len())));
    }
    let mut out = alloc(&dev, dtype, bytes.len() / size, "upload")?;
    if !bytes.is_empty() {
        let mut dst = out.buf.slice_mut(..bytes.len());
        dev.stream.memcpy_htod(bytes, &mut dst).map_err(|e| driver_error("upload", e))?;
    }
    Ok(out)
}

/// Copy a buffer's elements back to the host (synchronises the device's stream).
pub fn download(s: &CudaStorage) -> Result<Vec<u8>> {
    let n = s.len * s.dtype.size_in_bytes();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut host = vec![0u8; n];
    s.device.stream.memcpy_dtoh(&s.buf.slice(..n), host.as_mut_slice()).map_err(|e| driver_error("download", e))?;
    Ok(host)
}
