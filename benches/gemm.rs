//! f32 GEMM throughput: our packed GEMM against the `matrixmultiply` crate,
//! square sizes 256..2048, all cores. Criterion measures; a short timing loop
//! of our own then prints GFLOP/s, % of the machine's fp32 peak and the ratio
//! to the peer for each size, and a summary table at the end.
//!
//! Peak = cores × GHz × 32 FLOP/cycle (two 8-lane FMA units, 2 FLOP per FMA).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use privdistill::backend::cpu::gemm::{gemm, MatRef, SgemmKernel};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [256, 512, 1024, 2048];
const FLOP_PER_CYCLE: f64 = 32.0;

/// The clock from /proc/cpuinfo ("cpu MHz", averaged over cores), if readable.
fn cpuinfo_ghz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: Vec<f64> =
        text.lines().filter(|l| l.starts_with("cpu MHz")).filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok()).collect();
    (!mhz.is_empty()).then(|| mhz.iter().sum::<f64>() / mhz.len() as f64 / 1000.0)
}

/// The clock measured by a chain of dependent FMAs: each waits for the
/// previous one, so the loop runs one FMA per FMA latency (4 cycles on Zen 4
/// and recent Intel cores). Used for the peak when cpuinfo is silent.
fn measured_ghz() -> f64 {
    const FMA_LATENCY_CYCLES: f64 = 4.0;
    const CHAIN: u64 = 4_000_000;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // Best of many short runs: a run that the scheduler interrupts just counts less.
        let best = (0..40)
            .map(|_| {
                let start = Instant::now();
                // SAFETY: FMA support was checked just above.
                black_box(unsafe { dependent_fmas(CHAIN) });
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        return CHAIN as f64 * FMA_LATENCY_CYCLES / best / 1e9;
    }
    f64::NAN
}

/// # Safety
/// The CPU must support FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dependent_fmas(chain: u64) -> f32 {
    use std::arch::x86_64::*;
    let (mut x, mul, add) = (_mm_set1_ps(1.0), _mm_set1_ps(black_box(0.999_999)), _mm_set1_ps(black_box(1e-7)));
    for _ in 0..chain {
        x = _mm_fmadd_ps(x, mul, add);
    }
    _mm_cvtss_f32(x)
}

fn random_matrix(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    /// Our GEMM on all cores.
    Ours,
    /// Our GEMM on one thread (per-core efficiency, and robust to a busy machine).
    OursSerial,
    /// matrixmultiply on all cores.
    Peer,
}

fn run(which: Impl, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let (am, bm) = (MatRef { data: a, rs: n, cs: 1 }, MatRef { data: b, rs: n, cs: 1 });
    match which {
        Impl::Ours => gemm(n, n, n, 1.0, am, bm, 0.0, c, n, true),
        Impl::OursSerial => gemm(n, n, n, 1.0, am, bm, 0.0, c, n, false),
        // SAFETY: a, b, c are n×n row-major buffers of n² elements each.
        Impl::Peer => unsafe {
            matrixmultiply::sgemm(n, n, n, 1.0, a.as_ptr(), n as isize, 1, b.as_ptr(), n as isize, 1, 0.0, c.as_mut_ptr(), n as isize, 1)
        },
    }
}

/// Best GFLOP/s of each implementation over repetitions that take turns
/// (after one warm-up run each): on a shared machine the best run is the one
/// least disturbed by other processes, and taking turns exposes all of them
/// to the same disturbances.
fn gflops(impls: &[Impl], n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> Vec<f64> {
    let flop = 2.0 * (n as f64).powi(3);
    let mut best = vec![f64::INFINITY; impls.len()];
    impls.iter().for_each(|&which| run(which, n, a, b, c));
    for _ in 0..((4e10 / flop) as usize).clamp(5, 300) {
        for (&which, best) in impls.iter().zip(&mut best) {
            let start = Instant::now();
            run(which, n, a, b, c);
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    best.iter().map(|t| flop / t / 1e9).collect()
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        // matrixmultiply counts physical cores, which a VM may under-report: give the peer every core too.
        std::env::set_var("MATMUL_NUM_THREADS", cores.to_string());
    }
    let measured = measured_ghz();
    let (ghz, source) = match cpuinfo_ghz() {
        Some(g) => (g, "/proc/cpuinfo"),
        None => (measured, "dependent-FMA loop"),
    };
    let peak = cores as f64 * ghz * FLOP_PER_CYCLE;
    println!("fp32 peak: {cores} cores × {ghz:.3} GHz ({source}) × {FLOP_PER_CYCLE} FLOP/cycle = {peak:.1} GFLOP/s");
    println!(
        "(a dependent-FMA loop measures {measured:.2} GHz: the cores boost above the nominal clock, so at that clock peak is {:.1} GFLOP/s)",
        cores as f64 * measured * FLOP_PER_CYCLE
    );
    println!(
        "our f32 kernel: {:?}; rayon threads: {}; load average: {}",
        SgemmKernel::best(),
        rayon::current_num_threads(),
        load_average()
    );

    let mut criterion = Criterion::default().configure_from_args();
    let mut rows = Vec::new();
    for n in SIZES {
        let (a, b) = (random_matrix(n * n, 1), random_matrix(n * n, 2));
        let mut c = vec![0.0f32; n * n];
        let mut group = criterion.benchmark_group("gemm_f32");
        group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
        if n >= 1024 {
            group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(if n >= 2048 { 3 } else { 2 }));
        } else {
            group.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        }
        group.bench_function(BenchmarkId::new("ours", n), |bench| bench.iter(|| run(Impl::Ours, n, &a, &b, &mut c)));
        group.bench_function(BenchmarkId::new("matrixmultiply", n), |bench| bench.iter(|| run(Impl::Peer, n, &a, &b, &mut c)));
        group.finish();

        let [ours, peer, serial] = gflops(&[Impl::Ours, Impl::Peer, Impl::OursSerial], n, &a, &b, &mut c)[..] else { unreachable!() };
        println!(
            "gemm f32 {n}³: ours {ours:.1} GFLOP/s ({:.1}% of peak), matrixmultiply {peer:.1} GFLOP/s ({:.1}% of peak), ours/peer {:.2}×",
            100.0 * ours / peak,
            100.0 * peer / peak,
            ours / peer
        );
        rows.push((n, ours, peer, serial));
    }

    criterion.final_summary();
    println!("\nsummary (best of a few runs; peak {peak:.1} GFLOP/s = {cores} cores × {ghz:.3} GHz × 32; load average {})", load_average());
    println!(
        "{:>6} | {:>10} {:>7} | {:>10} {:>7} | {:>9} | {:>14} {:>12}",
        "n", "ours GF/s", "%peak", "peer GF/s", "%peak", "ours/peer", "ours 1-thread", "%core peak"
    );
    for (n, ours, peer, serial) in rows {
        println!(
            "{n:>6} | {ours:>10.1} {:>6.1}% | {peer:>10.1} {:>6.1}% | {:>8.2}× | {serial:>14.1} {:>11.1}%",
            100.0 * ours / peak,
            100.0 * peer / peak,
            ours / peer,
            100.0 * serial / (peak / cores as f64)
        );
    }
}

/// The 1-minute load average, to judge how much the figures were disturbed.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
