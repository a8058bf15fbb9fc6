//! Vectorisable f32 transcendental functions and the activation loops built
//! on them.
//!
//! The generic activations (`UnaryOp::apply`) call libm per element, and the
//! exact GELU evaluates erf as an f64 series: profiles of the demo UNet showed
//! that scalar erf alone taking 42 % of the forward pass. Here every function
//! is a branch-free polynomial of a few ulp, so a loop over it compiles to
//! AVX2 code (the loops are instantiated with AVX2+FMA enabled when the CPU
//! has it). f64 keeps the exact generic path: gradient checks need it.

use super::PARALLEL_MIN;
use crate::backend::op::UnaryOp;
use rayon::prelude::*;

/// a·b + c. With `FMA` (only in code compiled with the fma target feature:
/// the AVX2 instantiations of the loops below) one fused instruction; the
/// polynomials here are chains of these, so fusing halves their latency and
/// instruction count. Without it a multiply and an add, since `mul_add` on a
/// CPU without FMA is a libm call per element.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// exp(x) in f32 to about 1 ulp (Cephes' range reduction and polynomial),
/// written without branches or library calls so a loop over it vectorises.
/// Below −87 the result is flushed to 0 (so −∞ gives exactly 0), above 88 it
/// saturates at e⁸⁸; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_f32<const FMA: bool>(x: f32) -> f32 {
    const LO: f32 = -87.0;
    const HI: f32 = 88.0;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let m = madd::<FMA>;
    let t = m(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let r = m(-n, LN2_LO, m(-n, LN2_HI, xc));
    let mut p = m(1.987_569_2e-4, r, 1.398_199_9e-3);
    p = m(p, r, 8.333_452e-3);
    p = m(p, r, 4.166_579_6e-2);
    p = m(p, r, 1.666_666_5e-1);
    p = m(p, r, 0.5);
    let y = m(p, r * r, r + 1.0);
    // 2ⁿ built from its exponent bits; n ∈ [−126, 127] after the clamp.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    if x < LO {
        0.0
    } else {
        y * scale
    }
}

/// erf(x) in f32, within 1e-6 absolute of the exact value (tested against
/// the f64 reference): an odd polynomial below |x| = 0.9277 and
/// `1 − exp(poly(|x|))` above (N. Juffa's minimax fits). Both branches are
/// computed and one selected, so a loop over it vectorises.
#[inline(always)]
pub(crate) fn erf_f32<const FMA: bool>(x: f32) -> f32 {
    let m = madd::<FMA>;
    let t = x.abs();
    let s = x * x;
    // Small |x|: erf x = x + x·s·q(s).
    let mut q = m(-5.967_617e-4, s, 4.991_194_2e-3);
    q = m(q, s, -2.676_813_5e-2);
    q = m(q, s, 1.128_199_3e-1);
    q = m(q, s, -3.761_253_4e-1);
    q = m(q, s, 1.283_791_7e-1);
    let small = m(q, x, x);
    // Large |x|: erf |x| = 1 − exp(r(|x|)).
    let r1 = m(-1.728_534_7e-5, t, 3.831_971_3e-4);
    let u = m(-3.883_964_4e-3, t, 2.425_462_2e-2);
    let mut r = m(r1, s, u);
    r = m(r, t, -1.067_778_8e-1);
    r = m(r, t, -6.348_467e-1);
    r = m(r, t, -1.287_175_1e-1);
    r = m(r, t, -t);
    let large = (1.0 - exp_f32::<FMA>(r)).copysign(x);
    if t > 0.927_734_4 {
        large
    } else {
        small
    }
}

/// The logistic function; exp_f32's saturation keeps it finite for any input.
#[inline(always)]
fn sigmoid_f32<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32::<FMA>(-x))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π), the standard normal density's factor.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
pub(crate) fn gelu_f32<const FMA: bool>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32::<FMA>(x * FRAC_1_SQRT_2))
}

#[inline(always)]
pub(crate) fn gelu_grad_f32<const FMA: bool>(x: f32) -> f32 {
    gelu_and_grad_f32::<FMA>(x).1
}

/// GELU and its derivative together, sharing the normal CDF (one erf, not two).
#[inline(always)]
pub(crate) fn gelu_and_grad_f32<const FMA: bool>(x: f32) -> (f32, f32) {
    let cdf = 0.5 * (1.0 + erf_f32::<FMA>(x * FRAC_1_SQRT_2));
    (x * cdf, madd::<FMA>(x * FRAC_1_SQRT_2PI, exp_f32::<FMA>(-0.5 * x * x), cdf))
}

#[inline(always)]
fn silu_grad_f32<const FMA: bool>(x: f32) -> f32 {
    let s = sigmoid_f32::<FMA>(x);
    s * (1.0 + x * (1.0 - s))
}

#[inline(always)]
fn quick_gelu_grad_f32<const FMA: bool>(x: f32) -> f32 {
    let s = sigmoid_f32::<FMA>(1.702 * x);
    s + x * 1.702 * s * (1.0 - s)
}

/// Elements per parallel task: enough to amortise a rayon split.
const CHUNK: usize = PARALLEL_MIN / 4;

/// Instantiate `$body` (a loop over plain slices) once for AVX2+FMA and once
/// portable, and call the AVX2 one when the CPU has it. `$fma` names a
/// `const bool` the body passes to [`madd`] and the functions built on it:
/// true in the AVX2+FMA instantiation, false in the portable one.
macro_rules! simd_dispatch {
    ($name:ident, $fma:ident, ($($arg:ident: $ty:ty),*), $body:expr) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    const $fma: bool = true;
                    $body
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above),
                    // the only requirement of the target_feature function.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            const $fma: bool = false;
            $body
        }
    };
}
pub(crate) use simd_dispatch;

simd_dispatch!(map_loop, FMA, (op: UnaryOp, x: &[f32], y: &mut [f32]), {
    macro_rules! each {
        ($f:expr) => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = $f(v);
            }
        };
    }
    match op {
        UnaryOp::Gelu => each!(gelu_f32::<FMA>),
        UnaryOp::Silu => each!(|v: f32| v * sigmoid_f32::<FMA>(v)),
        UnaryOp::Sigmoid => each!(sigmoid_f32::<FMA>),
        UnaryOp::QuickGelu => each!(|v: f32| v * sigmoid_f32::<FMA>(1.702 * v)),
        _ => unreachable!("map_loop: {op:?} has no f32 kernel"),
    }
});

simd_dispatch!(grad_loop, FMA, (op: UnaryOp, x: &[f32], y: &[f32], g: &[f32], out: &mut [f32]), {
    macro_rules! each {
        ($f:expr) => {
            for (((o, &xv), &yv), &gv) in out.iter_mut().zip(x).zip(y).zip(g) {
                *o = gv * $f(xv, yv);
            }
        };
    }
    match op {
        UnaryOp::Gelu => each!(|v: f32, _| gelu_grad_f32::<FMA>(v)),
        UnaryOp::Silu => each!(|v: f32, _| silu_grad_f32::<FMA>(v)),
        UnaryOp::Sigmoid => each!(|_, s: f32| s * (1.0 - s)),
        UnaryOp::QuickGelu => each!(|v: f32, _| quick_gelu_grad_f32::<FMA>(v)),
        _ => unreachable!("grad_loop: {op:?} has no f32 kernel"),
    }
});

/// Whether [`unary_f32`] and [`unary_backward_f32`] have a kernel for `op`.
pub fn has_f32_kernel(op: UnaryOp) -> bool {
    matches!(op, UnaryOp::Gelu | UnaryOp::Silu | UnaryOp::Sigmoid | UnaryOp::QuickGelu)
}

/// y = f(x) for an op with [`has_f32_kernel`].
pub fn unary_f32(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    if x.len() >= PARALLEL_MIN {
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(y, x)| map_loop(op, x, y));
    } else {
        map_loop(op, x, &mut y);
    }
    y
}

/// dx = g·f'(x) (given y = f(x)) for an op with [`has_f32_kernel`].
pub fn unary_backward_f32(op: UnaryOp, x: &[f32], y: &[f32], g: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    if x.len() >= PARALLEL_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(y.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|((o, x), (y, g))| grad_loop(op, x, y, g, o));
    } else {
        grad_loop(op, x, y, g, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs spanning both erf branches, the tails, zeros and odd lengths.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 2.5e-3).collect();
        v.extend([0.0, -0.0, 0.927_734_4, -0.927_734_4, 1e-30, -1e-30, 30.0, -30.0, 100.0, -100.0]);
        v
    }

    /// Both instantiations: separate multiply-adds and fused ones (`mul_add`
    /// is exact wherever it runs, just slow without FMA hardware).
    #[test]
    fn erf_and_exp_match_the_f64_reference_with_and_without_fma() {
        let erf_error = |erf: fn(f32) -> f32| {
            inputs().into_iter().map(|x| (erf(x) as f64 - crate::tensor::erf_f64(x as f64)).abs()).fold(0.0, f64::max)
        };
        for (fma, worst) in [(false, erf_error(erf_f32::<false>)), (true, erf_error(erf_f32::<true>))] {
            assert!(worst < 1e-6, "erf_f32 (fma {fma}) max abs error {worst:e}");
        }
        for x in (0..20001).map(|i| -87.0 + i as f32 * 0.0087) {
            let want = (x as f64).exp();
            for (fma, y) in [(false, exp_f32::<false>(x)), (true, exp_f32::<true>(x))] {
                assert!(((y as f64) - want).abs() <= 3e-7 * want, "exp_f32 (fma {fma}) of {x} = {y}, want {want}");
            }
        }
    }

    #[test]
    fn gelu_and_its_derivative_together_match_the_f64_reference() {
        for x in inputs() {
            let xr = x as f64;
            let (y, dy) = (UnaryOp::Gelu.apply(xr), UnaryOp::Gelu.derivative(xr, UnaryOp::Gelu.apply(xr)));
            for (fma, (got_y, got_dy)) in [(false, gelu_and_grad_f32::<false>(x)), (true, gelu_and_grad_f32::<true>(x))] {
                assert!((got_y as f64 - y).abs() <= 2e-6 * y.abs().max(1.0), "gelu (fma {fma}) of {x} = {got_y}, want {y}");
                assert!((got_dy as f64 - dy).abs() <= 2e-6 * dy.abs().max(1.0), "gelu' (fma {fma}) of {x} = {got_dy}, want {dy}");
            }
        }
    }

    #[test]
    fn activations_match_the_generic_path() {
        for len in [1usize, 7, 33, PARALLEL_MIN + 5] {
            let x: Vec<f32> = inputs().into_iter().cycle().take(len).collect();
            for op in [UnaryOp::Gelu, UnaryOp::Silu, UnaryOp::Sigmoid, UnaryOp::QuickGelu] {
                let fast = unary_f32(op, &x);
                let g: Vec<f32> = (0..len).map(|i| 1.0 - (i % 5) as f32 * 0.3).collect();
                let dfast = unary_backward_f32(op, &x, &fast, &g);
                for i in 0..len {
                    let xr = x[i] as f64;
                    let (yr, dr) = (op.apply(xr), g[i] as f64 * op.derivative(xr, op.apply(xr)));
                    let tol = |r: f64| 2e-6 * r.abs().max(1.0);
                    assert!((fast[i] as f64 - yr).abs() <= tol(yr), "{op:?}({}) = {} vs {yr}", x[i], fast[i]);
                    assert!((dfast[i] as f64 - dr).abs() <= tol(dr), "{op:?}'({}) = {} vs {dr}", x[i], dfast[i]);
                }
            }
        }
    }
}
