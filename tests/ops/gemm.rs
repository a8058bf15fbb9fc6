//! The CPU GEMM against a naive f64 loop: odd sizes that break every tiling,
//! all four transpose combinations via strides, alpha/beta, NaN-filled C with
//! beta = 0, k = 0, padded rows of C, broadcast (zero-stride) operands, every
//! f32 micro-kernel this CPU has, parallel vs serial, and the f64 path; the
//! implicit im2col B operand against the im2col matrix written out.

use privdistill::backend::cpu::gemm::{gemm, sgemm_with, Im2colRef, MatRef, SgemmKernel};

/// Deterministic values in [-1, 1).
fn random_values(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x2545_F491_4F6C_DD1D);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// A rows×cols operand stored row-major (row stride cols + pad) or, when
/// `transposed`, column-major (column stride rows + pad): (data, rs, cs).
fn operand(rows: usize, cols: usize, transposed: bool, seed: u64) -> (Vec<f64>, usize, usize) {
    let pad = 3;
    if transposed {
        (random_values(cols * (rows + pad), seed), 1, rows + pad)
    } else {
        (random_values(rows * (cols + pad), seed), cols + pad, 1)
    }
}

/// alpha·A·B + beta·C0 in f64 (beta == 0 ignores C0), and Σ|alpha·a·b| + |beta·c| per element for the tolerance.
#[allow(clippy::too_many_arguments)]
fn naive(
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: (&[f64], usize, usize),
    b: (&[f64], usize, usize),
    beta: f64,
    c0: &[f64],
    rsc: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut want, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut sum, mut abs) = (0.0, 0.0);
            for p in 0..k {
                let prod = a.0[i * a.1 + p * a.2] * b.0[p * b.1 + j * b.2];
                sum += prod;
                abs += prod.abs();
            }
            let old = if beta == 0.0 { 0.0 } else { beta * c0[i * rsc + j] };
            want[i * n + j] = alpha * sum + old;
            scale[i * n + j] = alpha.abs() * abs + old.abs();
        }
    }
    (want, scale)
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// One f32 case with every kernel, parallel and serial: checks the m×n window of C
/// against the naive product and that the padding between rows is untouched.
#[allow(clippy::too_many_arguments)]
fn check_f32(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool, alpha: f32, beta: f32, seed: u64) {
    let (a, ars, acs) = operand(m, k, trans_a, seed);
    let (b, brs, bcs) = operand(k, n, trans_b, seed + 1);
    let rsc = n + 5;
    let c0 = random_values(m * rsc, seed + 2);
    let (a32, b32) = (to_f32(&a), to_f32(&b));
    // The reference sees the f32-rounded inputs so only the product's rounding is measured.
    let (a_r, b_r, c_r): (Vec<f64>, Vec<f64>, Vec<f64>) =
        (a32.iter().map(|&x| x as f64).collect(), b32.iter().map(|&x| x as f64).collect(), to_f32(&c0).iter().map(|&x| x as f64).collect());
    let (want, scale) = naive(m, n, k, alpha as f64, (&a_r, ars, acs), (&b_r, brs, bcs), beta as f64, &c_r, rsc);
    let tol = 1e-6 * k.max(1) as f64;
    let mut serial_result: Option<Vec<f32>> = None;
    for kernel in SgemmKernel::available() {
        for parallel in [false, true] {
            let mut c = to_f32(&c0);
            sgemm_with(
                kernel,
                m,
                n,
                k,
                alpha,
                MatRef { data: &a32, rs: ars, cs: acs },
                MatRef { data: &b32, rs: brs, cs: bcs },
                beta,
                &mut c,
                rsc,
                parallel,
            );
            for i in 0..m {
                for j in 0..rsc {
                    let (got, idx) = (c[i * rsc + j] as f64, i * n + j);
                    if j >= n {
                        assert_eq!(c[i * rsc + j], c0[i * rsc + j] as f32, "{kernel:?}: padding of C row {i} was written");
                        continue;
                    }
                    let err = (got - want[idx]).abs();
                    assert!(
                        err <= tol * (scale[idx] + 1e-3),
                        "{kernel:?} parallel={parallel} {m}×{n}×{k} ta={trans_a} tb={trans_b} alpha={alpha} beta={beta}: C[{i},{j}] = {got}, want {}",
                        want[idx]
                    );
                }
            }
            if kernel == SgemmKernel::best() {
                match &serial_result {
                    None => serial_result = Some(c),
                    Some(serial) => assert!(serial == &c, "{m}×{n}×{k}: parallel and serial results differ"),
                }
            }
        }
    }
    // The generic entry point uses the best kernel.
    let mut c = to_f32(&c0);
    gemm(m, n, k, alpha, MatRef { data: &a32, rs: ars, cs: acs }, MatRef { data: &b32, rs: brs, cs: bcs }, beta, &mut c, rsc, true);
    assert!(serial_result.as_ref() == Some(&c), "gemm() and sgemm_with(best) differ");
}

const SIZES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (7, 13, 5),
    (13, 7, 65),
    (6, 16, 64),
    (12, 32, 193),
    (65, 130, 33),
    (130, 65, 257),
    (257, 31, 130),
    (1, 300, 40),
    (300, 1, 40),
    (37, 41, 700),
    (129, 131, 131),
];

#[test]
fn f32_matches_naive_for_odd_sizes_and_all_transposes() {
    for (case, &(m, n, k)) in SIZES.iter().enumerate() {
        for (t, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
            check_f32(m, n, k, ta, tb, 1.0, 0.0, (case * 4 + t) as u64);
        }
    }
}

#[test]
fn f32_alpha_beta_and_wide_products() {
    for (alpha, beta) in [(0.5, -1.5), (-2.0, 1.0), (1.0, 0.25)] {
        check_f32(65, 130, 257, true, false, alpha, beta, 100);
        check_f32(13, 70, 7, false, true, alpha, beta, 101);
    }
    // Wider than one NC column block, and big enough to run in parallel.
    check_f32(20, 3200, 17, false, false, 1.0, 0.5, 102);
    // A transposed A meeting many B panels is packed (serial); the parallel
    // tasks each meet a few and read it in place; both must agree bit for bit.
    check_f32(20, 3200, 17, true, false, 1.0, 0.5, 105);
    check_f32(150, 140, 120, true, true, -1.0, 2.0, 103);
    // Deep and narrow (a weight gradient): in parallel, column slabs of serial products.
    check_f32(40, 200, 1000, true, false, 1.0, 0.5, 106);
    check_f32(40, 200, 1000, false, true, 1.0, 0.0, 107);
    // alpha = 0 only scales C.
    check_f32(9, 11, 5, false, false, 0.0, 3.0, 104);
}

#[test]
fn beta_zero_ignores_nan_in_c_and_k_zero_scales_c() {
    let (m, n, k) = (19, 23, 11);
    let (a, b) = (to_f32(&random_values(m * k, 1)), to_f32(&random_values(k * n, 2)));
    for kernel in SgemmKernel::available() {
        let mut c = vec![f32::NAN; m * n];
        sgemm_with(kernel, m, n, k, 1.0, MatRef { data: &a, rs: k, cs: 1 }, MatRef { data: &b, rs: n, cs: 1 }, 0.0, &mut c, n, false);
        assert!(c.iter().all(|v| v.is_finite()), "{kernel:?}: NaN leaked from C with beta = 0");

        let mut c = vec![f32::NAN; m * n];
        sgemm_with(kernel, m, n, 0, 1.0, MatRef { data: &[], rs: 0, cs: 1 }, MatRef { data: &[], rs: n, cs: 1 }, 0.0, &mut c, n, false);
        assert!(c.iter().all(|&v| v == 0.0), "{kernel:?}: k = 0, beta = 0 must zero C");

        let mut c = vec![1.5f32; m * n];
        sgemm_with(kernel, m, n, 0, 1.0, MatRef { data: &[], rs: 0, cs: 1 }, MatRef { data: &[], rs: n, cs: 1 }, -2.0, &mut c, n, false);
        assert!(c.iter().all(|&v| v == -3.0), "{kernel:?}: k = 0 must give beta·C");
    }
    let mut c = vec![f64::NAN; 4 * 5];
    let (a, b) = (random_values(4 * 3, 3), random_values(3 * 5, 4));
    gemm(4, 5, 3, 1.0, MatRef { data: &a, rs: 3, cs: 1 }, MatRef { data: &b, rs: 5, cs: 1 }, 0.0, &mut c, 5, false);
    assert!(c.iter().all(|v| v.is_finite()), "f64: NaN leaked from C with beta = 0");
}

#[test]
fn broadcast_operands_with_zero_strides() {
    // Every row of A is the same vector (row stride 0); every column of B the same (column stride 0).
    let (m, n, k) = (33, 47, 29);
    let (row, col) = (to_f32(&random_values(k, 5)), to_f32(&random_values(k, 6)));
    let dot: f64 = row.iter().zip(&col).map(|(&x, &y)| x as f64 * y as f64).sum();
    for kernel in SgemmKernel::available() {
        let mut c = vec![0.0f32; m * n];
        sgemm_with(kernel, m, n, k, 1.0, MatRef { data: &row, rs: 0, cs: 1 }, MatRef { data: &col, rs: 1, cs: 0 }, 0.0, &mut c, n, true);
        assert!(c.iter().all(|&v| (v as f64 - dot).abs() < 1e-5), "{kernel:?}: broadcast product wrong");
    }
}

#[test]
fn f64_path_matches_naive_for_any_strides() {
    for (case, &(m, n, k)) in SIZES.iter().enumerate() {
        for (t, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
            let seed = 1000 + (case * 4 + t) as u64;
            let (alpha, beta) = if t % 2 == 0 { (1.0, 0.0) } else { (-0.75, 1.25) };
            let (a, ars, acs) = operand(m, k, ta, seed);
            let (b, brs, bcs) = operand(k, n, tb, seed + 1);
            let rsc = n + 2;
            let c0 = random_values(m * rsc, seed + 2);
            let (want, scale) = naive(m, n, k, alpha, (&a, ars, acs), (&b, brs, bcs), beta, &c0, rsc);
            for parallel in [false, true] {
                let mut c = c0.clone();
                gemm(
                    m,
                    n,
                    k,
                    alpha,
                    MatRef { data: &a, rs: ars, cs: acs },
                    MatRef { data: &b, rs: brs, cs: bcs },
                    beta,
                    &mut c,
                    rsc,
                    parallel,
                );
                for i in 0..m {
                    for j in 0..n {
                        let err = (c[i * rsc + j] - want[i * n + j]).abs();
                        assert!(err <= 1e-14 * k.max(1) as f64 * (scale[i * n + j] + 1.0), "f64 {m}×{n}×{k}: C[{i},{j}] off by {err}");
                    }
                    assert_eq!(&c[i * rsc + n..i * rsc + rsc], &c0[i * rsc + n..i * rsc + rsc], "f64: padding of C row {i} was written");
                }
            }
        }
    }
}

#[test]
fn f32_matmul_of_transposed_views_matches_f64() {
    let a = privdistill::testing::rand_f32(&[3, 70, 45], 11).transpose(1, 2).unwrap(); // [3, 45, 70]
    let b = privdistill::testing::rand_f32(&[70, 33], 12);
    let c32 = a.matmul(&b).unwrap();
    let c64 = a.to_dtype(privdistill::DType::F64).unwrap().matmul(&b.to_dtype(privdistill::DType::F64).unwrap()).unwrap();
    privdistill::testing::assert_close(&c32, &c64, 1e-4, 1e-4);
    assert_eq!(c32.shape(), &[3, 45, 33]);
}

/// B read in runs of columns from separate places (a batch of image planes
/// side by side): runs shorter than, longer than and not dividing a packing
/// panel, a last run cut short, f32 on the threaded path and f64, against the
/// naive product of the same B gathered into one matrix.
#[test]
fn segmented_b_matches_the_gathered_matrix() {
    use privdistill::backend::cpu::gemm::SegmentedRef;
    for &(m, k, seg_len, runs, cut) in
        &[(7, 5, 3, 9, 0), (13, 40, 49, 5, 0), (30, 17, 196, 3, 20), (6, 300, 16, 70, 7), (64, 64, 25, 40, 0)]
    {
        let n = seg_len * runs - cut;
        let (rs, seg_stride) = (seg_len + 2, k * (seg_len + 2) + 5);
        let data = random_values(runs * seg_stride, 1000 + m as u64);
        let gathered: Vec<f64> = (0..k)
            .flat_map(|r| (0..n).map(move |j| (r, j)))
            .map(|(r, j)| data[(j / seg_len) * seg_stride + r * rs + j % seg_len])
            .collect();
        let a = random_values(m * k, 2000 + k as u64);
        let (want, bound) = naive(m, n, k, 1.0, (&a, k, 1), (&gathered, n, 1), 0.0, &[], n);
        let mut got = vec![f64::NAN; m * n];
        let b = SegmentedRef { data: &data, rs, seg_len, seg_stride };
        gemm(m, n, k, 1.0, MatRef { data: &a, rs: k, cs: 1 }, b, 0.0, &mut got, n, false);
        for i in 0..m * n {
            assert!((got[i] - want[i]).abs() <= 1e-12 * bound[i].max(1.0), "f64 m={m} k={k} runs of {seg_len}: element {i}");
        }
        let (a32, data32) = (to_f32(&a), to_f32(&data));
        let mut got32 = vec![f32::NAN; m * n];
        let b32 = SegmentedRef { data: &data32, rs, seg_len, seg_stride };
        gemm(m, n, k, 1.0, MatRef { data: &a32, rs: k, cs: 1 }, b32, 0.0, &mut got32, n, true);
        for i in 0..m * n {
            assert!((got32[i] as f64 - want[i]).abs() <= 1e-5 * bound[i].max(1.0), "f32 m={m} k={k} runs of {seg_len}: element {i}");
        }
    }
}

/// A packed once and reused: several k slices (k past the kernel's depth), a
/// last row panel cut short, a transposed A, serial and threaded, f32 and
/// f64, equal to the product with A packed on the fly, bit for bit.
#[test]
fn packed_a_gives_the_same_product() {
    use privdistill::backend::cpu::gemm::PackedA;
    for &(m, n, k, trans_a) in &[(7, 9, 5, false), (40, 50, 900, false), (13, 300, 385, true), (128, 96, 1152, false)] {
        let (a, ars, acs) = operand(m, k, trans_a, 7 + m as u64);
        let (b, brs, bcs) = operand(k, n, false, 8 + k as u64);
        let a_ref = MatRef { data: &a, rs: ars, cs: acs };
        let b_ref = MatRef { data: &b, rs: brs, cs: bcs };
        let mut want = vec![0.0; m * n];
        gemm(m, n, k, 1.0, a_ref, b_ref, 0.0, &mut want, n, false);
        let packed = PackedA::new(a_ref, m, k);
        for parallel in [false, true] {
            let mut got = vec![f64::NAN; m * n];
            gemm(m, n, k, 1.0, &packed, b_ref, 0.0, &mut got, n, parallel);
            assert_eq!(got, want, "f64 {m}×{n}×{k}");
        }
        let (a32, b32) = (to_f32(&a), to_f32(&b));
        let a32_ref = MatRef { data: &a32, rs: ars, cs: acs };
        let b32_ref = MatRef { data: &b32, rs: brs, cs: bcs };
        let mut want32 = vec![0.0f32; m * n];
        gemm(m, n, k, 1.0, a32_ref, b32_ref, 0.0, &mut want32, n, true);
        let packed32 = PackedA::new(a32_ref, m, k);
        let mut got32 = vec![f32::NAN; m * n];
        gemm(m, n, k, 1.0, &packed32, b32_ref, 0.0, &mut got32, n, true);
        assert_eq!(got32, want32, "f32 {m}×{n}×{k}");
    }
}

/// The im2col matrix of `b` written out, row-major (k rows of n columns).
fn explicit_im2col(b: &Im2colRef<f64>, k: usize, n: usize) -> Vec<f64> {
    let ([in_h, in_w], [out_h, out_w]) = (b.in_size, b.out_size);
    let taps = b.kernel[0] * b.kernel[1];
    let mut col = vec![0.0; k * n];
    for p in 0..k {
        let (c, ki, kj) = (p / taps, p % taps / b.kernel[1], p % b.kernel[1]);
        for j in 0..n {
            let pixel = b.first_pixel + j;
            let (image, oh, ow) = (pixel / (out_h * out_w), pixel % (out_h * out_w) / out_w, pixel % out_w);
            let ih = (oh * b.stride[0] + ki * b.dilation[0]) as isize - b.padding[0] as isize;
            let iw = (ow * b.stride[1] + kj * b.dilation[1]) as isize - b.padding[1] as isize;
            if ih >= 0 && iw >= 0 && (ih as usize) < in_h && (iw as usize) < in_w {
                col[p * n + j] = b.data[image * b.image_stride + (c * in_h + ih as usize) * in_w + iw as usize];
            }
        }
    }
    col
}

/// The GEMM reading an `Im2colRef` equals the GEMM over its matrix written
/// out: panels that start mid-row, span several rows and images, run into
/// the padding on either side, strides, dilation, a k deeper than one slice,
/// in f64 (portable kernel) and f32 (the fastest kernel here), serial and parallel.
#[test]
fn implicit_im2col_operand_matches_the_explicit_matrix() {
    #[derive(Clone, Copy)]
    struct Case {
        channels: usize,
        in_size: [usize; 2],
        out_size: [usize; 2],
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        first_pixel: usize,
        n: usize,
    }
    let geometry = |channels, in_size, out_size, stride, padding, dilation, first_pixel, n| Case {
        channels,
        in_size,
        out_size,
        kernel: [3, 3],
        stride,
        padding,
        dilation,
        first_pixel,
        n,
    };
    let cases = [
        geometry(3, [16, 16], [16, 16], [1, 1], [1, 1], [1, 1], 0, 3 * 256),
        geometry(5, [8, 8], [8, 8], [1, 1], [1, 1], [1, 1], 5, 150),
        geometry(2, [4, 4], [4, 4], [1, 1], [1, 1], [1, 1], 0, 48),
        geometry(3, [9, 8], [5, 4], [2, 2], [1, 1], [1, 1], 3, 37),
        geometry(2, [9, 7], [5, 3], [1, 2], [1, 0], [2, 1], 1, 29),
        geometry(50, [7, 21], [7, 21], [1, 1], [1, 1], [1, 1], 20, 250),
        // Stride 1 with a dilated width; 2-pixel rows (8 pieces a panel, past the tap table).
        geometry(2, [8, 9], [8, 5], [1, 1], [1, 0], [1, 2], 2, 50),
        geometry(3, [6, 2], [6, 2], [1, 1], [1, 1], [1, 1], 1, 40),
    ];
    for (case, &Case { channels, in_size, out_size, kernel, stride, padding, dilation, first_pixel, n }) in cases.iter().enumerate() {
        let (plane, k, m) = (in_size[0] * in_size[1], channels * kernel[0] * kernel[1], 13);
        let images = (first_pixel + n).div_ceil(out_size[0] * out_size[1]);
        // Each image is followed by one spare channel, so image_stride ≠ channels·plane.
        let image_stride = (channels + 1) * plane;
        let data = random_values(images * image_stride, case as u64);
        let a = random_values(m * k, 50 + case as u64);
        let b = Im2colRef { data: &data, image_stride, in_size, out_size, kernel, stride, padding, dilation, first_pixel };
        let col = explicit_im2col(&b, k, n);
        let (want, _) = naive(m, n, k, 1.0, (&a, k, 1), (&col, n, 1), 0.0, &[], n);
        for parallel in [false, true] {
            let mut got = vec![0.0; m * n];
            gemm(m, n, k, 1.0, MatRef { data: &a, rs: k, cs: 1 }, b, 0.0, &mut got, n, parallel);
            let worst = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-12, "case {case}, f64, parallel {parallel}: max error {worst:e}");

            let (data32, a32) = (to_f32(&data), to_f32(&a));
            let b32 = Im2colRef { data: &data32[..], image_stride, in_size, out_size, kernel, stride, padding, dilation, first_pixel };
            let mut got32 = vec![0.0f32; m * n];
            gemm(m, n, k, 1.0, MatRef { data: &a32, rs: k, cs: 1 }, b32, 0.0, &mut got32, n, parallel);
            let worst = got32.iter().zip(&want).map(|(&x, y)| (x as f64 - y).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-4 * (k as f64).sqrt(), "case {case}, f32, parallel {parallel}: max error {worst:e}");
        }
    }
}
