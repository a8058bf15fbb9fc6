//! The op API on [`Tensor`]: each op checks its arguments, runs the backend
//! kernel for the tensor's device, and records its backward rule.
//! One op family per file; its CPU kernel is in `backend::cpu`, its CUDA twin
//! in `backend::cuda`, its backward rule in `autograd::rules`, all under the
//! same name.

pub mod assign;
pub mod attention;
pub mod binary;
pub mod cast;
pub mod concat;
pub mod conv;
pub mod geglu;
pub mod indexing;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod select;
pub mod siamese_head;
pub mod softmax;
pub mod unary;
pub mod upsample;
pub mod view;

use crate::tensor::{CpuStorage, Element, Layout, Storage, Tensor};
use crate::{Device, Error, Result};

/// Both tensors on one device, or an error naming `op`.
pub(crate) fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Device> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch { op, lhs: a.device(), rhs: b.device() });
    }
    Ok(a.device())
}

/// Both tensors of one dtype, or an error naming `op`.
pub(crate) fn same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

/// An error for an op that has no kernel on this device yet.
pub(crate) fn unsupported(op: &'static str, t: &Tensor) -> Error {
    Error::Unsupported { op, dtype: t.dtype(), device: t.device(), hint: "" }
}

impl Tensor {
    /// Run `f` on the CPU slice and layout of this tensor (which must be on the CPU, of type `T`).
    pub fn with_cpu_slice<T: Element, R>(&self, f: impl FnOnce(&[T], &Layout) -> R) -> Result<R> {
        let st = self.storage();
        let Storage::Cpu(cpu) = &*st else {
            return Err(Error::msg(format!("expected a CPU tensor, found {:?}", self.device())));
        };
        let s = cpu.as_slice::<T>().ok_or(Error::DTypeMismatch { op: "with_cpu_slice", lhs: self.dtype(), rhs: T::DTYPE })?;
        Ok(f(s, self.layout()))
    }

    /// The elements as a contiguous CPU vector of `T` (copies).
    pub fn cpu_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.with_cpu_slice::<T, _>(|s, l| crate::backend::cpu::copy::gather(s, l))
    }

    /// A new contiguous CPU tensor from a vector whose length matches `shape`.
    pub fn from_cpu_vec<T: Element>(v: Vec<T>, shape: &[usize]) -> Tensor {
        debug_assert_eq!(v.len(), shape.iter().product::<usize>());
        Tensor::from_storage(Storage::Cpu(CpuStorage::from_vec(v)), shape)
    }
}

/// Run `f` on the elements of the CPU tensor `t` in row-major order: a borrow
/// of its storage when the view is contiguous, a gathered copy otherwise.
pub(crate) fn with_contiguous<T: Element, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    t.with_cpu_slice::<T, _>(|s, l| match l.contiguous_range() {
        Some(range) => f(&s[range]),
        None => f(&crate::backend::cpu::copy::gather(s, l)),
    })
}

/// Run `f` with the CUDA views of `tensors` (`None` stays `None`); every
/// given tensor must live on a GPU (the caller has checked they share one).
pub(crate) fn with_cuda<R>(
    op: &'static str,
    tensors: &[Option<&Tensor>],
    f: impl FnOnce(&[Option<crate::backend::cuda::Operand<'_>>]) -> Result<R>,
) -> Result<R> {
    let guards: Vec<_> = tensors.iter().map(|t| t.map(|t| (t.storage(), t))).collect();
    let mut operands = Vec::with_capacity(guards.len());
    for g in &guards {
        operands.push(match g {
            None => None,
            Some((st, t)) => match &**st {
                Storage::Cuda(s) => Some(crate::backend::cuda::Operand::new(s, t.layout())),
                Storage::Cpu(_) => return Err(Error::msg(format!("{op}: expected every operand on the GPU, found one on the CPU"))),
            },
        });
    }
    f(&operands)
}

/// A contiguous tensor of `shape` over a CUDA buffer.
pub(crate) fn cuda_tensor(s: crate::backend::cuda::CudaStorage, shape: &[usize]) -> Tensor {
    Tensor::from_storage(Storage::Cuda(s), shape)
}
