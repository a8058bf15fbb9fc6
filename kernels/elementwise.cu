// Elementwise kernels: unary maps and their derivatives, broadcasting binary
// maps, comparisons. The CPU reference is src/backend/cpu/elementwise.rs and
// the op codes follow the enums of src/backend/op.rs (see
// src/backend/cuda/elementwise.rs for the mapping).
#include "common.cuh"

// UnaryOp codes.
#define U_NEG 0
#define U_EXP 1
#define U_LOG 2
#define U_SQRT 3
#define U_RSQRT 4
#define U_ABS 5
#define U_SQUARE 6
#define U_RECIP 7
#define U_SIN 8
#define U_COS 9
#define U_SIGMOID 10
#define U_TANH 11
#define U_RELU 12
#define U_SILU 13
#define U_GELU 14
#define U_GELU_TANH 15
#define U_QUICK_GELU 16
#define U_AFFINE 17
#define U_POWF 18
#define U_CLAMP 19
#define U_LEAKY_RELU 20

// Split by sign so exp never overflows (as the CPU does).
template <typename C> __device__ __forceinline__ C sigmoid(C x) {
    if (x >= C(0)) return C(1) / (C(1) + m_exp(-x));
    const C e = m_exp(x);
    return e / (C(1) + e);
}

template <typename C> __device__ __forceinline__ C gelu_tanh_inner(C x) {
    return C(0.7978845608028654) * (x + C(0.044715) * x * x * x);
}

template <typename C> __device__ __forceinline__ C unary_apply(u32 op, C x, C p0, C p1) {
    switch (op) {
        case U_NEG: return -x;
        case U_EXP: return m_exp(x);
        case U_LOG: return m_log(x);
        case U_SQRT: return m_sqrt(x);
        case U_RSQRT: return C(1) / m_sqrt(x);
        case U_ABS: return m_abs(x);
        case U_SQUARE: return x * x;
        case U_RECIP: return C(1) / x;
        case U_SIN: return m_sin(x);
        case U_COS: return m_cos(x);
        case U_SIGMOID: return sigmoid(x);
        case U_TANH: return m_tanh(x);
        case U_RELU: return x > C(0) ? x : C(0);
        case U_SILU: return x * sigmoid(x);
        case U_GELU: return C(0.5) * x * (C(1) + m_erf(x * C(0.7071067811865476)));
        case U_GELU_TANH: return C(0.5) * x * (C(1) + m_tanh(gelu_tanh_inner(x)));
        case U_QUICK_GELU: return x * sigmoid(C(1.702) * x);
        case U_AFFINE: return x * p0 + p1;
        case U_POWF: return m_pow(x, p0);
        case U_CLAMP: {
            // max then min with Rust's rule (the CPU's): a NaN input becomes `min`.
            const C lo = x > p0 ? x : p0;
            return lo < p1 ? lo : p1;
        }
        case U_LEAKY_RELU: return x > C(0) ? x : x * p0;
        default: return x;
    }
}

// df/dx given x and y = f(x).
template <typename C> __device__ __forceinline__ C unary_derivative(u32 op, C x, C y, C p0, C p1) {
    switch (op) {
        case U_NEG: return C(-1);
        case U_EXP: return y;
        case U_LOG: return C(1) / x;
        case U_SQRT: return C(0.5) / y;
        case U_RSQRT: return C(-0.5) * y * y * y;
        case U_ABS: return x > C(0) ? C(1) : (x < C(0) ? C(-1) : C(0));
        case U_SQUARE: return C(2) * x;
        case U_RECIP: return -y * y;
        case U_SIN: return m_cos(x);
        case U_COS: return -m_sin(x);
        case U_SIGMOID: return y * (C(1) - y);
        case U_TANH: return C(1) - y * y;
        case U_RELU: return x > C(0) ? C(1) : C(0);
        case U_SILU: {
            const C s = sigmoid(x);
            return s * (C(1) + x * (C(1) - s));
        }
        case U_GELU: {
            const C cdf = C(0.5) * (C(1) + m_erf(x * C(0.7071067811865476)));
            const C pdf = m_exp(C(-0.5) * x * x) * C(0.3989422804014327);
            return cdf + x * pdf;
        }
        case U_GELU_TANH: {
            const C t = m_tanh(gelu_tanh_inner(x));
            const C dinner = C(0.7978845608028654) * (C(1) + C(3.0 * 0.044715) * x * x);
            return C(0.5) * (C(1) + t) + C(0.5) * x * (C(1) - t * t) * dinner;
        }
        case U_QUICK_GELU: {
            const C s = sigmoid(C(1.702) * x);
            return s + x * C(1.702) * s * (C(1) - s);
        }
        case U_AFFINE: return p0;
        case U_POWF: return p0 * m_pow(x, p0 - C(1));
        case U_CLAMP: return (x >= p0 && x <= p1) ? C(1) : C(0);
        case U_LEAKY_RELU: return x > C(0) ? C(1) : p0;
        default: return C(0);
    }
}

template <typename T>
__device__ void unary_kernel(u64 n, u32 op, double p0, double p1, StridedLayout lx, const T* x, T* y) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        y[i] = Num<T>::store(unary_apply<C>(op, Num<T>::load(x[strided_offset(lx, i)]), C(p0), C(p1)));
    }
}

template <typename T>
__device__ void unary_backward_kernel(u64 n, u32 op, double p0, double p1, StridedLayout lx, const T* x, StridedLayout ly,
                                      const T* y, StridedLayout lg, const T* g, T* dx) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C xv = Num<T>::load(x[strided_offset(lx, i)]);
        const C yv = Num<T>::load(y[strided_offset(ly, i)]);
        const C gv = Num<T>::load(g[strided_offset(lg, i)]);
        dx[i] = Num<T>::store(gv * unary_derivative<C>(op, xv, yv, C(p0), C(p1)));
    }
}

// BinaryOp codes.
#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3
#define B_POW 4
#define B_MAXIMUM 5
#define B_MINIMUM 6

template <typename C> __device__ __forceinline__ C binary_apply(u32 op, C a, C b) {
    switch (op) {
        case B_ADD: return a + b;
        case B_SUB: return a - b;
        case B_MUL: return a * b;
        case B_DIV: return a / b;
        case B_POW: return m_pow(a, b);
        case B_MAXIMUM: return a >= b ? a : b;
        case B_MINIMUM: return a <= b ? a : b;
        default: return a;
    }
}

template <typename T>
__device__ void binary_kernel(u64 n, u32 op, StridedLayout la, const T* a, StridedLayout lb, const T* b, T* out) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C av = Num<T>::load(a[strided_offset(la, i)]);
        const C bv = Num<T>::load(b[strided_offset(lb, i)]);
        out[i] = Num<T>::store(binary_apply<C>(op, av, bv));
    }
}

// CmpOp codes.
#define C_EQ 0
#define C_NE 1
#define C_LT 2
#define C_LE 3
#define C_GT 4
#define C_GE 5

template <typename T>
__device__ void compare_kernel(u64 n, u32 op, StridedLayout la, const T* a, StridedLayout lb, const T* b, u8* out) {
    typedef typename Num<T>::C C;
    GRID_STRIDE_LOOP(i, n) {
        const C av = Num<T>::load(a[strided_offset(la, i)]);
        const C bv = Num<T>::load(b[strided_offset(lb, i)]);
        bool r;
        switch (op) {
            case C_EQ: r = av == bv; break;
            case C_NE: r = av != bv; break;
            case C_LT: r = av < bv; break;
            case C_LE: r = av <= bv; break;
            case C_GT: r = av > bv; break;
            default: r = av >= bv; break;
        }
        out[i] = r ? 1 : 0;
    }
}

#define FLOAT_KERNELS(NAME, T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                         \
        unary_##NAME(u64 n, u32 op, double p0, double p1, StridedLayout lx, const T* x, T* y) {                                 \
        unary_kernel<T>(n, op, p0, p1, lx, x, y);                                                                               \
    }                                                                                                                            \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                         \
        unary_backward_##NAME(u64 n, u32 op, double p0, double p1, StridedLayout lx, const T* x, StridedLayout ly, const T* y, \
                              StridedLayout lg, const T* g, T* dx) {                                                             \
        unary_backward_kernel<T>(n, op, p0, p1, lx, x, ly, y, lg, g, dx);                                                       \
    }                                                                                                                            \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                                         \
        binary_##NAME(u64 n, u32 op, StridedLayout la, const T* a, StridedLayout lb, const T* b, T* out) {                      \
        binary_kernel<T>(n, op, la, a, lb, b, out);                                                                             \
    }

FLOAT_KERNELS(f32, float)
FLOAT_KERNELS(f64, double)
FLOAT_KERNELS(f16, f16)
FLOAT_KERNELS(bf16, bf16)

#define COMPARE_KERNEL(NAME, T)                                                                              \
    extern "C" __global__ void __launch_bounds__(BLOCK)                                                     \
        compare_##NAME(u64 n, u32 op, StridedLayout la, const T* a, StridedLayout lb, const T* b, u8* out) { \
        compare_kernel<T>(n, op, la, a, lb, b, out);                                                        \
    }

COMPARE_KERNEL(f32, float)
COMPARE_KERNEL(f64, double)
COMPARE_KERNEL(f16, f16)
COMPARE_KERNEL(bf16, bf16)
COMPARE_KERNEL(i64, i64)
COMPARE_KERNEL(i32, i32)
COMPARE_KERNEL(u8, u8)
