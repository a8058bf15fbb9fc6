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
    /// Train the siamese re-identification network (s_reid) on a split real dataset.
    TrainReid(privdistill::pipeline::scorer_stage::StageArgs),
    /// Train the retrieval embedding (nearest real image of an unconditional sample).
    TrainRetrieval(privdistill::pipeline::scorer_stage::StageArgs),
    /// Train the image/text alignment encoders (s_align), optionally from pretrained towers.
    TrainAlign(privdistill::pipeline::scorer_stage::StageArgs),
    /// Audit the re-identification filter: sensitivity/specificity on held-out pairs, augmented copies, memorised samples.
    Audit(AuditCli),
}

#[derive(clap::Args)]
struct AuditCli {
    #[command(flatten)]
    stage: privdistill::pipeline::scorer_stage::StageArgs,
    /// The re-identification scorer folder.
    #[arg(long)]
    reid: Option<PathBuf>,
    /// Samples of a deliberately memorising model (a synthetic dataset folder).
    #[arg(long)]
    synthetic: Option<PathBuf>,
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

/// Prints a stage summary as JSON on stdout.
fn print_summary<T: serde::Serialize>(summary: T) {
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
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
        Command::TrainReid(a) => {
            use privdistill::pipeline::train_reid::{run, TrainReidConfig};
            let base =
                if a.demo { TrainReidConfig::demo(&a.data_or("work/real"), &a.out_or("work/reid")) } else { TrainReidConfig::default() };
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(print_summary).map_err(anyhow::Error::from)
        }
        Command::TrainRetrieval(a) => {
            use privdistill::pipeline::train_retrieval::{run, TrainRetrievalConfig};
            let base = if a.demo {
                TrainRetrievalConfig::demo(&a.data_or("work/real"), &a.out_or("work/retrieval"))
            } else {
                TrainRetrievalConfig::default()
            };
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(print_summary).map_err(anyhow::Error::from)
        }
        Command::TrainAlign(a) => {
            use privdistill::pipeline::train_align::{run, TrainAlignConfig};
            let base =
                if a.demo { TrainAlignConfig::demo(&a.data_or("work/real"), &a.out_or("work/align")) } else { TrainAlignConfig::default() };
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(print_summary).map_err(anyhow::Error::from)
        }
        Command::Audit(a) => {
            use privdistill::pipeline::audit::{run, AuditConfig};
            use privdistill::pipeline::scorer_stage::path_override;
            let mut stage = a.stage;
            let base = if stage.demo {
                AuditConfig::demo(
                    a.reid.as_deref().unwrap_or("work/reid".as_ref()),
                    &stage.data_or("work/real"),
                    &stage.out_or("work/audit"),
                )
            } else {
                AuditConfig::default()
            };
            for (key, path) in [("reid", &a.reid), ("synthetic", &a.synthetic)] {
                if let Some(p) = path {
                    stage.overrides.push(path_override(key, p));
                }
            }
            stage.resolve(&base).and_then(|cfg| run(&cfg)).map(print_summary).map_err(anyhow::Error::from)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
