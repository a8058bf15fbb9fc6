//! The tensor: a reference-counted view (layout) over shared storage, with
//! an optional link to the op that made it, for reverse-mode autograd.

mod dtype;
mod layout;
pub mod ops;
mod storage;

pub use dtype::{erf_f64, DType, Device, Element, Float};
pub use layout::{broadcast_shapes, contiguous_strides, resolve_dim, Layout, StridedOffsets};
pub use storage::{CpuStorage, MappedBytes, Storage};

use crate::autograd::{self, BackwardRule};
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Unique identity of a tensor node (views of the same storage differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn next() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct Inner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    grad_fn: Option<Arc<dyn BackwardRule>>,
    requires_grad: bool,
}

/// An n-dimensional array on the CPU or a CUDA device. Cloning is cheap
/// (a reference count); views share storage.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{:?}, {:?}, {:?}", self.shape(), self.dtype(), self.device())?;
        if let Some(r) = &self.0.grad_fn {
            write!(f, ", grad_fn={}", r.name())?;
        } else if self.0.requires_grad {
            write!(f, ", variable")?;
        }
        write!(f, "]")
    }
}

impl Tensor {
    // ----- construction -------------------------------------------------

    pub(crate) fn from_parts(
        storage: Arc<RwLock<Storage>>,
        layout: Layout,
        grad_fn: Option<Arc<dyn BackwardRule>>,
        requires_grad: bool,
    ) -> Tensor {
        let (dtype, device) = {
            let s = storage.read().expect("storage lock poisoned");
            (s.dtype(), s.device())
        };
        Tensor(Arc::new(Inner { id: TensorId::next(), storage, layout, dtype, device, grad_fn, requires_grad }))
    }

    /// A contiguous tensor owning `storage`.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Tensor {
        Tensor::from_parts(Arc::new(RwLock::new(storage)), Layout::contiguous(shape), None, false)
    }

    /// A contiguous CPU tensor owning `data`.
    pub fn from_cpu(storage: CpuStorage, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if storage.len() != n {
            return Err(Error::bad_shape("from_vec", format!("{} elements do not fill shape {shape:?}", storage.len())));
        }
        Ok(Tensor::from_storage(Storage::Cpu(storage), shape))
    }

    /// A CPU tensor from a vector and a shape.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_cpu(CpuStorage::from_vec(data), shape)
    }

    /// A CPU tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_vec(vec![v], &[]).expect("scalar shape")
    }

    /// A tensor filled with `value` (converted to `dtype`).
    pub fn full(value: f64, shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let storage = match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F16 => CpuStorage::F16(vec![half::f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![half::bf16::from_f64(value); n]),
            DType::I64 => CpuStorage::I64(vec![value as i64; n]),
            DType::I32 => CpuStorage::I32(vec![value as i32; n]),
            DType::U8 => CpuStorage::U8(vec![value as u8; n]),
        };
        Tensor::from_cpu(storage, shape)?.to_device(device)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }
    pub fn ones(shape: &[usize], dtype: DType, device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full(value, self.shape(), self.dtype(), self.device())
    }

    /// `0, 1, …, n-1` as a 1-d tensor.
    pub fn arange(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        let v: Vec<f64> = (0..n).map(|i| i as f64).collect();
        Tensor::from_vec(v, &[n])?.to_dtype(dtype)?.to_device(device)
    }

    // ----- accessors ----------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }
    /// Alias of [`Tensor::shape`].
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }
    /// Size of dimension `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.shape()[resolve_dim(dim, self.rank(), "dim")?])
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    /// The rule that made this tensor, if it is on the tape.
    pub fn grad_fn(&self) -> Option<&Arc<dyn BackwardRule>> {
        self.0.grad_fn.as_ref()
    }
    /// Whether two tensors share the same storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Read access to the storage.
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().expect("storage lock poisoned")
    }

    /// Write access to the storage, for in-place updates by optimizers.
    /// Every view of the storage sees the change.
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().expect("storage lock poisoned")
    }

    // ----- autograd hooks -----------------------------------------------

    /// A leaf that gradients accumulate into (a parameter or an input under test).
    pub fn to_variable(&self) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), None, true)
    }

    /// The same data, cut from the tape.
    pub fn detach(&self) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), None, false)
    }

    /// A view of the same storage with another layout, recorded with `rule`.
    pub(crate) fn view_with(&self, layout: Layout, rule: impl FnOnce() -> Arc<dyn BackwardRule>) -> Tensor {
        let t = Tensor::from_parts(self.0.storage.clone(), layout, None, false);
        t.recorded(&[self], rule)
    }

    /// Whether an op on `inputs` goes on the tape: gradients are on and any input needs them.
    pub(crate) fn would_record(inputs: &[&Tensor]) -> bool {
        autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad())
    }

    /// Attach `rule` when gradients are on and any input needs them.
    pub(crate) fn recorded(self, inputs: &[&Tensor], rule: impl FnOnce() -> Arc<dyn BackwardRule>) -> Tensor {
        if Tensor::would_record(inputs) {
            let inner = Inner {
                id: self.0.id,
                storage: self.0.storage.clone(),
                layout: self.0.layout.clone(),
                dtype: self.0.dtype,
                device: self.0.device,
                grad_fn: Some(rule()),
                requires_grad: true,
            };
            Tensor(Arc::new(inner))
        } else {
            self
        }
    }

    // ----- host transfer ------------------------------------------------

    /// Copy the elements, in row-major order, into a vector of `T` (which must be the dtype).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let t = self.to_device(Device::Cpu)?;
        let st = t.storage();
        let s = st.cpu().expect("on cpu").as_slice::<T>().expect("dtype checked");
        Ok(crate::backend::cpu::copy::gather(s, t.layout()))
    }

    /// Elements converted to f64, for tests and reports.
    pub fn to_vec_f64(&self) -> Result<Vec<f64>> {
        self.to_dtype(DType::F64)?.to_vec::<f64>()
    }

    /// Elements converted to f32.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        self.to_dtype(DType::F32)?.to_vec::<f32>()
    }

    /// The single value of a one-element tensor, as f64.
    pub fn to_scalar_f64(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::bad_shape("to_scalar", format!("expected one element, shape is {:?}", self.shape())));
        }
        Ok(self.to_vec_f64()?[0])
    }
}
