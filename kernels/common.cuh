// Shared by every kernel file. build.rs pastes this header into each source
// it embeds for NVRTC, so NVRTC needs no include path; nothing here includes a
// CUDA header either (half-precision conversions are written out with PTX
// `cvt` and bit operations instead of cuda_fp16.h / cuda_bf16.h).
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long long u64;

// Threads per block of every elementwise launch; the host side uses the same number.
#define BLOCK 256
// Highest rank a strided view may have after adjacent dims are merged.
#define MAX_RANK 8

// A strided view, passed by value as a kernel argument (layout mirrored by
// `StridedLayout` in src/backend/cuda/mod.rs). `contiguous` skips the index
// arithmetic when the view is a plain row-major range.
struct StridedLayout {
    u32 rank;
    u32 contiguous;
    u64 offset;
    u64 shape[MAX_RANK];
    u64 strides[MAX_RANK];
};

// Storage offset of the i-th element (row-major order) of a view.
__device__ __forceinline__ u64 strided_offset(const StridedLayout& l, u64 i) {
    if (l.contiguous) return l.offset + i;
    u64 off = l.offset;
    for (int d = (int)l.rank - 1; d >= 0; --d) {
        const u64 size = l.shape[d];
        off += (i % size) * l.strides[d];
        i /= size;
    }
    return off;
}

#define GRID_STRIDE_LOOP(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// ----- half precision, by bits -------------------------------------------

struct __align__(2) f16 { u16 bits; };
struct __align__(2) bf16 { u16 bits; };

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ u16 f64_to_f16(double d) {
    u16 h;
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(d));
    return h;
}
__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
// Round to nearest even, NaN stays a quiet NaN: the same rule as the `half` crate.
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (u16)(x >> 16);
}

__device__ __forceinline__ float neg_inf_f32() { return __int_as_float(0xff800000); }
__device__ __forceinline__ float pos_inf_f32() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ double neg_inf_f64() { return __longlong_as_double(0xfff0000000000000ULL); }
__device__ __forceinline__ double pos_inf_f64() { return __longlong_as_double(0x7ff0000000000000ULL); }

// ----- storage type <-> compute type ---------------------------------------
// Num<T>::C is the type arithmetic happens in: f32 for f32/f16/bf16, f64 for
// f64, the type itself for integers.

template <typename T> struct Num;
template <> struct Num<float> {
    typedef float C;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float c) { return c; }
};
template <> struct Num<double> {
    typedef double C;
    static __device__ __forceinline__ double load(double v) { return v; }
    static __device__ __forceinline__ double store(double c) { return c; }
};
template <> struct Num<f16> {
    typedef float C;
    static __device__ __forceinline__ float load(f16 v) { return f16_to_f32(v.bits); }
    static __device__ __forceinline__ f16 store(float c) { f16 r; r.bits = f32_to_f16(c); return r; }
};
template <> struct Num<bf16> {
    typedef float C;
    static __device__ __forceinline__ float load(bf16 v) { return bf16_to_f32(v.bits); }
    static __device__ __forceinline__ bf16 store(float c) { bf16 r; r.bits = f32_to_bf16(c); return r; }
};
#define INTEGER_NUM(T)                                                   \
    template <> struct Num<T> {                                          \
        typedef T C;                                                     \
        static __device__ __forceinline__ T load(T v) { return v; }      \
        static __device__ __forceinline__ T store(T c) { return c; }     \
    };
INTEGER_NUM(i64)
INTEGER_NUM(i32)
INTEGER_NUM(u8)

// ----- math overloads, so templates over float/double pick the right function

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_sin(float x) { return sinf(x); }
__device__ __forceinline__ double m_sin(double x) { return sin(x); }
__device__ __forceinline__ float m_cos(float x) { return cosf(x); }
__device__ __forceinline__ double m_cos(double x) { return cos(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }

// ----- block-wide helpers (blockDim.x a multiple of 32, at most BLOCK) -------

// Sum of `v` over the block; every thread gets the result. `scratch` holds
// BLOCK/32 entries and may be reused by the next call (it ends with a barrier).
template <typename C> __device__ __forceinline__ C block_sum(C v, C* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const u32 warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? scratch[lane] : C(0);
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) scratch[0] = v;
    }
    __syncthreads();
    v = scratch[0];
    __syncthreads();
    return v;
}

// A device pointer passed as a u64 kernel argument (0 = absent).
template <typename T> __device__ __forceinline__ T* as_ptr(u64 p) { return reinterpret_cast<T*>(p); }

// Loads that read an absent optional operand as `fallback`.
template <typename T> __device__ __forceinline__ typename Num<T>::C load_or(u64 p, u64 i, typename Num<T>::C fallback) {
    return p ? Num<T>::load(as_ptr<const T>(p)[i]) : fallback;
}

// A float kernel family instantiated for the four float dtypes: FOR_FLOATS(M)
// expands M(f32, float) M(f64, double) M(f16, f16) M(bf16, bf16).
#define FOR_FLOATS(M) M(f32, float) M(f64, double) M(f16, f16) M(bf16, bf16)
