// 2-d pooling over NCHW planes with PyTorch semantics (ceil_mode off): max
// (with the flat in-plane index of each chosen element), average with
// count_include_pad, adaptive average; forward (one thread per output) and
// backward of the average pools written as gathers (one thread per input
// element, summing the outputs whose window holds it, in row-major output
// order), so without atomics; max pooling's backward scatters by index.
// f16/bf16 compute in f32. CPU twin: src/backend/cpu/pool.rs.
#include "common.cuh"

struct PoolGeometry {
    u64 planes, h, w, oh, ow;
    u64 kh, kw, sh, sw, ph, pw;
};

// Clipped input window [lo, hi) of output position o along one axis.
__device__ __forceinline__ void window(u64 o, u64 k, u64 s, u64 p, u64 in, i64& lo, i64& hi) {
    const i64 start = (i64)(o * s) - (i64)p;
    const i64 end = min(start + (i64)k, (i64)in);
    lo = max(start, (i64)0);
    hi = max(end, (i64)0);
}

// Outputs along one axis whose (unclipped) window covers input index i: [first, last].
__device__ __forceinline__ void covering(u64 i, u64 k, u64 s, u64 p, u64 out, i64& first, i64& last) {
    const i64 t = (i64)i + (i64)p;  // o·s <= t < o·s + k
    first = t - (i64)k + 1 <= 0 ? 0 : (t - (i64)k + 1 + (i64)s - 1) / (i64)s;
    last = min(t / (i64)s, (i64)out - 1);
}

template <typename T>
__device__ void max_pool2d_fwd(PoolGeometry g, const T* x, T* y, i64* idx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, g.planes * g.oh * g.ow) {
        const u64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.oh * g.ow);
        i64 r0, r1, c0, c1;
        window(oy, g.kh, g.sh, g.ph, g.h, r0, r1);
        window(ox, g.kw, g.sw, g.pw, g.w, c0, c1);
        const T* xp = x + plane * g.h * g.w;
        C best = neg_inf_f32();
        i64 best_index = r0 * (i64)g.w + c0;
        for (i64 r = r0; r < r1; ++r)
            for (i64 c = c0; c < c1; ++c) {
                const C v = Num<T>::load(xp[r * g.w + c]);
                if (v > best || v != v) {
                    best = v;
                    best_index = r * (i64)g.w + c;
                }
            }
        y[i] = Num<T>::store(best);
        idx[i] = best_index;
    }
}

// Max pooling's gradient has no window to gather over (the backward is given
// only the indices), so it scatters: acc[plane, idx[o]] += dy[o] with atomics
// into an f32 (f64 for f64) buffer the host zeroes and casts back.
template <typename T>
__device__ void max_pool2d_bwd(PoolGeometry g, const T* dy, const i64* idx, typename Num<T>::C* acc) {
    GRID_STRIDE_LOOP(o, g.planes * g.oh * g.ow) {
        const u64 plane = o / (g.oh * g.ow);
        atomicAdd(&acc[plane * g.h * g.w + (u64)idx[o]], Num<T>::load(dy[o]));
    }
}

// count_include_pad divisor: the window length clipped to the padded input.
__device__ __forceinline__ u64 padded_len(u64 o, u64 k, u64 s, u64 p, u64 in) {
    const i64 start = (i64)(o * s) - (i64)p;
    const i64 end = min(start + (i64)k, (i64)(in + p));
    return (u64)(end - start);
}

template <typename T>
__device__ void avg_pool2d_fwd(PoolGeometry g, const T* x, T* y) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, g.planes * g.oh * g.ow) {
        const u64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.oh * g.ow);
        i64 r0, r1, c0, c1;
        window(oy, g.kh, g.sh, g.ph, g.h, r0, r1);
        window(ox, g.kw, g.sw, g.pw, g.w, c0, c1);
        const T* xp = x + plane * g.h * g.w;
        C acc = C(0);
        for (i64 r = r0; r < r1; ++r)
            for (i64 c = c0; c < c1; ++c) acc += Num<T>::load(xp[r * g.w + c]);
        const C div = C(padded_len(oy, g.kh, g.sh, g.ph, g.h) * padded_len(ox, g.kw, g.sw, g.pw, g.w));
        y[i] = Num<T>::store(acc / div);
    }
}

template <typename T>
__device__ void avg_pool2d_bwd(PoolGeometry g, const T* dy, T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, g.planes * g.h * g.w) {
        const u64 ix = i % g.w, iy = (i / g.w) % g.h, plane = i / (g.h * g.w);
        i64 r0, r1, c0, c1;
        covering(iy, g.kh, g.sh, g.ph, g.oh, r0, r1);
        covering(ix, g.kw, g.sw, g.pw, g.ow, c0, c1);
        const u64 base = plane * g.oh * g.ow;
        C acc = C(0);
        for (i64 r = r0; r <= r1; ++r)
            for (i64 c = c0; c <= c1; ++c) {
                const C div = C(padded_len(r, g.kh, g.sh, g.ph, g.h) * padded_len(c, g.kw, g.sw, g.pw, g.w));
                acc += Num<T>::load(dy[base + r * g.ow + c]) / div;
            }
        dx[i] = Num<T>::store(acc);
    }
}

// Adaptive bins: output o averages [floor(o·in/out), ceil((o+1)·in/out)).
__device__ __forceinline__ u64 bin_start(u64 o, u64 in, u64 out) { return (o * in) / out; }
__device__ __forceinline__ u64 bin_end(u64 o, u64 in, u64 out) { return ((o + 1) * in + out - 1) / out; }

template <typename T>
__device__ void adaptive_avg_pool2d_fwd(PoolGeometry g, const T* x, T* y) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, g.planes * g.oh * g.ow) {
        const u64 ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.oh * g.ow);
        const u64 r0 = bin_start(oy, g.h, g.oh), r1 = bin_end(oy, g.h, g.oh);
        const u64 c0 = bin_start(ox, g.w, g.ow), c1 = bin_end(ox, g.w, g.ow);
        const T* xp = x + plane * g.h * g.w;
        C acc = C(0);
        for (u64 r = r0; r < r1; ++r)
            for (u64 c = c0; c < c1; ++c) acc += Num<T>::load(xp[r * g.w + c]);
        y[i] = Num<T>::store(acc / C((r1 - r0) * (c1 - c0)));
    }
}

template <typename T>
__device__ void adaptive_avg_pool2d_bwd(PoolGeometry g, const T* dy, T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, g.planes * g.h * g.w) {
        const u64 ix = i % g.w, iy = (i / g.w) % g.h, plane = i / (g.h * g.w);
        // Candidate outputs around the proportional position; membership is tested exactly.
        const i64 rlo = max((i64)((iy > 0 ? iy - 1 : 0) * g.oh / g.h) - 1, (i64)0);
        const i64 rhi = min((i64)((iy + 1) * g.oh / g.h) + 1, (i64)g.oh - 1);
        const i64 clo = max((i64)((ix > 0 ? ix - 1 : 0) * g.ow / g.w) - 1, (i64)0);
        const i64 chi = min((i64)((ix + 1) * g.ow / g.w) + 1, (i64)g.ow - 1);
        const u64 base = plane * g.oh * g.ow;
        C acc = C(0);
        for (i64 r = rlo; r <= rhi; ++r) {
            const u64 r0 = bin_start(r, g.h, g.oh), r1 = bin_end(r, g.h, g.oh);
            if (iy < r0 || iy >= r1) continue;
            for (i64 c = clo; c <= chi; ++c) {
                const u64 c0 = bin_start(c, g.w, g.ow), c1 = bin_end(c, g.w, g.ow);
                if (ix < c0 || ix >= c1) continue;
                acc += Num<T>::load(dy[base + r * g.ow + c]) / C((r1 - r0) * (c1 - c0));
            }
        }
        dx[i] = Num<T>::store(acc);
    }
}

#define POOL_KERNELS(NAME, T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(BLOCK) max_pool2d_fwd_##NAME(PoolGeometry g, u64 x, u64 y, u64 idx) {        \
        max_pool2d_fwd<T>(g, as_ptr<const T>(x), as_ptr<T>(y), as_ptr<i64>(idx));                                              \
    }                                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) max_pool2d_bwd_##NAME(PoolGeometry g, u64 dy, u64 idx, u64 dx) {      \
        max_pool2d_bwd<T>(g, as_ptr<const T>(dy), as_ptr<const i64>(idx), as_ptr<Num<T>::C>(dx));                                      \
    }                                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) avg_pool2d_fwd_##NAME(PoolGeometry g, u64 x, u64 y) {                 \
        avg_pool2d_fwd<T>(g, as_ptr<const T>(x), as_ptr<T>(y));                                                                \
    }                                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) avg_pool2d_bwd_##NAME(PoolGeometry g, u64 dy, u64 dx) {               \
        avg_pool2d_bwd<T>(g, as_ptr<const T>(dy), as_ptr<T>(dx));                                                              \
    }                                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) adaptive_avg_pool2d_fwd_##NAME(PoolGeometry g, u64 x, u64 y) {        \
        adaptive_avg_pool2d_fwd<T>(g, as_ptr<const T>(x), as_ptr<T>(y));                                                       \
    }                                                                                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK) adaptive_avg_pool2d_bwd_##NAME(PoolGeometry g, u64 dy, u64 dx) {      \
        adaptive_avg_pool2d_bwd<T>(g, as_ptr<const T>(dy), as_ptr<T>(dx));                                                     \
    }

FOR_FLOATS(POOL_KERNELS)
