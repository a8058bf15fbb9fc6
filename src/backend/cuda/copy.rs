//! Layout copies and dtype casts on the GPU (kernels/copy.cu, kernels/cast.cu).
//! CPU twins: src/backend/cpu/copy.rs and src/tensor/ops/cast.rs.

use super::{alloc, driver_error, dtype_suffix, grid_for, same_device, CudaStorage, StridedLayout};
use crate::tensor::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::PushKernelArg;

/// The view must stay inside its storage, so kernels never read out of bounds.
pub(crate) fn check_extent(op: &'static str, layout: &Layout, s: &CudaStorage) -> Result<()> {
    if layout.numel() > 0 && layout.storage_extent() > s.len() {
        return Err(Error::bad_shape(
            op,
            format!(
                "view {:?} (strides {:?}, offset {}) reaches past its storage of {} elements",
                layout.shape(),
                layout.strides(),
                layout.offset(),
                s.len()
            ),
        ));
    }
    Ok(())
}

/// Materialise the view `l` of `s` as a new contiguous buffer.
pub fn copy_strided(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    check_extent("copy_strided", l, s)?;
    let dev = &s.device;
    let n = l.numel();
    let mut out = alloc(dev, s.dtype, n, "copy_strided")?;
    if n == 0 {
        return Ok(out);
    }
    let size = s.dtype.size_in_bytes();
    if let Some(range) = l.contiguous_range() {
        let src = s.buf.slice(range.start * size..range.end * size);
        let mut dst = out.buf.slice_mut(..n * size);
        dev.stream.memcpy_dtod(&src, &mut dst).map_err(|e| driver_error("copy_strided", e))?;
        return Ok(out);
    }
    let f = dev.function("copy", &format!("copy_strided_b{size}"))?;
    let layout = StridedLayout::of("copy_strided", l)?;
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&layout).arg(&*s.buf).arg(&mut *out.buf);
    // SAFETY: copy_strided_bN(u64 n, StridedLayout, const T*, T*) with T of N
    // bytes = the dtype's size; every source offset is < storage_extent <= s.len
    // (checked), the output holds n elements; both buffers live on this stream.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error("copy_strided", e))?;
    Ok(out)
}

/// Write the contiguous buffer `src` (row-major, `dl.numel()` elements) into the view `dl` of `dst`.
pub fn copy_into(dst: &mut CudaStorage, dl: &Layout, src: &CudaStorage) -> Result<()> {
    same_device("copy_into", dst, src)?;
    if dst.dtype != src.dtype {
        return Err(Error::DTypeMismatch { op: "copy_into", lhs: dst.dtype, rhs: src.dtype });
    }
    let n = dl.numel();
    if src.len < n {
        return Err(Error::bad_shape("copy_into", format!("source holds {} elements, the view {:?} needs {n}", src.len, dl.shape())));
    }
    check_extent("copy_into", dl, dst)?;
    if n == 0 {
        return Ok(());
    }
    let dev = dst.device.clone();
    let size = dst.dtype.size_in_bytes();
    if let Some(range) = dl.contiguous_range() {
        let from = src.buf.slice(..n * size);
        let mut to = dst.buf.slice_mut(range.start * size..range.end * size);
        return dev.stream.memcpy_dtod(&from, &mut to).map_err(|e| driver_error("copy_into", e));
    }
    let f = dev.function("copy", &format!("scatter_b{size}"))?;
    let layout = StridedLayout::of("copy_into", dl)?;
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&layout).arg(&*src.buf).arg(&mut *dst.buf);
    // SAFETY: scatter_bN(u64 n, StridedLayout, const T*, T*) with T of the
    // dtype's size; reads src[0..n) (src.len >= n, checked), writes offsets
    // < storage_extent <= dst.len (checked). A view that maps two indices to
    // one offset (a broadcast destination) races, as writing it on the CPU
    // would be order-dependent too; the op layer never assigns into one.
    unsafe { launch.launch(grid_for(&dev, n)) }.map_err(|e| driver_error("copy_into", e))?;
    Ok(())
}

/// Convert the view `l` of `s` to a contiguous buffer of `to`.
pub fn cast(s: &CudaStorage, l: &Layout, to: DType) -> Result<CudaStorage> {
    if s.dtype == to {
        return copy_strided(s, l);
    }
    check_extent("cast", l, s)?;
    let dev = &s.device;
    let n = l.numel();
    let mut out = alloc(dev, to, n, "cast")?;
    if n == 0 {
        return Ok(out);
    }
    let f = dev.function("cast", &format!("cast_{}_{}", dtype_suffix(s.dtype), dtype_suffix(to)))?;
    let layout = StridedLayout::of("cast", l)?;
    let n64 = n as u64;
    let mut launch = dev.stream.launch_builder(&f);
    launch.arg(&n64).arg(&layout).arg(&*s.buf).arg(&mut *out.buf);
    // SAFETY: cast_S_D(u64 n, StridedLayout, const S*, D*) with S and D the
    // storages' dtypes; source offsets < s.len (checked), n outputs allocated.
    unsafe { launch.launch(grid_for(dev, n)) }.map_err(|e| driver_error("cast", e))?;
    Ok(out)
}
