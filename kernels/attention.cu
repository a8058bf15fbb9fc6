// Fused scaled dot-product attention, FlashAttention style: softmax(scale·QKᵀ
// + mask)·V over packed Q [BH, Lq, D], K [BH, Lk, D], V [BH, Lk, Dv], with an
// optional additive mask (any strided view broadcast to [B, H, Lq, Lk]: a BERT
// key-padding mask [B, 1, 1, Lk] has zero strides on H and Lq) and an optional
// causal mask (key j visible to query i when j <= i, top-left aligned).
//
// Forward: a block owns BQ query rows of one (batch, head) and walks the keys
// in tiles of BK held in shared memory, with an online softmax (running row
// maximum and sum, the output rescaled when the maximum moves); only one
// BQ × BK tile of scores ever exists, in shared memory. It writes O and the
// per-row log-sum-exp (f32, f64 for f64), −∞ for a row with no visible key,
// whose output is 0 (the CPU rule, not PyTorch's NaN).
//
// Backward (two passes, so every block owns what it writes, no atomics):
// delta_i = dO_i·O_i; then per key tile dK, dV over all query tiles, and per
// query tile dQ over all key tiles, each recomputing P = exp(S − lse) and
// dS = P ∘ (dO·Vᵀ − delta) tile by tile.
//
// Head dims up to DMAX = 128 (SD-1.x/2.x use 40, 64, 80; CLIP and BERT 64).
// f16/bf16 compute in f32, f64 in f64.
// CPU twin: src/backend/cpu/attention.rs.
#include "common.cuh"

// Largest head dim the kernels hold in shared memory.
#define DMAX 128
// Row stride of shared tiles read across lanes by row: DMAX + 1 words keeps
// lanes that differ by row on distinct banks.
#define LD (DMAX + 1)
#define ATTN_THREADS 128
#define ATTN_WARPS (ATTN_THREADS / 32)

// Sizes and options of one call; mirrors `AttentionGeometry` in src/backend/cuda/attention.rs.
struct AttentionGeometry {
    u32 bh, heads, lq, lk, d, dv, causal, has_mask;
    double scale;
    // The mask view's offset and strides over (batch, head, query, key); 0 = broadcast.
    u64 mask_offset, mask_sb, mask_sh, mask_si, mask_sj;
};

// Tile sizes per compute type: f64 tiles are half as tall to fit the same shared memory.
template <typename C> struct Tiles;
template <> struct Tiles<float> {
    enum { BQ = 16, BK = 32, BWD = 16 };
};
template <> struct Tiles<double> {
    enum { BQ = 8, BK = 16, BWD = 8 };
};

template <typename C> __device__ __forceinline__ C neg_inf_c();
template <> __device__ __forceinline__ float neg_inf_c<float>() { return neg_inf_f32(); }
template <> __device__ __forceinline__ double neg_inf_c<double>() { return neg_inf_f64(); }

template <typename C> __device__ __forceinline__ C warp_max(C v) {
    for (int o = 16; o > 0; o >>= 1) {
        const C w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}
template <typename C> __device__ __forceinline__ C warp_sum(C v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The score of query qi and key kj, −∞ where hidden (causal, out of range):
// scale·(Qs[i]·Ks[j]) + mask.
template <typename T, typename C>
__device__ __forceinline__ C score(const AttentionGeometry& g, const C* Qs, int i, const C* Ks, int j, u32 bh, u32 qi, u32 kj, const T* mask) {
    if (qi >= g.lq || kj >= g.lk || (g.causal && kj > qi)) return neg_inf_c<C>();
    C s = C(0);
    for (u32 d = 0; d < g.d; ++d) s += Qs[i * LD + d] * Ks[j * LD + d];
    s *= (C)g.scale;
    if (g.has_mask) {
        const u64 b = bh / g.heads, h = bh - b * g.heads;
        s += Num<T>::load(mask[g.mask_offset + b * g.mask_sb + h * g.mask_sh + (u64)qi * g.mask_si + (u64)kj * g.mask_sj]);
    }
    return s;
}

// rows × cols of a packed [L, cols] matrix from row r0 into shared memory (row stride LD), zero past the end.
template <typename T, typename C>
__device__ __forceinline__ void load_rows(C* dst, const T* src, u32 r0, u32 rows, u32 len, u32 cols) {
    for (u32 e = threadIdx.x; e < rows * DMAX; e += ATTN_THREADS) {
        const u32 r = e / DMAX, c = e - r * DMAX, row = r0 + r;
        dst[r * LD + c] = (row < len && c < cols) ? Num<T>::load(src[(u64)row * cols + c]) : C(0);
    }
}

template <typename T>
__device__ void attention_fwd(const AttentionGeometry& g, const T* q, const T* k, const T* v, const T* mask, T* o,
                              typename Num<T>::C* lse) {
    typedef typename Num<T>::C C;
    enum { BQ = Tiles<C>::BQ, BK = Tiles<C>::BK, OWN = BQ * DMAX / ATTN_THREADS };
    __shared__ C Qs[BQ * LD];
    __shared__ C Ks[BK * LD];
    __shared__ C Vs[BK * LD];
    __shared__ C Ss[BQ][BK];
    __shared__ C row_max[BQ], row_sum[BQ], row_alpha[BQ];
    const u32 bh = blockIdx.y, q0 = blockIdx.x * BQ, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const u64 qbase = (u64)bh * g.lq, kbase = (u64)bh * g.lk;
    load_rows(Qs, q + qbase * g.d, q0, BQ, g.lq, g.d);
    if (tid < BQ) {
        row_max[tid] = neg_inf_c<C>();
        row_sum[tid] = C(0);
    }
    C acc[OWN];
#pragma unroll
    for (int r = 0; r < OWN; ++r) acc[r] = C(0);
    const u32 kend = g.causal ? min(g.lk, q0 + BQ) : g.lk;
    for (u32 k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();
        load_rows(Ks, k + kbase * g.d, k0, BK, g.lk, g.d);
        load_rows(Vs, v + kbase * g.dv, k0, BK, g.lk, g.dv);
        __syncthreads();
        for (u32 e = tid; e < BQ * BK; e += ATTN_THREADS) {
            const u32 i = e / BK, j = e - i * BK;
            Ss[i][j] = score(g, Qs, i, Ks, j, bh, q0 + i, k0 + j, mask);
        }
        __syncthreads();
        for (u32 i = warp; i < BQ; i += ATTN_WARPS) {
            const C s = lane < BK ? Ss[i][lane] : neg_inf_c<C>();
            const C m_old = row_max[i];
            const C tile_max = warp_max(s);
            const C m_new = tile_max > m_old ? tile_max : m_old;
            const bool none = m_new == neg_inf_c<C>();
            const C p = (none || s == neg_inf_c<C>()) ? C(0) : m_exp(s - m_new);
            const C alpha = (none || m_old == neg_inf_c<C>()) ? C(0) : m_exp(m_old - m_new);
            if (lane < BK) Ss[i][lane] = p;
            const C sum = warp_sum(p);
            if (lane == 0) {
                row_sum[i] = row_sum[i] * alpha + sum;
                row_max[i] = m_new;
                row_alpha[i] = alpha;
            }
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < OWN; ++r) {
            const u32 e = tid + r * ATTN_THREADS, i = e / DMAX, c = e - i * DMAX;
            if (c < g.dv) {
                C a = acc[r] * row_alpha[i];
                for (int j = 0; j < BK; ++j) a += Ss[i][j] * Vs[j * LD + c];
                acc[r] = a;
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < OWN; ++r) {
        const u32 e = tid + r * ATTN_THREADS, i = e / DMAX, c = e - i * DMAX, qi = q0 + i;
        if (c < g.dv && qi < g.lq) {
            const C l = row_sum[i];
            o[(qbase + qi) * g.dv + c] = Num<T>::store(l > C(0) ? acc[r] / l : C(0));
        }
    }
    if (tid < BQ && q0 + tid < g.lq) {
        const C l = row_sum[tid];
        lse[qbase + q0 + tid] = l > C(0) ? row_max[tid] + m_log(l) : neg_inf_c<C>();
    }
}

// delta[row] = dO[row]·O[row], one warp per row.
template <typename T>
__device__ void attention_delta(u64 rows, u32 dv, const T* o, const T* dout, typename Num<T>::C* delta) {
    typedef typename Num<T>::C C;
    const u32 lane = threadIdx.x % 32;
    const u64 warps = (u64)gridDim.x * (blockDim.x / 32);
    for (u64 row = (u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < rows; row += warps) {
        C s = C(0);
        for (u32 c = lane; c < dv; c += 32) s += Num<T>::load(o[row * dv + c]) * Num<T>::load(dout[row * dv + c]);
        s = warp_sum(s);
        if (lane == 0) delta[row] = s;
    }
}

// P and dS of the tile (query rows i0.., key rows j0..) into Ps, Ds.
template <typename T, typename C, int BQ, int BK>
__device__ __forceinline__ void probabilities(const AttentionGeometry& g, u32 bh, u32 i0, u32 j0, const C* Qs, const C* dOs, const C* Ks,
                                              const C* Vs, const C* lse_s, const C* delta_s, const T* mask, C (*Ps)[BK], C (*Ds)[BK]) {
    for (u32 e = threadIdx.x; e < BQ * BK; e += ATTN_THREADS) {
        const u32 i = e / BK, j = e - i * BK;
        const C s = score(g, Qs, i, Ks, j, bh, i0 + i, j0 + j, mask);
        const C l = lse_s[i];
        C p = C(0), ds = C(0);
        if (s != neg_inf_c<C>() && l != neg_inf_c<C>()) {
            p = m_exp(s - l);
            C dp = C(0);
            for (u32 c = 0; c < g.dv; ++c) dp += dOs[i * LD + c] * Vs[j * LD + c];
            ds = p * (dp - delta_s[i]);
        }
        Ps[i][j] = p;
        Ds[i][j] = ds;
    }
}

// lse and delta of rows i0.. into shared memory (−∞ lse past the end: p = 0).
template <typename C>
__device__ __forceinline__ void load_row_stats(C* lse_s, C* delta_s, const C* lse, const C* delta, u64 base, u32 i0, u32 rows, u32 len) {
    for (u32 r = threadIdx.x; r < rows; r += ATTN_THREADS) {
        const bool in = i0 + r < len;
        lse_s[r] = in ? lse[base + i0 + r] : neg_inf_c<C>();
        delta_s[r] = in ? delta[base + i0 + r] : C(0);
    }
}

// dK and dV of one key tile: a block per (key tile, bh).
template <typename T>
__device__ void attention_bwd_kv(const AttentionGeometry& g, const T* q, const T* k, const T* v, const T* mask, const T* dout,
                                 const typename Num<T>::C* lse, const typename Num<T>::C* delta, T* dk, T* dv) {
    typedef typename Num<T>::C C;
    enum { B = Tiles<C>::BWD, OWN = B * DMAX / ATTN_THREADS };
    __shared__ C Ks[B * LD], Vs[B * LD], Qs[B * LD], dOs[B * LD];
    __shared__ C Ps[B][B], Ds[B][B];
    __shared__ C lse_s[B], delta_s[B];
    const u32 bh = blockIdx.y, j0 = blockIdx.x * B, tid = threadIdx.x;
    const u64 qbase = (u64)bh * g.lq, kbase = (u64)bh * g.lk;
    load_rows(Ks, k + kbase * g.d, j0, B, g.lk, g.d);
    load_rows(Vs, v + kbase * g.dv, j0, B, g.lk, g.dv);
    C acc_k[OWN], acc_v[OWN];
#pragma unroll
    for (int r = 0; r < OWN; ++r) acc_k[r] = acc_v[r] = C(0);
    // Under the causal mask, queries before the tile's first key see none of it.
    const u32 first = g.causal ? j0 : 0;
    for (u32 i0 = first; i0 < g.lq; i0 += B) {
        __syncthreads();
        load_rows(Qs, q + qbase * g.d, i0, B, g.lq, g.d);
        load_rows(dOs, dout + qbase * g.dv, i0, B, g.lq, g.dv);
        load_row_stats(lse_s, delta_s, lse, delta, qbase, i0, B, g.lq);
        __syncthreads();
        probabilities<T, C, B, B>(g, bh, i0, j0, Qs, dOs, Ks, Vs, lse_s, delta_s, mask, Ps, Ds);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < OWN; ++r) {
            const u32 e = tid + r * ATTN_THREADS, j = e / DMAX, c = e - j * DMAX;
            C sv = C(0), sk = C(0);
            for (int i = 0; i < B; ++i) {
                sv += Ps[i][j] * dOs[i * LD + c];
                sk += Ds[i][j] * Qs[i * LD + c];
            }
            acc_v[r] += sv;
            acc_k[r] += sk;
        }
    }
    const C scale = (C)g.scale;
#pragma unroll
    for (int r = 0; r < OWN; ++r) {
        const u32 e = tid + r * ATTN_THREADS, j = e / DMAX, c = e - j * DMAX, kj = j0 + j;
        if (kj < g.lk) {
            if (c < g.d) dk[(kbase + kj) * g.d + c] = Num<T>::store(acc_k[r] * scale);
            if (c < g.dv) dv[(kbase + kj) * g.dv + c] = Num<T>::store(acc_v[r]);
        }
    }
}

// dQ of one query tile: a block per (query tile, bh).
template <typename T>
__device__ void attention_bwd_q(const AttentionGeometry& g, const T* q, const T* k, const T* v, const T* mask, const T* dout,
                                const typename Num<T>::C* lse, const typename Num<T>::C* delta, T* dq) {
    typedef typename Num<T>::C C;
    enum { B = Tiles<C>::BWD, OWN = B * DMAX / ATTN_THREADS };
    __shared__ C Ks[B * LD], Vs[B * LD], Qs[B * LD], dOs[B * LD];
    __shared__ C Ps[B][B], Ds[B][B];
    __shared__ C lse_s[B], delta_s[B];
    const u32 bh = blockIdx.y, i0 = blockIdx.x * B, tid = threadIdx.x;
    const u64 qbase = (u64)bh * g.lq, kbase = (u64)bh * g.lk;
    load_rows(Qs, q + qbase * g.d, i0, B, g.lq, g.d);
    load_rows(dOs, dout + qbase * g.dv, i0, B, g.lq, g.dv);
    load_row_stats(lse_s, delta_s, lse, delta, qbase, i0, B, g.lq);
    C acc[OWN];
#pragma unroll
    for (int r = 0; r < OWN; ++r) acc[r] = C(0);
    const u32 kend = g.causal ? min(g.lk, i0 + B) : g.lk;
    for (u32 j0 = 0; j0 < kend; j0 += B) {
        __syncthreads();
        load_rows(Ks, k + kbase * g.d, j0, B, g.lk, g.d);
        load_rows(Vs, v + kbase * g.dv, j0, B, g.lk, g.dv);
        __syncthreads();
        probabilities<T, C, B, B>(g, bh, i0, j0, Qs, dOs, Ks, Vs, lse_s, delta_s, mask, Ps, Ds);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < OWN; ++r) {
            const u32 e = tid + r * ATTN_THREADS, i = e / DMAX, c = e - i * DMAX;
            C s = C(0);
            for (int j = 0; j < B; ++j) s += Ds[i][j] * Ks[j * LD + c];
            acc[r] += s;
        }
    }
    const C scale = (C)g.scale;
#pragma unroll
    for (int r = 0; r < OWN; ++r) {
        const u32 e = tid + r * ATTN_THREADS, i = e / DMAX, c = e - i * DMAX, qi = i0 + i;
        if (qi < g.lq && c < g.d) dq[(qbase + qi) * g.d + c] = Num<T>::store(acc[r] * scale);
    }
}

#define ATTENTION(name, T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS)                                                              \
        attention_fwd_##name(AttentionGeometry g, u64 q, u64 k, u64 v, u64 mask, u64 o, u64 lse) {                         \
        attention_fwd<T>(g, as_ptr<const T>(q), as_ptr<const T>(k), as_ptr<const T>(v), as_ptr<const T>(mask), as_ptr<T>(o), \
                         as_ptr<typename Num<T>::C>(lse));                                                                  \
    }                                                                                                                        \
    extern "C" __global__ void attention_delta_##name(u64 rows, u32 dv, u64 o, u64 dout, u64 delta) {                       \
        attention_delta<T>(rows, dv, as_ptr<const T>(o), as_ptr<const T>(dout), as_ptr<typename Num<T>::C>(delta));         \
    }                                                                                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_bwd_kv_##name(                                     \
        AttentionGeometry g, u64 q, u64 k, u64 v, u64 mask, u64 dout, u64 lse, u64 delta, u64 dk, u64 dv) {                 \
        attention_bwd_kv<T>(g, as_ptr<const T>(q), as_ptr<const T>(k), as_ptr<const T>(v), as_ptr<const T>(mask),          \
                            as_ptr<const T>(dout), as_ptr<const typename Num<T>::C>(lse),                                   \
                            as_ptr<const typename Num<T>::C>(delta), as_ptr<T>(dk), as_ptr<T>(dv));                         \
    }                                                                                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) attention_bwd_q_##name(                                      \
        AttentionGeometry g, u64 q, u64 k, u64 v, u64 mask, u64 dout, u64 lse, u64 delta, u64 dq) {                         \
        attention_bwd_q<T>(g, as_ptr<const T>(q), as_ptr<const T>(k), as_ptr<const T>(v), as_ptr<const T>(mask),           \
                           as_ptr<const T>(dout), as_ptr<const typename Num<T>::C>(lse),                                    \
                           as_ptr<const typename Num<T>::C>(delta), as_ptr<T>(dq));                                         \
    }
FOR_FLOATS(ATTENTION)
