//! Where a tensor's bytes live: an owned host vector, a memory-mapped file
//! region, or device memory.

use super::dtype::{DType, Element};
use half::{bf16, f16};
use std::sync::Arc;

/// Host storage. `Mapped` is a read-only view into a memory-mapped file:
/// pages are read only when an op touches them.
#[derive(Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Mapped(MappedBytes),
}

/// A typed, aligned byte range of a memory map.
#[derive(Debug, Clone)]
pub struct MappedBytes {
    pub map: Arc<memmap2::Mmap>,
    pub start: usize,
    pub len_bytes: usize,
    pub dtype: DType,
}

impl MappedBytes {
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len_bytes]
    }
}

macro_rules! for_each_vec {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => $body,
            CpuStorage::F64($v) => $body,
            CpuStorage::F16($v) => $body,
            CpuStorage::BF16($v) => $body,
            CpuStorage::I64($v) => $body,
            CpuStorage::I32($v) => $body,
            CpuStorage::U8($v) => $body,
            CpuStorage::Mapped(_) => unreachable!("mapped storage handled by caller"),
        }
    };
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::I32(_) => DType::I32,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::Mapped(m) => m.dtype,
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::Mapped(m) => m.len_bytes / m.dtype.size_in_bytes(),
            s => for_each_vec!(s, v => v.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw bytes (little-endian, as in safetensors).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::Mapped(m) => m.bytes(),
            s => for_each_vec!(s, v => bytemuck::cast_slice(v.as_slice())),
        }
    }

    /// Typed read access; `None` when `T` is not the stored type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        if self.dtype() != T::DTYPE {
            return None;
        }
        // Every storage variant holds exactly one element type, checked above,
        // and mapped regions are aligned when created (see `io::safetensors`).
        bytemuck::try_cast_slice(self.as_bytes()).ok()
    }

    /// Typed write access; a mapped region is first copied into an owned vector.
    pub fn as_mut_slice<T: Element>(&mut self) -> Option<&mut [T]> {
        if self.dtype() != T::DTYPE {
            return None;
        }
        if let CpuStorage::Mapped(m) = self {
            *self = CpuStorage::from_bytes(m.dtype, m.bytes());
        }
        let bytes: &mut [u8] = for_each_vec!(self, v => bytemuck::cast_slice_mut(v.as_mut_slice()));
        bytemuck::try_cast_slice_mut(bytes).ok()
    }

    /// An owned vector of `dtype` from little-endian bytes (copies).
    pub fn from_bytes(dtype: DType, bytes: &[u8]) -> CpuStorage {
        fn cast<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
            bytemuck::pod_collect_to_vec(b)
        }
        match dtype {
            DType::F32 => CpuStorage::F32(cast(bytes)),
            DType::F64 => CpuStorage::F64(cast(bytes)),
            DType::F16 => CpuStorage::F16(cast(bytes)),
            DType::BF16 => CpuStorage::BF16(cast(bytes)),
            DType::I64 => CpuStorage::I64(cast(bytes)),
            DType::I32 => CpuStorage::I32(cast(bytes)),
            DType::U8 => CpuStorage::U8(bytes.to_vec()),
        }
    }

    /// Owned storage from a typed vector.
    pub fn from_vec<T: Element>(v: Vec<T>) -> CpuStorage {
        // Dispatch on the dtype constant; the cast is a no-op move of the same type.
        fn conv<A: bytemuck::Pod, B: bytemuck::Pod>(v: Vec<A>) -> Vec<B> {
            bytemuck::allocation::try_cast_vec(v).unwrap_or_else(|(_, v)| bytemuck::pod_collect_to_vec::<A, B>(&v))
        }
        match T::DTYPE {
            DType::F32 => CpuStorage::F32(conv(v)),
            DType::F64 => CpuStorage::F64(conv(v)),
            DType::F16 => CpuStorage::F16(conv(v)),
            DType::BF16 => CpuStorage::BF16(conv(v)),
            DType::I64 => CpuStorage::I64(conv(v)),
            DType::I32 => CpuStorage::I32(conv(v)),
            DType::U8 => CpuStorage::U8(conv(v)),
        }
    }
}

/// Storage on any device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(crate::backend::cuda::CudaStorage),
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
    pub fn device(&self) -> crate::Device {
        match self {
            Storage::Cpu(_) => crate::Device::Cpu,
            Storage::Cuda(s) => crate::Device::Cuda(s.ordinal()),
        }
    }
    pub fn cpu(&self) -> Option<&CpuStorage> {
        match self {
            Storage::Cpu(s) => Some(s),
            Storage::Cuda(_) => None,
        }
    }
}
