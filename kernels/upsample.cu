// Nearest-neighbour 2-d resize of NCHW planes: the host computes PyTorch's
// source row/column of every output row/column (and, for the backward, the
// contiguous range of output rows/columns reading each input row/column,
// which exists because the mapping is monotone). The backward is a gather in
// row-major output order, so no atomics. CPU twin: src/backend/cpu/upsample.rs.
#include "common.cuh"

template <typename T>
__device__ void upsample_nearest2d_fwd(u64 planes, u64 h, u64 w, u64 oh, u64 ow, const i64* rows, const i64* cols, const T* x, T* y) {
    GRID_STRIDE_LOOP(i, planes * oh * ow) {
        const u64 c = i % ow, r = (i / ow) % oh, plane = i / (oh * ow);
        y[i] = x[plane * h * w + (u64)rows[r] * w + (u64)cols[c]];
    }
}

// row_range[2·ir], row_range[2·ir + 1]: the output rows reading input row ir (likewise columns).
template <typename T>
__device__ void upsample_nearest2d_bwd(u64 planes, u64 h, u64 w, u64 oh, u64 ow, const i64* row_range, const i64* col_range, const T* dy,
                                       T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, planes * h * w) {
        const u64 ic = i % w, ir = (i / w) % h, plane = i / (h * w);
        const T* g = dy + plane * oh * ow;
        C acc = C(0);
        for (i64 r = row_range[2 * ir]; r < row_range[2 * ir + 1]; ++r)
            for (i64 c = col_range[2 * ic]; c < col_range[2 * ic + 1]; ++c) acc += Num<T>::load(g[r * ow + c]);
        dx[i] = Num<T>::store(acc);
    }
}

#define UPSAMPLE_KERNELS(NAME, T)                                                                                              \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                       \
        upsample_nearest2d_fwd_##NAME(u64 planes, u64 h, u64 w, u64 oh, u64 ow, u64 rows, u64 cols, u64 x, u64 y) {           \
        upsample_nearest2d_fwd<T>(planes, h, w, oh, ow, as_ptr<const i64>(rows), as_ptr<const i64>(cols), as_ptr<const T>(x), \
                                  as_ptr<T>(y));                                                                               \
    }                                                                                                                          \
    extern "C" __global__ void __launch_bounds__(BLOCK) upsample_nearest2d_bwd_##NAME(                                        \
        u64 planes, u64 h, u64 w, u64 oh, u64 ow, u64 row_range, u64 col_range, u64 dy, u64 dx) {                              \
        upsample_nearest2d_bwd<T>(planes, h, w, oh, ow, as_ptr<const i64>(row_range), as_ptr<const i64>(col_range),           \
                                  as_ptr<const T>(dy), as_ptr<T>(dx));                                                         \
    }

FOR_FLOATS(UPSAMPLE_KERNELS)
