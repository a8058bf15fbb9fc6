//! Command-line arguments of `run`, `demo`, `score`, `filter` and `distill`.

use super::filter::FilterConfig;
use super::run::{format_summary, run_pipeline, PipelineConfig};
use super::score::ScoreConfig;
use crate::privacy::filter::FilterRule;
use crate::privacy::lineage::Lineage;
use crate::{Error, Result};
use std::path::PathBuf;

/// `privdistill run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The pipeline config (TOML): data, work, preset, seed, split, filter, per-stage `[stages.<name>]` tables.
    #[arg(long)]
    pub config: PathBuf,
    /// Override one key, e.g. `--set filter.delta=0.4` or `--set stages.train-ldm.steps=400` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Rerun these stages even if unchanged (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
}

/// `privdistill demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// The real dataset (default: the shipped chest X-rays in assets/cxr-real-a).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The work directory (default: work/demo).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Override one pipeline key, as for `run` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Rerun these stages even if unchanged (repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
}

/// The shipped dataset: next to the binary's source tree, or below the current folder.
fn shipped_data() -> PathBuf {
    let here = PathBuf::from("assets/cxr-real-a");
    if here.join("manifest.jsonl").exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/cxr-real-a")
}

/// Run `run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let cfg = PipelineConfig::load(&args.config, &args.overrides)?;
    let summary = run_pipeline(&cfg, &args.force)?;
    print!("{}", format_summary(&summary));
    Ok(())
}

/// Run `demo`.
pub fn demo(args: &DemoArgs) -> Result<()> {
    let data = args.data.clone().unwrap_or_else(shipped_data);
    let work = args.work.clone().unwrap_or_else(|| PathBuf::from("work/demo"));
    let base = PipelineConfig::demo(&data, &work);
    let cfg = if args.overrides.is_empty() {
        base
    } else {
        let text = toml::to_string(&base).map_err(|e| Error::msg(format!("demo: {e}")))?;
        let path = PathBuf::from("demo preset");
        super::config::parse_config(&super::config::apply_overrides(&text, &args.overrides, &path)?, &path)?
    };
    eprintln!("privdistill demo: real data {}, work directory {}", data.display(), work.display());
    let summary = run_pipeline(&cfg, &args.force)?;
    print!("{}", format_summary(&summary));
    Ok(())
}

/// `privdistill score`.
#[derive(clap::Args, Debug, Clone)]
pub struct ScoreArgs {
    /// The real dataset the prompts came from.
    #[arg(long)]
    pub real: PathBuf,
    /// The synthetic dataset to score.
    #[arg(long)]
    pub synth: PathBuf,
    /// Re-identification network folder.
    #[arg(long)]
    pub reid: PathBuf,
    /// Alignment network folder.
    #[arg(long)]
    pub align: Option<PathBuf>,
    /// Retrieval network folder (for unconditional samples).
    #[arg(long)]
    pub retrieval: Option<PathBuf>,
    /// Output scores.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Real neighbours per unconditional sample.
    #[arg(long, default_value_t = 5)]
    pub neighbours: usize,
    /// Also compare prompted samples with their nearest real images (needs --retrieval); catches copies of other patients.
    #[arg(long)]
    pub prompted_neighbours: bool,
    /// Do not compute s_copy (the copy gate's score); `filter` then needs --no-copy-gate too.
    #[arg(long)]
    pub no_copy_gate: bool,
    /// Thumbnail side at which the copy gate compares images.
    #[arg(long, default_value_t = crate::privacy::copy_gate::DEFAULT_SIDE)]
    pub copy_gate_side: usize,
    /// Gaussian blur of the copy gate's thumbnails, in thumbnail pixels.
    #[arg(long, default_value_t = crate::privacy::copy_gate::DEFAULT_SMOOTHING)]
    pub copy_gate_smoothing: f64,
}

/// Run `score`.
pub fn score(a: &ScoreArgs) -> Result<()> {
    let s = super::score::run(&ScoreConfig {
        real: a.real.clone(),
        synth: a.synth.clone(),
        reid: a.reid.clone(),
        align: a.align.clone(),
        retrieval: a.retrieval.clone(),
        out: a.out.clone(),
        batch_size: a.batch_size,
        neighbours: a.neighbours,
        prompted_neighbours: a.prompted_neighbours,
        copy_gate: !a.no_copy_gate,
        copy_gate_side: a.copy_gate_side,
        copy_gate_smoothing: a.copy_gate_smoothing,
    })?;
    println!("scored {} images ({} from an earlier run); mean s_reid {:.3}", s.scored, s.resumed, s.s_reid_mean);
    if let Some(m) = s.s_align_mean {
        println!("mean s_align {m:.3}");
    }
    if let Some(g) = &s.copy_gate {
        println!(
            "copy gate: {} real images, other-patient correlation median {:.3}, max {:.3}; s_copy ≥ 0.99 from correlation {}",
            g.calibration_images,
            g.calibration_median,
            g.calibration_max,
            g.threshold_q99.map_or("–".into(), |t| format!("{t:.3}"))
        );
    }
    Ok(())
}

/// `privdistill filter`.
#[derive(clap::Args, Debug, Clone)]
pub struct FilterArgs {
    /// scores.jsonl from `score`.
    #[arg(long)]
    pub scores: PathBuf,
    /// The synthetic dataset the scores refer to.
    #[arg(long)]
    pub synth: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Drop samples with s_reid ≥ delta.
    #[arg(long, default_value_t = 0.5)]
    pub delta: f64,
    /// Samples kept per prompt (best s_align first).
    #[arg(long, default_value_t = 1)]
    pub keep_per_prompt: usize,
    /// Apply the paper's rule only: no copy gate.
    #[arg(long)]
    pub no_copy_gate: bool,
    /// The copy gate drops samples with s_copy ≥ this.
    #[arg(long, default_value_t = 0.99)]
    pub copy_quantile: f64,
}

/// Run `filter`.
pub fn filter(a: &FilterArgs) -> Result<()> {
    let s = super::filter::run(&FilterConfig {
        scores: a.scores.clone(),
        synth: a.synth.clone(),
        out: a.out.clone(),
        rule: FilterRule { delta: a.delta, keep_per_prompt: a.keep_per_prompt, copy_gate: !a.no_copy_gate, copy_quantile: a.copy_quantile },
    })?;
    println!(
        "R_reid = {:.2} % ({} of {} re-identified at δ = {}); kept {}, dropped {}",
        100.0 * s.r_reid,
        s.reidentified,
        s.generated,
        s.delta,
        s.kept,
        s.dropped
    );
    if let Some(q) = s.copy_gate {
        println!("copy gate (s_copy ≥ {q}): {} near-copies, {} of them dropped by the gate alone", s.near_copies, s.dropped_near_copy);
    }
    if !s.prompts_all_dropped.is_empty() {
        println!("{} prompts lost every sample: {:?}", s.prompts_all_dropped.len(), s.prompts_all_dropped);
    }
    Ok(())
}

/// `privdistill distill`: `train-ldm` on a filtered set, refused unless the
/// lineage proves every training image was generated and none is real.
#[derive(clap::Args, Debug, Clone)]
pub struct DistillArgs {
    /// The filtered dataset.
    #[arg(long)]
    pub filtered: PathBuf,
    /// The run's lineage.json (with the real dataset registered and the sampling stage recorded).
    #[arg(long)]
    pub lineage: PathBuf,
    /// train-ldm config (TOML); its `data` is replaced by `--filtered`.
    #[arg(long)]
    pub config: PathBuf,
    /// Output model folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Override one train-ldm key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Run `distill`.
pub fn distill(a: &DistillArgs) -> Result<()> {
    let lineage = Lineage::load_or_new(&a.lineage)?;
    if !a.lineage.exists() {
        return Err(Error::file(&a.lineage, "does not exist: distill needs the run's lineage to prove the data is synthetic"));
    }
    let filtered = crate::data::Manifest::load(&a.filtered)?;
    lineage.check_synthetic_only(&filtered)?;
    let text = std::fs::read_to_string(&a.config).map_err(|e| Error::io(&a.config, e))?;
    let text = if a.overrides.is_empty() { text } else { super::config::apply_overrides(&text, &a.overrides, &a.config)? };
    let mut cfg: super::train_ldm::TrainLdmConfig = super::config::parse_config(&text, &a.config)?;
    cfg.data = a.filtered.clone();
    cfg.splits = Vec::new();
    cfg.out = a.out.clone();
    let summary = super::train_ldm::run(&cfg)?;
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    Ok(())
}
