// Layout copies, by element size (a copy does not care what the bits mean):
// gather a strided view into a contiguous buffer, and scatter a contiguous
// buffer into a strided view. CPU twin: src/backend/cpu/copy.rs.
#include "common.cuh"

#define COPY_KERNELS(BYTES, T)                                                                               \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                     \
        copy_strided_b##BYTES(u64 n, StridedLayout src_layout, const T* src, T* dst) {                      \
        GRID_STRIDE_LOOP(i, n) { dst[i] = src[strided_offset(src_layout, i)]; }                             \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                     \
        scatter_b##BYTES(u64 n, StridedLayout dst_layout, const T* src, T* dst) {                           \
        GRID_STRIDE_LOOP(i, n) { dst[strided_offset(dst_layout, i)] = src[i]; }                             \
    }

COPY_KERNELS(1, u8)
COPY_KERNELS(2, u16)
COPY_KERNELS(4, u32)
COPY_KERNELS(8, u64)
