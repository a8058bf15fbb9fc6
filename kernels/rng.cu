// Philox 4x32-10 streams, the same function as src/rng.rs: 32-bit word i of
// the stream of `seed` is word i % 4 of philox(counter = [i/4 lo, i/4 hi, 0, 0],
// key = [seed lo, seed hi]). A uniform is (word >> 8)·2⁻²⁴; normal j uses
// words 2j and 2j+1 by Box–Muller's cosine branch. Values are produced in f64
// (the host casts them, as the CPU does) with explicit rounding so nvcc
// contracts nothing the CPU rounds separately.
#include "common.cuh"

__device__ __forceinline__ u32 stream_word(u64 seed, u64 i) {
    const u64 block = i / 4;
    u32 c0 = (u32)block, c1 = (u32)(block >> 32), c2 = 0, c3 = 0;
    u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        const u32 hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        const u32 hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        const u32 n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    const u32 r = (u32)(i % 4);
    return r == 0 ? c0 : (r == 1 ? c1 : (r == 2 ? c2 : c3));
}

__device__ __forceinline__ double word_to_uniform(u32 w) { return (double)(w >> 8) * (1.0 / 16777216.0); }

// out[i] = lo + (hi - lo)·u(offset + i).
extern "C" __global__ void __launch_bounds__(BLOCK) philox_uniform_f64(u64 n, u64 seed, u64 offset, double lo, double hi, u64 out) {
    double* o = as_ptr<double>(out);
    const double span = __dsub_rn(hi, lo);
    GRID_STRIDE_LOOP(i, n) { o[i] = __dadd_rn(lo, __dmul_rn(span, word_to_uniform(stream_word(seed, offset + i)))); }
}

// out[j] = mean + std·sqrt(-2 ln(1 - u(offset + 2j)))·cos(2π u(offset + 2j + 1)).
extern "C" __global__ void __launch_bounds__(BLOCK) philox_normal_f64(u64 n, u64 seed, u64 offset, double mean, double std, u64 out) {
    double* o = as_ptr<double>(out);
    GRID_STRIDE_LOOP(j, n) {
        const u64 k = offset + 2 * j;
        const double u1 = __dsub_rn(1.0, word_to_uniform(stream_word(seed, k)));
        const double u2 = word_to_uniform(stream_word(seed, k + 1));
        const double z = __dmul_rn(sqrt(__dmul_rn(-2.0, log(u1))), cos(__dmul_rn(6.283185307179586, u2)));
        o[j] = __dadd_rn(mean, __dmul_rn(std, z));
    }
}

// The raw words offset..offset+n, for the known-answer parity test.
extern "C" __global__ void __launch_bounds__(BLOCK) philox_words(u64 n, u64 seed, u64 offset, u64 out) {
    u32* o = as_ptr<u32>(out);
    GRID_STRIDE_LOOP(i, n) { o[i] = stream_word(seed, offset + i); }
}
