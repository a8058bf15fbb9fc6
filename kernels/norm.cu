// Normalisations, forward and backward: layer norm over trailing elements,
// group norm (optionally fused with SiLU) over [N, C, spatial], batch norm
// (batch statistics with the running-statistics update, or running
// statistics). One block reduces each statistics group (two passes: mean,
// then squared deviations); parameter gradients that sum over the batch are
// finished by a per-channel (or per-column) kernel, so nothing uses atomics
// and results do not depend on scheduling. Optional operands (weight, bias,
// running statistics) are device pointers passed as u64, 0 when absent.
// f16/bf16 compute in f32. CPU twin: src/backend/cpu/norm.rs.
#include "common.cuh"

template <typename C> __device__ __forceinline__ C silu_of(C z) { return z / (C(1) + m_exp(-z)); }

// ----- layer norm -------------------------------------------------------------

template <typename T>
__device__ void layer_norm_fwd(u64 rows, u64 len, double eps, const T* x, u64 w, u64 b, T* y, T* mean, T* rstd) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * len;
        C acc = C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) acc += Num<T>::load(xr[j]);
        const C mu = block_sum(acc, scratch) / C(len);
        acc = C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const C d = Num<T>::load(xr[j]) - mu;
            acc += d * d;
        }
        const C var = block_sum(acc, scratch) / C(len);
        const C rs = C(1) / m_sqrt(var + C(eps));
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            C v = (Num<T>::load(xr[j]) - mu) * rs;
            if (w) v *= Num<T>::load(as_ptr<const T>(w)[j]);
            if (b) v += Num<T>::load(as_ptr<const T>(b)[j]);
            y[row * len + j] = Num<T>::store(v);
        }
        if (threadIdx.x == 0) {
            mean[row] = Num<T>::store(mu);
            rstd[row] = Num<T>::store(rs);
        }
    }
}

// dx = rstd (ĝ - mean(ĝ) - x̂ mean(ĝ x̂)) with ĝ = g·w, per row.
template <typename T>
__device__ void layer_norm_bwd_dx(u64 rows, u64 len, const T* x, const T* g, u64 w, const T* mean, const T* rstd, T* dx) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 row = blockIdx.x; row < rows; row += gridDim.x) {
        const C mu = Num<T>::load(mean[row]), rs = Num<T>::load(rstd[row]);
        C s1 = C(0), s2 = C(0);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const u64 i = row * len + j;
            const C gh = Num<T>::load(g[i]) * load_or<T>(w, j, C(1));
            const C xh = (Num<T>::load(x[i]) - mu) * rs;
            s1 += gh;
            s2 += gh * xh;
        }
        const C m1 = block_sum(s1, scratch) / C(len);
        const C m2 = block_sum(s2, scratch) / C(len);
        for (u64 j = threadIdx.x; j < len; j += blockDim.x) {
            const u64 i = row * len + j;
            const C gh = Num<T>::load(g[i]) * load_or<T>(w, j, C(1));
            const C xh = (Num<T>::load(x[i]) - mu) * rs;
            dx[i] = Num<T>::store(rs * (gh - m1 - xh * m2));
        }
    }
}

// dweight[j] = Σ_rows g x̂, dbias[j] = Σ_rows g: one thread per column.
template <typename T>
__device__ void layer_norm_bwd_params(u64 rows, u64 len, const T* x, const T* g, const T* mean, const T* rstd, T* dw, T* db) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(j, len) {
        C sw = C(0), sb = C(0);
        for (u64 row = 0; row < rows; ++row) {
            const u64 i = row * len + j;
            const C gv = Num<T>::load(g[i]);
            sw += gv * (Num<T>::load(x[i]) - Num<T>::load(mean[row])) * Num<T>::load(rstd[row]);
            sb += gv;
        }
        dw[j] = Num<T>::store(sw);
        db[j] = Num<T>::store(sb);
    }
}

// ----- group norm -------------------------------------------------------------

// One block per (n, group); the group is cg·spatial contiguous elements.
template <typename T>
__device__ void group_norm_fwd(u64 groups_total, u64 groups, u64 cg, u64 spatial, double eps, u32 silu, const T* x, u64 w, u64 b,
                               T* y, T* mean, T* rstd) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    const u64 glen = cg * spatial;
    for (u64 ng = blockIdx.x; ng < groups_total; ng += gridDim.x) {
        const T* xg = x + ng * glen;
        C acc = C(0);
        for (u64 j = threadIdx.x; j < glen; j += blockDim.x) acc += Num<T>::load(xg[j]);
        const C mu = block_sum(acc, scratch) / C(glen);
        acc = C(0);
        for (u64 j = threadIdx.x; j < glen; j += blockDim.x) {
            const C d = Num<T>::load(xg[j]) - mu;
            acc += d * d;
        }
        const C var = block_sum(acc, scratch) / C(glen);
        const C rs = C(1) / m_sqrt(var + C(eps));
        const u64 c0 = (ng % groups) * cg;
        for (u64 j = threadIdx.x; j < glen; j += blockDim.x) {
            const u64 ch = c0 + j / spatial;
            const C a = rs * load_or<T>(w, ch, C(1));
            const C z = Num<T>::load(xg[j]) * a + (load_or<T>(b, ch, C(0)) - mu * a);
            y[ng * glen + j] = Num<T>::store(silu ? silu_of(z) : z);
        }
        if (threadIdx.x == 0) {
            mean[ng] = Num<T>::store(mu);
            rstd[ng] = Num<T>::store(rs);
        }
    }
}

// The gradient reaching the normalised (pre-SiLU) value z: g, or g·silu'(z).
template <typename C> __device__ __forceinline__ C gn_dy(u32 silu, C g, C x, C a, C bb) {
    if (!silu) return g;
    const C z = x * a + bb;
    const C sig = C(1) / (C(1) + m_exp(-z));
    return g * sig * (C(1) + z * (C(1) - sig));
}

// One block per (n, group): dx, and per (n, channel) Σ dy·x̂ and Σ dy for the
// parameter gradients (finished by group_norm_bwd_params).
template <typename T>
__device__ void group_norm_bwd(u64 groups_total, u64 groups, u64 cg, u64 spatial, u32 silu, const T* x, const T* g, const T* mean,
                               const T* rstd, u64 w, u64 b, T* dx, typename Num<T>::C* sum_gx, typename Num<T>::C* sum_g) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    const u64 glen = cg * spatial;
    const u64 channels = groups * cg;
    for (u64 ng = blockIdx.x; ng < groups_total; ng += gridDim.x) {
        const u64 n = ng / groups, c0 = (ng % groups) * cg, base = ng * glen;
        const C mu = Num<T>::load(mean[ng]), rs = Num<T>::load(rstd[ng]);
        C mean_ghat = C(0), mean_ghat_xhat = C(0);
        for (u64 ci = 0; ci < cg; ++ci) {
            const u64 ch = c0 + ci;
            const C wc = load_or<T>(w, ch, C(1));
            const C a = rs * wc, bb = load_or<T>(b, ch, C(0)) - mu * a;
            C sdy = C(0), sdyx = C(0);
            for (u64 s = threadIdx.x; s < spatial; s += blockDim.x) {
                const u64 i = base + ci * spatial + s;
                const C xv = Num<T>::load(x[i]);
                const C dy = gn_dy(silu, Num<T>::load(g[i]), xv, a, bb);
                sdy += dy;
                sdyx += dy * xv;
            }
            sdy = block_sum(sdy, scratch);
            sdyx = block_sum(sdyx, scratch);
            const C sgx = rs * (sdyx - mu * sdy);
            if (threadIdx.x == 0) {
                sum_gx[n * channels + ch] = sgx;
                sum_g[n * channels + ch] = sdy;
            }
            mean_ghat += wc * sdy;
            mean_ghat_xhat += wc * sgx;
        }
        mean_ghat /= C(glen);
        mean_ghat_xhat /= C(glen);
        const C bx = -rs * rs * mean_ghat_xhat;
        const C cx = rs * (mu * rs * mean_ghat_xhat - mean_ghat);
        for (u64 j = threadIdx.x; j < glen; j += blockDim.x) {
            const u64 ch = c0 + j / spatial, i = base + j;
            const C wc = load_or<T>(w, ch, C(1));
            const C a = rs * wc, bb = load_or<T>(b, ch, C(0)) - mu * a;
            const C xv = Num<T>::load(x[i]);
            const C dy = gn_dy(silu, Num<T>::load(g[i]), xv, a, bb);
            dx[i] = Num<T>::store(a * dy + bx * xv + cx);
        }
    }
}

// Per channel: Σ_n of the per-(n, channel) sums.
template <typename T>
__device__ void group_norm_bwd_params(u64 n, u64 channels, const typename Num<T>::C* sum_gx, const typename Num<T>::C* sum_g, T* dw,
                                      T* db) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(ch, channels) {
        C a = C(0), s = C(0);
        for (u64 i = 0; i < n; ++i) {
            a += sum_gx[i * channels + ch];
            s += sum_g[i * channels + ch];
        }
        dw[ch] = Num<T>::store(a);
        db[ch] = Num<T>::store(s);
    }
}

// ----- batch norm -------------------------------------------------------------

// One block per channel: batch mean and 1/sqrt(var + eps), and (when the
// running statistics are given) their updated values
// (1 - momentum)·running + momentum·batch, with the unbiased variance.
template <typename T>
__device__ void batch_norm_stats(u64 n, u64 channels, u64 spatial, double eps, double momentum, const T* x, u64 running_mean,
                                 u64 running_var, T* mean, T* rstd, u64 new_mean, u64 new_var) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    const u64 count = n * spatial;
    for (u64 ch = blockIdx.x; ch < channels; ch += gridDim.x) {
        C acc = C(0);
        for (u64 k = threadIdx.x; k < count; k += blockDim.x) acc += Num<T>::load(x[((k / spatial) * channels + ch) * spatial + k % spatial]);
        const C mu = block_sum(acc, scratch) / C(count);
        acc = C(0);
        for (u64 k = threadIdx.x; k < count; k += blockDim.x) {
            const C d = Num<T>::load(x[((k / spatial) * channels + ch) * spatial + k % spatial]) - mu;
            acc += d * d;
        }
        const C var = block_sum(acc, scratch) / C(count);
        if (threadIdx.x == 0) {
            mean[ch] = Num<T>::store(mu);
            rstd[ch] = Num<T>::store(C(1) / m_sqrt(var + C(eps)));
            const C mom = C(momentum);
            if (running_mean && new_mean) {
                const C r = Num<T>::load(as_ptr<const T>(running_mean)[ch]);
                as_ptr<T>(new_mean)[ch] = Num<T>::store((C(1) - mom) * r + mom * mu);
            }
            if (running_var && new_var) {
                const C r = Num<T>::load(as_ptr<const T>(running_var)[ch]);
                const C bessel = C(count) / C(count - 1);
                as_ptr<T>(new_var)[ch] = Num<T>::store((C(1) - mom) * r + mom * var * bessel);
            }
        }
    }
}

// Evaluation statistics: mean = running_mean, rstd = 1/sqrt(running_var + eps).
template <typename T>
__device__ void batch_norm_eval_stats(u64 channels, double eps, const T* running_mean, const T* running_var, T* mean, T* rstd) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(ch, channels) {
        mean[ch] = running_mean[ch];
        rstd[ch] = Num<T>::store(C(1) / m_sqrt(Num<T>::load(running_var[ch]) + C(eps)));
    }
}

template <typename T>
__device__ void batch_norm_fwd(u64 total, u64 channels, u64 spatial, const T* x, const T* mean, const T* rstd, u64 w, u64 b, T* y) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, total) {
        const u64 ch = (i / spatial) % channels;
        const C a = Num<T>::load(rstd[ch]) * load_or<T>(w, ch, C(1));
        const C bb = load_or<T>(b, ch, C(0)) - Num<T>::load(mean[ch]) * a;
        y[i] = Num<T>::store(Num<T>::load(x[i]) * a + bb);
    }
}

// One block per channel: Σ g and Σ g·(x - mean).
template <typename T>
__device__ void batch_norm_bwd_sums(u64 n, u64 channels, u64 spatial, const T* x, const T* g, const T* mean, typename Num<T>::C* sum_g,
                                    typename Num<T>::C* sum_gx) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    const u64 count = n * spatial;
    for (u64 ch = blockIdx.x; ch < channels; ch += gridDim.x) {
        const C mu = Num<T>::load(mean[ch]);
        C sg = C(0), sgx = C(0);
        for (u64 k = threadIdx.x; k < count; k += blockDim.x) {
            const u64 i = ((k / spatial) * channels + ch) * spatial + k % spatial;
            const C gv = Num<T>::load(g[i]);
            sg += gv;
            sgx += gv * (Num<T>::load(x[i]) - mu);
        }
        sg = block_sum(sg, scratch);
        sgx = block_sum(sgx, scratch);
        if (threadIdx.x == 0) {
            sum_g[ch] = sg;
            sum_gx[ch] = sgx;
        }
    }
}

// dx = a g + bx x + cx per channel (training: through the batch statistics;
// evaluation: dx = g·w·rstd); dweight = Σ g x̂ and dbias = Σ g.
template <typename T>
__device__ void batch_norm_bwd_dx(u64 total, u64 channels, u64 spatial, u64 count, u32 training, const T* x, const T* g, const T* mean,
                                  const T* rstd, u64 w, const typename Num<T>::C* sum_g, const typename Num<T>::C* sum_gx, T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, total) {
        const u64 ch = (i / spatial) % channels;
        const C rs = Num<T>::load(rstd[ch]), mu = Num<T>::load(mean[ch]);
        const C a = rs * load_or<T>(w, ch, C(1));
        C v = a * Num<T>::load(g[i]);
        if (training) {
            const C bx = -a * rs * rs * sum_gx[ch] / C(count);
            v += bx * Num<T>::load(x[i]) + (-a * sum_g[ch] / C(count) - bx * mu);
        }
        dx[i] = Num<T>::store(v);
    }
}

template <typename T>
__device__ void batch_norm_bwd_params(u64 channels, const T* rstd, const typename Num<T>::C* sum_g, const typename Num<T>::C* sum_gx, T* dw,
                                      T* db) {
    GRID_STRIDE_LOOP(ch, channels) {
        dw[ch] = Num<T>::store(sum_gx[ch] * Num<T>::load(rstd[ch]));
        db[ch] = Num<T>::store(sum_g[ch]);
    }
}

#define NORM_KERNELS(NAME, T)                                                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        layer_norm_fwd_##NAME(u64 rows, u64 len, double eps, u64 x, u64 w, u64 b, u64 y, u64 mean, u64 rstd) {                      \
        layer_norm_fwd<T>(rows, len, eps, as_ptr<const T>(x), w, b, as_ptr<T>(y), as_ptr<T>(mean), as_ptr<T>(rstd));               \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        layer_norm_bwd_dx_##NAME(u64 rows, u64 len, u64 x, u64 g, u64 w, u64 mean, u64 rstd, u64 dx) {                              \
        layer_norm_bwd_dx<T>(rows, len, as_ptr<const T>(x), as_ptr<const T>(g), w, as_ptr<const T>(mean), as_ptr<const T>(rstd),   \
                             as_ptr<T>(dx));                                                                                         \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        layer_norm_bwd_params_##NAME(u64 rows, u64 len, u64 x, u64 g, u64 mean, u64 rstd, u64 dw, u64 db) {                         \
        layer_norm_bwd_params<T>(rows, len, as_ptr<const T>(x), as_ptr<const T>(g), as_ptr<const T>(mean), as_ptr<const T>(rstd),  \
                                 as_ptr<T>(dw), as_ptr<T>(db));                                                                      \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        group_norm_fwd_##NAME(u64 groups_total, u64 groups, u64 cg, u64 spatial, double eps, u32 silu, u64 x, u64 w, u64 b, u64 y,  \
                              u64 mean, u64 rstd) {                                                                                  \
        group_norm_fwd<T>(groups_total, groups, cg, spatial, eps, silu, as_ptr<const T>(x), w, b, as_ptr<T>(y), as_ptr<T>(mean),    \
                          as_ptr<T>(rstd));                                                                                          \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        group_norm_bwd_##NAME(u64 groups_total, u64 groups, u64 cg, u64 spatial, u32 silu, u64 x, u64 g, u64 mean, u64 rstd, u64 w, \
                              u64 b, u64 dx, u64 sum_gx, u64 sum_g) {                                                                \
        typedef Num<T>::C C;                                                                                                         \
        group_norm_bwd<T>(groups_total, groups, cg, spatial, silu, as_ptr<const T>(x), as_ptr<const T>(g), as_ptr<const T>(mean),   \
                          as_ptr<const T>(rstd), w, b, as_ptr<T>(dx), as_ptr<C>(sum_gx), as_ptr<C>(sum_g));                          \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        group_norm_bwd_params_##NAME(u64 n, u64 channels, u64 sum_gx, u64 sum_g, u64 dw, u64 db) {                                  \
        typedef Num<T>::C C;                                                                                                         \
        group_norm_bwd_params<T>(n, channels, as_ptr<const C>(sum_gx), as_ptr<const C>(sum_g), as_ptr<T>(dw), as_ptr<T>(db));       \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_stats_##NAME(u64 n, u64 channels, u64 spatial, double eps, double momentum, u64 x, u64 running_mean,             \
                                u64 running_var, u64 mean, u64 rstd, u64 new_mean, u64 new_var) {                                    \
        batch_norm_stats<T>(n, channels, spatial, eps, momentum, as_ptr<const T>(x), running_mean, running_var, as_ptr<T>(mean),    \
                            as_ptr<T>(rstd), new_mean, new_var);                                                                     \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_eval_stats_##NAME(u64 channels, double eps, u64 running_mean, u64 running_var, u64 mean, u64 rstd) {             \
        batch_norm_eval_stats<T>(channels, eps, as_ptr<const T>(running_mean), as_ptr<const T>(running_var), as_ptr<T>(mean),       \
                                 as_ptr<T>(rstd));                                                                                   \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_fwd_##NAME(u64 total, u64 channels, u64 spatial, u64 x, u64 mean, u64 rstd, u64 w, u64 b, u64 y) {               \
        batch_norm_fwd<T>(total, channels, spatial, as_ptr<const T>(x), as_ptr<const T>(mean), as_ptr<const T>(rstd), w, b,         \
                          as_ptr<T>(y));                                                                                             \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_bwd_sums_##NAME(u64 n, u64 channels, u64 spatial, u64 x, u64 g, u64 mean, u64 sum_g, u64 sum_gx) {               \
        typedef Num<T>::C C;                                                                                                         \
        batch_norm_bwd_sums<T>(n, channels, spatial, as_ptr<const T>(x), as_ptr<const T>(g), as_ptr<const T>(mean), as_ptr<C>(sum_g), \
                               as_ptr<C>(sum_gx));                                                                                   \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_bwd_dx_##NAME(u64 total, u64 channels, u64 spatial, u64 count, u32 training, u64 x, u64 g, u64 mean, u64 rstd,   \
                                 u64 w, u64 sum_g, u64 sum_gx, u64 dx) {                                                             \
        typedef Num<T>::C C;                                                                                                         \
        batch_norm_bwd_dx<T>(total, channels, spatial, count, training, as_ptr<const T>(x), as_ptr<const T>(g),                      \
                             as_ptr<const T>(mean), as_ptr<const T>(rstd), w, as_ptr<const C>(sum_g), as_ptr<const C>(sum_gx),      \
                             as_ptr<T>(dx));                                                                                         \
    }                                                                                                                                \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                             \
        batch_norm_bwd_params_##NAME(u64 channels, u64 rstd, u64 sum_g, u64 sum_gx, u64 dw, u64 db) {                               \
        typedef Num<T>::C C;                                                                                                         \
        batch_norm_bwd_params<T>(channels, as_ptr<const T>(rstd), as_ptr<const C>(sum_g), as_ptr<const C>(sum_gx), as_ptr<T>(dw),   \
                                 as_ptr<T>(db));                                                                                     \
    }

FOR_FLOATS(NORM_KERNELS)
