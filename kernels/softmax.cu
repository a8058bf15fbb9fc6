// Softmax and log-softmax along one axis of a contiguous tensor viewed as
// [outer, len, inner], forward (one pass over the data for the statistics:
// running maximum and rescaled sum of exponentials, combined across threads)
// and backward. Rows (inner == 1) get one block each; otherwise one thread
// owns one (outer, inner) column. f16/bf16 compute in f32.
// CPU twin: src/backend/cpu/softmax.rs.
#include "common.cuh"

// Online (max, sum of exp(x - max)) update with one element. An element equal
// to the running max adds 1 (so -inf rows stay finite until the end and come
// out NaN, as on the CPU); a NaN poisons the sum.
template <typename C> __device__ __forceinline__ void online_push(C& m, C& s, C v) {
    if (v > m) {
        s = s * m_exp(m - v) + C(1);
        m = v;
    } else {
        s += (v == m) ? C(1) : m_exp(v - m);
    }
}

template <typename C> __device__ __forceinline__ void online_merge(C& m, C& s, C m2, C s2) {
    const C mx = m2 > m ? m2 : m;
    const C a = (m == mx) ? s : s * m_exp(m - mx);
    const C b = (m2 == mx) ? s2 : s2 * m_exp(m2 - mx);
    m = mx;
    s = a + b;
}

template <typename C> __device__ __forceinline__ C neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return neg_inf_f32(); }
template <> __device__ __forceinline__ double neg_inf<double>() { return neg_inf_f64(); }

// Block-wide online merge; every thread gets (m, s).
template <typename C> __device__ __forceinline__ void block_online(C& m, C& s, C* sm, C* ss) {
    for (int o = 16; o > 0; o >>= 1) {
        const C m2 = __shfl_down_sync(0xffffffffu, m, o);
        const C s2 = __shfl_down_sync(0xffffffffu, s, o);
        online_merge(m, s, m2, s2);
    }
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) {
        sm[warp] = m;
        ss[warp] = s;
    }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? sm[lane] : neg_inf<C>();
        s = lane < warps ? ss[lane] : C(0);
        for (int o = 16; o > 0; o >>= 1) {
            const C m2 = __shfl_down_sync(0xffffffffu, m, o);
            const C s2 = __shfl_down_sync(0xffffffffu, s, o);
            online_merge(m, s, m2, s2);
        }
        if (lane == 0) {
            sm[0] = m;
            ss[0] = s;
        }
    }
    __syncthreads();
    m = sm[0];
    s = ss[0];
    __syncthreads();
}

template <typename T>
__device__ void softmax_rows(u64 rows, u64 len, u32 log, const T* x, T* y) {
    typedef typename Num<T>::C C;
    __shared__ C sm[BLOCK / 32];
    __shared__ C ss[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * len;
        T* yr = y + row * len;
        C m = neg_inf<C>(), s = C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) online_push(m, s, Num<T>::load(xr[j]));
        block_online(m, s, sm, ss);
        const C lse = m_log(s);
        const C inv = C(1) / s;
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const C d = Num<T>::load(xr[j]) - m;
            yr[j] = Num<T>::store(log ? d - lse : m_exp(d) * inv);
        }
    }
}

template <typename T>
__device__ void softmax_columns(u64 outer, u64 len, u64 inner, u32 log, const T* x, T* y) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(col, outer * inner) {
        const u64 base = (col / inner) * len * inner + col % inner;
        C m = neg_inf<C>(), s = C(0);
        for (u64 j = 0; j < len; ++j) online_push(m, s, Num<T>::load(x[base + j * inner]));
        const C lse = m_log(s);
        const C inv = C(1) / s;
        for (u64 j = 0; j < len; ++j) {
            const C d = Num<T>::load(x[base + j * inner]) - m;
            y[base + j * inner] = Num<T>::store(log ? d - lse : m_exp(d) * inv);
        }
    }
}

// softmax: dx = y (g - sum g y); log-softmax: dx = g - exp(y) sum g.
template <typename T>
__device__ void softmax_bwd_rows(u64 rows, u64 len, u32 log, const T* y, const T* g, T* dx) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* yr = y + row * len;
        const T* gr = g + row * len;
        T* dr = dx + row * len;
        C acc = C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const C gv = Num<T>::load(gr[j]);
            acc += log ? gv : gv * Num<T>::load(yr[j]);
        }
        acc = block_sum(acc, scratch);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const C yv = Num<T>::load(yr[j]), gv = Num<T>::load(gr[j]);
            dr[j] = Num<T>::store(log ? gv - m_exp(yv) * acc : yv * (gv - acc));
        }
    }
}

template <typename T>
__device__ void softmax_bwd_columns(u64 outer, u64 len, u64 inner, u32 log, const T* y, const T* g, T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(col, outer * inner) {
        const u64 base = (col / inner) * len * inner + col % inner;
        C acc = C(0);
        for (u64 j = 0; j < len; ++j) {
            const C gv = Num<T>::load(g[base + j * inner]);
            acc += log ? gv : gv * Num<T>::load(y[base + j * inner]);
        }
        for (u64 j = 0; j < len; ++j) {
            const u64 i = base + j * inner;
            const C yv = Num<T>::load(y[i]), gv = Num<T>::load(g[i]);
            dx[i] = Num<T>::store(log ? gv - m_exp(yv) * acc : yv * (gv - acc));
        }
    }
}

#define SOFTMAX_KERNELS(NAME, T)                                                                                       \
    extern "C" __global__ void __launch_bounds__(BLOCK) softmax_rows_##NAME(u64 rows, u64 len, u32 log, u64 x, u64 y) { \
        softmax_rows<T>(rows, len, log, as_ptr<const T>(x), as_ptr<T>(y));                                            \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                               \
        softmax_columns_##NAME(u64 outer, u64 len, u64 inner, u32 log, u64 x, u64 y) {                                \
        softmax_columns<T>(outer, len, inner, log, as_ptr<const T>(x), as_ptr<T>(y));                                 \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                               \
        softmax_bwd_rows_##NAME(u64 rows, u64 len, u32 log, u64 y, u64 g, u64 dx) {                                   \
        softmax_bwd_rows<T>(rows, len, log, as_ptr<const T>(y), as_ptr<const T>(g), as_ptr<T>(dx));                   \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                               \
        softmax_bwd_columns_##NAME(u64 outer, u64 len, u64 inner, u32 log, u64 y, u64 g, u64 dx) {                    \
        softmax_bwd_columns<T>(outer, len, inner, log, as_ptr<const T>(y), as_ptr<const T>(g), as_ptr<T>(dx));        \
    }

FOR_FLOATS(SOFTMAX_KERNELS)
