// Dtype conversions between every pair of element types, reading a strided
// view and writing a contiguous buffer. The rule is the CPU's
// (src/tensor/ops/cast.rs): go through f64, round to nearest even for floats,
// truncate toward zero and saturate for integers, NaN to 0.
#include "common.cuh"

__device__ __forceinline__ double to_f64(float v) { return (double)v; }
__device__ __forceinline__ double to_f64(double v) { return v; }
__device__ __forceinline__ double to_f64(f16 v) { return (double)f16_to_f32(v.bits); }
__device__ __forceinline__ double to_f64(bf16 v) { return (double)bf16_to_f32(v.bits); }
__device__ __forceinline__ double to_f64(i64 v) { return (double)v; }
__device__ __forceinline__ double to_f64(i32 v) { return (double)v; }
__device__ __forceinline__ double to_f64(u8 v) { return (double)v; }

template <typename T> __device__ __forceinline__ T from_f64(double d);
template <> __device__ __forceinline__ float from_f64<float>(double d) { return (float)d; }
template <> __device__ __forceinline__ double from_f64<double>(double d) { return d; }
template <> __device__ __forceinline__ f16 from_f64<f16>(double d) {
    f16 r;
    r.bits = f64_to_f16(d);
    return r;
}
// Through f32: exact for every f32/f16/bf16/integer source of up to 24 bits; a
// wider f64 value can round twice (one bf16 ulp at worst, on exact ties).
template <> __device__ __forceinline__ bf16 from_f64<bf16>(double d) {
    bf16 r;
    r.bits = f32_to_bf16((float)d);
    return r;
}
template <> __device__ __forceinline__ i64 from_f64<i64>(double d) {
    if (d != d) return 0;
    if (d >= 9223372036854775807.0) return (i64)0x7fffffffffffffffLL;
    if (d <= -9223372036854775808.0) return (i64)(-0x7fffffffffffffffLL - 1);
    return (i64)d;
}
template <> __device__ __forceinline__ i32 from_f64<i32>(double d) {
    if (d != d) return 0;
    if (d >= 2147483647.0) return 2147483647;
    if (d <= -2147483648.0) return -2147483647 - 1;
    return (i32)d;
}
template <> __device__ __forceinline__ u8 from_f64<u8>(double d) {
    if (d != d || d <= 0.0) return 0;
    if (d >= 255.0) return 255;
    return (u8)d;
}

#define CAST(FROM, S, TO, D)                                                                       \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                           \
        cast_##FROM##_##TO(u64 n, StridedLayout src_layout, const S* src, D* dst) {               \
        GRID_STRIDE_LOOP(i, n) { dst[i] = from_f64<D>(to_f64(src[strided_offset(src_layout, i)])); } \
    }

#define CAST_FROM(FROM, S)   \
    CAST(FROM, S, f32, float) \
    CAST(FROM, S, f64, double) \
    CAST(FROM, S, f16, f16)   \
    CAST(FROM, S, bf16, bf16) \
    CAST(FROM, S, i64, i64)   \
    CAST(FROM, S, i32, i32)   \
    CAST(FROM, S, u8, u8)

CAST_FROM(f32, float)
CAST_FROM(f64, double)
CAST_FROM(f16, f16)
CAST_FROM(bf16, bf16)
CAST_FROM(i64, i64)
CAST_FROM(i32, i32)
CAST_FROM(u8, u8)
