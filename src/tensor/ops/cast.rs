//! Copies between layouts, dtypes and devices.

use crate::autograd::rules::cast::{ContiguousBackward, ToDTypeBackward, ToDeviceBackward};
use crate::backend::cpu;
use crate::tensor::{CpuStorage, DType, Device, Element, Storage, Tensor};
use crate::{dispatch_any, Result};
use std::sync::Arc;

fn convert<S: Element, D: Element>(src: &[S]) -> Vec<D> {
    cpu::elementwise::map_slice(src, |v| D::from_f64(v.to_f64()))
}

/// Convert a contiguous host slice of `S` to storage of `to`.
fn cast_cpu<S: Element>(src: &[S], to: DType) -> CpuStorage {
    use half::{bf16, f16};
    match (S::DTYPE, to) {
        // Fast paths through f32 for the half types (half's slice conversions vectorise).
        (DType::F16, DType::F32) => {
            let s: &[f16] = bytemuck::cast_slice(src);
            CpuStorage::F32(cpu::elementwise::map_slice(s, |v| v.to_f32()))
        }
        (DType::F32, DType::F16) => {
            let s: &[f32] = bytemuck::cast_slice(src);
            CpuStorage::F16(cpu::elementwise::map_slice(s, f16::from_f32))
        }
        (DType::BF16, DType::F32) => {
            let s: &[bf16] = bytemuck::cast_slice(src);
            CpuStorage::F32(cpu::elementwise::map_slice(s, |v| v.to_f32()))
        }
        (DType::F32, DType::BF16) => {
            let s: &[f32] = bytemuck::cast_slice(src);
            CpuStorage::BF16(cpu::elementwise::map_slice(s, bf16::from_f32))
        }
        (_, DType::F32) => CpuStorage::F32(convert(src)),
        (_, DType::F64) => CpuStorage::F64(convert(src)),
        (_, DType::F16) => CpuStorage::F16(convert(src)),
        (_, DType::BF16) => CpuStorage::BF16(convert(src)),
        (_, DType::I64) => CpuStorage::I64(convert(src)),
        (_, DType::I32) => CpuStorage::I32(convert(src)),
        (_, DType::U8) => CpuStorage::U8(convert(src)),
    }
}

impl Tensor {
    /// A row-major contiguous tensor: `self` if already so, else a copy.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = match self.device() {
            Device::Cpu => dispatch_any!(self.dtype(), |T| Tensor::from_cpu_vec(self.cpu_vec::<T>()?, self.shape())),
            Device::Cuda(_) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                Tensor::from_storage(Storage::Cuda(crate::backend::cuda::copy_strided(s, self.layout())?), self.shape())
            }
        };
        Ok(out.recorded(&[self], || Arc::new(ContiguousBackward { input: self.clone() })))
    }

    /// Convert elements to `dtype` (float casts are differentiable).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let out = match self.device() {
            Device::Cpu => {
                let c = self.contiguous()?;
                let st = c.storage();
                let cs = st.cpu().unwrap();
                let r = c.layout().contiguous_range().unwrap();
                let storage = dispatch_any!(self.dtype(), |T| cast_cpu(&cs.as_slice::<T>().unwrap()[r], dtype));
                Tensor::from_storage(Storage::Cpu(storage), self.shape())
            }
            Device::Cuda(_) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                Tensor::from_storage(Storage::Cuda(crate::backend::cuda::cast(s, self.layout(), dtype)?), self.shape())
            }
        };
        if !(self.dtype().is_float() && dtype.is_float()) {
            return Ok(out);
        }
        Ok(out.recorded(&[self], || Arc::new(ToDTypeBackward { input: self.clone() })))
    }

    /// Copy to `device` (differentiable: the gradient comes back).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let out = match (self.device(), device) {
            (Device::Cpu, Device::Cuda(ordinal)) => {
                let c = self.contiguous()?;
                let st = c.storage();
                let cs = st.cpu().unwrap();
                let r = c.layout().contiguous_range().unwrap();
                let bytes = &cs.as_bytes()[r.start * self.dtype().size_in_bytes()..r.end * self.dtype().size_in_bytes()];
                Tensor::from_storage(Storage::Cuda(crate::backend::cuda::upload(bytes, self.dtype(), ordinal)?), self.shape())
            }
            (Device::Cuda(_), Device::Cpu) => {
                let st = self.storage();
                let Storage::Cuda(s) = &*st else { unreachable!() };
                let contiguous = crate::backend::cuda::copy_strided(s, self.layout())?;
                let bytes = crate::backend::cuda::download(&contiguous)?;
                Tensor::from_storage(Storage::Cpu(CpuStorage::from_bytes(self.dtype(), &bytes)), self.shape())
            }
            (Device::Cuda(_), Device::Cuda(o)) => self.to_device(Device::Cpu)?.to_device(Device::Cuda(o))?,
            (Device::Cpu, Device::Cpu) => unreachable!(),
        };
        Ok(out.recorded(&[self], || Arc::new(ToDeviceBackward { input: self.clone() })))
    }
}
