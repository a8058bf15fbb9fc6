// 2-d convolution over NCHW tensors as implicit GEMM: forward, backward-data
// and backward-weight are each one GEMM per group whose operands are gathered
// from the activations on the fly (no im2col buffer in global memory):
//
//   forward       C[m=co][n=(b,oy,ox)] = sum_k=(ci,ky,kx)  W[co][k] · X(b, ci, oy·s−p+ky·d, ...)
//   backward-data C[m=ci][n=(b,iy,ix)] = sum_k=(co,ky,kx)  W[co][ci][ky][kx] · dY(b, co, (iy+p−ky·d)/s, ...)
//   backward-wt   C[m=co][n=(ci,ky,kx)] = sum_k=(b,oy,ox) dY(b, co, oy, ox) · X(b, ci, oy·s−p+ky·d, ...)
//
// Out-of-image taps (padding) and, for backward-data, taps that no output
// position reaches (stride does not divide) read as 0. Groups are the grid's z
// axis. Two tile kernels run the same problems: a portable one (64×64 output
// tile, 16-deep k slices in shared memory, 4×4 outputs per thread, f64 for f64
// and f32 for the rest) and, for f16/bf16 on sm_80+, a tensor-core one
// (`mma.sync.m16n8k16`, f32 accumulation, four warps of 32×32). The host picks
// the tensor-core kernel from the device's compute capability.
// CPU twin: src/backend/cpu/conv.rs (im2col + GEMM).
#include "common.cuh"

// Every size of one convolution; mirrors `ConvGeometry` in src/backend/cuda/conv.rs.
struct ConvGeometry {
    u32 batch, in_channels, in_h, in_w;
    u32 out_channels, kernel_h, kernel_w, out_h, out_w;
    u32 stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};

#define MODE_FWD 0
#define MODE_BWD_DATA 1
#define MODE_BWD_WEIGHT 2

#define TILE_M 64
#define TILE_N 64
#define TILE_K 16
#define GEMM_THREADS 256
#define MMA_THREADS 128

// The per-group GEMM sizes of a mode.
template <int MODE> __device__ __forceinline__ void gemm_dims(const ConvGeometry& g, u32& M, u32& N, u32& K) {
    const u32 cin_g = g.in_channels / g.groups, cout_g = g.out_channels / g.groups, taps = g.kernel_h * g.kernel_w;
    if (MODE == MODE_FWD) {
        M = cout_g;
        N = g.batch * g.out_h * g.out_w;
        K = cin_g * taps;
    } else if (MODE == MODE_BWD_DATA) {
        M = cin_g;
        N = g.batch * g.in_h * g.in_w;
        K = cout_g * taps;
    } else {
        M = cout_g;
        N = cin_g * taps;
        K = g.batch * g.out_h * g.out_w;
    }
}

// x[b][c][iy][ix] or 0 outside the image.
template <typename T>
__device__ __forceinline__ T input_at(const ConvGeometry& g, const T* x, u32 b, u32 c, int iy, int ix, T zero) {
    if (iy < 0 || ix < 0 || iy >= (int)g.in_h || ix >= (int)g.in_w) return zero;
    return x[((u64)b * g.in_channels + c) * g.in_h * g.in_w + (u64)iy * g.in_w + ix];
}

// Operand A(m, k) of group `grp`: the weight (forward, backward-data) or dY (backward-weight).
template <typename T, int MODE>
__device__ __forceinline__ T load_a(const ConvGeometry& g, const T* a, u32 grp, u32 m, u32 k, u32 K) {
    const u32 cin_g = g.in_channels / g.groups, cout_g = g.out_channels / g.groups;
    if (MODE == MODE_FWD) {
        return a[(u64)(grp * cout_g + m) * K + k];
    } else if (MODE == MODE_BWD_DATA) {
        const u32 taps = g.kernel_h * g.kernel_w, co = k / taps, r = k - co * taps;
        return a[((u64)(grp * cout_g + co) * cin_g + m) * taps + r];
    } else {
        const u32 plane = g.out_h * g.out_w, b = k / plane, p = k - b * plane;
        return a[((u64)b * g.out_channels + grp * cout_g + m) * plane + p];
    }
}

// Operand B(k, n) of group `grp`: gathered input (forward, backward-weight) or dY (backward-data).
template <typename T, int MODE>
__device__ __forceinline__ T load_b(const ConvGeometry& g, const T* bsrc, u32 grp, u32 k, u32 n, T zero) {
    const u32 cin_g = g.in_channels / g.groups, cout_g = g.out_channels / g.groups, taps = g.kernel_h * g.kernel_w;
    if (MODE == MODE_FWD || MODE == MODE_BWD_WEIGHT) {
        // (ci, ky, kx) from one index, (b, oy, ox) from the other.
        const u32 tap_index = MODE == MODE_FWD ? k : n, pos_index = MODE == MODE_FWD ? n : k;
        const u32 ci = tap_index / taps, r = tap_index - ci * taps, ky = r / g.kernel_w, kx = r - ky * g.kernel_w;
        const u32 plane = g.out_h * g.out_w, b = pos_index / plane, p = pos_index - b * plane, oy = p / g.out_w, ox = p - oy * g.out_w;
        const int iy = (int)(oy * g.stride_h + ky * g.dil_h) - (int)g.pad_h;
        const int ix = (int)(ox * g.stride_w + kx * g.dil_w) - (int)g.pad_w;
        return input_at(g, bsrc, b, grp * cin_g + ci, iy, ix, zero);
    } else {
        const u32 co = k / taps, r = k - co * taps, ky = r / g.kernel_w, kx = r - ky * g.kernel_w;
        const u32 plane = g.in_h * g.in_w, b = n / plane, p = n - b * plane, iy = p / g.in_w, ix = p - iy * g.in_w;
        const int ty = (int)(iy + g.pad_h) - (int)(ky * g.dil_h);
        const int tx = (int)(ix + g.pad_w) - (int)(kx * g.dil_w);
        if (ty < 0 || tx < 0 || ty % (int)g.stride_h != 0 || tx % (int)g.stride_w != 0) return zero;
        const u32 oy = (u32)ty / g.stride_h, ox = (u32)tx / g.stride_w;
        if (oy >= g.out_h || ox >= g.out_w) return zero;
        return bsrc[((u64)b * g.out_channels + grp * cout_g + co) * g.out_h * g.out_w + (u64)oy * g.out_w + ox];
    }
}

// Write C(m, n) of group `grp` (plus the bias in the forward).
template <typename T, int MODE, typename C>
__device__ __forceinline__ void store_c(const ConvGeometry& g, T* out, const T* bias, u32 grp, u32 m, u32 n, C acc) {
    const u32 cin_g = g.in_channels / g.groups, cout_g = g.out_channels / g.groups;
    if (MODE == MODE_FWD) {
        const u32 plane = g.out_h * g.out_w, b = n / plane, p = n - b * plane, co = grp * cout_g + m;
        if (bias) acc += Num<T>::load(bias[co]);
        out[((u64)b * g.out_channels + co) * plane + p] = Num<T>::store(acc);
    } else if (MODE == MODE_BWD_DATA) {
        const u32 plane = g.in_h * g.in_w, b = n / plane, p = n - b * plane;
        out[((u64)b * g.in_channels + grp * cin_g + m) * plane + p] = Num<T>::store(acc);
    } else {
        const u32 K = cin_g * g.kernel_h * g.kernel_w;
        out[(u64)(grp * cout_g + m) * K + n] = Num<T>::store(acc);
    }
}

// Portable tile: block (n tile, m tile, group), 256 threads, thread (ty, tx)
// owns outputs m = ty + 16·i, n = tx + 16·j (strided, so shared reads are
// broadcasts or consecutive words).
template <typename T, int MODE>
__device__ void conv_gemm(const ConvGeometry& g, const T* a, const T* bsrc, const T* bias, T* out) {
    typedef typename Num<T>::C C;
    __shared__ C As[TILE_K][TILE_M + 1];
    __shared__ C Bs[TILE_K][TILE_N];
    u32 M, N, K;
    gemm_dims<MODE>(g, M, N, K);
    const u32 grp = blockIdx.z, m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const u32 tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const T zero = Num<T>::store(C(0));
    C acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = C(0);
    for (u32 k0 = 0; k0 < K; k0 += TILE_K) {
#pragma unroll
        for (int r = 0; r < (TILE_M * TILE_K) / GEMM_THREADS; ++r) {
            const u32 e = tid + r * GEMM_THREADS, kk = e % TILE_K, mm = e / TILE_K;
            const u32 m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? Num<T>::load(load_a<T, MODE>(g, a, grp, m, k, K)) : C(0);
        }
#pragma unroll
        for (int r = 0; r < (TILE_N * TILE_K) / GEMM_THREADS; ++r) {
            const u32 e = tid + r * GEMM_THREADS, nn = e % TILE_N, kk = e / TILE_N;
            const u32 n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = (n < N && k < K) ? Num<T>::load(load_b<T, MODE>(g, bsrc, grp, k, n, zero)) : C(0);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; ++kk) {
            C av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) av[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m < M && n < N) store_c<T, MODE>(g, out, bias, grp, m, n, acc[i][j]);
        }
}

// ----- tensor cores (f16 / bf16, sm_80+) ------------------------------------

template <typename T> struct Mma;
template <> struct Mma<f16> {
    static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
#if __CUDA_ARCH__ >= 800
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
        __trap();
#endif
    }
};
template <> struct Mma<bf16> {
    static __device__ __forceinline__ void run(float* c, const u32* a, const u32* b) {
#if __CUDA_ARCH__ >= 800
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
        __trap();
#endif
    }
};

// Row stride (in halves) of the shared tiles: 16 k values + 8 of padding, so
// the fragment loads of a warp hit 32 distinct banks.
#define MMA_LD (TILE_K + 8)

// Tensor-core tile: 4 warps in a 2×2 grid, each owning a 32×32 sub-tile as
// 2 (m16) × 4 (n8) MMA tiles. A is staged as As[m][k], B as Bs[n][k] (the
// "col" operand), both k-contiguous, so each fragment register is one
// aligned 32-bit shared load.
template <typename T, int MODE>
__device__ void conv_mma(const ConvGeometry& g, const T* a, const T* bsrc, const T* bias, T* out) {
    __shared__ __align__(16) u16 As[TILE_M][MMA_LD];
    __shared__ __align__(16) u16 Bs[TILE_N][MMA_LD];
    u32 M, N, K;
    gemm_dims<MODE>(g, M, N, K);
    const u32 grp = blockIdx.z, m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    const u32 tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u32 wm = (warp / 2) * 32, wn = (warp % 2) * 32, gid = lane / 4, tq = lane % 4;
    T zero;
    zero.bits = 0;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;
    for (u32 k0 = 0; k0 < K; k0 += TILE_K) {
#pragma unroll
        for (int r = 0; r < (TILE_M * TILE_K) / MMA_THREADS; ++r) {
            const u32 e = tid + r * MMA_THREADS, kk = e % TILE_K, mm = e / TILE_K;
            const u32 m = m0 + mm, k = k0 + kk;
            As[mm][kk] = (m < M && k < K) ? load_a<T, MODE>(g, a, grp, m, k, K).bits : (u16)0;
        }
#pragma unroll
        for (int r = 0; r < (TILE_N * TILE_K) / MMA_THREADS; ++r) {
            const u32 e = tid + r * MMA_THREADS, nn = e % TILE_N, kk = e / TILE_N;
            const u32 n = n0 + nn, k = k0 + kk;
            Bs[nn][kk] = (n < N && k < K) ? load_b<T, MODE>(g, bsrc, grp, k, n, zero).bits : (u16)0;
        }
        __syncthreads();
        u32 af[2][4], bfr[4][2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const u32 row = wm + i * 16 + gid;
            af[i][0] = *reinterpret_cast<const u32*>(&As[row][tq * 2]);
            af[i][1] = *reinterpret_cast<const u32*>(&As[row + 8][tq * 2]);
            af[i][2] = *reinterpret_cast<const u32*>(&As[row][tq * 2 + 8]);
            af[i][3] = *reinterpret_cast<const u32*>(&As[row + 8][tq * 2 + 8]);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const u32 col = wn + j * 8 + gid;
            bfr[j][0] = *reinterpret_cast<const u32*>(&Bs[col][tq * 2]);
            bfr[j][1] = *reinterpret_cast<const u32*>(&Bs[col][tq * 2 + 8]);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) Mma<T>::run(acc[i][j], af[i], bfr[j]);
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const u32 m = m0 + wm + i * 16 + gid + (r >= 2 ? 8 : 0);
                const u32 n = n0 + wn + j * 8 + tq * 2 + (r & 1);
                if (m < M && n < N) store_c<T, MODE>(g, out, bias, grp, m, n, acc[i][j][r]);
            }
}

// y[b][c][p] += bias[c] over a contiguous [batch, channels, plane] tensor (the 1×1 path).
template <typename T> __device__ void bias_add(u64 n, u64 plane, u64 channels, const T* bias, T* y) {
    GRID_STRIDE_LOOP(i, n) {
        const u64 c = (i / plane) % channels;
        y[i] = Num<T>::store(Num<T>::load(y[i]) + Num<T>::load(bias[c]));
    }
}

// db[c] = sum over batch and plane of dy[b][c][p]; one block per channel (grid-stride).
template <typename T> __device__ void bias_grad(u64 batch, u64 channels, u64 plane, const T* dy, T* db) {
    typedef typename Num<T>::C C;
    __shared__ C scratch[BLOCK / 32];
    for (u64 c = blockIdx.x; c < channels; c += gridDim.x) {
        C s = C(0);
        for (u64 i = threadIdx.x; i < batch * plane; i += blockDim.x) {
            const u64 b = i / plane, p = i - b * plane;
            s += Num<T>::load(dy[(b * channels + c) * plane + p]);
        }
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) db[c] = Num<T>::store(s);
    }
}

#define CONV_GEMM(name, T)                                                                                                  \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_gemm_fwd_##name(ConvGeometry g, u64 w, u64 x, u64 bias, u64 y) { \
        conv_gemm<T, MODE_FWD>(g, as_ptr<const T>(w), as_ptr<const T>(x), as_ptr<const T>(bias), as_ptr<T>(y));            \
    }                                                                                                                       \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_gemm_bwd_data_##name(ConvGeometry g, u64 w, u64 dy, u64 unused, u64 dx) { \
        conv_gemm<T, MODE_BWD_DATA>(g, as_ptr<const T>(w), as_ptr<const T>(dy), as_ptr<const T>(unused), as_ptr<T>(dx));   \
    }                                                                                                                       \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv2d_gemm_bwd_weight_##name(ConvGeometry g, u64 dy, u64 x, u64 unused, u64 dw) { \
        conv_gemm<T, MODE_BWD_WEIGHT>(g, as_ptr<const T>(dy), as_ptr<const T>(x), as_ptr<const T>(unused), as_ptr<T>(dw)); \
    }                                                                                                                       \
    extern "C" __global__ void conv2d_bias_add_##name(u64 n, u64 plane, u64 channels, u64 bias, u64 y) {                   \
        bias_add<T>(n, plane, channels, as_ptr<const T>(bias), as_ptr<T>(y));                                               \
    }                                                                                                                       \
    extern "C" __global__ void conv2d_bias_grad_##name(u64 batch, u64 channels, u64 plane, u64 dy, u64 db) {               \
        bias_grad<T>(batch, channels, plane, as_ptr<const T>(dy), as_ptr<T>(db));                                           \
    }
FOR_FLOATS(CONV_GEMM)

#define CONV_MMA(name, T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) conv2d_mma_fwd_##name(ConvGeometry g, u64 w, u64 x, u64 bias, u64 y) { \
        conv_mma<T, MODE_FWD>(g, as_ptr<const T>(w), as_ptr<const T>(x), as_ptr<const T>(bias), as_ptr<T>(y));             \
    }                                                                                                                       \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) conv2d_mma_bwd_data_##name(ConvGeometry g, u64 w, u64 dy, u64 unused, u64 dx) { \
        conv_mma<T, MODE_BWD_DATA>(g, as_ptr<const T>(w), as_ptr<const T>(dy), as_ptr<const T>(unused), as_ptr<T>(dx));    \
    }                                                                                                                       \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) conv2d_mma_bwd_weight_##name(ConvGeometry g, u64 dy, u64 x, u64 unused, u64 dw) { \
        conv_mma<T, MODE_BWD_WEIGHT>(g, as_ptr<const T>(dy), as_ptr<const T>(x), as_ptr<const T>(unused), as_ptr<T>(dw));  \
    }
CONV_MMA(f16, f16)
CONV_MMA(bf16, bf16)
