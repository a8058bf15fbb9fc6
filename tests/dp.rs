//! The Rényi-DP accountant (src/privacy/dp/rdp.rs) against Opacus' RDP accountant
//! (tests/fixtures/rdp/opacus_table.json, made by tests/fixtures/make_rdp_fixtures.py),
//! its closed forms and invariants, and the `privdistill dp` command line.

use privdistill::privacy::dp::rdp::{calibrate_noise_multiplier, epsilon, subsampled_gaussian_rdp, RdpAccountant, DEFAULT_ORDERS};
use serde::Deserialize;
use std::path::Path;
use std::process::Command;

#[derive(Deserialize)]
struct Table {
    opacus_version: String,
    default_alphas: Vec<f64>,
    epsilon: Vec<EpsilonRow>,
    composed: Vec<ComposedRow>,
    noise_multiplier: Vec<NoiseRow>,
}

#[derive(Deserialize)]
struct EpsilonRow {
    q: f64,
    sigma: f64,
    steps: u64,
    delta: f64,
    epsilon: f64,
    best_alpha: f64,
}

#[derive(Deserialize)]
struct ComposedRow {
    q: f64,
    sigma: f64,
    steps: u64,
    semantic_sigma: f64,
    delta: f64,
    epsilon: f64,
    best_alpha: f64,
}

#[derive(Deserialize)]
struct NoiseRow {
    target_epsilon: f64,
    q: f64,
    steps: u64,
    delta: f64,
    epsilon_tolerance: f64,
    sigma: f64,
}

fn table() -> Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdp/opacus_table.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read opacus_table.json")).expect("parse opacus_table.json")
}

fn relative_error(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

const TABLE_TOLERANCE: f64 = 1e-3;

#[test]
fn default_orders_are_opacus_alphas() {
    let t = table();
    assert!(t.opacus_version.starts_with("1."), "table made by opacus {}", t.opacus_version);
    assert_eq!(DEFAULT_ORDERS, t.default_alphas.as_slice());
    assert_eq!(RdpAccountant::new().orders(), DEFAULT_ORDERS);
}

#[test]
fn epsilon_matches_opacus_table() {
    let t = table();
    assert!(t.epsilon.len() >= 40, "the table has {} rows", t.epsilon.len());
    let mut worst = 0.0_f64;
    for row in &t.epsilon {
        let mut accountant = RdpAccountant::new();
        accountant.compose_subsampled_gaussian(row.q, row.sigma, row.steps).unwrap();
        let (eps, order) = accountant.epsilon(row.delta).unwrap();
        let err = relative_error(eps, row.epsilon);
        worst = worst.max(err);
        let ctx = format!(
            "q {} σ {} T {} δ {}: ε {eps} (order {order}) vs opacus {} (order {})",
            row.q, row.sigma, row.steps, row.delta, row.epsilon, row.best_alpha
        );
        assert!(err <= TABLE_TOLERANCE, "{ctx}");
        assert_eq!(order, row.best_alpha, "{ctx}");
        assert_eq!(epsilon(row.q, row.sigma, row.steps, row.delta).unwrap(), eps, "{ctx}");
    }
    eprintln!("worst relative error against opacus over {} rows: {worst:.2e}", t.epsilon.len());
}

#[test]
fn composition_with_the_semantic_query_matches_opacus() {
    for row in table().composed {
        let mut accountant = RdpAccountant::new();
        accountant.compose_subsampled_gaussian(row.q, row.sigma, row.steps).unwrap();
        accountant.compose_gaussian(row.semantic_sigma).unwrap();
        let (eps, order) = accountant.epsilon(row.delta).unwrap();
        let ctx = format!("q {} σ {} T {} σ_sem {}: ε {eps} vs opacus {}", row.q, row.sigma, row.steps, row.semantic_sigma, row.epsilon);
        assert!(relative_error(eps, row.epsilon) <= TABLE_TOLERANCE, "{ctx}");
        assert_eq!(order, row.best_alpha, "{ctx}");
        // The semantic query costs something: without it ε is strictly smaller.
        assert!(epsilon(row.q, row.sigma, row.steps, row.delta).unwrap() < eps, "{ctx}");
    }
}

#[test]
fn calibration_agrees_with_opacus_get_noise_multiplier() {
    // Opacus stops its bisection once target − ε(σ) ≤ tolerance and returns that (upper) σ;
    // ours is the smallest σ, so it lies at or below Opacus' and both fit the budget.
    for row in table().noise_multiplier {
        let ours = calibrate_noise_multiplier(&RdpAccountant::new(), row.target_epsilon, row.q, row.steps, row.delta).unwrap();
        let eps_ours = epsilon(row.q, ours, row.steps, row.delta).unwrap();
        let eps_opacus_sigma = epsilon(row.q, row.sigma, row.steps, row.delta).unwrap();
        let ctx = format!(
            "target {} q {} T {}: σ {ours} (ε {eps_ours}) vs opacus σ {} (ε {eps_opacus_sigma})",
            row.target_epsilon, row.q, row.steps, row.sigma
        );
        assert!(ours <= row.sigma * (1.0 + 1e-9), "{ctx}");
        assert!(eps_opacus_sigma <= row.target_epsilon * (1.0 + TABLE_TOLERANCE), "{ctx}");
        assert!(eps_opacus_sigma >= (row.target_epsilon - row.epsilon_tolerance) * (1.0 - TABLE_TOLERANCE), "{ctx}");
        assert!(eps_ours <= row.target_epsilon && eps_ours >= row.target_epsilon * (1.0 - 1e-4), "{ctx}");
    }
}

#[test]
fn calibration_round_trips() {
    let semantic = {
        let mut a = RdpAccountant::new();
        a.compose_gaussian(20.0).unwrap();
        a
    };
    for (target, q, steps, delta) in
        [(1.0, 0.01, 1000, 1e-5), (3.0, 256.0 / 60_000.0, 14_062, 1e-5), (8.0, 0.3, 50, 1e-6), (2.0, 1.0, 3, 1e-5)]
    {
        for base in [RdpAccountant::new(), semantic.clone()] {
            let sigma = calibrate_noise_multiplier(&base, target, q, steps, delta).unwrap();
            let eps_at = |s: f64| {
                let mut a = base.clone();
                a.compose_subsampled_gaussian(q, s, steps).unwrap();
                a.epsilon(delta).unwrap().0
            };
            let ctx = format!("target {target} q {q} T {steps} δ {delta}, base spent {:?}: σ {sigma}", base.rdp().first());
            let eps = eps_at(sigma);
            assert!(eps <= target, "{ctx}: ε {eps}");
            assert!(eps >= target * (1.0 - 1e-4), "{ctx}: ε {eps}");
            // Smallest: 2e-6 less noise already overspends.
            assert!(eps_at(sigma * (1.0 - 2e-6)) > target, "{ctx}");
        }
        let alone = calibrate_noise_multiplier(&RdpAccountant::new(), target, q, steps, delta).unwrap();
        let after_semantic = calibrate_noise_multiplier(&semantic, target, q, steps, delta).unwrap();
        assert!(after_semantic > alone, "the semantic query leaves less budget: σ {after_semantic} vs {alone}");
    }
}

#[test]
fn full_batch_is_the_gaussian_closed_form() {
    for (sigma, steps, delta) in [(0.7, 1, 1e-5_f64), (2.0, 10, 1e-6), (10.0, 1000, 1e-5)] {
        let mut accountant = RdpAccountant::new();
        accountant.compose_subsampled_gaussian(1.0, sigma, steps).unwrap();
        let mut best = (f64::INFINITY, 0.0);
        for (&order, &rdp) in DEFAULT_ORDERS.iter().zip(accountant.rdp()) {
            let closed = steps as f64 * order / (2.0 * sigma * sigma);
            assert!(relative_error(rdp, closed) < 1e-14, "σ {sigma} α {order}: {rdp} vs {closed}");
            let eps = closed + ((order - 1.0) / order).ln() - (delta.ln() + order.ln()) / (order - 1.0);
            if eps < best.0 {
                best = (eps, order);
            }
        }
        let (eps, order) = accountant.epsilon(delta).unwrap();
        assert!(relative_error(eps, best.0) < 1e-14 && order == best.1, "σ {sigma}: {eps}@{order} vs {best:?}");
        let mut gaussian = RdpAccountant::new();
        for _ in 0..steps {
            gaussian.compose_gaussian(sigma).unwrap();
        }
        for (a, b) in gaussian.rdp().iter().zip(accountant.rdp()) {
            assert!(relative_error(*a, *b) < 1e-12);
        }
    }
}

/// A_α = E_{z∼N(0,σ²)}[((1−q) + q e^{(2z−1)/(2σ²)})^α] by the trapezoid rule on a fine grid,
/// an independent check of both series.
fn rdp_by_quadrature(q: f64, sigma: f64, order: f64) -> f64 {
    let (lo, hi, n) = (-30.0 * sigma, 30.0 * sigma + 1.0 + order / sigma.min(1.0), 400_000);
    let h = (hi - lo) / n as f64;
    let mut a = 0.0;
    for i in 0..=n {
        let z: f64 = lo + i as f64 * h;
        let density = (-z * z / (2.0 * sigma * sigma)).exp() / (sigma * (2.0 * std::f64::consts::PI).sqrt());
        let ratio = (1.0 - q) + q * ((2.0 * z - 1.0) / (2.0 * sigma * sigma)).exp();
        let w = if i == 0 || i == n { 0.5 } else { 1.0 };
        a += w * density * ratio.powf(order);
    }
    (a * h).ln() / (order - 1.0)
}

#[test]
fn rdp_at_integer_and_fractional_orders_matches_quadrature() {
    for (q, sigma) in [(0.05, 1.0), (0.3, 1.5), (0.01, 0.8), (0.7, 4.0)] {
        for order in [1.1, 1.5, 2.0, 2.7, 4.0, 6.3, 12.0] {
            let series = subsampled_gaussian_rdp(q, sigma, order).unwrap();
            let numeric = rdp_by_quadrature(q, sigma, order);
            assert!(relative_error(series, numeric) < 1e-6, "q {q} σ {sigma} α {order}: series {series} vs quadrature {numeric}");
        }
    }
}

#[test]
fn epsilon_is_monotone_in_noise_steps_and_sample_rate() {
    let delta = 1e-5;
    let sigmas = [0.5, 0.8, 1.0, 1.3, 2.0, 4.0, 10.0];
    for q in [1e-3, 0.01, 0.2, 1.0] {
        let eps: Vec<f64> = sigmas.iter().map(|&s| epsilon(q, s, 100, delta).unwrap()).collect();
        assert!(eps.windows(2).all(|w| w[1] < w[0]), "ε must fall as σ grows (q {q}): {eps:?}");
    }
    let steps = [1u64, 10, 100, 1000, 10_000];
    let eps: Vec<f64> = steps.iter().map(|&t| epsilon(0.01, 1.0, t, delta).unwrap()).collect();
    assert!(eps.windows(2).all(|w| w[1] > w[0]), "ε must grow with steps: {eps:?}");
    let rates = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 1.0];
    let eps: Vec<f64> = rates.iter().map(|&q| epsilon(q, 1.0, 100, delta).unwrap()).collect();
    assert!(eps.windows(2).all(|w| w[1] > w[0]), "ε must grow with q: {eps:?}");
    assert!(epsilon(0.01, 1.0, 100, 1e-6).unwrap() > epsilon(0.01, 1.0, 100, 1e-5).unwrap(), "smaller δ costs more ε");
}

#[test]
fn composition_adds_rdp() {
    let mut twice = RdpAccountant::new();
    twice.compose_subsampled_gaussian(0.02, 1.1, 700).unwrap();
    twice.compose_subsampled_gaussian(0.02, 1.1, 700).unwrap();
    let mut once = RdpAccountant::new();
    once.compose_subsampled_gaussian(0.02, 1.1, 1400).unwrap();
    for ((a, b), order) in twice.rdp().iter().zip(once.rdp()).zip(DEFAULT_ORDERS) {
        assert!(relative_error(*a, *b) < 1e-12, "α {order}: {a} vs {b}");
    }
    assert!(relative_error(twice.epsilon(1e-5).unwrap().0, once.epsilon(1e-5).unwrap().0) < 1e-12);

    // Different mechanisms add order by order too.
    let mut mixed = RdpAccountant::new();
    mixed.compose_subsampled_gaussian(0.02, 1.1, 700).unwrap();
    mixed.compose_gaussian(5.0).unwrap();
    for (i, &order) in DEFAULT_ORDERS.iter().enumerate() {
        let expected = 700.0 * subsampled_gaussian_rdp(0.02, 1.1, order).unwrap() + order / 50.0;
        assert!(relative_error(mixed.rdp()[i], expected) < 1e-12, "α {order}");
    }
}

#[test]
fn degenerate_mechanisms() {
    assert_eq!(epsilon(0.0, 1.0, 1000, 1e-5).unwrap(), 0.0, "q = 0 releases nothing");
    assert_eq!(epsilon(0.1, 1.0, 0, 1e-5).unwrap(), 0.0, "no steps release nothing");
    assert_eq!(epsilon(0.1, 0.0, 10, 1e-5).unwrap(), f64::INFINITY, "σ = 0 is no privacy");
    assert_eq!(subsampled_gaussian_rdp(0.0, 0.0, 2.0).unwrap(), 0.0);
    assert_eq!(subsampled_gaussian_rdp(0.5, 0.0, 2.5).unwrap(), f64::INFINITY);
    assert_eq!(RdpAccountant::new().epsilon(1e-5).unwrap().0, 0.0);
    // Nothing to hide: σ = 0 already fits the budget.
    assert_eq!(calibrate_noise_multiplier(&RdpAccountant::new(), 1.0, 0.0, 100, 1e-5).unwrap(), 0.0);
    // Custom orders.
    let mut custom = RdpAccountant::with_orders(vec![2.0, 8.0, 32.0]).unwrap();
    custom.compose_subsampled_gaussian(1.0, 2.0, 1).unwrap();
    assert_eq!(custom.rdp(), &[0.25, 1.0, 4.0]);
}

fn error_of<T: std::fmt::Debug>(result: privdistill::Result<T>) -> String {
    result.expect_err("bad input must be an error").to_string()
}

#[test]
fn bad_input_names_the_field() {
    for q in [-0.1, 1.5, f64::NAN] {
        assert!(error_of(epsilon(q, 1.0, 10, 1e-5)).contains("sample_rate"));
    }
    for sigma in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(error_of(epsilon(0.1, sigma, 10, 1e-5)).contains("noise_multiplier"));
    }
    for delta in [0.0, 1.0, -1e-5, f64::NAN] {
        assert!(error_of(epsilon(0.1, 1.0, 10, delta)).contains("delta"));
    }
    let base = RdpAccountant::new();
    for target in [0.0, -1.0, f64::INFINITY, f64::NAN] {
        assert!(error_of(calibrate_noise_multiplier(&base, target, 0.1, 10, 1e-5)).contains("target_epsilon"));
    }
    assert!(error_of(calibrate_noise_multiplier(&base, 1.0, 2.0, 10, 1e-5)).contains("sample_rate"));
    assert!(error_of(calibrate_noise_multiplier(&base, 1.0, 0.1, 10, 0.0)).contains("delta"));
    // With 63 as the largest order, the conversion alone costs ~0.1 at δ = 1e-5.
    let unreachable = error_of(calibrate_noise_multiplier(&base, 0.05, 0.01, 1000, 1e-5));
    assert!(unreachable.contains("target_epsilon") && unreachable.contains("unreachable"), "{unreachable}");
    let mut spent = RdpAccountant::new();
    spent.compose_gaussian(0.5).unwrap();
    assert!(error_of(calibrate_noise_multiplier(&spent, 1.0, 0.01, 100, 1e-5)).contains("unreachable"), "the base alone exceeds ε = 1");
    assert!(error_of(RdpAccountant::with_orders(vec![])).contains("orders"));
    assert!(error_of(RdpAccountant::with_orders(vec![2.0, 1.0])).contains("orders"));
    assert!(error_of(subsampled_gaussian_rdp(0.1, 1.0, 0.5)).contains("order"));
}

fn privdistill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_privdistill")).args(args).output().expect("run privdistill")
}

#[test]
fn cli_prints_epsilon_and_sigma() {
    let out = privdistill(&["dp", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.0", "--steps", "1000", "--delta", "1e-5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    let printed: f64 = line.trim().strip_prefix("ε = ").and_then(|s| s.split_whitespace().next()).unwrap().parse().unwrap();
    let expected = epsilon(0.01, 1.0, 1000, 1e-5).unwrap();
    assert!((printed - expected).abs() <= 5e-5, "{line} vs {expected}");
    assert!(line.contains("δ = 1e-5") && line.contains("best order"), "{line}");

    let out = privdistill(&[
        "dp",
        "epsilon",
        "--sample-rate",
        "0.01",
        "--noise-multiplier",
        "1.0",
        "--steps",
        "1000",
        "--delta",
        "1e-5",
        "--semantic-noise-multiplier",
        "2.0",
        "--json",
    ]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let composed = table().composed.into_iter().find(|r| r.q == 0.01 && r.semantic_sigma == 2.0).unwrap();
    assert!(relative_error(json["epsilon"].as_f64().unwrap(), composed.epsilon) <= TABLE_TOLERANCE, "{json}");
    assert_eq!(json["best_order"].as_f64(), Some(composed.best_alpha));

    let out = privdistill(&["dp", "calibrate", "--epsilon", "3", "--sample-rate", "0.01", "--steps", "1000", "--delta", "1e-5", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sigma = json["noise_multiplier"].as_f64().unwrap();
    assert_eq!(sigma, calibrate_noise_multiplier(&RdpAccountant::new(), 3.0, 0.01, 1000, 1e-5).unwrap());
    assert!(json["epsilon"].as_f64().unwrap() <= 3.0);

    let out = privdistill(&["dp", "calibrate", "--epsilon", "3", "--sample-rate", "0.01", "--steps", "1000", "--delta", "1e-5"]);
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("σ = ") && line.lines().count() == 1, "{line}");
}

#[test]
fn cli_rejects_bad_input_with_one_line() {
    for (args, field) in [
        (vec!["dp", "epsilon", "--sample-rate", "1.5", "--noise-multiplier", "1", "--steps", "10", "--delta", "1e-5"], "sample_rate"),
        (vec!["dp", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "-1", "--steps", "10", "--delta", "1e-5"], "noise_multiplier"),
        (vec!["dp", "epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "2"], "delta"),
        (vec!["dp", "calibrate", "--epsilon", "0", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"], "target_epsilon"),
        (vec!["dp", "calibrate", "--epsilon", "0.01", "--sample-rate", "0.1", "--steps", "10", "--delta", "1e-5"], "unreachable"),
    ] {
        let out = privdistill(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", String::from_utf8_lossy(&out.stdout));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(field), "{args:?}: {stderr}");
    }
}
