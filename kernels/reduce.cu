// Reductions. The host permutes the view so the reduced dims come last (a
// layout change, no copy); each block then reduces rows of `len` elements:
// every thread accumulates a strided share of the row, then a warp-shuffle
// tree and one pass over per-warp partials finish it. f16/bf16 accumulate in
// f32. CPU twin: src/backend/cpu/reduce.rs.
#include "common.cuh"

#define R_SUM 0
#define R_MAX 1
#define R_MIN 2

#define FULL_MASK 0xffffffffu

template <typename C> __device__ __forceinline__ C reduce_init(u32 op);
template <> __device__ __forceinline__ float reduce_init<float>(u32 op) {
    return op == R_SUM ? 0.0f : (op == R_MAX ? neg_inf_f32() : pos_inf_f32());
}
template <> __device__ __forceinline__ double reduce_init<double>(u32 op) {
    return op == R_SUM ? 0.0 : (op == R_MAX ? neg_inf_f64() : pos_inf_f64());
}

// NaN wins max and min, as on the CPU.
template <typename C> __device__ __forceinline__ C reduce_combine(u32 op, C a, C b) {
    if (op == R_SUM) return a + b;
    if (a != a) return a;
    if (b != b) return b;
    if (op == R_MAX) return b > a ? b : a;
    return b < a ? b : a;
}

// Reduce `v` across the block; every thread gets the result. blockDim.x is a
// multiple of 32 and at most BLOCK.
template <typename C> __device__ __forceinline__ C block_reduce(u32 op, C v, C* partial) {
    for (int o = 16; o > 0; o >>= 1) v = reduce_combine(op, v, __shfl_down_sync(FULL_MASK, v, o));
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? partial[lane] : reduce_init<C>(op);
        for (int o = 16; o > 0; o >>= 1) v = reduce_combine(op, v, __shfl_down_sync(FULL_MASK, v, o));
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    v = partial[0];
    // The next row reuses `partial`: nobody may write it before everyone has read it.
    __syncthreads();
    return v;
}

template <typename T>
__device__ void reduce_kernel(u32 op, u64 rows, u64 len, StridedLayout lx, const T* x, T* y) {
    typedef typename Num<T>::C C;
    __shared__ C partial[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        C acc = reduce_init<C>(op);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            acc = reduce_combine(op, acc, Num<T>::load(x[strided_offset(lx, row * len + j)]));
        }
        acc = block_reduce(op, acc, partial);
        if (threadIdx.x == 0) y[row] = Num<T>::store(acc);
    }
}

// Candidate of an arg-reduction. `rank` orders candidates before their values,
// reproducing the CPU's sequential scan (first element is the start, a later
// element wins only if strictly better, NaN never compares better): a NaN at
// index 0 can never be displaced (rank 2), a NaN elsewhere never wins (rank 0),
// no candidate at all is rank -1. Ties go to the smaller index.
template <typename C> struct ArgCandidate {
    C value;
    i64 index;
    int rank;
};

template <typename C> __device__ __forceinline__ bool arg_better(bool largest, const ArgCandidate<C>& a, const ArgCandidate<C>& b) {
    if (a.rank != b.rank) return a.rank > b.rank;
    if (a.rank == 1) {
        if (largest ? a.value > b.value : a.value < b.value) return true;
        if (a.value != b.value) return false;
    }
    return a.index < b.index;
}

template <typename T>
__device__ void arg_reduce_kernel(u32 largest, u64 rows, u64 len, StridedLayout lx, const T* x, i64* out) {
    typedef typename Num<T>::C C;
    __shared__ C part_value[BLOCK / 32];
    __shared__ i64 part_index[BLOCK / 32];
    __shared__ int part_rank[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        ArgCandidate<C> best;
        best.value = C(0);
        best.index = 0;
        best.rank = -1;
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            ArgCandidate<C> c;
            c.value = Num<T>::load(x[strided_offset(lx, row * len + j)]);
            c.index = (i64)j;
            c.rank = (c.value != c.value) ? (j == 0 ? 2 : 0) : 1;
            if (arg_better(largest != 0, c, best)) best = c;
        }
        for (int o = 16; o > 0; o >>= 1) {
            ArgCandidate<C> other;
            other.value = __shfl_down_sync(FULL_MASK, best.value, o);
            other.index = __shfl_down_sync(FULL_MASK, best.index, o);
            other.rank = __shfl_down_sync(FULL_MASK, best.rank, o);
            if (arg_better(largest != 0, other, best)) best = other;
        }
        const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
        if (lane == 0) {
            part_value[warp] = best.value;
            part_index[warp] = best.index;
            part_rank[warp] = best.rank;
        }
        __syncthreads();
        if (warp == 0) {
            if (lane < warps) {
                best.value = part_value[lane];
                best.index = part_index[lane];
                best.rank = part_rank[lane];
            } else {
                best.rank = -1;
            }
            for (int o = 16; o > 0; o >>= 1) {
                ArgCandidate<C> other;
                other.value = __shfl_down_sync(FULL_MASK, best.value, o);
                other.index = __shfl_down_sync(FULL_MASK, best.index, o);
                other.rank = __shfl_down_sync(FULL_MASK, best.rank, o);
                if (arg_better(largest != 0, other, best)) best = other;
            }
            if (lane == 0) out[row] = best.index;
        }
        __syncthreads();
    }
}

#define REDUCE_KERNELS(NAME, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                     \
        reduce_##NAME(u32 op, u64 rows, u64 len, StridedLayout lx, const T* x, T* y) {                     \
        reduce_kernel<T>(op, rows, len, lx, x, y);                                                          \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                     \
        arg_reduce_##NAME(u32 largest, u64 rows, u64 len, StridedLayout lx, const T* x, i64* out) {       \
        arg_reduce_kernel<T>(largest, rows, len, lx, x, out);                                               \
    }

REDUCE_KERNELS(f32, float)
REDUCE_KERNELS(f64, double)
REDUCE_KERNELS(f16, f16)
REDUCE_KERNELS(bf16, bf16)
