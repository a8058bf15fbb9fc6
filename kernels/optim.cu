// Multi-tensor optimizer kernels: one launch updates many parameter tensors.
// The host splits every tensor into chunks and uploads a table of them; one
// block takes one chunk (grid-stride over the table). AdamW follows the CPU
// update element for element (same operation order, same fused
// multiply-adds, scalars rounded to the compute type), EMA is
// `avg -= (1 - decay)(avg - param)`, and the squared-norm kernel writes one
// f64 partial sum per chunk (the host sums the partials), so the global
// gradient norm does not depend on scheduling. f16/bf16 compute in f32.
// CPU twins: src/nn/optim.rs, src/nn/ema.rs, src/nn/clip.rs.
#include "common.cuh"

// One chunk of one tensor: element range [start, start + len) of the
// tensors at a (param / average / gradient), b, c, d (0 when unused).
struct Chunk {
    u64 a, b, c, d;
    u64 start, len;
};

struct AdamScalars {
    double decay, lerp_weight, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps;
};

template <typename C> __device__ __forceinline__ C fma_of(C a, C b, C c);
template <> __device__ __forceinline__ float fma_of<float>(float a, float b, float c) { return fmaf(a, b, c); }
template <> __device__ __forceinline__ double fma_of<double>(double a, double b, double c) { return fma(a, b, c); }

// Products and sums that the CPU rounds separately are written with explicit
// rounding intrinsics so nvcc cannot contract them into FMAs.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Chunk table entry: a = param, b = exp_avg, c = exp_avg_sq, d = grad.
template <typename T>
__device__ void adamw(u64 chunks, const Chunk* table, AdamScalars s) {
    typedef typename Num<T>::C C;
    const C decay = C(s.decay), w = C(s.lerp_weight), beta2 = C(s.beta2), omb2 = C(s.one_minus_beta2);
    const C neg_step = C(s.neg_step_size), bc2 = C(s.bias_correction2_sqrt), eps = C(s.eps);
    const bool small_weight = (w < C(0) ? -w : w) < C(0.5);
    for (u64 k = blockIdx.x; k < chunks; k += gridDim.x) {
        const Chunk ch = table[k];
        T* p = as_ptr<T>(ch.a) + ch.start;
        T* m = as_ptr<T>(ch.b) + ch.start;
        T* v = as_ptr<T>(ch.c) + ch.start;
        const T* g = as_ptr<const T>(ch.d) + ch.start;
        for (u64 i = threadIdx.x; i < ch.len; i += blockDim.x) {
            C pv = Num<T>::load(p[i]), mv = Num<T>::load(m[i]), vv = Num<T>::load(v[i]);
            const C gv = Num<T>::load(g[i]);
            pv = mul_rn(pv, decay);
            mv = small_weight ? fma_of(w, gv - mv, mv) : fma_of(mv - gv, C(1) - w, gv);
            vv = fma_of(mul_rn(omb2, gv), gv, mul_rn(vv, beta2));
            const C denom = add_rn(m_sqrt(vv) / bc2, eps);
            pv = add_rn(pv, mul_rn(neg_step, mv) / denom);
            p[i] = Num<T>::store(pv);
            m[i] = Num<T>::store(mv);
            v[i] = Num<T>::store(vv);
        }
    }
}

// Chunk table entry: a = average, b = param.
template <typename T>
__device__ void ema(u64 chunks, const Chunk* table, double one_minus_decay) {
    typedef typename Num<T>::C C;
    const C f = C(one_minus_decay);
    for (u64 k = blockIdx.x; k < chunks; k += gridDim.x) {
        const Chunk ch = table[k];
        T* a = as_ptr<T>(ch.a) + ch.start;
        const T* p = as_ptr<const T>(ch.b) + ch.start;
        for (u64 i = threadIdx.x; i < ch.len; i += blockDim.x) {
            const C av = Num<T>::load(a[i]);
            a[i] = Num<T>::store(av - mul_rn(f, av - Num<T>::load(p[i])));
        }
    }
}

// Chunk table entry: a = tensor. partial[k] = Σ x² over chunk k, in f64.
template <typename T>
__device__ void sum_squares(u64 chunks, const Chunk* table, double* partial) {
    __shared__ double scratch[BLOCK / 32];
    for (u64 k = blockIdx.x; k < chunks; k += gridDim.x) {
        const Chunk ch = table[k];
        const T* x = as_ptr<const T>(ch.a) + ch.start;
        double acc = 0.0;
        for (u64 i = threadIdx.x; i < ch.len; i += blockDim.x) {
            const double v = (double)Num<T>::load(x[i]);
            acc += v * v;
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) partial[k] = acc;
    }
}

#define OPTIM_KERNELS(NAME, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(BLOCK) adamw_##NAME(u64 chunks, u64 table, AdamScalars s) {         \
        adamw<T>(chunks, as_ptr<const Chunk>(table), s);                                                               \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(BLOCK) ema_##NAME(u64 chunks, u64 table, double one_minus_decay) {  \
        ema<T>(chunks, as_ptr<const Chunk>(table), one_minus_decay);                                                   \
    }                                                                                                                  \
    extern "C" __global__ void __launch_bounds__(BLOCK) sum_squares_##NAME(u64 chunks, u64 table, u64 partial) {     \
        sum_squares<T>(chunks, as_ptr<const Chunk>(table), as_ptr<double>(partial));                                   \
    }

FOR_FLOATS(OPTIM_KERNELS)
