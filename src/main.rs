//! The privdistill command line: parses arguments and calls one library function.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "privdistill", version, about = "Privacy Distillation for medical text-to-image diffusion models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the version, CPU, SIMD features and CUDA status.
    Doctor,
    /// Run the whole pipeline on the shipped chest X-ray data.
    Demo,
    /// Datasets: split by patient, import, generate phantoms, summarise.
    Data(Box<privdistill::data::cli::DataArgs>),
    /// Run one model on inputs from a safetensors file (and backpropagate a weighted output).
    Forward(ForwardCli),
    /// Evaluation tools: FID/KID/precision/recall between image sets, the downstream classifier.
    Eval(privdistill::pipeline::eval_cli::EvalArgs),
    /// Train the downstream DenseNet classifier (cross-entropy, then AUC-M + PESG) and test it.
    TrainClassifier(privdistill::pipeline::eval_cli::ClassifierArgs),
    /// Evaluate real, synthetic, filtered and distilled data (FID, KID, precision/recall, MS-SSIM, AUC).
    Evaluate(privdistill::pipeline::eval_cli::EvaluateArgs),
    /// Write report.md, report.json and figures from whatever the work directory holds.
    Report(privdistill::pipeline::eval_cli::ReportArgs),
}

#[derive(clap::Args)]
struct ForwardCli {
    #[arg(long, value_enum)]
    model: privdistill::models::zoo::ModelKind,
    /// The model's config.json (diffusers/transformers) or constructor arguments (torchvision).
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: privdistill::Device,
    #[arg(long, default_value = "f32")]
    dtype: privdistill::DType,
    /// Tensor `R` shaped like the first output: backpropagate L = sum(output · R).
    #[arg(long)]
    loss_weights: Option<PathBuf>,
    /// Where to write `input:<name>` and `param:<name>` gradients.
    #[arg(long)]
    grads_out: Option<PathBuf>,
    /// Training mode: BatchNorm uses batch statistics.
    #[arg(long)]
    train: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => {
            print!("{}", privdistill::doctor::report());
            Ok(())
        }
        Command::Demo => Err(anyhow::anyhow!(
            "demo: the pipeline is not built yet. When it is, `demo` will train a VAE and a latent diffusion model on \
             assets/cxr-real-a, sample 10 images per prompt, score them with a re-identification network, filter, train the \
             distilled model and write a report. Today only the tensor runtime exists (see `privdistill doctor`)."
        )),
        Command::Data(args) => privdistill::data::cli::run(*args),
        Command::Forward(a) => privdistill::pipeline::forward::forward(&privdistill::pipeline::forward::ForwardArgs {
            model: a.model,
            config: a.config,
            weights: a.weights,
            inputs: a.inputs,
            output: a.output,
            device: a.device,
            dtype: a.dtype,
            loss_weights: a.loss_weights,
            grads_out: a.grads_out,
            train: a.train,
        })
        .map_err(anyhow::Error::from),
        Command::Eval(a) => match &a.command {
            privdistill::pipeline::eval_cli::EvalCommand::Fid(f) => privdistill::pipeline::eval_cli::run_fid(f),
            privdistill::pipeline::eval_cli::EvalCommand::Classifier(c) => privdistill::pipeline::eval_cli::run_classifier(c).map(|_| ()),
        }
        .map_err(anyhow::Error::from),
        Command::TrainClassifier(a) => privdistill::pipeline::eval_cli::run_classifier(&a).map(|_| ()).map_err(anyhow::Error::from),
        Command::Evaluate(a) => privdistill::pipeline::eval_cli::run_evaluate(&a).map_err(anyhow::Error::from),
        Command::Report(a) => privdistill::pipeline::eval_cli::run_report(&a).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
