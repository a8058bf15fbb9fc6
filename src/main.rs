//! The privdistill command line: parses arguments and calls one library function.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

use privdistill::backend::cpu::host_alloc::{CachingAllocator, DEFAULT_CAPACITY};

// Freed tensor-sized blocks are reused instead of unmapped and faulted in again.
#[global_allocator]
static ALLOCATOR: CachingAllocator = CachingAllocator::new(DEFAULT_CAPACITY);

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
    /// Run the whole pipeline on the shipped chest X-ray data (or `--data DIR`), ending in a report.
    Demo(privdistill::pipeline::run_cli::DemoArgs),
    /// Run the whole Privacy Distillation chain from a pipeline.toml in one work directory (resumable).
    Run(privdistill::pipeline::run_cli::RunArgs),
    /// Score synthetic images: s_reid against the real image of their prompt (or nearest real images), s_align.
    Score(privdistill::pipeline::run_cli::ScoreArgs),
    /// Drop samples with s_reid >= delta, keep the best-aligned per prompt; writes the filtered set and a decision log.
    Filter(privdistill::pipeline::run_cli::FilterArgs),
    /// Train the distilled model on a filtered set, refused unless its lineage holds no real image.
    Distill(privdistill::pipeline::run_cli::DistillArgs),
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
    /// Train the autoencoder (VAE) of the latent diffusion model and estimate its scaling factor.
    TrainVae(StageCli),
    /// Train a text-to-image latent diffusion model and write a diffusers model folder.
    TrainLdm(StageCli),
    /// Fine-tune a model folder's UNet with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise); writes dp.json.
    TrainLdmDp(StageCli),
    /// Sample images for prompts with classifier-free guidance into a synthetic dataset.
    Sample(Box<SampleCli>),
    /// Write a model folder for sharing (diffusers layout + model card).
    Export(ExportCli),
    /// Evaluation tools: FID/KID/precision/recall between image sets, the downstream classifier.
    Eval(privdistill::pipeline::eval_cli::EvalArgs),
    /// Train the downstream DenseNet classifier (cross-entropy, then AUC-M + PESG) and test it.
    TrainClassifier(privdistill::pipeline::eval_cli::ClassifierArgs),
    /// Evaluate real, synthetic, filtered and distilled data (FID, KID, precision/recall, MS-SSIM, AUC).
    Evaluate(privdistill::pipeline::eval_cli::EvaluateArgs),
    /// Write report.md, report.json and figures from whatever the work directory holds.
    Report(privdistill::pipeline::eval_cli::ReportArgs),
    /// Audit the re-identification filter: sensitivity/specificity on held-out pairs, augmented copies, memorised samples.
    Audit(AuditCli),
    /// Differential privacy accountant: ε of DP-SGD, or the noise multiplier for a budget.
    Dp(privdistill::pipeline::dp_cli::DpArgs),
    /// PrivImage, the DP baseline: semantic query, public pretraining, DP-SGD fine-tuning per ε, sample, score, evaluate.
    Privimage(privdistill::pipeline::privimage::PrivImageArgs),
}

/// A stage configured by a TOML file and `--set key=value` overrides.
#[derive(clap::Args)]
struct StageCli {
    /// The stage's config (TOML, or JSON by extension); omitted: the defaults (or the demo preset with --demo).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one option, e.g. `--set steps=200 --set optimizer.lr=1e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Start from the demo preset (work/ paths) instead of the full-size defaults.
    #[arg(long)]
    demo: bool,
    /// Continue from the checkpoint in the output folder.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
struct SampleCli {
    /// The model folder (ours, or any diffusers Stable Diffusion folder).
    #[arg(long)]
    model: PathBuf,
    /// A dataset folder / manifest.jsonl (each record's text), or a text file (one prompt a line).
    #[arg(long)]
    prompts: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Splits of a manifest to take prompts from, comma-separated (empty: all records).
    #[arg(long, value_delimiter = ',', default_value = "train")]
    splits: Vec<String>,
    /// Initial noise: a safetensors file with tensor `latents` [prompts × per-prompt, C, h, w].
    #[arg(long)]
    latents: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    per_prompt: usize,
    #[arg(long, default_value_t = 4.0)]
    guidance_scale: f64,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Default: the sampler the model's scheduler/ names.
    #[arg(long, value_enum)]
    sampler: Option<privdistill::diffusion::sampler::SamplerKind>,
    /// DDIM's eta.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only the first K prompts.
    #[arg(long)]
    limit_prompts: Option<usize>,
    /// Only these prompt indices, comma-separated.
    #[arg(long, value_delimiter = ',')]
    prompt_indices: Option<Vec<usize>>,
}

#[derive(clap::Args)]
struct ExportCli {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Model card fields: a JSON object file (data, delta, counts, R_reid, metrics, ...).
    #[arg(long)]
    card: Option<PathBuf>,
    #[arg(long)]
    title: Option<String>,
}

fn print_summary<T: serde::Serialize>(summary: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(summary)?);
    Ok(())
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
    /// `score`'s output for --synthetic: report what the filter removed by its own scores.
    #[arg(long)]
    scores: Option<PathBuf>,
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
fn show_summary<T: serde::Serialize>(summary: T) {
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor => {
            print!("{}", privdistill::doctor::report());
            Ok(())
        }
        Command::Demo(a) => privdistill::pipeline::run_cli::demo(&a).map_err(anyhow::Error::from),
        Command::Run(a) => privdistill::pipeline::run_cli::run(&a).map_err(anyhow::Error::from),
        Command::Score(a) => privdistill::pipeline::run_cli::score(&a).map_err(anyhow::Error::from),
        Command::Filter(a) => privdistill::pipeline::run_cli::filter(&a).map_err(anyhow::Error::from),
        Command::Distill(a) => privdistill::pipeline::run_cli::distill(&a).map_err(anyhow::Error::from),
        Command::Privimage(a) => privdistill::pipeline::privimage::cli(&a).map_err(anyhow::Error::from),
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
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(show_summary).map_err(anyhow::Error::from)
        }
        Command::TrainRetrieval(a) => {
            use privdistill::pipeline::train_retrieval::{run, TrainRetrievalConfig};
            let base = if a.demo {
                TrainRetrievalConfig::demo(&a.data_or("work/real"), &a.out_or("work/retrieval"))
            } else {
                TrainRetrievalConfig::default()
            };
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(show_summary).map_err(anyhow::Error::from)
        }
        Command::TrainAlign(a) => {
            use privdistill::pipeline::train_align::{run, TrainAlignConfig};
            let base =
                if a.demo { TrainAlignConfig::demo(&a.data_or("work/real"), &a.out_or("work/align")) } else { TrainAlignConfig::default() };
            a.resolve(&base).and_then(|cfg| run(&cfg)).map(show_summary).map_err(anyhow::Error::from)
        }
        Command::TrainVae(a) => (|| {
            use privdistill::pipeline::{train_ldm::configure, train_vae};
            let base = if a.demo { train_vae::TrainVaeConfig::demo("work/real", "work/vae") } else { Default::default() };
            let mut cfg: train_vae::TrainVaeConfig = configure(a.config.as_deref(), base, &a.set)?;
            cfg.resume |= a.resume;
            print_summary(&train_vae::run(&cfg)?)
        })(),
        Command::TrainLdm(a) => (|| {
            use privdistill::pipeline::train_ldm::{configure, run, TrainLdmConfig};
            let base = if a.demo { TrainLdmConfig::demo("work/real", "work/vae", "work/ldm-real") } else { Default::default() };
            let mut cfg: TrainLdmConfig = configure(a.config.as_deref(), base, &a.set)?;
            cfg.resume |= a.resume;
            print_summary(&run(&cfg)?)
        })(),
        Command::TrainLdmDp(a) => (|| {
            use privdistill::pipeline::train_ldm::configure;
            use privdistill::pipeline::train_ldm_dp::{run, TrainLdmDpConfig};
            let base = if a.demo { TrainLdmDpConfig::demo("work/real", "work/ldm-real", "work/ldm-dp") } else { Default::default() };
            let mut cfg: TrainLdmDpConfig = configure(a.config.as_deref(), base, &a.set)?;
            cfg.resume |= a.resume;
            print_summary(&run(&cfg)?)
        })(),
        Command::Sample(a) => (|| {
            use privdistill::pipeline::sample::{run, SampleConfig};
            let cfg = SampleConfig {
                model: a.model,
                prompts: a.prompts,
                splits: a.splits.into_iter().filter(|s| !s.is_empty()).collect(),
                out: a.out,
                per_prompt: a.per_prompt,
                guidance_scale: a.guidance_scale,
                steps: a.steps,
                sampler: a.sampler,
                eta: a.eta,
                batch_size: a.batch_size,
                seed: a.seed,
                limit_prompts: a.limit_prompts,
                prompt_indices: a.prompt_indices,
                latents: a.latents,
                stop_after_batches: None,
            };
            print_summary(&run(&cfg)?)
        })(),
        Command::Export(a) => (|| {
            use privdistill::pipeline::export::{run, ExportConfig};
            let card = match &a.card {
                Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)
                    .map_err(|e| anyhow::anyhow!("{}: model card fields must be a JSON object: {e}", p.display()))?,
                None => Default::default(),
            };
            let mut cfg = ExportConfig { model: a.model, out: a.out, card, ..Default::default() };
            if let Some(t) = a.title {
                cfg.title = t;
            }
            run(&cfg)?;
            Ok(())
        })(),
        Command::Eval(a) => match &a.command {
            privdistill::pipeline::eval_cli::EvalCommand::Fid(f) => privdistill::pipeline::eval_cli::run_fid(f),
            privdistill::pipeline::eval_cli::EvalCommand::Classifier(c) => privdistill::pipeline::eval_cli::run_classifier(c).map(|_| ()),
        }
        .map_err(anyhow::Error::from),
        Command::TrainClassifier(a) => privdistill::pipeline::eval_cli::run_classifier(&a).map(|_| ()).map_err(anyhow::Error::from),
        Command::Evaluate(a) => privdistill::pipeline::eval_cli::run_evaluate(&a).map_err(anyhow::Error::from),
        Command::Report(a) => privdistill::pipeline::eval_cli::run_report(&a).map_err(anyhow::Error::from),
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
            for (key, path) in [("reid", &a.reid), ("synthetic", &a.synthetic), ("scores", &a.scores)] {
                if let Some(p) = path {
                    stage.overrides.push(path_override(key, p));
                }
            }
            stage.resolve(&base).and_then(|cfg| run(&cfg)).map(show_summary).map_err(anyhow::Error::from)
        }
        Command::Dp(a) => privdistill::pipeline::dp_cli::run(&a).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
