//! `privdistill dp epsilon` and `privdistill dp calibrate`: the Rényi-DP
//! accountant ([`crate::privacy::dp::rdp`]) on the command line.

use crate::privacy::dp::rdp::{calibrate_noise_multiplier, RdpAccountant};
use crate::Result;
use serde::Serialize;

/// `privdistill dp …`.
#[derive(clap::Args, Debug)]
pub struct DpArgs {
    /// Which tool.
    #[command(subcommand)]
    pub command: DpCommand,
}

/// The accountant's tools.
#[derive(clap::Subcommand, Debug)]
pub enum DpCommand {
    /// Print ε of DP-SGD (the sampled Gaussian mechanism run --steps times) at --delta.
    Epsilon(EpsilonArgs),
    /// Print the smallest noise multiplier σ whose ε at --delta stays within --epsilon.
    Calibrate(CalibrateArgs),
}

/// `privdistill dp epsilon`.
#[derive(clap::Args, Debug)]
pub struct EpsilonArgs {
    /// Sampling rate q: batch size / dataset size (Poisson sampling).
    #[arg(long, allow_negative_numbers = true)]
    pub sample_rate: f64,
    /// Noise standard deviation / clipping norm.
    #[arg(long, allow_negative_numbers = true)]
    pub noise_multiplier: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// δ of (ε, δ)-DP: below 1 / dataset size, e.g. 1e-5.
    #[arg(long, allow_negative_numbers = true)]
    pub delta: f64,
    /// Also spend one full-data Gaussian query of this noise multiplier (PrivImage's semantic query).
    #[arg(long, allow_negative_numbers = true)]
    pub semantic_noise_multiplier: Option<f64>,
    /// Print a JSON object instead of the one-line summary.
    #[arg(long)]
    pub json: bool,
}

/// `privdistill dp calibrate`.
#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// The privacy budget ε.
    #[arg(long, allow_negative_numbers = true)]
    pub epsilon: f64,
    /// Sampling rate q: batch size / dataset size (Poisson sampling).
    #[arg(long, allow_negative_numbers = true)]
    pub sample_rate: f64,
    /// Number of DP-SGD steps.
    #[arg(long)]
    pub steps: u64,
    /// δ of (ε, δ)-DP: below 1 / dataset size, e.g. 1e-5.
    #[arg(long, allow_negative_numbers = true)]
    pub delta: f64,
    /// A full-data Gaussian query of this noise multiplier spends part of the budget first (PrivImage's semantic query).
    #[arg(long, allow_negative_numbers = true)]
    pub semantic_noise_multiplier: Option<f64>,
    /// Print a JSON object instead of the one-line summary.
    #[arg(long)]
    pub json: bool,
}

/// What `dp epsilon` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpsilonReport {
    /// ε of (ε, δ)-DP for everything spent.
    pub epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The RDP order at which the conversion to (ε, δ) is tightest.
    pub best_order: f64,
    /// DP-SGD's sampling rate q.
    pub sample_rate: f64,
    /// DP-SGD's noise multiplier σ.
    pub noise_multiplier: f64,
    /// DP-SGD's number of steps.
    pub steps: u64,
    /// The semantic query's noise multiplier, if it was spent too.
    pub semantic_noise_multiplier: Option<f64>,
}

/// What `dp calibrate` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrateReport {
    /// The smallest DP-SGD noise multiplier σ that fits the budget.
    pub noise_multiplier: f64,
    /// ε actually reached with `noise_multiplier` (≤ the target).
    pub epsilon: f64,
    /// The budget ε asked for.
    pub target_epsilon: f64,
    /// The δ it holds at.
    pub delta: f64,
    /// The RDP order at which the conversion to (ε, δ) is tightest.
    pub best_order: f64,
    /// DP-SGD's sampling rate q.
    pub sample_rate: f64,
    /// DP-SGD's number of steps.
    pub steps: u64,
    /// The semantic query's noise multiplier, if it spent part of the budget first.
    pub semantic_noise_multiplier: Option<f64>,
}

/// The accountant with the semantic query already spent, if there is one.
fn base_accountant(semantic_noise_multiplier: Option<f64>) -> Result<RdpAccountant> {
    let mut accountant = RdpAccountant::new();
    if let Some(sigma) = semantic_noise_multiplier {
        accountant.compose_gaussian(sigma)?;
    }
    Ok(accountant)
}

/// `dp epsilon` without printing.
pub fn epsilon_report(args: &EpsilonArgs) -> Result<EpsilonReport> {
    let mut accountant = base_accountant(args.semantic_noise_multiplier)?;
    accountant.compose_subsampled_gaussian(args.sample_rate, args.noise_multiplier, args.steps)?;
    let (epsilon, best_order) = accountant.epsilon(args.delta)?;
    Ok(EpsilonReport {
        epsilon,
        delta: args.delta,
        best_order,
        sample_rate: args.sample_rate,
        noise_multiplier: args.noise_multiplier,
        steps: args.steps,
        semantic_noise_multiplier: args.semantic_noise_multiplier,
    })
}

/// `dp calibrate` without printing.
pub fn calibrate_report(args: &CalibrateArgs) -> Result<CalibrateReport> {
    let base = base_accountant(args.semantic_noise_multiplier)?;
    let noise_multiplier = calibrate_noise_multiplier(&base, args.epsilon, args.sample_rate, args.steps, args.delta)?;
    let mut spent = base;
    spent.compose_subsampled_gaussian(args.sample_rate, noise_multiplier, args.steps)?;
    let (epsilon, best_order) = spent.epsilon(args.delta)?;
    Ok(CalibrateReport {
        noise_multiplier,
        epsilon,
        target_epsilon: args.epsilon,
        delta: args.delta,
        best_order,
        sample_rate: args.sample_rate,
        steps: args.steps,
        semantic_noise_multiplier: args.semantic_noise_multiplier,
    })
}

/// Run `privdistill dp …` and print its figure.
pub fn run(args: &DpArgs) -> Result<()> {
    match &args.command {
        DpCommand::Epsilon(a) => {
            let report = epsilon_report(a)?;
            if a.json {
                print_json(&report)
            } else {
                println!("ε = {:.4} (δ = {:e}, best order {})", report.epsilon, report.delta, report.best_order);
                Ok(())
            }
        }
        DpCommand::Calibrate(a) => {
            let report = calibrate_report(a)?;
            if a.json {
                print_json(&report)
            } else {
                println!(
                    "σ = {:.6} (ε = {:.4} ≤ {}, δ = {:e}, best order {})",
                    report.noise_multiplier, report.epsilon, report.target_epsilon, report.delta, report.best_order
                );
                Ok(())
            }
        }
    }
}

fn print_json<T: Serialize>(report: &T) -> Result<()> {
    let text = serde_json::to_string(report).map_err(|e| crate::Error::msg(format!("dp: cannot write the report as JSON: {e}")))?;
    println!("{text}");
    Ok(())
}
