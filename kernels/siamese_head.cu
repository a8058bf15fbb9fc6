// The siamese re-identification head, fused: logit_i = bias + Σ_j w_j·|σ(a_ij) − σ(b_ij)|
// over pre-sigmoid embeddings a, b [N, D] (packed), optionally followed by the
// mean binary cross-entropy against 0/1 targets, in one kernel; and its
// backward (da, db, dw, dbias from dL/dlogit) in one kernel. f16/bf16 compute
// in f32, f64 in f64. CPU twin: src/backend/cpu/siamese_head.rs.
#include "common.cuh"

template <typename C> __device__ __forceinline__ C sigmoid_c(C x) { return C(1) / (C(1) + m_exp(-x)); }

// logit of row i, computed by one warp (every lane gets it).
template <typename T>
__device__ __forceinline__ typename Num<T>::C head_logit(u64 i, u64 d, const T* a, const T* b, const T* w, const T* bias) {
    typedef typename Num<T>::C C;
    C s = C(0);
    for (u64 j = threadIdx.x % 32; j < d; j += 32) {
        const C diff = sigmoid_c(Num<T>::load(a[i * d + j])) - sigmoid_c(Num<T>::load(b[i * d + j]));
        s += m_abs(diff) * Num<T>::load(w[j]);
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    return s + Num<T>::load(bias[0]);
}

// logits[i], one warp per row (grid-stride over rows).
template <typename T> __device__ void head_fwd(u64 n, u64 d, const T* a, const T* b, const T* w, const T* bias, T* logits) {
    const u64 warps = (u64)gridDim.x * (blockDim.x / 32);
    for (u64 i = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < n; i += warps) {
        const typename Num<T>::C x = head_logit(i, d, a, b, w, bias);
        if (threadIdx.x % 32 == 0) logits[i] = Num<T>::store(x);
    }
}

// Head and mean BCE in one block: loss[0] and grad_logit[i] = (σ(x_i) − y_i)/n
// (the loss gradient for a unit upstream gradient). Launched as one block.
template <typename T>
__device__ void head_bce(u64 n, u64 d, const T* a, const T* b, const T* w, const T* bias, const T* target, T* loss, T* grad_logit) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    const C inv_n = C(1) / C(n > 0 ? n : 1);
    C partial = C(0);
    for (u64 i = threadIdx.x / 32; i < n; i += blockDim.x / 32) {
        const C x = head_logit(i, d, a, b, w, bias);
        if (threadIdx.x % 32 == 0) {
            const C y = Num<T>::load(target[i]);
            // max(x, 0) − x·y + log(1 + e^−|x|): stable for large |x|.
            partial += (x > C(0) ? x : C(0)) - x * y + m_log(C(1) + m_exp(-m_abs(x)));
            grad_logit[i] = Num<T>::store((sigmoid_c(x) - y) * inv_n);
        }
    }
    const C total = block_sum(partial, scratch);
    if (threadIdx.x == 0) loss[0] = Num<T>::store(total * inv_n);
}

// Backward: block j < d owns column j (da[:, j], db[:, j] and dw[j]); block d
// computes dbias. Grid-stride over the d + 1 columns.
template <typename T>
__device__ void head_bwd(u64 n, u64 d, const T* a, const T* b, const T* w, const T* grad_logit, T* da, T* db, T* dw, T* dbias) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 j = blockIdx.x; j <= d; j += gridDim.x) {
        C s = C(0);
        if (j == d) {
            for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += Num<T>::load(grad_logit[i]);
            s = block_sum(s, scratch);
            if (threadIdx.x == 0) dbias[0] = Num<T>::store(s);
            continue;
        }
        const C wj = Num<T>::load(w[j]);
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
            const C g = Num<T>::load(grad_logit[i]);
            const C sa = sigmoid_c(Num<T>::load(a[i * d + j])), sb = sigmoid_c(Num<T>::load(b[i * d + j]));
            const C diff = sa - sb;
            s += g * m_abs(diff);
            // d|x|/dx = sign(x), 0 at 0 (as torch).
            const C sign = diff > C(0) ? C(1) : (diff < C(0) ? C(-1) : C(0));
            const C gd = g * wj * sign;
            da[i * d + j] = Num<T>::store(gd * sa * (C(1) - sa));
            db[i * d + j] = Num<T>::store(-gd * sb * (C(1) - sb));
        }
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) dw[j] = Num<T>::store(s);
    }
}

#define SIAMESE(name, T)                                                                                                    \
    extern "C" __global__ void siamese_head_fwd_##name(u64 n, u64 d, u64 a, u64 b, u64 w, u64 bias, u64 logits) {          \
        head_fwd<T>(n, d, as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(w), as_ptr<const T>(bias), as_ptr<T>(logits)); \
    }                                                                                                                       \
    extern "C" __global__ void siamese_head_bce_##name(u64 n, u64 d, u64 a, u64 b, u64 w, u64 bias, u64 target, u64 loss,   \
                                                       u64 grad_logit) {                                                   \
        head_bce<T>(n, d, as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(w), as_ptr<const T>(bias),               \
                    as_ptr<const T>(target), as_ptr<T>(loss), as_ptr<T>(grad_logit));                                       \
    }                                                                                                                       \
    extern "C" __global__ void siamese_head_bwd_##name(u64 n, u64 d, u64 a, u64 b, u64 w, u64 grad_logit, u64 da, u64 db,   \
                                                       u64 dw, u64 dbias) {                                                 \
        head_bwd<T>(n, d, as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(w), as_ptr<const T>(grad_logit),        \
                    as_ptr<T>(da), as_ptr<T>(db), as_ptr<T>(dw), as_ptr<T>(dbias));                                         \
    }
FOR_FLOATS(SIAMESE)
