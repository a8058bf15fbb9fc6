//! Matrix multiply with broadcast batch dimensions.

use super::{same_device, same_dtype};
use crate::autograd::rules::matmul::MatmulBackward;
use crate::backend::cpu;
use crate::backend::cpu::gemm::MatRef;
use crate::tensor::{broadcast_shapes, Float, Layout, Storage, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Shapes of a batched product: (batch dims, m, k, n).
pub(crate) fn matmul_dims(a: &[usize], b: &[usize]) -> Result<(Vec<usize>, usize, usize, usize)> {
    if a.len() < 2 || b.len() < 2 {
        return Err(Error::bad_shape("matmul", format!("operands need rank >= 2, got {a:?} and {b:?}")));
    }
    let (m, k) = (a[a.len() - 2], a[a.len() - 1]);
    let (k2, n) = (b[b.len() - 2], b[b.len() - 1]);
    if k != k2 {
        return Err(Error::ShapeMismatch { op: "matmul", lhs: a.to_vec(), rhs: b.to_vec() });
    }
    let batch = broadcast_shapes("matmul", &a[..a.len() - 2], &b[..b.len() - 2])?;
    Ok((batch, m, k, n))
}

/// Storage offset of batch item `idx` of a view broadcast over `batch`.
fn batch_offset(l: &Layout, batch: &[usize], mut idx: usize) -> usize {
    let mut off = l.offset();
    for d in (0..batch.len()).rev() {
        off += (idx % batch[d]) * l.strides()[d];
        idx /= batch[d];
    }
    off
}

#[allow(clippy::too_many_arguments)]
fn cpu_matmul<T: Float>(a: &[T], la: &Layout, b: &[T], lb: &Layout, batch: &[usize], m: usize, k: usize, n: usize) -> Vec<T> {
    let nb: usize = batch.iter().product();
    if m * n == 0 || nb == 0 {
        return vec![T::zero(); nb * m * n];
    }
    let r = la.rank();
    let (ars, acs) = (la.strides()[r - 2], la.strides()[r - 1]);
    let (brs, bcs) = (lb.strides()[r - 2], lb.strides()[r - 1]);
    let one_item = |start: usize, c: &mut [MaybeUninit<T>], parallel: bool| {
        let i = start / (m * n);
        let (oa, ob) = (batch_offset(la, batch, i), batch_offset(lb, batch, i));
        let (a, b) = (MatRef { data: &a[oa..], rs: ars, cs: acs }, MatRef { data: &b[ob..], rs: brs, cs: bcs });
        assert_eq!(c.len(), m * n, "matmul: one product per chunk");
        // SAFETY: `c` is this item's m×n output, exclusively ours; with beta zero the GEMM
        // only writes it, through the pointer, so it may be uninitialised.
        unsafe { cpu::gemm::gemm_raw_c(m, n, k, T::one(), a, b, T::zero(), c.as_mut_ptr().cast::<T>(), n, parallel) };
    };
    let threads = rayon::current_num_threads();
    // Many small products (attention heads): one thread each. Few large ones: threads inside each.
    let across_items = nb >= threads && m * n * k < 1 << 21;
    // SAFETY: each chunk is one item's m×n product, which the GEMM (beta zero) writes in full.
    unsafe { cpu::new_vec_by_chunks(nb * m * n, m * n, across_items, |start, c| one_item(start, c, !across_items)) }
}

impl Tensor {
    /// `self @ rhs` over the last two dims, batch dims broadcast.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let device = same_device("matmul", self, rhs)?;
        same_dtype("matmul", self, rhs)?;
        let (batch, m, k, n) = matmul_dims(self.shape(), rhs.shape())?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let mut a_shape = batch.clone();
        a_shape.extend([m, k]);
        let mut b_shape = batch.clone();
        b_shape.extend([k, n]);
        let la = self.layout().broadcast_to(&a_shape)?;
        let lb = rhs.layout().broadcast_to(&b_shape)?;
        let out = match device {
            Device::Cpu => dispatch_float!(self.dtype(), "matmul", |T| {
                let (sa, sb) = (self.storage(), rhs.storage());
                let a = sa.cpu().unwrap().as_slice::<T>().unwrap();
                let b = sb.cpu().unwrap().as_slice::<T>().unwrap();
                Tensor::from_cpu_vec(cpu_matmul(a, &la, b, &lb, &batch, m, k, n), &out_shape)
            }),
            Device::Cuda(_) => {
                let (sa, sb) = (self.storage(), rhs.storage());
                let (Storage::Cuda(a), Storage::Cuda(b)) = (&*sa, &*sb) else { unreachable!() };
                Tensor::from_storage(Storage::Cuda(crate::backend::cuda::matmul(a, &la, b, &lb, &batch, m, k, n)?), &out_shape)
            }
        };
        Ok(out.recorded(&[self, rhs], || Arc::new(MatmulBackward { lhs: self.clone(), rhs: rhs.clone() })))
    }
}
