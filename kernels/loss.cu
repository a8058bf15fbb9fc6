// Fused losses, forward (per-element or per-sample values; the host sums them
// with the reduce kernels for "mean"/"sum") and backward (the input gradient
// in one pass). The upstream gradient is either one factor for every element
// (`g_scale`, for a mean or sum) or a per-element tensor (`g`, reduction
// "none"; 0 when absent). f16/bf16 compute in f32.
// CPU twin: src/backend/cpu/loss.rs.
#include "common.cuh"

template <typename T> __device__ __forceinline__ typename Num<T>::C upstream(u64 g, double g_scale, u64 i) {
    typedef typename Num<T>::C C;
    return g ? Num<T>::load(as_ptr<const T>(g)[i]) : C(g_scale);
}

// log(1 + e^{-x}) = log1p(e^{-|x|}) + max(-x, 0).
template <typename C> __device__ __forceinline__ C softplus_neg(C x) {
    const C a = x < C(0) ? -x : x;
    const C e = m_exp(-a);
    const C lp = sizeof(C) == 8 ? (C)log1p((double)e) : (C)log1pf((float)e);
    return lp + (x < C(0) ? -x : C(0));
}

template <typename C> __device__ __forceinline__ C sigmoid_of(C x) {
    if (x >= C(0)) return C(1) / (C(1) + m_exp(-x));
    const C e = m_exp(x);
    return e / (C(1) + e);
}

template <typename T>
__device__ void mse_fwd(u64 n, const T* p, const T* t, T* out) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C d = Num<T>::load(p[i]) - Num<T>::load(t[i]);
        out[i] = Num<T>::store(d * d);
    }
}

template <typename T>
__device__ void mse_bwd(u64 n, const T* p, const T* t, u64 g, double g_scale, T* dp) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        dp[i] = Num<T>::store(C(2) * (Num<T>::load(p[i]) - Num<T>::load(t[i])) * upstream<T>(g, g_scale, i));
    }
}

// (1 - y) x + (1 + (w - 1) y) log(1 + e^{-x}); w = pos_weight broadcast (1 when absent).
template <typename T>
__device__ void bce_with_logits_fwd(u64 n, const T* x, const T* y, u64 w, T* out) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C xv = Num<T>::load(x[i]), yv = Num<T>::load(y[i]), wv = load_or<T>(w, i, C(1));
        out[i] = Num<T>::store((C(1) - yv) * xv + (C(1) + (wv - C(1)) * yv) * softplus_neg(xv));
    }
}

// dx = g ((1 - y) - (1 + (w - 1) y) σ(-x)), dy = g ((w - 1) log(1 + e^{-x}) - x), dw = g y log(1 + e^{-x});
// each written only when its pointer is non-zero.
template <typename T>
__device__ void bce_with_logits_bwd(u64 n, const T* x, const T* y, u64 w, u64 g, double g_scale, u64 dx, u64 dy, u64 dw) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C xv = Num<T>::load(x[i]), yv = Num<T>::load(y[i]), wv = load_or<T>(w, i, C(1));
        const C gv = upstream<T>(g, g_scale, i);
        if (dx) as_ptr<T>(dx)[i] = Num<T>::store(gv * ((C(1) - yv) - (C(1) + (wv - C(1)) * yv) * sigmoid_of(-xv)));
        if (dy) as_ptr<T>(dy)[i] = Num<T>::store(gv * ((wv - C(1)) * softplus_neg(xv) - xv));
        if (dw) as_ptr<T>(dw)[i] = Num<T>::store(gv * yv * softplus_neg(xv));
    }
}

// One thread per sample k of logits [n, classes, inner]: the loss
// (1 - ε)(lse - z_t) + ε(lse - mean z) (0 for an ignored target) and lse.
template <typename T>
__device__ void cross_entropy_fwd(u64 samples, u64 classes, u64 inner, double smoothing, u32 has_ignore, i64 ignore, const T* z,
                                  const i64* targets, T* loss, T* lse) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(k, samples) {
        const u64 base = (k / inner) * classes * inner + k % inner;
        C mx = neg_inf_f32(), total = C(0);
        for (u64 c = 0; c < classes; ++c) {
            const C v = Num<T>::load(z[base + c * inner]);
            mx = v > mx ? v : mx;
            total += v;
        }
        C sum_exp = C(0);
        for (u64 c = 0; c < classes; ++c) sum_exp += m_exp(Num<T>::load(z[base + c * inner]) - mx);
        const C l = mx + m_log(sum_exp);
        lse[k] = Num<T>::store(l);
        const i64 t = targets[k];
        if (has_ignore && t == ignore) {
            loss[k] = Num<T>::store(C(0));
        } else {
            const C eps = C(smoothing);
            loss[k] = Num<T>::store((C(1) - eps) * (l - Num<T>::load(z[base + (u64)t * inner])) + eps * (l - total / C(classes)));
        }
    }
}

// d/dz: w (softmax_c - (1 - ε)[c = t] - ε/C) per sample; 0 for ignored samples.
template <typename T>
__device__ void cross_entropy_bwd(u64 samples, u64 classes, u64 inner, double smoothing, u32 has_ignore, i64 ignore, const T* z,
                                  const T* lse, const i64* targets, u64 g, double g_scale, T* dz) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(k, samples) {
        const u64 base = (k / inner) * classes * inner + k % inner;
        const i64 t = targets[k];
        if (has_ignore && t == ignore) {
            for (u64 c = 0; c < classes; ++c) dz[base + c * inner] = Num<T>::store(C(0));
            continue;
        }
        const C w = upstream<T>(g, g_scale, k), m = Num<T>::load(lse[k]);
        const C keep = C(1.0 - smoothing), smooth = C(smoothing / (double)classes);
        for (u64 c = 0; c < classes; ++c) {
            C v = w * (m_exp(Num<T>::load(z[base + c * inner]) - m) - smooth);
            if ((i64)c == t) v -= w * keep;
            dz[base + c * inner] = Num<T>::store(v);
        }
    }
}

// Cosine similarity of row pairs of packed [rows, len] matrices, one block per
// row: Σ (a / max(‖a‖, eps)) · (b / max(‖b‖, eps)), as PyTorch normalises
// before the product. The backward recomputes the norms and the similarity:
// da = g (b / (n_a n_b) - [‖a‖ > eps] y a / n_a²), likewise for b.
template <typename T>
__device__ void cosine_row_stats(u64 row, u64 len, double eps, const T* a, const T* b, typename Num<T>::C* scratch,
                                 typename Num<T>::C& na, typename Num<T>::C& nb, typename Num<T>::C& raw_a,
                                 typename Num<T>::C& raw_b, typename Num<T>::C& y) {
    typedef typename Num<T>::C C;
    C saa = C(0), sbb = C(0);
    for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
        const C x = Num<T>::load(a[row * len + j]), z = Num<T>::load(b[row * len + j]);
        saa += x * x;
        sbb += z * z;
    }
    raw_a = m_sqrt(block_sum(saa, scratch));
    raw_b = m_sqrt(block_sum(sbb, scratch));
    na = raw_a > C(eps) ? raw_a : C(eps);
    nb = raw_b > C(eps) ? raw_b : C(eps);
    const C ra = C(1) / na, rb = C(1) / nb;
    C dot = C(0);
    for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
        dot += (Num<T>::load(a[row * len + j]) * ra) * (Num<T>::load(b[row * len + j]) * rb);
    }
    y = block_sum(dot, scratch);
}

template <typename T>
__device__ void cosine_similarity_fwd(u64 rows, u64 len, double eps, const T* a, const T* b, T* out) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        C na, nb, raw_a, raw_b, y;
        cosine_row_stats<T>(row, len, eps, a, b, scratch, na, nb, raw_a, raw_b, y);
        if (threadIdx.x == 0) out[row] = Num<T>::store(y);
    }
}

template <typename T>
__device__ void cosine_similarity_bwd(u64 rows, u64 len, double eps, const T* a, const T* b, const T* g, T* da, T* db) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        C na, nb, raw_a, raw_b, y;
        cosine_row_stats<T>(row, len, eps, a, b, scratch, na, nb, raw_a, raw_b, y);
        const C gv = Num<T>::load(g[row]);
        const C cross = gv / (na * nb);
        const C self_a = raw_a > C(eps) ? gv * y / (na * na) : C(0);
        const C self_b = raw_b > C(eps) ? gv * y / (nb * nb) : C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const u64 i = row * len + j;
            const C x = Num<T>::load(a[i]), z = Num<T>::load(b[i]);
            da[i] = Num<T>::store(cross * z - self_a * x);
            db[i] = Num<T>::store(cross * x - self_b * z);
        }
    }
}

#define LOSS_KERNELS(NAME, T)                                                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK) mse_fwd_##NAME(u64 n, u64 p, u64 t, u64 out) {                             \
        mse_fwd<T>(n, as_ptr<const T>(p), as_ptr<const T>(t), as_ptr<T>(out));                                                      \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK) mse_bwd_##NAME(u64 n, u64 p, u64 t, u64 g, double g_scale, u64 dp) {       \
        mse_bwd<T>(n, as_ptr<const T>(p), as_ptr<const T>(t), g, g_scale, as_ptr<T>(dp));                                           \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK) bce_with_logits_fwd_##NAME(u64 n, u64 x, u64 y, u64 w, u64 out) {          \
        bce_with_logits_fwd<T>(n, as_ptr<const T>(x), as_ptr<const T>(y), w, as_ptr<T>(out));                                       \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        bce_with_logits_bwd_##NAME(u64 n, u64 x, u64 y, u64 w, u64 g, double g_scale, u64 dx, u64 dy, u64 dw) {                     \
        bce_with_logits_bwd<T>(n, as_ptr<const T>(x), as_ptr<const T>(y), w, g, g_scale, dx, dy, dw);                               \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK) cross_entropy_fwd_##NAME(                                                   \
        u64 samples, u64 classes, u64 inner, double smoothing, u32 has_ignore, i64 ignore, u64 z, u64 targets, u64 loss, u64 lse) { \
        cross_entropy_fwd<T>(samples, classes, inner, smoothing, has_ignore, ignore, as_ptr<const T>(z), as_ptr<const i64>(targets), \
                             as_ptr<T>(loss), as_ptr<T>(lse));                                                                       \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        cross_entropy_bwd_##NAME(u64 samples, u64 classes, u64 inner, double smoothing, u32 has_ignore, i64 ignore, u64 z, u64 lse, \
                                 u64 targets, u64 g, double g_scale, u64 dz) {                                                       \
        cross_entropy_bwd<T>(samples, classes, inner, smoothing, has_ignore, ignore, as_ptr<const T>(z), as_ptr<const T>(lse),      \
                             as_ptr<const i64>(targets), g, g_scale, as_ptr<T>(dz));                                                 \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        cosine_similarity_fwd_##NAME(u64 rows, u64 len, double eps, u64 a, u64 b, u64 out) {                                        \
        cosine_similarity_fwd<T>(rows, len, eps, as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<T>(out));                          \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        cosine_similarity_bwd_##NAME(u64 rows, u64 len, double eps, u64 a, u64 b, u64 g, u64 da, u64 db) {                          \
        cosine_similarity_bwd<T>(rows, len, eps, as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(g), as_ptr<T>(da),         \
                                 as_ptr<T>(db));                                                                                     \
    }

FOR_FLOATS(LOSS_KERNELS)
