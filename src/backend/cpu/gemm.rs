//! General matrix multiply, C = alpha·A·B + beta·C, with arbitrary row and
//! column strides so transposed operands need no copy.
//!
//! The structure is the Goto/BLIS one. C is cut into NC-wide column blocks and
//! the k dimension into KC-deep slices; for each (column block, k slice) the
//! B block is packed once into NR-wide micro-panels (shared by all threads),
//! then every MC-high row block of A is packed into MR-high micro-panels and a
//! register-blocked micro-kernel computes one MR×NR tile of C at a time. The
//! packing is where strides and transposes are resolved, so the micro-kernel
//! only ever streams two contiguous panels.
//!
//! f32 uses the AVX2+FMA micro-kernel when the CPU has it (detected once, then
//! cached) and a portable one otherwise. f64 serves gradient checks and uses
//! the same driver with the portable kernel.
//!
//! There is no AVX-512 kernel: its intrinsics need Rust 1.89 (our MSRV is
//! 1.86), and on Zen 4, which runs a zmm FMA as two 256-bit halves, a 12×32
//! AVX-512 tile measured within noise of the 6×16 AVX2 one.

mod avx2;
mod kernel;
mod pack;

use super::scratch::{with_buffer, Slot};
use crate::tensor::Float;
use kernel::MicroKernel;
use rayon::prelude::*;
use std::any::TypeId;

/// A read-only strided matrix: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

/// A read-only matrix whose columns come in equal runs from separate places:
/// element (i, j) is `data[(j / seg_len)·seg_stride + i·rs + j % seg_len]`.
/// A batch of images' planes side by side (the B operand of a pointwise
/// convolution over several images) is one, read where it lies instead of
/// being copied into one matrix first.
#[derive(Clone, Copy, Debug)]
pub struct SegmentedRef<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    /// Columns per run (a plane's pixels).
    pub seg_len: usize,
    /// Distance between the starts of consecutive runs (an image's size).
    pub seg_stride: usize,
}

/// The im2col matrix of a 2-d convolution over a run of images, never
/// materialised: the packer reads each element from the images as it fills
/// a panel. Row `p = (c·kh + ki)·kw + kj` is input channel `c` seen through
/// kernel tap (ki, kj); column `j` is output pixel `first_pixel + j` of the
/// run, counted image after image (`out_h·out_w` pixels each). Element
/// (p, j) is the input pixel that tap sees at that output position, or zero
/// in the padding. Writing the matrix out first and packing it after (the
/// explicit im2col) moves every element through memory twice more; for the
/// 3×3 convolutions of the demo UNet that was most of the gap to oneDNN.
#[derive(Clone, Copy, Debug)]
pub struct Im2colRef<'a, T> {
    /// Channel 0 of the run's first image (a group's first channel for grouped convolutions).
    pub data: &'a [T],
    /// Elements between consecutive images.
    pub image_stride: usize,
    /// Input height and width; the channel stride is their product.
    pub in_size: [usize; 2],
    pub out_size: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    /// The run's output pixel that column 0 is.
    pub first_pixel: usize,
}

impl<T> Im2colRef<'_, T> {
    /// Whether `data` holds every input pixel a k×n matrix reads.
    fn covers(&self, k: usize, n: usize) -> bool {
        let taps = self.kernel[0] * self.kernel[1];
        let plane = self.in_size[0] * self.in_size[1];
        let out_plane = self.out_size[0] * self.out_size[1];
        if taps == 0 || out_plane == 0 || k % taps != 0 {
            return false;
        }
        let images = (self.first_pixel + n).div_ceil(out_plane);
        (images - 1) * self.image_stride + (k / taps) * plane <= self.data.len()
    }
}

/// An A operand packed once into the micro-kernel's panel order, for a
/// matrix multiplied by many B's (a convolution's weights, by every block of
/// every image): each product then streams it as it is instead of packing it
/// again per task.
pub struct PackedA<T> {
    data: Vec<T>,
    m: usize,
    k: usize,
    mr: usize,
    kc: usize,
}

impl<T: Float> PackedA<T> {
    /// Pack the m×k matrix `a` for the kernel [`gemm`] uses for `T` on this CPU.
    ///
    /// # Panics
    /// If `a` is too short for m×k with its strides.
    pub fn new(a: MatRef<T>, m: usize, k: usize) -> Self {
        let (mr, kc) = if TypeId::of::<T>() == TypeId::of::<f32>() {
            let micro = kernel::best_f32().1;
            (micro.mr, micro.kc)
        } else {
            let micro = kernel::portable::<T>();
            (micro.mr, micro.kc)
        };
        if m > 0 && k > 0 {
            assert!(a.data.len() > last_index(m, k, a.rs, a.cs), "gemm: A is too short for {m}×{k} with strides ({}, {})", a.rs, a.cs);
        }
        let rows = m.div_ceil(mr) * mr;
        let mut data = vec![T::zero(); rows * k];
        // k slice by k slice, each as the driver walks it: ⌈m/mr⌉ panels of kc·mr,
        // packed on every thread when there is enough to share.
        let parallel = rows * k >= PARALLEL_PACK_MIN;
        for pc in (0..k).step_by(kc.max(1)) {
            let kc_now = kc.min(k - pc);
            let slice = &mut data[pc * rows..(pc + kc_now) * rows];
            let pack_panel = |(q, panel): (usize, &mut [T])| pack::pack_a(panel, a, q * mr, pc, mr.min(m - q * mr), kc_now, mr);
            if parallel {
                slice.par_chunks_mut(kc_now * mr).enumerate().with_min_len(8).for_each(pack_panel);
            } else {
                slice.chunks_mut(kc_now * mr).enumerate().for_each(pack_panel);
            }
        }
        PackedA { data, m, k, mr, kc }
    }
}

/// The A operand of a product: strided, packed by each task as it goes, or packed already.
#[derive(Clone, Copy)]
pub enum AOperand<'a, T> {
    Strided(MatRef<'a, T>),
    Packed { data: &'a [T], m: usize, k: usize, mr: usize, kc: usize },
}

impl<'a, T> From<MatRef<'a, T>> for AOperand<'a, T> {
    fn from(a: MatRef<'a, T>) -> Self {
        AOperand::Strided(a)
    }
}

impl<'a, T> From<&'a PackedA<T>> for AOperand<'a, T> {
    fn from(p: &'a PackedA<T>) -> Self {
        AOperand::Packed { data: &p.data, m: p.m, k: p.k, mr: p.mr, kc: p.kc }
    }
}

/// The B operand of a product: strided, in runs of columns, or a convolution's im2col.
#[derive(Clone, Copy, Debug)]
pub enum BOperand<'a, T> {
    Strided(MatRef<'a, T>),
    Segmented(SegmentedRef<'a, T>),
    Im2col(Im2colRef<'a, T>),
}

impl<'a, T> From<MatRef<'a, T>> for BOperand<'a, T> {
    fn from(b: MatRef<'a, T>) -> Self {
        BOperand::Strided(b)
    }
}

impl<'a, T> From<SegmentedRef<'a, T>> for BOperand<'a, T> {
    fn from(b: SegmentedRef<'a, T>) -> Self {
        BOperand::Segmented(b)
    }
}

impl<'a, T> From<Im2colRef<'a, T>> for BOperand<'a, T> {
    fn from(b: Im2colRef<'a, T>) -> Self {
        BOperand::Im2col(b)
    }
}

impl<'a, T: Float> AOperand<'a, T> {
    /// The same operand over f32 data (`T` must be f32; bytemuck checks the cast).
    fn as_f32(self) -> AOperand<'a, f32> {
        match self {
            AOperand::Strided(a) => AOperand::Strided(MatRef { data: bytemuck::cast_slice(a.data), rs: a.rs, cs: a.cs }),
            AOperand::Packed { data, m, k, mr, kc } => AOperand::Packed { data: bytemuck::cast_slice(data), m, k, mr, kc },
        }
    }
}

impl<'a, T: Float> BOperand<'a, T> {
    /// The same operand over f32 data (`T` must be f32; bytemuck checks the cast).
    fn as_f32(self) -> BOperand<'a, f32> {
        match self {
            BOperand::Strided(b) => BOperand::Strided(MatRef { data: bytemuck::cast_slice(b.data), rs: b.rs, cs: b.cs }),
            BOperand::Segmented(b) => BOperand::Segmented(SegmentedRef {
                data: bytemuck::cast_slice(b.data),
                rs: b.rs,
                seg_len: b.seg_len,
                seg_stride: b.seg_stride,
            }),
            BOperand::Im2col(b) => BOperand::Im2col(Im2colRef {
                data: bytemuck::cast_slice(b.data),
                image_stride: b.image_stride,
                in_size: b.in_size,
                out_size: b.out_size,
                kernel: b.kernel,
                stride: b.stride,
                padding: b.padding,
                dilation: b.dilation,
                first_pixel: b.first_pixel,
            }),
        }
    }
}

/// The f32 micro-kernels this build knows, for tests and benchmarks that want
/// to exercise or time one of them rather than the automatic choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SgemmKernel {
    /// Plain Rust, any CPU (4×8 tile).
    Portable,
    /// x86-64 AVX2 + FMA (6×16 tile).
    Avx2Fma,
}

impl SgemmKernel {
    /// The kernels that can run on this CPU, the portable one first.
    pub fn available() -> Vec<SgemmKernel> {
        [SgemmKernel::Portable, SgemmKernel::Avx2Fma].into_iter().filter(|k| k.micro_kernel().is_some()).collect()
    }

    /// The kernel [`gemm`] uses for f32 on this CPU (detected once, then cached).
    pub fn best() -> SgemmKernel {
        kernel::best_f32().0
    }

    fn micro_kernel(self) -> Option<&'static MicroKernel<f32>> {
        match self {
            SgemmKernel::Portable => Some(&kernel::PORTABLE_F32),
            SgemmKernel::Avx2Fma => kernel::avx2_f32(),
        }
    }
}

/// C (m×n, row stride `rsc`, unit column stride) = alpha·A (m×k)·B (k×n) + beta·C.
/// A is a [`MatRef`] or a [`PackedA`]; B a [`MatRef`], a [`SegmentedRef`] or an [`Im2colRef`].
/// `parallel` lets the kernel use the rayon pool (off when the caller already
/// parallelises over a batch). When `beta` is zero C is only written, never
/// read, so NaNs in it do not leak into the result.
///
/// # Panics
/// If a slice is too short for the given sizes and strides, `rsc < n` with
/// more than one row (rows of C would overlap), B's runs overlap, or A was
/// packed for other sizes.
#[allow(clippy::too_many_arguments)]
pub fn gemm<'a, T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: impl Into<AOperand<'a, T>>,
    b: impl Into<BOperand<'a, T>>,
    beta: T,
    c: &mut [T],
    rsc: usize,
    parallel: bool,
) {
    let rsc = checked_c(m, n, c.len(), rsc);
    // SAFETY: `checked_c` proved the window inside `c`, which we borrow mutably.
    unsafe { dispatch(m, n, k, alpha, a.into(), b.into(), beta, c.as_mut_ptr(), rsc, parallel) };
}

/// [`gemm`] writing C through a raw pointer, for callers whose tasks write
/// disjoint tiles of one output from several threads at once (a convolution
/// writing its output rows in place), where no task can hold a `&mut` slice
/// spanning its tile without overlapping another task's.
///
/// # Safety
/// `c` must be valid for writes (and, unless `beta` is zero, reads of
/// initialised values) of the m×n window with row stride `rsc`, and nothing
/// else may access that window during the call. With `beta` zero the window
/// may be uninitialised memory: it is only written, through the pointer.
/// Elements between the window's rows are neither read nor written.
///
/// # Panics
/// As [`gemm`], for A and B, and if `rsc < n` with more than one row.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw_c<'a, T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: impl Into<AOperand<'a, T>>,
    b: impl Into<BOperand<'a, T>>,
    beta: T,
    c: *mut T,
    rsc: usize,
    parallel: bool,
) {
    let rsc = if m == 1 { n } else { rsc };
    assert!(rsc >= n, "gemm: row stride of C ({rsc}) is smaller than its width ({n})");
    // SAFETY: the window at `c` is ours by this function's contract.
    unsafe { dispatch(m, n, k, alpha, a.into(), b.into(), beta, c, rsc, parallel) };
}

/// The driver with the best kernel for `T`.
///
/// # Safety
/// As [`gemm_raw_c`].
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: AOperand<T>,
    b: BOperand<T>,
    beta: T,
    c: *mut T,
    rsc: usize,
    parallel: bool,
) {
    if let BOperand::Segmented(b) = b {
        assert!(b.seg_len > 0 && b.seg_stride >= b.seg_len, "gemm: runs of {} columns {} apart overlap", b.seg_len, b.seg_stride);
    }
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // T is f32, so these casts are identities (checked by bytemuck, no unsafe needed).
        let (alpha32, beta32) = (bytemuck::cast::<T, f32>(alpha), bytemuck::cast::<T, f32>(beta));
        let c32 = SharedMut(c.cast::<f32>());
        // SAFETY: the window at `c` is ours by this function's contract.
        unsafe { gemm_driver(kernel::best_f32().1, m, n, k, alpha32, a.as_f32(), b.as_f32(), beta32, c32, rsc, parallel) };
    } else {
        // SAFETY: as above.
        unsafe { gemm_driver(&kernel::portable::<T>(), m, n, k, alpha, a, b, beta, SharedMut(c), rsc, parallel) };
    }
}

/// Check that a C of `len` elements holds an m×n window with row stride
/// `rsc`; returns the row stride to use (any for a single row).
fn checked_c(m: usize, n: usize, len: usize, rsc: usize) -> usize {
    if m == 0 || n == 0 {
        return rsc.max(n);
    }
    // With one row the row stride is never used; normalise it so the checks below hold.
    let rsc = if m == 1 { n } else { rsc };
    assert!(rsc >= n, "gemm: row stride of C ({rsc}) is smaller than its width ({n})");
    assert!(len > last_index(m, n, rsc, 1), "gemm: C has {len} elements, {m}×{n} with row stride {rsc} needs more");
    rsc
}

/// [`gemm`] for f32 with an explicitly chosen micro-kernel.
///
/// # Panics
/// If `kernel` cannot run on this CPU (see [`SgemmKernel::available`]), or as [`gemm`].
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: SgemmKernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef<f32>,
    b: MatRef<f32>,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    parallel: bool,
) {
    let micro = kernel.micro_kernel().unwrap_or_else(|| panic!("gemm: the {kernel:?} micro-kernel needs CPU features this machine lacks"));
    let rsc = checked_c(m, n, c.len(), rsc);
    // SAFETY: `checked_c` proved the window inside `c`, which we borrow mutably.
    unsafe {
        gemm_driver(micro, m, n, k, alpha, AOperand::Strided(a), BOperand::Strided(b), beta, SharedMut(c.as_mut_ptr()), rsc, parallel)
    };
}

/// Below this many multiply-adds a product runs on one thread: a rayon
/// dispatch costs about as much as a 100³ product on one core.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Parallel tasks per thread: a few, so a descheduled thread's share can be stolen.
const TASKS_PER_THREAD: usize = 4;

/// Smallest useful parallel task: below this a task costs less than waking and joining it.
const MIN_TASK_MACS: usize = 1 << 22;

/// B blocks smaller than this are packed by the calling thread: a parallel
/// region costs more than copying them.
const PARALLEL_PACK_MIN: usize = 1 << 17;

/// A C pointer shared by the tasks of one parallel region.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: tasks write disjoint tiles of C (each task owns a distinct (row block, column group)
// pair), and the region ends before the C window's owner uses it again.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above; the pointer is only read (copied) from the shared reference.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer `count` elements on.
    ///
    /// # Safety
    /// As `pointer::add`: the result must lie in the same allocation.
    unsafe fn add(self, count: usize) -> SharedMut<T> {
        // SAFETY: by this function's contract.
        SharedMut(unsafe { self.0.add(count) })
    }
}

/// Largest index `(rows-1)·rs + (cols-1)·cs` of a strided matrix, for one bounds check up front.
fn last_index(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    (rows - 1) * rs + (cols - 1) * cs
}

/// The blocked product; C is the m×n window at `c_ptr` with row stride `rsc`.
///
/// # Safety
/// `c_ptr` must be valid for reads and writes of that window, which nothing
/// else accesses during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_driver<T: Float>(
    micro: &MicroKernel<T>,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: AOperand<T>,
    b: BOperand<T>,
    beta: T,
    c_ptr: SharedMut<T>,
    rsc: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == T::zero() {
        // SAFETY: the window is ours by this function's contract.
        unsafe { scale_c(m, n, beta, c_ptr, rsc) };
        return;
    }
    match a {
        AOperand::Strided(a) => {
            assert!(a.data.len() > last_index(m, k, a.rs, a.cs), "gemm: A is too short for {m}×{k} with strides ({}, {})", a.rs, a.cs)
        }
        AOperand::Packed { m: pm, k: pk, mr, kc, .. } => assert!(
            (pm, pk, mr, kc) == (m, k, micro.mr, micro.kc),
            "gemm: A was packed as {pm}×{pk} for {mr}-row panels of depth {kc}, this product is {m}×{k} with {}-row panels of depth {}",
            micro.mr,
            micro.kc
        ),
    }
    match b {
        BOperand::Strided(b) => {
            assert!(b.data.len() > last_index(k, n, b.rs, b.cs), "gemm: B is too short for {k}×{n} with strides ({}, {})", b.rs, b.cs)
        }
        BOperand::Segmented(b) => {
            // With runs no closer than their length, the last column is the furthest.
            let last = (n - 1) / b.seg_len * b.seg_stride + (k - 1) * b.rs + (n - 1) % b.seg_len;
            assert!(b.data.len() > last, "gemm: B is too short for {k}×{n} in runs of {} columns {} apart", b.seg_len, b.seg_stride)
        }
        BOperand::Im2col(b) => assert!(b.covers(k, n), "gemm: the images of an im2col B do not hold a {k}×{n} matrix"),
    }

    let (mr, nr) = (micro.mr, micro.nr);
    assert!(mr * nr <= kernel::MAX_TILE, "gemm: a {mr}×{nr} micro-kernel tile exceeds the edge scratch space");
    let threads = if parallel && m * n * k >= PARALLEL_MIN_MACS { rayon::current_num_threads().max(1) } else { 1 };
    if let (Some(slabs), BOperand::Strided(b)) = (column_slabs(micro, m, n, k, threads, a, b), b) {
        // SAFETY: the slabs are disjoint column ranges of the window, which is ours.
        unsafe { gemm_column_slabs(micro, m, n, k, alpha, a, b, slabs, beta, c_ptr, rsc) };
        return;
    }
    // Row blocks as tall as the L2 budget (MC) allows; when threaded, enough
    // tasks that work stealing can even out a thread the OS preempts (this
    // machine is shared), splitting the columns too when there are few rows.
    let macs_per_slice = m * n * k.min(micro.kc);
    let tasks_wanted = if threads > 1 { (threads * TASKS_PER_THREAD).min(macs_per_slice / MIN_TASK_MACS).max(threads) } else { 1 };
    let row_blocks = m.div_ceil(micro.mc).max(tasks_wanted).min(m.div_ceil(mr));
    let mc = m.div_ceil(row_blocks).div_ceil(mr) * mr;
    let row_blocks = m.div_ceil(mc);

    with_buffer::<T, _>(Slot::GemmPackB, k.min(micro.kc) * micro.nc.min(n).div_ceil(nr) * nr, |b_buf| {
        for jc in (0..n).step_by(micro.nc) {
            let nc = micro.nc.min(n - jc);
            let col_panels = nc.div_ceil(nr);
            let col_groups = tasks_wanted.div_ceil(row_blocks).min(col_panels);
            for pc in (0..k).step_by(micro.kc) {
                let kc = micro.kc.min(k - pc);
                let b_packed = &mut b_buf[..col_panels * kc * nr];
                pack::pack_b(b_packed, b, pc, jc, kc, nc, nr, threads > 1 && kc * nc >= PARALLEL_PACK_MIN);
                let b_packed = &*b_packed;
                // Only the first k slice applies the caller's beta; later ones accumulate.
                let beta_now = if pc == 0 { beta } else { T::one() };
                let task = |t: usize| {
                    let (row_block, group) = (t / col_groups, t % col_groups);
                    let ic = row_block * mc;
                    let mc_now = mc.min(m - ic);
                    let panels = col_panels.div_ceil(col_groups);
                    let panel_range = (group * panels).min(col_panels)..((group + 1) * panels).min(col_panels);
                    let block = Block { ic, jc, mc: mc_now, nc, kc, alpha, beta: beta_now, rsc };
                    let in_place = matches!(a, AOperand::Strided(a) if reads_a_in_place(a, panel_range.len()));
                    let run = |a_block: ABlock<T>| {
                        // SAFETY: the tiles written lie in rows ic..ic+mc_now and columns
                        // jc..jc+nc of C, inside the window by the driver's contract; each
                        // task owns a distinct (row block, panel range), so writes never overlap.
                        unsafe { macro_kernel(micro, &block, a_block, b_packed, panel_range.clone(), c_ptr) };
                    };
                    let a_len = mc_now.div_ceil(mr) * mr * kc;
                    match a {
                        AOperand::Strided(a) if in_place => {
                            // Only a last panel of fewer than mr rows is packed (zero-padded).
                            let full_rows = mc_now / mr * mr;
                            with_buffer::<T, _>(Slot::GemmPackA, (mc_now - full_rows).min(1) * mr * kc, |edge| {
                                pack::pack_a(edge, a, ic + full_rows, pc, mc_now - full_rows, kc, mr);
                                run(ABlock::InPlace { a, row0: ic, col0: pc, edge });
                            })
                        }
                        AOperand::Strided(a) => with_buffer::<T, _>(Slot::GemmPackA, a_len, |a_packed| {
                            pack::pack_a(a_packed, a, ic, pc, mc_now, kc, mr);
                            run(ABlock::Packed(a_packed));
                        }),
                        // Slice pc holds ⌈m/mr⌉ panels of kc·mr; row block ic starts at panel ic/mr.
                        AOperand::Packed { data, .. } => run(ABlock::Packed(&data[pc * m.div_ceil(mr) * mr + ic * kc..][..a_len])),
                    }
                };
                let tasks = row_blocks * col_groups;
                if threads > 1 && tasks > 1 {
                    (0..tasks).into_par_iter().with_max_len(1).for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            }
        }
    });
}

/// The column slabs to run a product as, one serial product each, when a k
/// slice holds too little work to split (a linear layer's weight gradient:
/// 64×64 outputs over 2048 tokens). The blocked driver forks and joins once
/// per k slice; a slab task runs every slice of its columns with no join in
/// between, packing only its own B panels and reading A in place. The tiles
/// and their k order are the serial driver's, so the result is bit for bit the
/// serial one. `None`: use the blocked driver.
fn column_slabs<T>(micro: &MicroKernel<T>, m: usize, n: usize, k: usize, threads: usize, a: AOperand<T>, b: BOperand<T>) -> Option<usize> {
    let BOperand::Strided(_) = b else { return None };
    let small_slices = m * n * k.min(micro.kc) < threads * MIN_TASK_MACS;
    let panels = n.div_ceil(micro.nr);
    let slabs = (threads * TASKS_PER_THREAD).min(panels);
    let a_unpacked = match a {
        AOperand::Strided(a) => reads_a_in_place(a, panels.div_ceil(slabs)),
        AOperand::Packed { .. } => true,
    };
    (threads > 1 && k > micro.kc && small_slices && slabs >= threads && a_unpacked).then_some(slabs)
}

/// [`gemm_driver`] over `slabs` column ranges of whole B panels in parallel, each serial.
///
/// # Safety
/// As [`gemm_driver`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_column_slabs<T: Float>(
    micro: &MicroKernel<T>,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: AOperand<T>,
    b: MatRef<T>,
    slabs: usize,
    beta: T,
    c_ptr: SharedMut<T>,
    rsc: usize,
) {
    let slab_width = n.div_ceil(micro.nr).div_ceil(slabs) * micro.nr;
    (0..n.div_ceil(slab_width)).into_par_iter().with_max_len(1).for_each(|slab| {
        let j0 = slab * slab_width;
        let width = slab_width.min(n - j0);
        let b_slab = MatRef { data: &b.data[j0 * b.cs..], rs: b.rs, cs: b.cs };
        // SAFETY: columns j0..j0+width of the window, which this task alone writes.
        let c_slab = unsafe { c_ptr.add(j0) };
        // SAFETY: as above; serial, so the slab runs on this thread only.
        unsafe { gemm_driver(micro, m, width, k, alpha, a, BOperand::Strided(b_slab), beta, c_slab, rsc, false) };
    });
}

/// Whether the micro-kernel reads a strided A where it lies instead of from
/// packed panels. Packing reads and writes every element once per k slice;
/// it pays when the packed block is then read by many B panels. A row-major
/// A read in place is as fast as packed at any size (each micro-panel row is
/// a contiguous run the prefetcher follows), and 10–30 % faster for products
/// with few B panels (a 2048×64×64 linear layer: 97 → 105 GFLOP/s on one
/// Zen 4 core). A column-major A is read one strided step at a time, which
/// loses to packing once many panels reuse the block (1024³: 105 → 88).
fn reads_a_in_place<T>(a: MatRef<T>, b_panels: usize) -> bool {
    a.cs == 1 || (a.rs == 1 && b_panels <= COLUMN_MAJOR_A_IN_PLACE_MAX_PANELS)
}

/// Most B panels a task may meet for a column-major A to be read in place.
const COLUMN_MAJOR_A_IN_PLACE_MAX_PANELS: usize = 16;

/// Where a macro-kernel reads its block of A.
enum ABlock<'a, T> {
    /// ⌈mc/mr⌉ packed panels of kc·mr.
    Packed(&'a [T]),
    /// The operand itself, block row 0 at its row `row0` and depth 0 at its
    /// column `col0`; a last panel of fewer than mr rows comes packed in `edge`.
    InPlace { a: MatRef<'a, T>, row0: usize, col0: usize, edge: &'a [T] },
}

/// Where one macro-kernel call works: the C block rows ic..ic+mc, columns jc..jc+nc, depth kc.
struct Block<T> {
    ic: usize,
    jc: usize,
    mc: usize,
    nc: usize,
    kc: usize,
    alpha: T,
    beta: T,
    rsc: usize,
}

/// Run the micro-kernel over every tile of one packed A block against the B
/// panels in `panels`. B panels are the outer loop so each stays in L1 while
/// the A block streams from L2.
///
/// # Safety
/// `c` must point to a matrix with row stride `block.rsc` that contains rows
/// `block.ic..block.ic+block.mc` and columns `block.jc..block.jc+block.nc`, and no
/// one else may access the tiles written here during the call.
unsafe fn macro_kernel<T: Float>(
    micro: &MicroKernel<T>,
    block: &Block<T>,
    a_block: ABlock<T>,
    b_packed: &[T],
    panels: std::ops::Range<usize>,
    c: SharedMut<T>,
) {
    let (mr, nr, kc) = (micro.mr, micro.nr, block.kc);
    let mut edge = [T::zero(); kernel::MAX_TILE];
    // Micro-panel ip of A: its first element and its (row, depth) strides.
    let a_panel = |ip: usize| -> (*const T, usize, usize) {
        match a_block {
            ABlock::Packed(packed) => (packed[ip * kc * mr..(ip + 1) * kc * mr].as_ptr(), 1, mr),
            ABlock::InPlace { edge, .. } if (ip + 1) * mr > block.mc => (edge[..kc * mr].as_ptr(), 1, mr),
            ABlock::InPlace { a, row0, col0, .. } => {
                let first = (row0 + ip * mr) * a.rs + col0 * a.cs;
                // The panel's last element (mr−1, kc−1) lies inside A: its rows and
                // columns are inside the product the driver checked A against.
                debug_assert!(first + (mr - 1) * a.rs + (kc - 1) * a.cs < a.data.len());
                (a.data[first..].as_ptr(), a.rs, a.cs)
            }
        }
    };
    for jp in panels {
        let j = jp * nr;
        let nr_now = nr.min(block.nc - j);
        let b_panel = &b_packed[jp * kc * nr..(jp + 1) * kc * nr];
        for ip in 0..block.mc.div_ceil(mr) {
            let i = ip * mr;
            let mr_now = mr.min(block.mc - i);
            let (a_ptr, rsa, csa) = a_panel(ip);
            // SAFETY: the tile origin (ic+i, jc+j) is inside C by this function's contract.
            let c_tile = unsafe { c.0.add((block.ic + i) * block.rsc + block.jc + j) };
            if mr_now == mr && nr_now == nr {
                // SAFETY: the A sliver holds mr×kc elements at its strides and the B
                // panel kc·nr (sliced above), the whole mr×nr tile lies inside C, and
                // the kernel's CPU features were checked when it was selected.
                unsafe { (micro.run)(kc, block.alpha, a_ptr, rsa, csa, b_panel.as_ptr(), block.beta, c_tile, block.rsc) };
                continue;
            }
            // Edge tile: compute the full tile into a scratch buffer, then merge the valid part.
            // SAFETY: as above for the panels; `edge` holds MAX_TILE ≥ mr·nr elements with row stride nr.
            unsafe { (micro.run)(kc, block.alpha, a_ptr, rsa, csa, b_panel.as_ptr(), T::zero(), edge.as_mut_ptr(), nr) };
            for r in 0..mr_now {
                let tile_row = &edge[r * nr..r * nr + nr_now];
                // SAFETY: row ic+i+r < ic+mc and columns jc+j..jc+j+nr_now ≤ jc+nc are inside C.
                let c_row = unsafe { c_tile.add(r * block.rsc) };
                if block.beta == T::zero() {
                    // Written through the pointer, never read: C may be uninitialised memory.
                    // SAFETY: as above; `edge` and C never overlap.
                    unsafe { std::ptr::copy_nonoverlapping(tile_row.as_ptr(), c_row, nr_now) };
                } else {
                    // SAFETY: as above; with beta ≠ 0 the caller guarantees C is initialised.
                    let c_row = unsafe { std::slice::from_raw_parts_mut(c_row, nr_now) };
                    for (cv, &tv) in c_row.iter_mut().zip(tile_row) {
                        *cv = block.beta * *cv + tv;
                    }
                }
            }
        }
    }
}

/// C = beta·C over the m×n window (beta == 0 writes zeros without reading).
///
/// # Safety
/// As [`gemm_driver`].
unsafe fn scale_c<T: Float>(m: usize, n: usize, beta: T, c: SharedMut<T>, rsc: usize) {
    for r in 0..m {
        // SAFETY: the m×n window with row stride rsc is ours by this function's contract.
        let row = unsafe { c.0.add(r * rsc) };
        if beta == T::zero() {
            // Written through the pointer, never read: C may be uninitialised memory.
            (0..n).for_each(|j| {
                // SAFETY: column j < n of a row inside the window.
                unsafe { row.add(j).write(T::zero()) }
            });
        } else if beta != T::one() {
            // SAFETY: as above; with beta ≠ 0 the caller guarantees C is initialised.
            let row = unsafe { std::slice::from_raw_parts_mut(row, n) };
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
}
