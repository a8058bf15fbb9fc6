// Row gathers and their scatter-add gradients: embedding (outer = 1) and
// index_select over a contiguous [outer, size, inner] tensor. Indices arrive
// as i64, already range-checked on the host. The gather copies bits (by
// element size, any dtype); the scatter-add accumulates into an f32 (f64 for
// f64) buffer with atomics, which the host casts to the gradient's dtype.
// CPU twin: src/backend/cpu/indexing.rs.
#include "common.cuh"

#define GATHER_KERNEL(BYTES, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                            \
        index_select_rows_b##BYTES(u64 outer, u64 size, u64 inner, u64 n_idx, u64 src, u64 idx, u64 out) {          \
        const T* s = as_ptr<const T>(src);                                                                          \
        const i64* ids = as_ptr<const i64>(idx);                                                                    \
        T* o = as_ptr<T>(out);                                                                                      \
        GRID_STRIDE_LOOP(i, outer * n_idx * inner) {                                                                \
            const u64 k = i % inner, row = i / inner, j = row % n_idx, oo = row / n_idx;                            \
            o[i] = s[(oo * size + (u64)ids[j]) * inner + k];                                                        \
        }                                                                                                            \
    }

GATHER_KERNEL(1, u8)
GATHER_KERNEL(2, u16)
GATHER_KERNEL(4, u32)
GATHER_KERNEL(8, u64)

// acc[o, idx[j], k] += grad[o, j, k]; acc is zeroed by the host.
template <typename T, typename A>
__device__ void index_add_rows(u64 outer, u64 size, u64 inner, u64 n_idx, const T* grad, const i64* ids, A* acc) {
    GRID_STRIDE_LOOP(i, outer * n_idx * inner) {
        const u64 k = i % inner, row = i / inner, j = row % n_idx, oo = row / n_idx;
        atomicAdd(&acc[(oo * size + (u64)ids[j]) * inner + k], (A)Num<T>::load(grad[i]));
    }
}

#define SCATTER_KERNEL(NAME, T)                                                                                     \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                            \
        index_add_rows_##NAME(u64 outer, u64 size, u64 inner, u64 n_idx, u64 grad, u64 idx, u64 acc) {             \
        typedef Num<T>::C A;                                                                                        \
        index_add_rows<T, A>(outer, size, inner, n_idx, as_ptr<const T>(grad), as_ptr<const i64>(idx), as_ptr<A>(acc)); \
    }

FOR_FLOATS(SCATTER_KERNEL)
