//! Indexing ops: embedding lookup, index_select and gather, with their
//! scatter-add gradients. Indices are i64 (i32 and u8 are accepted too) and
//! are checked against the indexed size before any kernel runs.

use super::{cuda_tensor, same_device, unsupported, with_contiguous, with_cuda};
use crate::autograd::rules::indexing::{EmbeddingBackward, GatherBackward, IndexSelectBackward};
use crate::backend::cpu;
use crate::backend::cuda;
use crate::tensor::{resolve_dim, DType, Tensor};
use crate::{dispatch_any, dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// The values of an integer tensor (i64, i32 or u8) as i64, in row-major order.
pub(crate) fn index_values(op: &'static str, t: &Tensor) -> Result<Vec<i64>> {
    match t.dtype() {
        DType::I64 => t.cpu_vec::<i64>(),
        DType::I32 => Ok(t.cpu_vec::<i32>()?.into_iter().map(i64::from).collect()),
        DType::U8 => Ok(t.cpu_vec::<u8>()?.into_iter().map(i64::from).collect()),
        other => Err(Error::msg(format!("{op}: indices must be integers (i64, i32 or u8), found {}", other.as_str()))),
    }
}

/// [`index_values`] of a tensor on any device (a GPU tensor's indices are downloaded).
pub(crate) fn host_index_values(op: &'static str, t: &Tensor) -> Result<Vec<i64>> {
    match t.device() {
        Device::Cpu => index_values(op, t),
        Device::Cuda(_) => index_values(op, &t.to_device(Device::Cpu)?),
    }
}

/// `values` as `usize` offsets into a dimension of `bound` entries, or an
/// error naming the first bad value, its position and what it indexes.
pub(crate) fn checked_indices(
    op: &'static str,
    what: &str,
    values: &[i64],
    bound: usize,
    indexes: impl Fn() -> String,
) -> Result<Vec<usize>> {
    values
        .iter()
        .enumerate()
        .map(|(pos, &v)| {
            if v < 0 || v as u64 >= bound as u64 {
                Err(Error::msg(format!("{op}: {what} {v} at position {pos} is out of range for {} (valid: 0..{bound})", indexes())))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// Product of the sizes before and after `dim`: the `[outer, size, inner]` view of a contiguous tensor.
fn outer_inner(shape: &[usize], dim: usize) -> (usize, usize) {
    (shape[..dim].iter().product(), shape[dim + 1..].iter().product())
}

impl Tensor {
    /// Rows of `weight` (`[vocab, dim]`) picked by `ids` (any shape, integer
    /// dtype): the output is `[*ids.shape, dim]`, as torch.nn.functional.embedding.
    /// The gradient of `weight` adds each output row's gradient into the row
    /// it came from ([`Tensor::embedding_backward`]). An id outside
    /// `0..vocab` is an error naming the id and the vocabulary size.
    pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
        const OP: &str = "embedding";
        same_device(OP, ids, weight)?;
        if weight.rank() != 2 {
            return Err(Error::bad_shape(OP, format!("weight must be [vocab, dim], found shape {:?}", weight.shape())));
        }
        let (vocab, dim) = (weight.shape()[0], weight.shape()[1]);
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        let out = match weight.device() {
            Device::Cpu => {
                let idx = checked_indices(OP, "id", &index_values(OP, ids)?, vocab, || format!("a vocabulary of {vocab} rows"))?;
                dispatch_any!(weight.dtype(), |T| {
                    let rows = with_contiguous::<T, _>(weight, |w| cpu::indexing::index_select_rows(w, 1, vocab, dim, &idx))?;
                    Tensor::from_cpu_vec(rows, &shape)
                })
            }
            Device::Cuda(_) => {
                let idx = checked_indices(OP, "id", &host_index_values(OP, ids)?, vocab, || format!("a vocabulary of {vocab} rows"))?;
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                with_cuda(OP, &[Some(weight)], |o| {
                    Ok(cuda_tensor(cuda::index_select_rows(o[0].expect("given"), 1, vocab, dim, &idx)?, &shape))
                })?
            }
        };
        Ok(out.recorded(&[weight], || Arc::new(EmbeddingBackward { ids: ids.clone(), weight: weight.clone() })))
    }

    /// The gradient of [`Tensor::embedding`] with respect to its weight:
    /// `[vocab, dim]` zeros with row `grad_output[p]` added into row `ids[p]`
    /// for every id position `p` (`grad_output` is `[*ids.shape, dim]`).
    /// Threads split the vocabulary rows, so repeated ids need no atomics.
    pub fn embedding_backward(ids: &Tensor, grad_output: &Tensor, vocab: usize) -> Result<Tensor> {
        const OP: &str = "embedding_backward";
        same_device(OP, ids, grad_output)?;
        let dim = grad_output.shape().last().copied().unwrap_or(0);
        let mut expected = ids.shape().to_vec();
        expected.push(dim);
        if grad_output.shape() != expected.as_slice() {
            return Err(Error::ShapeMismatch { op: OP, lhs: grad_output.shape().to_vec(), rhs: expected });
        }
        match grad_output.device() {
            Device::Cpu => {
                let idx = checked_indices(OP, "id", &index_values(OP, ids)?, vocab, || format!("a vocabulary of {vocab} rows"))?;
                dispatch_float!(grad_output.dtype(), OP, |T| {
                    let g = with_contiguous::<T, _>(grad_output, |g| cpu::indexing::index_add_rows(g, 1, vocab, dim, &idx))?;
                    Ok(Tensor::from_cpu_vec(g, &[vocab, dim]))
                })
            }
            Device::Cuda(_) => {
                let idx = checked_indices(OP, "id", &host_index_values(OP, ids)?, vocab, || format!("a vocabulary of {vocab} rows"))?;
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                with_cuda(OP, &[Some(grad_output)], |o| {
                    Ok(cuda_tensor(cuda::index_add_rows(o[0].expect("given"), 1, vocab, dim, &idx)?, &[vocab, dim]))
                })
            }
        }
    }

    /// The entries of dimension `dim` listed by `indices` (a 1-d or 0-d
    /// integer tensor), in that order and with repeats, as torch.index_select.
    pub fn index_select(&self, dim: isize, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        same_device(OP, self, indices)?;
        if self.rank() == 0 {
            return Err(Error::bad_shape(OP, "the input must have at least one dimension"));
        }
        if indices.rank() > 1 {
            return Err(Error::bad_shape(OP, format!("indices must be 1-d, found shape {:?}", indices.shape())));
        }
        let d = resolve_dim(dim, self.rank(), OP)?;
        let size = self.shape()[d];
        let (outer, inner) = outer_inner(self.shape(), d);
        let mut shape = self.shape().to_vec();
        shape[d] = indices.numel();
        let out = match self.device() {
            Device::Cpu => {
                let idx =
                    checked_indices(OP, "index", &index_values(OP, indices)?, size, || format!("dim {d} of shape {:?}", self.shape()))?;
                dispatch_any!(self.dtype(), |T| {
                    let v = with_contiguous::<T, _>(self, |s| cpu::indexing::index_select_rows(s, outer, size, inner, &idx))?;
                    Tensor::from_cpu_vec(v, &shape)
                })
            }
            Device::Cuda(_) => {
                let idx = checked_indices(OP, "index", &host_index_values(OP, indices)?, size, || {
                    format!("dim {d} of shape {:?}", self.shape())
                })?;
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                with_cuda(OP, &[Some(self)], |o| {
                    Ok(cuda_tensor(cuda::index_select_rows(o[0].expect("given"), outer, size, inner, &idx)?, &shape))
                })?
            }
        };
        Ok(out.recorded(&[self], || Arc::new(IndexSelectBackward { input: self.clone(), indices: indices.clone(), dim: d })))
    }

    /// The gradient of [`Tensor::index_select`]: `self` is the gradient of its
    /// output, the result has `dim_size` entries along `dim`, each the sum of
    /// the gradient slices that selected it (zeros for unselected entries).
    pub fn index_select_backward(&self, dim: usize, indices: &Tensor, dim_size: usize) -> Result<Tensor> {
        const OP: &str = "index_select_backward";
        same_device(OP, self, indices)?;
        if dim >= self.rank() || self.shape()[dim] != indices.numel() {
            return Err(Error::bad_shape(
                OP,
                format!("gradient {:?} does not have {} entries along dim {dim}", self.shape(), indices.numel()),
            ));
        }
        let (outer, inner) = outer_inner(self.shape(), dim);
        let mut shape = self.shape().to_vec();
        shape[dim] = dim_size;
        match self.device() {
            Device::Cpu => {
                let idx = checked_indices(OP, "index", &index_values(OP, indices)?, dim_size, || format!("dim {dim} of size {dim_size}"))?;
                dispatch_float!(self.dtype(), OP, |T| {
                    let g = with_contiguous::<T, _>(self, |g| cpu::indexing::index_add_rows(g, outer, dim_size, inner, &idx))?;
                    Ok(Tensor::from_cpu_vec(g, &shape))
                })
            }
            Device::Cuda(_) => {
                let idx =
                    checked_indices(OP, "index", &host_index_values(OP, indices)?, dim_size, || format!("dim {dim} of size {dim_size}"))?;
                let idx: Vec<i64> = idx.into_iter().map(|i| i as i64).collect();
                with_cuda(OP, &[Some(self)], |o| {
                    Ok(cuda_tensor(cuda::index_add_rows(o[0].expect("given"), outer, dim_size, inner, &idx)?, &shape))
                })
            }
        }
    }

    /// `out[c] = self[c with c[dim] replaced by index[c]]` for every position
    /// `c` of `index`, as torch.gather: `index` has the input's rank, and
    /// along every other dimension at most the input's size. The output has
    /// the index's shape.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        same_device(OP, self, index)?;
        let d = resolve_dim(dim, self.rank(), OP)?;
        check_gather_shapes(OP, self.shape(), index.shape(), d)?;
        let out = match self.device() {
            Device::Cpu => {
                let size = if self.rank() == 0 { 1 } else { self.shape()[d] };
                let idx = checked_indices(OP, "index", &index_values(OP, index)?, size, || format!("dim {d} of shape {:?}", self.shape()))?;
                // Rank 0 is gathered as rank 1 of one element.
                let (index_shape, strides) =
                    if self.rank() == 0 { (vec![1], vec![1]) } else { (index.shape().to_vec(), self.layout().strides().to_vec()) };
                let offset = self.layout().offset();
                dispatch_any!(self.dtype(), |T| {
                    let v = self.with_cpu_slice::<T, _>(|s, _| cpu::indexing::gather(s, &strides, offset, &idx, &index_shape, d))?;
                    Tensor::from_cpu_vec(v, index.shape())
                })
            }
            Device::Cuda(_) => return Err(unsupported(OP, self)),
        };
        Ok(out.recorded(&[self], || Arc::new(GatherBackward { input: self.clone(), index: index.clone(), dim: d })))
    }

    /// The gradient of [`Tensor::gather`]: `self` is the gradient of its
    /// output (the index's shape); the result has `input_shape`, with each
    /// gradient element added where [`Tensor::gather`] read it from.
    pub fn gather_backward(&self, dim: usize, index: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "gather_backward";
        same_device(OP, self, index)?;
        if self.shape() != index.shape() {
            return Err(Error::ShapeMismatch { op: OP, lhs: self.shape().to_vec(), rhs: index.shape().to_vec() });
        }
        if dim >= input_shape.len().max(1) {
            return Err(Error::bad_shape(OP, format!("dimension {dim} out of range for rank {}", input_shape.len())));
        }
        check_gather_shapes(OP, input_shape, index.shape(), dim)?;
        match self.device() {
            Device::Cpu => {
                let size = input_shape.get(dim).copied().unwrap_or(1);
                let idx = checked_indices(OP, "index", &index_values(OP, index)?, size, || format!("dim {dim} of shape {input_shape:?}"))?;
                let (index_shape, kernel_input_shape) =
                    if input_shape.is_empty() { (vec![1], vec![1]) } else { (index.shape().to_vec(), input_shape.to_vec()) };
                dispatch_float!(self.dtype(), OP, |T| {
                    let g =
                        with_contiguous::<T, _>(self, |g| cpu::indexing::gather_backward(g, &idx, &index_shape, dim, &kernel_input_shape))?;
                    Ok(Tensor::from_cpu_vec(g, input_shape))
                })
            }
            Device::Cuda(_) => Err(unsupported(OP, self)),
        }
    }
}

/// torch.gather's shape rule: same rank, and no larger than the input along
/// every dimension but `dim`.
fn check_gather_shapes(op: &'static str, input: &[usize], index: &[usize], dim: usize) -> Result<()> {
    let fits = input.len() == index.len() && input.iter().zip(index).enumerate().all(|(d, (&i, &x))| d == dim || x <= i);
    if !fits {
        return Err(Error::bad_shape(
            op,
            format!("index of shape {index:?} does not fit input of shape {input:?} (same rank, and no larger except along dim {dim})"),
        ));
    }
    Ok(())
}
