//! CUDA backend through cudarc: device storage, the entry points the op API
//! calls, kernel launches (kernels/*.cu) and cuBLAS.
//!
//! Nothing links against CUDA at build time. The driver library is looked up
//! the first time a tensor goes to a GPU; without it (or without a device)
//! every entry point returns [`Error::Cuda`] saying why, never a panic. Every
//! op runs on its device's one stream, so ops are ordered without events;
//! downloads synchronise. Buffers come from a per-device caching allocator
//! (allocator.rs) and go back to it when dropped.
//!
//! One module per op family, named like its CPU twin in `backend::cpu` and its
//! kernel file: elementwise, reduce, copy/cast, matmul (cuBLAS), softmax, norm
//! (layer/group/batch norm, group norm fused with SiLU), indexing (embedding,
//! index_select), pool, upsample, loss, optim (multi-tensor AdamW, EMA,
//! gradient norm) and rng (Philox). The newer families take packed operands
//! (a strided view is packed first by [`copy_strided`]) and pass device
//! pointers to their kernels as u64 (0 for an absent optional operand).

pub mod allocator;
mod attention;
mod conv;
mod copy;
mod device;
mod elementwise;
mod indexing;
pub mod kernels;
mod loss;
mod matmul;
mod norm;
pub mod optim;
mod pool;
mod reduce;
mod rng;
mod siamese_head;
mod softmax;
mod upsample;

pub use attention::{attention_backward, attention_forward, AttentionShape, MAX_HEAD_DIM as ATTENTION_MAX_HEAD_DIM};
pub use conv::{conv2d, conv2d_backward_bias, conv2d_backward_data, conv2d_backward_weight, set_conv_tensor_cores};
pub use copy::{cast, copy_into, copy_strided};
pub use device::{device_info, driver, DeviceInfo, DriverInfo};
pub use elementwise::{binary, compare, unary, unary_backward};
pub use indexing::{index_add_rows, index_select_rows};
pub use loss::{
    bce_with_logits, bce_with_logits_backward, cosine_similarity, cosine_similarity_backward, cross_entropy, cross_entropy_backward,
    mse_loss, mse_loss_backward, ClassDims, LossGrad,
};
pub use matmul::matmul;
pub use norm::{
    batch_norm_backward, batch_norm_eval_stats, batch_norm_forward, batch_norm_train_stats, group_norm, group_norm_backward, layer_norm,
    layer_norm_backward, BatchStats, NormForward, NormGrads,
};
pub use pool::{
    adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward, PoolGeometry,
};
pub use reduce::{arg_reduce, reduce};
pub use rng::{philox_normal, philox_uniform, philox_words};
pub use siamese_head::{siamese_head_backward, siamese_head_bce, siamese_head_forward};
pub use softmax::{softmax, softmax_backward};
pub use upsample::{upsample_nearest2d, upsample_nearest2d_backward};

use crate::tensor::{DType, Layout};
use crate::{Device, Error, Result};
use cudarc::driver::{CudaSlice, CudaView, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use device::CudaDevice;
use std::sync::Arc;

/// A buffer in device memory: `len` elements of `dtype`, row-major, on one device.
pub struct CudaStorage {
    /// Raw bytes; kernels reinterpret them by dtype. Never empty (see [`alloc`]);
    /// a whole allocator bucket, so possibly longer than `len` elements. Given
    /// back to the device's cache on drop.
    buf: std::mem::ManuallyDrop<CudaSlice<u8>>,
    /// The allocator bucket `buf` came from.
    bucket: usize,
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

impl Drop for CudaStorage {
    fn drop(&mut self) {
        // SAFETY: `buf` is taken exactly once, here, and never used again.
        let buf = unsafe { std::mem::ManuallyDrop::take(&mut self.buf) };
        self.device.cache.lock().expect("allocator cache poisoned").give(self.bucket, buf);
    }
}

/// A fresh, uninitialised buffer for `len` elements of `dtype`, from the
/// device's cache when a block of its bucket is free, else from the driver
/// (emptying the cache and retrying once when the driver is out of memory).
pub(crate) fn alloc(dev: &Arc<CudaDevice>, dtype: DType, len: usize, op: &str) -> Result<CudaStorage> {
    let bytes = len * dtype.size_in_bytes();
    let (cached, bucket) = dev.cache.lock().expect("allocator cache poisoned").take(bytes);
    let buf = match cached {
        Some(buf) => buf,
        None => {
            // SAFETY: the caller writes every element before any read (each kernel
            // writes its whole output; copies fill the buffer).
            let fresh = unsafe { dev.stream.alloc::<u8>(bucket) };
            match fresh {
                Ok(buf) => buf,
                Err(_) => {
                    drop(dev.cache.lock().expect("allocator cache poisoned").drain());
                    // SAFETY: as above.
                    unsafe { dev.stream.alloc::<u8>(bucket) }.map_err(|e| {
                        Error::Cuda(format!(
                            "{op}: allocating {bucket} bytes on cuda:{} failed: {}",
                            dev.ordinal,
                            device::describe_driver_error(&e)
                        ))
                    })?
                }
            }
        }
    };
    Ok(CudaStorage { buf: std::mem::ManuallyDrop::new(buf), bucket, dtype, len, device: dev.clone() })
}

/// The allocator counters of device `ordinal`, or why it cannot be opened.
pub fn allocator_stats(ordinal: usize) -> std::result::Result<allocator::CacheStats, String> {
    let dev = device::open_device(ordinal)?;
    let stats = dev.cache.lock().expect("allocator cache poisoned").stats();
    Ok(stats)
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

/// A strided view of device memory, as the op layer hands it to a kernel wrapper.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The buffer.
    pub storage: &'a CudaStorage,
    /// The view of it.
    pub layout: &'a Layout,
}

impl<'a> Operand<'a> {
    /// A view of `storage`.
    pub fn new(storage: &'a CudaStorage, layout: &'a Layout) -> Operand<'a> {
        Operand { storage, layout }
    }
    /// The view's shape.
    pub fn shape(&self) -> &'a [usize] {
        self.layout.shape()
    }
    /// The view's element count.
    pub fn numel(&self) -> usize {
        self.layout.numel()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype
    }
}

/// The elements of a view in row-major order from element 0 of a buffer:
/// the storage itself when the view already is that, else a packed copy.
pub(crate) enum Dense<'a> {
    Borrowed(&'a CudaStorage),
    Owned(CudaStorage),
}

impl std::ops::Deref for Dense<'_> {
    type Target = CudaStorage;
    fn deref(&self) -> &CudaStorage {
        match self {
            Dense::Borrowed(s) => s,
            Dense::Owned(s) => s,
        }
    }
}

/// `x` packed row-major from offset 0 (a copy only when it is not already).
pub(crate) fn dense<'a>(op: &'static str, x: Operand<'a>) -> Result<Dense<'a>> {
    copy::check_extent(op, x.layout, x.storage)?;
    match x.layout.contiguous_range() {
        Some(r) if r.start == 0 => Ok(Dense::Borrowed(x.storage)),
        _ => Ok(Dense::Owned(copy_strided(x.storage, x.layout)?)),
    }
}

/// Like [`dense`] for an optional operand.
pub(crate) fn dense_opt<'a>(op: &'static str, x: Option<Operand<'a>>) -> Result<Option<Dense<'a>>> {
    x.map(|x| dense(op, x)).transpose()
}

/// The device address of a buffer, passed to kernels that take pointers as u64.
pub(crate) fn dptr(s: &CudaStorage) -> u64 {
    // Event tracking is off for every context (see device.rs), so the guard
    // records nothing; the address stays valid while `s` lives, and frees are
    // ordered on the one stream after every kernel that uses it.
    let (p, _sync) = s.buf.device_ptr(&s.device.stream);
    p
}

/// [`dptr`] of an optional buffer, 0 when absent (kernels test for it).
pub(crate) fn dptr_opt(s: Option<&CudaStorage>) -> u64 {
    s.map_or(0, dptr)
}

/// One kernel argument, by value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    U64(u64),
    U32(u32),
    I64(i64),
    F64(f64),
    Pool(pool::PoolGeometry),
    Adam(optim::AdamScalars),
}

/// Launch `function` of kernel module `module` with `args` in order.
///
/// # Safety
/// `args` must match the kernel's parameter list in order and type, every
/// pointer among them must address live memory of this device large enough
/// for every element the kernel touches given the other arguments, and the
/// block size must be what the kernel assumes (a multiple of 32, at most BLOCK).
pub(crate) unsafe fn launch(
    dev: &CudaDevice,
    module: &'static str,
    function: &str,
    cfg: LaunchConfig,
    op: &str,
    args: &[Arg],
) -> Result<()> {
    let f = dev.function(module, function)?;
    let mut b = dev.stream.launch_builder(&f);
    for a in args {
        match a {
            Arg::U64(v) => b.arg(v),
            Arg::U32(v) => b.arg(v),
            Arg::I64(v) => b.arg(v),
            Arg::F64(v) => b.arg(v),
            Arg::Pool(v) => b.arg(v),
            Arg::Adam(v) => b.arg(v),
        };
    }
    // SAFETY: the caller vouches for the argument list and the memory it names.
    unsafe { b.launch(cfg) }.map_err(|e| driver_error(op, e))?;
    Ok(())
}

/// One block per row (grid-stride over rows), in whole warps, no wider than the row needs.
pub(crate) fn rows_config(dev: &CudaDevice, rows: usize, len: usize) -> LaunchConfig {
    let threads = len.next_power_of_two().clamp(32, BLOCK as usize) as u32;
    let grid = rows.min(dev.multiprocessors as usize * 32).max(1) as u32;
    LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// A zero-filled buffer.
pub(crate) fn zeros(dev: &Arc<CudaDevice>, dtype: DType, len: usize, op: &str) -> Result<CudaStorage> {
    let mut out = alloc(dev, dtype, len, op)?;
    dev.stream.memset_zeros(&mut *out.buf).map_err(|e| driver_error(op, e))?;
    Ok(out)
}

/// Host i64 values as a device buffer on `dev`.
pub(crate) fn upload_i64(dev: &Arc<CudaDevice>, values: &[i64], op: &str) -> Result<CudaStorage> {
    let mut out = alloc(dev, DType::I64, values.len(), op)?;
    if !values.is_empty() {
        let bytes: &[u8] = bytemuck::cast_slice(values);
        let mut dst = out.buf.slice_mut(..bytes.len());
        dev.stream.memcpy_htod(bytes, &mut dst).map_err(|e| driver_error(op, e))?;
    }
    Ok(out)
}

/// The float kernels' dtype check.
pub(crate) fn check_float(op: &'static str, s: &CudaStorage) -> Result<()> {
    match s.dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Ok(()),
        other => Err(unsupported_dtype(op, other, s.ordinal())),
    }
}

/// The dtype kernels accumulate a float dtype in: f64 for f64, f32 otherwise.
pub(crate) fn accumulator(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// All operands on one device and of one dtype.
pub(crate) fn same_all(op: &'static str, first: &CudaStorage, rest: &[Option<&CudaStorage>]) -> Result<()> {
    for s in rest.iter().flatten() {
        same_device(op, first, s)?;
        if s.dtype != first.dtype {
            return Err(Error::DTypeMismatch { op, lhs: first.dtype, rhs: s.dtype });
        }
    }
    Ok(())
}
