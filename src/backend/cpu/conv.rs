//! 2-d convolution over NCHW tensors: forward, backward-data and
//! backward-weight, as im2col / col2im feeding the shared GEMM.
//!
//! Each (image, group) pair is cut into blocks of whole output rows. The
//! forward never writes an im2col matrix: the GEMM packs its B panels straight
//! from the input planes (`Im2colRef`). The backward passes materialise one
//! block's `[C_in/groups·kh·kw, rows·W_out]` at a time, a few MB however large
//! the activation (an SD-UNet `[2, 320, 64, 64]` 3×3 layer never holds its
//! 190 MB full im2col). Blocks are the units of parallel work, so a batch of
//! one still keeps every thread busy. A 1×1, stride-1, unpadded convolution
//! needs no im2col at all: the input already is the GEMM operand.

use super::gemm::{gemm, gemm_raw_c, AOperand, BOperand, Im2colRef, MatRef, PackedA, SegmentedRef};
use super::reduce::sum_slice;
use super::scratch::{with_buffer, Slot};
use super::PARALLEL_MIN;
use crate::tensor::Float;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Elements of one im2col block (about 4 MB of f32 per thread): large enough
/// for the GEMM to run at full speed, small enough to stay in cache.
const COL_BLOCK_ELEMS: usize = 1 << 20;

/// Upper bound on the elements of the per-thread weight-gradient partial sums
/// of backward-weight (256 MB of f32): a huge weight gets fewer partials, and
/// the spare threads work inside GEMM instead.
const WEIGHT_PARTIALS_ELEMS: usize = 1 << 26;

/// Below this many multiply-adds a convolution runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Every size of one convolution. The tensor layer checks them; the kernels trust them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeometry {
    pub batch: usize,
    pub in_channels: usize,
    /// Input height and width.
    pub in_size: [usize; 2],
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Output height and width.
    pub out_size: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dGeometry {
    /// Output length of one axis, `(in + 2·pad − dil·(k−1) − 1) / stride + 1`,
    /// or `None` when the dilated kernel is larger than the padded input.
    pub fn output_len(input: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> Option<usize> {
        let span = dilation * (kernel.max(1) - 1) + 1;
        let padded = input + 2 * padding;
        (padded >= span && stride > 0).then(|| (padded - span) / stride + 1)
    }

    /// Input channels seen by each output channel.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels of each group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Rows of the im2col matrix: the reduction length of the GEMM.
    pub fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }
    fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }
    fn out_plane(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }
    /// Multiply-adds of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        self.batch * self.out_channels * self.out_plane() * self.col_rows()
    }
    /// 1×1, stride 1, no padding: the input planes are the GEMM operand as they are.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    /// The im2col matrix of group `grp` of the images from `first_image` on,
    /// as a GEMM operand read straight from `x`, its column 0 at output pixel
    /// `first_pixel` of that image.
    fn im2col_ref<'a, T>(&self, x: &'a [T], first_image: usize, grp: usize, first_pixel: usize) -> Im2colRef<'a, T> {
        let image_stride = self.in_channels * self.in_plane();
        Im2colRef {
            data: &x[first_image * image_stride + grp * self.in_per_group() * self.in_plane()..],
            image_stride,
            in_size: self.in_size,
            out_size: self.out_size,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            first_pixel,
        }
    }

    /// Output rows per block: bounded by the im2col block size, and small
    /// enough that `items` (image, group) pairs give at least `min_tasks` blocks.
    fn rows_per_block(&self, items: usize, min_tasks: usize) -> usize {
        let [out_h, out_w] = self.out_size;
        let by_memory = COL_BLOCK_ELEMS / (self.col_rows() * out_w).max(1);
        let blocks_wanted = min_tasks.div_ceil(items.max(1)).max(1);
        by_memory.min(out_h.div_ceil(blocks_wanted)).clamp(1, out_h.max(1))
    }

    /// The output-row ranges of the blocks.
    fn blocks(&self, rows_per_block: usize) -> Vec<Range<usize>> {
        let out_h = self.out_size[0];
        (0..out_h).step_by(rows_per_block).map(|r| r..(r + rows_per_block).min(out_h)).collect()
    }
}

/// The outputs `o` of one axis whose input position `o·stride + offset` lies in `0..in_len`.
fn valid_outputs(out_len: usize, in_len: usize, stride: usize, offset: isize) -> Range<usize> {
    let lo = if offset >= 0 { 0 } else { offset.unsigned_abs().div_ceil(stride) };
    let last_in = in_len as isize - 1;
    let hi = if offset > last_in { 0 } else { (last_in - offset) as usize / stride + 1 };
    let hi = hi.min(out_len);
    lo.min(hi)..hi
}

/// Fill the `kh·kw` im2col rows of one input channel for output rows `rows`:
/// row `ki·kw + kj` (at `col[(ki·kw + kj)·ld..]`) holds, for every output
/// position of the block, the input pixel that kernel tap (ki, kj) sees there
/// (zero in the padding).
fn im2col_channel<T: Float>(plane: &[T], g: &Conv2dGeometry, rows: Range<usize>, col: &mut [T], ld: usize) {
    let ([in_h, in_w], [_, out_w]) = (g.in_size, g.out_size);
    let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (g.kernel, g.stride, g.padding, g.dilation);
    let width = rows.len() * out_w;
    for ki in 0..kh {
        let row_offset = (ki * dh) as isize - ph as isize;
        let valid_rows = valid_outputs(g.out_size[0], in_h, sh, row_offset);
        for kj in 0..kw {
            let col_offset = (kj * dw) as isize - pw as isize;
            let valid = valid_outputs(out_w, in_w, sw, col_offset);
            let tap = &mut col[(ki * kw + kj) * ld..][..width];
            for (oh, dst) in rows.clone().zip(tap.chunks_exact_mut(out_w)) {
                if !valid_rows.contains(&oh) || valid.is_empty() {
                    dst.fill(T::zero());
                    continue;
                }
                let ih = ((oh * sh) as isize + row_offset) as usize;
                let src = &plane[ih * in_w..(ih + 1) * in_w];
                let iw0 = ((valid.start * sw) as isize + col_offset) as usize;
                dst[..valid.start].fill(T::zero());
                dst[valid.end..].fill(T::zero());
                let dst = &mut dst[valid.clone()];
                if sw == 1 {
                    dst.copy_from_slice(&src[iw0..iw0 + dst.len()]);
                } else {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = src[iw0 + j * sw];
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_channel`]: add each im2col entry back onto the
/// input pixel it was read from (padding entries are dropped).
fn col2im_channel<T: Float>(col: &[T], g: &Conv2dGeometry, rows: Range<usize>, plane: &mut [T]) {
    let ([in_h, in_w], [_, out_w]) = (g.in_size, g.out_size);
    let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (g.kernel, g.stride, g.padding, g.dilation);
    let width = rows.len() * out_w;
    for ki in 0..kh {
        let row_offset = (ki * dh) as isize - ph as isize;
        let valid_rows = valid_outputs(g.out_size[0], in_h, sh, row_offset);
        for kj in 0..kw {
            let col_offset = (kj * dw) as isize - pw as isize;
            let valid = valid_outputs(out_w, in_w, sw, col_offset);
            if valid.is_empty() {
                continue;
            }
            let iw0 = ((valid.start * sw) as isize + col_offset) as usize;
            let tap = &col[(ki * kw + kj) * width..][..width];
            for (oh, src) in rows.clone().zip(tap.chunks_exact(out_w)) {
                if !valid_rows.contains(&oh) {
                    continue;
                }
                let ih = ((oh * sh) as isize + row_offset) as usize;
                let dst = &mut plane[ih * in_w..(ih + 1) * in_w];
                let src = &src[valid.clone()];
                if sw == 1 {
                    for (d, &s) in dst[iw0..iw0 + src.len()].iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    for (j, &s) in src.iter().enumerate() {
                        dst[iw0 + j * sw] += s;
                    }
                }
            }
        }
    }
}

/// im2col of output rows `rows` of one group's input planes into `col`
/// (`[col_rows, rows·W_out]`), optionally one channel per task.
fn im2col<T: Float>(x_group: &[T], g: &Conv2dGeometry, rows: Range<usize>, col: &mut [T], parallel: bool) {
    let taps = g.kernel[0] * g.kernel[1] * rows.len() * g.out_size[1];
    let planes = x_group.chunks(g.in_plane()).take(g.in_per_group());
    if parallel {
        let width = rows.len() * g.out_size[1];
        col.par_chunks_mut(taps).zip(planes.collect::<Vec<_>>()).for_each(|(c, p)| im2col_channel(p, g, rows.clone(), c, width));
    } else {
        let width = rows.len() * g.out_size[1];
        col.chunks_mut(taps).zip(planes).for_each(|(c, p)| im2col_channel(p, g, rows.clone(), c, width));
    }
}

/// Scratch buffers shared by the tasks of one parallel call. rayon's
/// `for_each_init` runs its init once per split job, not once per thread, so
/// fresh buffers there were zero-filled again and again (2–3 % of a forward
/// pass in profiles, as memset); a [`Scratch`] hands its buffers back here
/// when its job ends, and the next job takes them as they are.
struct ScratchPool<T>(std::sync::Mutex<Vec<Vec<T>>>);

impl<T> ScratchPool<T> {
    fn new() -> Self {
        ScratchPool(std::sync::Mutex::new(Vec::new()))
    }

    /// `count` buffers (reused ones when there are).
    fn take(&self, count: usize) -> Scratch<'_, T> {
        let mut free = self.0.lock().expect("scratch pool lock poisoned");
        let buffers = (0..count).map(|_| free.pop().unwrap_or_default()).collect();
        Scratch { buffers, pool: self }
    }
}

/// Buffers on loan from a [`ScratchPool`], returned when dropped.
struct Scratch<'a, T> {
    buffers: Vec<Vec<T>>,
    pool: &'a ScratchPool<T>,
}

impl<T> Drop for Scratch<'_, T> {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.0.lock() {
            free.append(&mut self.buffers);
        }
    }
}

/// A raw pointer into an output buffer that tasks on several threads write
/// disjoint parts of.
#[derive(Clone, Copy)]
struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: the pointer is only dereferenced through `SharedMut::slice`, whose
// callers guarantee that concurrent slices never overlap; `T` itself is Send.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as above; sharing the pointer value across threads is harmless.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    fn new(buffer: &mut [T]) -> Self {
        SharedMut { ptr: buffer.as_mut_ptr(), len: buffer.len() }
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// The buffer must outlive the slice, and no other live slice (on any
    /// thread) may overlap `start..start + len`.
    unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        assert!(start + len <= self.len, "SharedMut::slice out of bounds");
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Output planes below this many pixels are batched: several images share
/// one GEMM (their im2col blocks side by side), so the packed weights are
/// reused across images and the GEMM is wide enough to run at full speed.
/// Profiles of ResNet-50's 7×7 stage showed a per-image GEMM 49 columns wide
/// spending a third of its time re-packing the weights and in edge tiles.
const BATCH_PLANES_BELOW: usize = 1024;

/// The longest run of images, at most `longest`, that cuts `batch` into runs
/// the threads share evenly enough: 3 runs of a batch of 8 on 2 threads leave
/// one thread idle for a quarter of the convolution, 4 runs of 2 do not.
fn balanced_run_length(batch: usize, longest: usize, threads: usize) -> usize {
    // Busy share of the threads' time when every run costs the same: ≥ 80 %.
    let even = |len: usize| {
        let runs = batch.div_ceil(len);
        5 * runs >= 4 * threads * runs.div_ceil(threads)
    };
    (1..=longest).rev().find(|&len| even(len)).unwrap_or(longest)
}

/// What the forward convolution does to each output value on its way out,
/// while the block is still in cache: `relu?(scale[c]·v + shift[c] + residual)`
/// for output channel `c`. A bias is a shift; an eval-mode BatchNorm after the
/// convolution is a scale and a shift; a ResNet block's skip connection is the
/// residual. Each saves a full pass over the output (and its allocation).
#[derive(Clone, Copy, Debug)]
pub struct ConvEpilogue<'a, T> {
    /// `[C_out]`, multiplies the convolution.
    pub scale: Option<&'a [T]>,
    /// `[C_out]`, added after the scale.
    pub shift: Option<&'a [T]>,
    /// Shaped like the output (`[N, C_out, H_out, W_out]`, contiguous), added last.
    pub residual: Option<&'a [T]>,
    /// Clamp negative results to zero.
    pub relu: bool,
}

impl<T> Default for ConvEpilogue<'_, T> {
    fn default() -> Self {
        ConvEpilogue { scale: None, shift: None, residual: None, relu: false }
    }
}

impl<T: Float> ConvEpilogue<'_, T> {
    /// Just a bias (or nothing).
    pub fn bias(bias: Option<&[T]>) -> ConvEpilogue<'_, T> {
        ConvEpilogue { shift: bias, ..Default::default() }
    }

    /// `dst[i] = f(src[i])` for one run of output channel `channel` starting at
    /// flat output index `start` (`dst` may be uninitialised: it is only written).
    fn apply(&self, channel: usize, start: usize, src: &[T], dst: &mut [MaybeUninit<T>]) {
        let scale = self.scale.map_or(T::one(), |s| s[channel]);
        let shift = self.shift.map_or(T::zero(), |s| s[channel]);
        let residual = self.residual.map(|r| &r[start..start + dst.len()]);
        let zero = T::zero();
        match (residual, self.relu) {
            (None, false) => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                d.write(v * scale + shift);
            }),
            (None, true) => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                d.write((v * scale + shift).max(zero));
            }),
            (Some(r), false) => dst.iter_mut().zip(src).zip(r).for_each(|((d, &v), &r)| {
                d.write(v * scale + shift + r);
            }),
            (Some(r), true) => dst.iter_mut().zip(src).zip(r).for_each(|((d, &v), &r)| {
                d.write((v * scale + shift + r).max(zero));
            }),
        }
    }

    fn apply_in_place(&self, channel: usize, start: usize, values: &mut [T]) {
        let scale = self.scale.map_or(T::one(), |s| s[channel]);
        let shift = self.shift.map_or(T::zero(), |s| s[channel]);
        let residual = self.residual.map(|r| &r[start..start + values.len()]);
        let zero = T::zero();
        match (residual, self.relu) {
            (None, false) if self.scale.is_none() && self.shift.is_none() => {}
            (None, false) => values.iter_mut().for_each(|v| *v = *v * scale + shift),
            (None, true) => values.iter_mut().for_each(|v| *v = (*v * scale + shift).max(zero)),
            (Some(r), false) => values.iter_mut().zip(r).for_each(|(v, &r)| *v = *v * scale + shift + r),
            (Some(r), true) => values.iter_mut().zip(r).for_each(|(v, &r)| *v = (*v * scale + shift + r).max(zero)),
        }
    }
}

/// Forward convolution: `x` `[N, C_in, H, W]`, `w` `[C_out, C_in/groups, kh, kw]`,
/// optional `bias` `[C_out]`, all contiguous; returns `[N, C_out, H_out, W_out]`.
pub fn conv2d_fwd<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Conv2dGeometry) -> Vec<T> {
    conv2d_fwd_fused(x, w, ConvEpilogue::bias(bias), g)
}

/// Forward convolution followed by `epilogue` (see [`ConvEpilogue`]); operands
/// as [`conv2d_fwd`].
///
/// A task is one group of a run of images and a block of output rows (a run
/// of several images only for small planes, then with all rows). A one-image
/// task's GEMM writes `W_g · im2col(x_g, rows)` straight into its output rows
/// and the epilogue then runs over them in place; a several-image task's
/// output is interleaved by image, so it is computed into a scratch block and
/// scattered through the epilogue.
pub fn conv2d_fwd_fused<T: Float>(x: &[T], w: &[T], epilogue: ConvEpilogue<'_, T>, g: &Conv2dGeometry) -> Vec<T> {
    let (out_plane, out_w, cog, k) = (g.out_plane(), g.out_size[1], g.out_per_group(), g.col_rows());
    let out_len = g.batch * g.out_channels * out_plane;
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), out_len, "conv2d: the residual must be shaped like the output");
    }
    if out_len == 0 {
        return Vec::new();
    }
    // Not zero-filled: every element is written once, by a GEMM (beta zero) or a scatter.
    let mut out: Vec<T> = Vec::with_capacity(out_len);
    let threads = rayon::current_num_threads();
    // Every task of a group streams all of the group's weights, so when they
    // outweigh the activations (more output channels than output pixels in
    // the whole batch: the SD-UNet's 1280-channel layers on 8×8 and 16×16
    // planes, 59 MB of weights each) a group is one task, a GEMM whose
    // threads split the output channels and so read the weights once.
    let weight_bound = cog >= g.batch * out_plane;
    let images_per_task = if weight_bound {
        g.batch
    } else if out_plane < BATCH_PLANES_BELOW && g.batch > 1 {
        let by_memory = COL_BLOCK_ELEMS / (k * out_plane).max(1);
        balanced_run_length(g.batch, by_memory.min(g.batch.div_ceil(threads)).clamp(1, g.batch), threads)
    } else {
        1
    };
    let image_runs: Vec<Range<usize>> = (0..g.batch).step_by(images_per_task).map(|n| n..(n + images_per_task).min(g.batch)).collect();
    let blocks = if images_per_task > 1 || weight_bound {
        std::iter::once(0..g.out_size[0]).collect()
    } else {
        g.blocks(g.rows_per_block(g.batch * g.groups, 2 * threads))
    };
    let tasks = image_runs.len() * g.groups * blocks.len();
    // When several tasks of a group multiply the same weights, pack them once
    // for all; a lone task packs its blocks as it goes, without a full copy.
    let group_weights = |grp: usize| MatRef { data: &w[grp * cog * k..], rs: k, cs: 1 };
    let packed: Vec<PackedA<T>> =
        if tasks > g.groups { (0..g.groups).map(|grp| PackedA::new(group_weights(grp), cog, k)).collect() } else { Vec::new() };
    let shared = SharedMut::new(&mut out.spare_capacity_mut()[..out_len]);
    let run = |task: usize, parallel: bool| {
        let rows = blocks[task % blocks.len()].clone();
        let item = task / blocks.len();
        let (images, grp) = (image_runs[item / g.groups].clone(), item % g.groups);
        let width = rows.len() * out_w;
        let a: AOperand<T> = packed.get(grp).map_or_else(|| group_weights(grp).into(), AOperand::from);
        if images.len() > 1 {
            let ld = width * images.len();
            let scatter = |block_out: &[T]| {
                for (oc, row) in block_out.chunks_exact(ld).enumerate() {
                    let channel = grp * cog + oc;
                    for (n, part) in images.clone().zip(row.chunks_exact(width)) {
                        let start = (n * g.out_channels + channel) * out_plane + rows.start * out_w;
                        // SAFETY: tasks are distinct (image run, group, row block) triples, so
                        // the output ranges `start..start+width` of different tasks never
                        // overlap, and `out` outlives every task (they finish before it is returned).
                        let dst = unsafe { shared.slice(start, width) };
                        epilogue.apply(channel, start, part, dst);
                    }
                }
            };
            with_buffer::<T, _>(Slot::ConvBlockOut, cog * ld, |block_out| {
                if g.is_pointwise() {
                    // The images' planes are the columns as they lie: no im2col copy.
                    let image_len = g.in_channels * g.in_plane();
                    let data = &x[images.start * image_len + grp * g.in_per_group() * g.in_plane()..];
                    let b = SegmentedRef { data, rs: g.in_plane(), seg_len: out_plane, seg_stride: image_len };
                    gemm(cog, ld, k, T::one(), a, b, T::zero(), block_out, ld, parallel);
                } else {
                    let b = g.im2col_ref(x, images.start, grp, 0);
                    gemm(cog, ld, k, T::one(), a, b, T::zero(), block_out, ld, parallel);
                }
                scatter(block_out);
            });
            return;
        }
        let n = images.start;
        let first = (n * g.out_channels + grp * cog) * out_plane + rows.start * out_w;
        let gemm_into_output = |b: BOperand<T>| {
            // The C window: rows are this group's output channels (stride one plane),
            // columns this block's output pixels.
            assert!(first + (cog - 1) * out_plane + width <= shared.len, "conv2d: output window out of bounds");
            // SAFETY: the window (cog rows of `width` elements, a plane apart) lies inside
            // `out` (asserted); no other task writes it, since tasks are distinct
            // (image, group, row block) triples and each covers only its own rows of
            // its own channels; `out` outlives the call.
            unsafe { gemm_raw_c(cog, width, k, T::one(), a, b, T::zero(), shared.ptr.add(first).cast::<T>(), out_plane, parallel) };
        };
        if g.is_pointwise() {
            let x_group = &x[(n * g.in_channels + grp * g.in_per_group()) * g.in_plane()..];
            gemm_into_output(MatRef { data: &x_group[rows.start * out_w..], rs: g.in_plane(), cs: 1 }.into());
        } else {
            gemm_into_output(g.im2col_ref(x, n, grp, rows.start * out_w).into());
        }
        for oc in 0..cog {
            let start = first + oc * out_plane;
            // SAFETY: one output row run of this task's window (see above), which the
            // GEMM has written in full (beta zero), so it is initialised.
            let values = unsafe { shared.slice(start, width) };
            // SAFETY: initialised (above); MaybeUninit<T> has T's layout.
            let values = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<T>(), width) };
            epilogue.apply_in_place(grp * cog + oc, start, values);
        }
    };
    if tasks >= threads && threads > 1 && g.macs() >= PARALLEL_MIN_MACS {
        (0..tasks).into_par_iter().for_each(|t| run(t, false));
    } else {
        let parallel = g.macs() >= PARALLEL_MIN_MACS;
        for t in 0..tasks {
            run(t, parallel);
        }
    }
    // SAFETY: the tasks' (image run, group, row block) windows tile the whole output,
    // and each task wrote every element of its window.
    unsafe { out.set_len(out_len) };
    out
}

/// Gradient of the input: `dy` `[N, C_out, H_out, W_out]` and `w` contiguous;
/// returns `[N, C_in, H, W]`. Per block, `dcol = W_gᵀ · dy_block` (the
/// transpose read through strides), then col2im adds `dcol` onto the input planes.
pub fn conv2d_bwd_data<T: Float>(dy: &[T], w: &[T], g: &Conv2dGeometry) -> Vec<T> {
    let (in_plane, out_plane, out_w, cog, k) = (g.in_plane(), g.out_plane(), g.out_size[1], g.out_per_group(), g.col_rows());
    let item_len = g.in_per_group() * in_plane;
    let mut dx = vec![T::zero(); g.batch * g.in_channels * in_plane];
    if dx.is_empty() {
        return dx;
    }
    let taps = g.kernel[0] * g.kernel[1];
    // Blocks of one (image, group) overlap in the input, so they run in turn;
    // parallelism comes from the items, or else from inside GEMM and col2im.
    let blocks = g.blocks(g.rows_per_block(1, 1));
    // Every image of a group multiplies the same Wᵀ: pack it once, not once per
    // image (for 4×4 planes the packing cost more than the product).
    let weights_t: Vec<PackedA<T>> =
        (0..g.groups).map(|grp| PackedA::new(MatRef { data: &w[grp * cog * k..], rs: 1, cs: k }, k, cog)).collect();
    let per_item = |item: usize, dx_item: &mut [T], dcol: &mut Vec<T>, parallel: bool| {
        let (n, grp) = (item / g.groups, item % g.groups);
        let w_t = &weights_t[grp];
        let dy_group = &dy[(n * g.out_channels + grp * cog) * out_plane..];
        if g.is_pointwise() {
            let b = MatRef { data: dy_group, rs: out_plane, cs: 1 };
            gemm(k, in_plane, cog, T::one(), w_t, b, T::zero(), dx_item, in_plane, parallel);
            return;
        }
        for rows in &blocks {
            let width = rows.len() * out_w;
            dcol.resize(k * width, T::zero());
            let dcol = &mut dcol[..k * width];
            let b = MatRef { data: &dy_group[rows.start * out_w..], rs: out_plane, cs: 1 };
            gemm(k, width, cog, T::one(), w_t, b, T::zero(), dcol, width, parallel);
            let per_channel = taps * width;
            if parallel {
                dx_item
                    .par_chunks_mut(in_plane)
                    .zip(dcol.par_chunks(per_channel))
                    .for_each(|(plane, c)| col2im_channel(c, g, rows.clone(), plane));
            } else {
                for (plane, c) in dx_item.chunks_mut(in_plane).zip(dcol.chunks(per_channel)) {
                    col2im_channel(c, g, rows.clone(), plane);
                }
            }
        }
    };
    let threads = rayon::current_num_threads();
    let items = g.batch * g.groups;
    if items >= threads && threads > 1 && g.macs() >= PARALLEL_MIN_MACS {
        let pool = ScratchPool::new();
        dx.par_chunks_mut(item_len)
            .enumerate()
            .for_each_init(|| pool.take(1), |scratch, (i, dx_item)| per_item(i, dx_item, &mut scratch.buffers[0], false));
    } else {
        let mut dcol = Vec::new();
        let parallel = g.macs() >= PARALLEL_MIN_MACS;
        for (i, dx_item) in dx.chunks_mut(item_len).enumerate() {
            per_item(i, dx_item, &mut dcol, parallel);
        }
    }
    dx
}

/// Gradient of the weight: `x` `[N, C_in, H, W]` and `dy` `[N, C_out, H_out, W_out]`
/// contiguous; returns `[C_out, C_in/groups, kh, kw]`. Per block,
/// `dW_g += dy_block · im2col(x_g, block)ᵀ`; threads sum private partials,
/// added in a fixed order so the result does not depend on scheduling.
pub fn conv2d_bwd_weight<T: Float>(x: &[T], dy: &[T], g: &Conv2dGeometry) -> Vec<T> {
    let (in_plane, out_plane, out_w, cog, k) = (g.in_plane(), g.out_plane(), g.out_size[1], g.out_per_group(), g.col_rows());
    let weight_len = g.out_channels * k;
    if weight_len == 0 || out_plane * g.batch == 0 {
        return vec![T::zero(); weight_len];
    }
    let threads = rayon::current_num_threads();
    let items = g.batch * g.groups;
    let blocks = g.blocks(g.rows_per_block(items, threads));
    let tasks = items * blocks.len();
    let big = g.macs() >= PARALLEL_MIN_MACS;
    let partials = if big { threads.min(tasks).min((WEIGHT_PARTIALS_ELEMS / weight_len).max(1)) } else { 1 };
    // With fewer partials than threads, the spare threads work inside GEMM and im2col.
    let parallel_inside = big && partials < threads;
    let accumulate = |task_range: Range<usize>| -> Vec<T> {
        let mut dw = vec![T::zero(); weight_len];
        let mut col = Vec::new();
        for task in task_range {
            let (item, rows) = (task / blocks.len(), blocks[task % blocks.len()].clone());
            let (n, grp) = (item / g.groups, item % g.groups);
            let width = rows.len() * out_w;
            let x_group = &x[(n * g.in_channels + grp * g.in_per_group()) * in_plane..];
            let b = if g.is_pointwise() {
                MatRef { data: &x_group[rows.start * out_w..], rs: 1, cs: in_plane }
            } else {
                col.resize(k * width, T::zero());
                im2col(x_group, g, rows.clone(), &mut col[..k * width], parallel_inside);
                MatRef { data: &col[..], rs: 1, cs: width }
            };
            let a = MatRef { data: &dy[(n * g.out_channels + grp * cog) * out_plane + rows.start * out_w..], rs: out_plane, cs: 1 };
            gemm(cog, k, width, T::one(), a, b, T::one(), &mut dw[grp * cog * k..(grp + 1) * cog * k], k, parallel_inside);
        }
        dw
    };
    let per_partial = tasks.div_ceil(partials);
    let ranges: Vec<Range<usize>> = (0..tasks).step_by(per_partial).map(|s| s..(s + per_partial).min(tasks)).collect();
    let mut sums: Vec<Vec<T>> =
        if ranges.len() > 1 { ranges.into_par_iter().map(accumulate).collect() } else { ranges.into_iter().map(accumulate).collect() };
    let mut total = sums.remove(0);
    for partial in sums {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    total
}

/// Gradient of the bias: `dy` `[N, C_out, H_out, W_out]` contiguous, summed over
/// batch and space; returns `[C_out]`.
pub fn conv2d_bwd_bias<T: Float>(dy: &[T], batch: usize, channels: usize, plane: usize) -> Vec<T> {
    let channel_sum = |c: usize| (0..batch).map(|n| sum_slice(&dy[(n * channels + c) * plane..][..plane])).fold(T::zero(), |a, b| a + b);
    if dy.len() >= PARALLEL_MIN && channels > 1 {
        (0..channels).into_par_iter().map(channel_sum).collect()
    } else {
        (0..channels).map(channel_sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_outputs_clip_to_the_input() {
        // in 5, stride 2, offset -1: inputs -1, 1, 3, 5 → outputs 1 and 2 valid.
        assert_eq!(valid_outputs(4, 5, 2, -1), 1..3);
        assert_eq!(valid_outputs(3, 5, 1, 0), 0..3);
        assert_eq!(valid_outputs(3, 2, 1, 4), 0..0);
        assert_eq!(valid_outputs(2, 3, 1, -5), 2..2);
    }

    #[test]
    fn image_runs_share_evenly_between_threads() {
        assert_eq!(balanced_run_length(8, 3, 2), 2, "4 runs of 2, not 3 runs of 3, 3, 2");
        assert_eq!(balanced_run_length(8, 4, 2), 4);
        assert_eq!(balanced_run_length(16, 3, 2), 3, "6 runs, 3 per thread");
        assert_eq!(balanced_run_length(5, 3, 2), 3, "runs of 3 and 2");
        assert_eq!(balanced_run_length(7, 4, 1), 4, "one thread: any split is even");
        assert_eq!(balanced_run_length(9, 4, 2), 2, "5 runs share 3:2, 3 runs would share 2:1");
    }

    #[test]
    fn blocks_cover_the_output_rows() {
        let g = Conv2dGeometry {
            batch: 1,
            in_channels: 320,
            in_size: [64, 64],
            out_channels: 320,
            kernel: [3, 3],
            out_size: [64, 64],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let rows = g.rows_per_block(1, 4);
        assert!(rows * 64 * g.col_rows() <= COL_BLOCK_ELEMS);
        let blocks = g.blocks(rows);
        assert_eq!(blocks.first().unwrap().start, 0);
        assert_eq!(blocks.last().unwrap().end, 64);
        assert!(blocks.windows(2).all(|w| w[0].end == w[1].start));
    }

    /// Direct-loop forward convolution, the reference for the GEMM paths.
    fn direct_conv(x: &[f64], w: &[f64], bias: &[f64], g: &Conv2dGeometry) -> Vec<f64> {
        let ([ih, iw], [oh, ow], [kh, kw]) = (g.in_size, g.out_size, g.kernel);
        let (cig, cog) = (g.in_per_group(), g.out_per_group());
        let mut out = vec![0.0; g.batch * g.out_channels * oh * ow];
        for n in 0..g.batch {
            for oc in 0..g.out_channels {
                let grp = oc / cog;
                for (y, xo) in (0..oh).flat_map(|y| (0..ow).map(move |xo| (y, xo))) {
                    let mut acc = bias[oc];
                    for (c, ki, kj) in (0..cig).flat_map(|c| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (c, ki, kj)))) {
                        let r = (y * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
                        let q = (xo * g.stride[1] + kj * g.dilation[1]) as isize - g.padding[1] as isize;
                        if r < 0 || q < 0 || r >= ih as isize || q >= iw as isize {
                            continue;
                        }
                        let xi = ((n * g.in_channels + grp * cig + c) * ih + r as usize) * iw + q as usize;
                        acc += x[xi] * w[((oc * cig + c) * kh + ki) * kw + kj];
                    }
                    out[((n * g.out_channels + oc) * oh + y) * ow + xo] = acc;
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn geometry(
        batch: usize,
        cin: usize,
        hw: [usize; 2],
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> Conv2dGeometry {
        let out = |i: usize| Conv2dGeometry::output_len(i, k, stride, pad, 1).unwrap();
        Conv2dGeometry {
            batch,
            in_channels: cin,
            in_size: hw,
            out_channels: cout,
            kernel: [k, k],
            out_size: [out(hw[0]), out(hw[1])],
            stride: [stride; 2],
            padding: [pad; 2],
            dilation: [1, 1],
            groups,
        }
    }

    /// The epilogue (scale, shift, residual, ReLU, in every combination) on
    /// both write paths — straight into the output (large planes, row blocks,
    /// and a lone image whose weights outweigh it) and through the scratch
    /// block (small planes, image runs, a whole weight-bound batch) — on 1 and
    /// 2 threads, against the direct loops followed by separate passes.
    #[test]
    fn fused_epilogue_matches_separate_passes() {
        let cases = [
            geometry(3, 6, [40, 36], 10, 3, 1, 1, 1),
            geometry(5, 8, [9, 7], 12, 1, 1, 0, 2),
            geometry(2, 4, [33, 35], 6, 3, 2, 1, 1),
            // More output channels than output pixels: one GEMM per group, threads inside.
            geometry(1, 8, [3, 4], 16, 3, 1, 1, 1),
            geometry(2, 8, [2, 3], 24, 3, 1, 1, 2),
        ];
        for g in cases {
            let mut rng = crate::Rng::new(5);
            let mut rand = |n: usize| (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<f64>>();
            let x = rand(g.batch * g.in_channels * g.in_plane());
            let w = rand(g.out_channels * g.col_rows());
            let (scale, shift) = (rand(g.out_channels), rand(g.out_channels));
            let residual = rand(g.batch * g.out_channels * g.out_plane());
            let plain = direct_conv(&x, &w, &vec![0.0; g.out_channels], &g);
            for (with_scale, with_shift, with_residual, relu) in
                (0..16).map(|bits| (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0))
            {
                let want: Vec<f64> = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = (i / g.out_plane()) % g.out_channels;
                        let mut y = if with_scale { v * scale[c] } else { v };
                        y += if with_shift { shift[c] } else { 0.0 };
                        y += if with_residual { residual[i] } else { 0.0 };
                        if relu {
                            y.max(0.0)
                        } else {
                            y
                        }
                    })
                    .collect();
                let epilogue = ConvEpilogue {
                    scale: with_scale.then_some(&scale[..]),
                    shift: with_shift.then_some(&shift[..]),
                    residual: with_residual.then_some(&residual[..]),
                    relu,
                };
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let got = pool.install(|| conv2d_fwd_fused(&x, &w, epilogue, &g));
                    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                    assert!(worst < 1e-12, "{g:?} {epilogue:?} on {threads} threads: max error {worst:e}");
                }
            }
        }
    }

    /// Small planes batch several images into one GEMM (uneven runs of an odd
    /// batch, pointwise and im2col, grouped, on 1 and 2 threads, the
    /// sequential and the parallel task loops): all agree with direct loops.
    #[test]
    fn image_batched_forward_matches_direct_loops() {
        let cases = [
            geometry(5, 3, [9, 7], 4, 3, 2, 1, 1),
            geometry(5, 4, [5, 6], 6, 1, 1, 0, 2),
            geometry(7, 16, [12, 10], 24, 3, 1, 1, 1),
            geometry(5, 16, [11, 9], 20, 1, 1, 0, 1),
            geometry(3, 8, [10, 13], 12, 3, 1, 1, 4),
            geometry(3, 16, [3, 3], 40, 3, 1, 1, 1),
            geometry(2, 12, [4, 4], 64, 1, 1, 0, 2),
        ];
        for g in cases {
            let mut rng = crate::Rng::new(3);
            let mut rand = |n: usize| (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect::<Vec<f64>>();
            let x = rand(g.batch * g.in_channels * g.in_plane());
            let w = rand(g.out_channels * g.col_rows());
            let b = rand(g.out_channels);
            let want = direct_conv(&x, &w, &b, &g);
            for threads in [1, 2, 3] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = pool.install(|| conv2d_fwd(&x, &w, Some(&b), &g));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-12, "{g:?} on {threads} threads: max error {worst:e}");
                let [x32, w32, b32] = [&x, &w, &b].map(|v| v.iter().map(|&e| e as f32).collect::<Vec<f32>>());
                let got32 = pool.install(|| conv2d_fwd(&x32, &w32, Some(&b32), &g));
                let worst32 = got32.iter().zip(&want).map(|(&a, b)| (a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(worst32 < 1e-5, "{g:?} f32 on {threads} threads: max error {worst32:e}");
            }
        }
    }
}
