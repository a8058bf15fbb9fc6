//! `run` and `demo`: the five steps of Privacy Distillation chained in one work
//! directory. Each stage is skipped when its config, inputs and outputs are
//! unchanged since it last finished, so an interrupted run resumes; every
//! stage's wall time is printed and saved in `timings.json`.

use super::config::{apply_overrides, parse_config};
use super::filter::FilterConfig;
use super::prepare::{prepare_real, SplitSettings};
use super::score::ScoreConfig;
use super::workdir::{StageOutput, StageRunner, WorkDir};
use crate::data::Manifest;
use crate::io::hash::sha256_file;
use crate::privacy::filter::FilterRule;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// How big the models and runs are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Small models and short runs: the whole chain in minutes on a laptop CPU.
    #[default]
    Demo,
    /// The paper's sizes (ResNet-50 at 256 px, DenseNet-121 at 224 px, long training).
    Paper,
}

/// `pipeline.toml`: the whole chain's settings. Every stage's own settings
/// can be changed under `[stages.<name>]` with the keys of that stage's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The real dataset (a folder with `manifest.jsonl`).
    pub data: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// Model and run sizes.
    #[serde(default)]
    pub preset: Preset,
    /// Seed of every stage.
    #[serde(default)]
    pub seed: u64,
    /// Patient-level split (used when the dataset has none).
    #[serde(default)]
    pub split: SplitSettings,
    /// δ and samples kept per prompt.
    #[serde(default)]
    pub filter: FilterRule,
    /// An existing VAE (a VAE folder or a diffusers model folder): skips `train-vae`.
    #[serde(default)]
    pub vae: Option<PathBuf>,
    /// Also audit the filter (augmented copies, held-out pairs).
    #[serde(default = "yes")]
    pub audit: bool,
    /// Per-stage overrides: `[stages.train-ldm] steps = 400`.
    #[serde(default)]
    pub stages: BTreeMap<String, toml::Table>,
}

fn yes() -> bool {
    true
}

impl PipelineConfig {
    /// The demo preset on `data`, in `work`.
    pub fn demo(data: &Path, work: &Path) -> PipelineConfig {
        PipelineConfig {
            data: data.to_path_buf(),
            work: work.to_path_buf(),
            preset: Preset::Demo,
            seed: 0,
            split: SplitSettings { val: 0.15, test: 0.2, seed: 0 },
            filter: FilterRule::default(),
            vae: None,
            audit: true,
            stages: BTreeMap::new(),
        }
    }

    /// Read `pipeline.toml`, applying `--set key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let text = if overrides.is_empty() { text } else { apply_overrides(&text, overrides, path)? };
        parse_config(&text, path)
    }

    fn check(&self) -> Result<()> {
        self.filter.validate()?;
        for name in self.stages.keys() {
            if !STAGES.contains(&name.as_str()) {
                return Err(Error::msg(format!("pipeline config: [stages.{name}] is not a stage (stages: {})", STAGES.join(", "))));
            }
        }
        Ok(())
    }
}

/// Stage names, in the order `run` executes them.
pub const STAGES: &[&str] = &[
    "prepare",
    "train-vae",
    "train-ldm",
    "sample",
    "train-reid",
    "train-align",
    "train-retrieval",
    "score",
    "filter",
    "audit",
    "distill",
    "sample-distill",
    "score-distill",
    "evaluate",
    "export",
    "report",
];

/// Apply `[stages.<name>]` to a stage config: serialise it, merge the table in
/// (nested tables merge key by key), and parse it back, so an unknown key is an
/// error naming the stage and the key.
pub fn customise<T: Serialize + DeserializeOwned>(base: T, stage: &str, overrides: Option<&toml::Table>) -> Result<T> {
    let Some(overrides) = overrides else { return Ok(base) };
    let mut value = toml::Value::try_from(&base).map_err(|e| Error::msg(format!("[stages.{stage}]: {e}")))?;
    merge(&mut value, overrides);
    value.try_into().map_err(|e: toml::de::Error| Error::msg(format!("[stages.{stage}]: {}", e.message())))
}

fn merge(into: &mut toml::Value, from: &toml::Table) {
    let toml::Value::Table(table) = into else { return };
    for (k, v) in from {
        match (table.get_mut(k), v) {
            (Some(existing @ toml::Value::Table(_)), toml::Value::Table(sub)) => merge(existing, sub),
            _ => {
                table.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The headline numbers of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The report's path.
    pub report: PathBuf,
    /// R_reid of the first model's samples.
    pub r_reid_synth: Option<f64>,
    /// R_reid of the distilled model's samples.
    pub r_reid_distill: Option<f64>,
    /// Samples kept by the filter.
    pub kept: Option<usize>,
    /// Samples dropped.
    pub dropped: Option<usize>,
    /// Mean s_align of all first-model samples.
    pub s_align_synth: Option<f64>,
    /// Mean s_align of the kept samples.
    pub s_align_filtered: Option<f64>,
    /// Mean s_align of the distilled model's samples.
    pub s_align_distill: Option<f64>,
    /// Stage wall times (seconds; 0 = skipped).
    pub stages: Vec<(String, f64, bool)>,
    /// Total wall time in seconds.
    pub seconds: f64,
}

/// Hashes of every image in a dataset folder's manifest (what a sampling stage generated).
pub fn image_hashes(dataset: &Path) -> Result<BTreeSet<String>> {
    let manifest = Manifest::load(dataset)?;
    (0..manifest.len()).map(|i| sha256_file(manifest.image_path(i))).collect()
}

fn summary_f64(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64())
}

macro_rules! preset {
    ($cfg:expr, $demo:expr, $paper:expr) => {
        match $cfg.preset {
            Preset::Demo => $demo,
            Preset::Paper => $paper,
        }
    };
}

/// Run the whole chain. `force` names stages to rerun even when unchanged.
pub fn run_pipeline(cfg: &PipelineConfig, force: &[String]) -> Result<RunSummary> {
    use super::{evaluate, export, report, sample, train_align, train_ldm, train_reid, train_retrieval, train_vae};
    cfg.check()?;
    let start = std::time::Instant::now();
    let work = WorkDir::new(&cfg.work);
    let mut runner = StageRunner::open(work.clone(), force.iter().cloned(), true)?;
    let over = |name: &str| cfg.stages.get(name);
    let real = work.real();

    // 1. The real dataset, split by patient, every image hashed into the lineage.
    runner.stage("prepare", &(&cfg.data, &cfg.split), &[("data", &cfg.data)], &[("manifest", &real.join("manifest.jsonl"))], || {
        StageOutput::summary(prepare_real(&cfg.data, &real, &cfg.split)?)
    })?;
    let real_manifest = Manifest::load(&real)?;
    runner.lineage_mut().real_images.clear();
    runner.lineage_mut().register_real(&real_manifest)?;
    runner.save_lineage()?;

    // 2. The autoencoder (unless the user brings one).
    let vae = match &cfg.vae {
        Some(path) => path.clone(),
        None => {
            let dir = work.path("vae");
            let mut c = preset!(
                cfg,
                train_vae::TrainVaeConfig::demo(&real, &dir),
                train_vae::TrainVaeConfig { data: real.clone(), out: dir.clone(), ..Default::default() }
            );
            c.seed = cfg.seed;
            c.resume = true;
            let c = customise(c, "train-vae", over("train-vae"))?;
            runner.stage("train-vae", &c, &[("real", &real)], &[("vae", &dir)], || StageOutput::summary(train_vae::run(&c)?))?;
            dir
        }
    };

    // 3. The first LDM, on real pairs.
    let ldm_real = work.path("ldm-real");
    let mut ldm_cfg = preset!(
        cfg,
        train_ldm::TrainLdmConfig::demo(&real, &vae, &ldm_real),
        train_ldm::TrainLdmConfig { data: real.clone(), vae: vae.clone(), out: ldm_real.clone(), ..Default::default() }
    );
    ldm_cfg.seed = cfg.seed;
    ldm_cfg.resume = true;
    let ldm_cfg = customise(ldm_cfg, "train-ldm", over("train-ldm"))?;
    runner.stage("train-ldm", &ldm_cfg, &[("real", &real), ("vae", &vae)], &[("model", &ldm_real)], || {
        StageOutput::summary(train_ldm::run(&ldm_cfg)?)
    })?;

    // 4. N_c samples per training prompt.
    let synth = work.path("synth");
    let mut sample_cfg = preset!(
        cfg,
        sample::SampleConfig::demo(&ldm_real, &real, &synth),
        sample::SampleConfig { model: ldm_real.clone(), prompts: real.clone(), out: synth.clone(), ..Default::default() }
    );
    sample_cfg.seed = cfg.seed;
    let sample_cfg = customise(sample_cfg, "sample", over("sample"))?;
    runner.stage("sample", &sample_cfg, &[("model", &ldm_real), ("real", &real)], &[("synth", &synth)], || {
        let summary = sample::run(&sample_cfg)?;
        Ok(StageOutput { generated_images: image_hashes(&synth)?, ..StageOutput::summary(summary)? })
    })?;

    // 5. The scorer networks, trained on the real training split.
    let reid = work.path("reid");
    let mut reid_cfg = preset!(
        cfg,
        train_reid::TrainReidConfig::demo(&real, &reid),
        train_reid::TrainReidConfig { data: real.clone(), out: reid.clone(), ..Default::default() }
    );
    reid_cfg.seed = cfg.seed;
    reid_cfg.resume = true;
    let reid_cfg = customise(reid_cfg, "train-reid", over("train-reid"))?;
    runner.stage("train-reid", &reid_cfg, &[("real", &real)], &[("reid", &reid)], || StageOutput::summary(train_reid::run(&reid_cfg)?))?;

    let align = work.path("align");
    let mut align_cfg = preset!(
        cfg,
        train_align::TrainAlignConfig::demo(&real, &align),
        train_align::TrainAlignConfig { data: real.clone(), out: align.clone(), ..Default::default() }
    );
    align_cfg.seed = cfg.seed;
    align_cfg.resume = true;
    let align_cfg = customise(align_cfg, "train-align", over("train-align"))?;
    runner.stage("train-align", &align_cfg, &[("real", &real)], &[("align", &align)], || {
        StageOutput::summary(train_align::run(&align_cfg)?)
    })?;

    // The retrieval net is needed for samples without a prompt, and when prompted
    // samples are also compared with their nearest real images (`score.prompted_neighbours`).
    let synth_manifest = Manifest::load(&synth)?;
    let prompted_neighbours = over("score").and_then(|t| t.get("prompted_neighbours")).and_then(|v| v.as_bool()).unwrap_or(false);
    let needs_retrieval = prompted_neighbours || synth_manifest.records.iter().any(|r| r.prompt_index.is_none());
    let retrieval = work.path("retrieval");
    if needs_retrieval || over("train-retrieval").is_some() {
        let mut c = preset!(
            cfg,
            train_retrieval::TrainRetrievalConfig::demo(&real, &retrieval),
            train_retrieval::TrainRetrievalConfig { data: real.clone(), out: retrieval.clone(), ..Default::default() }
        );
        c.seed = cfg.seed;
        c.resume = true;
        let c = customise(c, "train-retrieval", over("train-retrieval"))?;
        runner.stage("train-retrieval", &c, &[("real", &real)], &[("retrieval", &retrieval)], || {
            StageOutput::summary(train_retrieval::run(&c)?)
        })?;
    }

    // 6. Score and filter.
    let scores = work.path("scores.jsonl");
    let score_cfg = customise(
        ScoreConfig {
            real: real.clone(),
            synth: synth.clone(),
            reid: reid.clone(),
            align: Some(align.clone()),
            retrieval: needs_retrieval.then(|| retrieval.clone()),
            out: scores.clone(),
            batch_size: 32,
            neighbours: 5,
            prompted_neighbours: false,
            copy_gate: true,
            copy_gate_side: crate::privacy::copy_gate::DEFAULT_SIDE,
            copy_gate_smoothing: crate::privacy::copy_gate::DEFAULT_SMOOTHING,
        },
        "score",
        over("score"),
    )?;
    let mut score_inputs: Vec<(&str, &Path)> = vec![("real", &real), ("synth", &synth), ("reid", &reid), ("align", &align)];
    if needs_retrieval {
        score_inputs.push(("retrieval", &retrieval));
    }
    runner.stage("score", &score_cfg, &score_inputs, &[("scores", &scores)], || StageOutput::summary(super::score::run(&score_cfg)?))?;

    let filtered = work.path("filtered");
    let filter_cfg = customise(
        FilterConfig { scores: scores.clone(), synth: synth.clone(), out: filtered.clone(), rule: cfg.filter },
        "filter",
        over("filter"),
    )?;
    let filter_summary =
        runner.stage("filter", &filter_cfg, &[("scores", &scores), ("synth", &synth)], &[("filtered", &filtered)], || {
            let summary = super::filter::run(&filter_cfg)?;
            eprintln!(
                "{:>16}: R_reid = {:.2} % ({} of {} samples re-identified at δ = {}), kept {}, dropped {}",
                "filter",
                100.0 * summary.r_reid,
                summary.reidentified,
                summary.generated,
                summary.delta,
                summary.kept,
                summary.dropped
            );
            if let Some(q) = summary.copy_gate {
                eprintln!(
                    "{:>16}: copy gate (s_copy ≥ {q}) flagged {} samples, {} of them not re-identified",
                    "filter", summary.near_copies, summary.dropped_near_copy
                );
            }
            StageOutput::summary(summary)
        })?;
    let filtered_manifest = Manifest::load(&filtered).map_err(|e| {
        Error::msg(format!(
            "distill: the filtered set is empty or unreadable ({e}); lower the re-identification pressure (δ) or sample more"
        ))
    })?;

    // 7. The filter's own audit (beyond the paper).
    if cfg.audit {
        let audit_dir = work.path("audit");
        let mut c = super::audit::AuditConfig::demo(&reid, &real, &audit_dir);
        c.delta = filter_cfg.rule.delta;
        c.copy_gate = filter_cfg.rule.copy_gate;
        c.copy_quantile = filter_cfg.rule.copy_quantile;
        c.copy_gate_side = score_cfg.copy_gate_side;
        c.copy_gate_smoothing = score_cfg.copy_gate_smoothing;
        c.seed = cfg.seed;
        let c = customise(c, "audit", over("audit"))?;
        runner.stage("audit", &c, &[("reid", &reid), ("real", &real)], &[("audit", &audit_dir)], || {
            StageOutput::summary(super::audit::run(&c)?)
        })?;
    }

    // 8. Distil: the second LDM sees the filtered synthetic set only — proven by lineage.
    runner.lineage().check_synthetic_only(&filtered_manifest)?;
    let ldm_distill = work.path("ldm-distill");
    let mut distill_cfg = ldm_cfg.clone();
    distill_cfg.data = filtered.clone();
    distill_cfg.splits = Vec::new();
    distill_cfg.out = ldm_distill.clone();
    let distill_cfg = customise(distill_cfg, "distill", over("distill"))?;
    runner.stage("distill", &distill_cfg, &[("filtered", &filtered), ("vae", &vae)], &[("model", &ldm_distill)], || {
        StageOutput::summary(train_ldm::run(&distill_cfg)?)
    })?;

    // 9. Sample the distilled model for the same prompts, and score those samples.
    let synth_distill = work.path("synth-distill");
    let mut sd_cfg = sample_cfg.clone();
    sd_cfg.model = ldm_distill.clone();
    sd_cfg.out = synth_distill.clone();
    let sd_cfg = customise(sd_cfg, "sample-distill", over("sample-distill"))?;
    runner.stage("sample-distill", &sd_cfg, &[("model", &ldm_distill), ("real", &real)], &[("synth", &synth_distill)], || {
        let summary = sample::run(&sd_cfg)?;
        Ok(StageOutput { generated_images: image_hashes(&synth_distill)?, ..StageOutput::summary(summary)? })
    })?;
    let scores_distill = work.path("scores-distill.jsonl");
    let distill_summary_path = work.path("distill_summary.json");
    let mut sc = score_cfg.clone();
    sc.synth = synth_distill.clone();
    sc.out = scores_distill.clone();
    sc.retrieval = None;
    let distill_summary = runner.stage(
        "score-distill",
        &(&sc, filter_cfg.rule.delta),
        &[("real", &real), ("synth", &synth_distill), ("reid", &reid), ("align", &align)],
        &[("scores", &scores_distill), ("summary", &distill_summary_path)],
        || {
            super::score::run(&sc)?;
            let scored = super::filter::read_scores(&scores_distill)?;
            let (_, s) = crate::privacy::filter::apply_filter(&scored, &filter_cfg.rule)?;
            let summary = serde_json::json!({
                "r_reid": s.r_reid, "generated": s.generated, "reidentified": s.reidentified,
                "s_align_mean": s.s_align_mean_all, "s_reid_mean": s.s_reid_mean_all, "delta": s.delta,
            });
            crate::io::write_atomic_json(&distill_summary_path, &summary)?;
            StageOutput::summary(summary)
        },
    )?;

    // 10. Evaluate, export the shareable model with its card, report.
    let eval_dir = work.path("eval");
    let mut eval_cfg = preset!(cfg, evaluate::demo(work.root()), evaluate::for_work(work.root()));
    eval_cfg.seed = cfg.seed;
    let eval_cfg = customise(eval_cfg, "evaluate", over("evaluate"))?;
    runner.stage(
        "evaluate",
        &eval_cfg,
        &[("real", &real), ("synth", &synth), ("filtered", &filtered), ("synth-distill", &synth_distill)],
        &[("eval", &eval_dir)],
        || StageOutput::summary(evaluate::run(&eval_cfg)?),
    )?;

    let shared = work.path("shared-model");
    let mut card = serde_json::Map::new();
    card.insert("training_data".into(), "synthetic images filtered by Privacy Distillation (no real image; see lineage.json)".into());
    card.insert("filter".into(), filter_summary.clone());
    card.insert("distilled_samples".into(), distill_summary.clone());
    card.insert("lineage".into(), serde_json::to_value(runner.lineage().stages.keys().collect::<Vec<_>>()).unwrap_or_default());
    let export_cfg = customise(export::ExportConfig::demo(&ldm_distill, &shared, card), "export", over("export"))?;
    runner.stage("export", &export_cfg, &[("model", &ldm_distill)], &[("shared", &shared)], || {
        export::run(&export_cfg)?;
        StageOutput::summary(serde_json::json!({"out": shared}))
    })?;

    let report_cfg = customise(report::ReportConfig::for_work(work.root()), "report", over("report"))?;
    // The report reads timings and lineage, which change every run: always rebuild it.
    let report_md = report::run(&report_cfg)?;

    let timings = runner.timings().stages.iter().map(|t| (t.name.clone(), t.seconds, t.skipped)).collect();
    Ok(RunSummary {
        report: report_md,
        r_reid_synth: summary_f64(&filter_summary, "r_reid"),
        r_reid_distill: summary_f64(&distill_summary, "r_reid"),
        kept: filter_summary.get("kept").and_then(|v| v.as_u64()).map(|v| v as usize),
        dropped: filter_summary.get("dropped").and_then(|v| v.as_u64()).map(|v| v as usize),
        s_align_synth: summary_f64(&filter_summary, "s_align_mean_all"),
        s_align_filtered: summary_f64(&filter_summary, "s_align_mean_kept"),
        s_align_distill: summary_f64(&distill_summary, "s_align_mean"),
        stages: timings,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The table `run` and `demo` end with.
pub fn format_summary(s: &RunSummary) -> String {
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.2} %", 100.0 * v));
    let num = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
    let mut out = String::new();
    out.push_str("\nstage              time\n");
    for (name, secs, skipped) in &s.stages {
        let t = if *skipped { "skipped (unchanged)".to_string() } else { super::progress::format_seconds(*secs) };
        out.push_str(&format!("{name:<18} {t}\n"));
    }
    out.push_str(&format!("{:<18} {}\n\n", "total", super::progress::format_seconds(s.seconds)));
    out.push_str("                     D_synth    D_filtered  D_distill\n");
    out.push_str(&format!("{:<20} {:<10} {:<11} {}\n", "R_reid", pct(s.r_reid_synth), "0 % (by δ)", pct(s.r_reid_distill)));
    out.push_str(&format!(
        "{:<20} {:<10} {:<11} {}\n",
        "s_align (mean)",
        num(s.s_align_synth),
        num(s.s_align_filtered),
        num(s.s_align_distill)
    ));
    out.push_str(&format!(
        "samples kept/dropped by the filter: {} / {}\n",
        s.kept.map_or("—".into(), |v| v.to_string()),
        s.dropped.map_or("—".into(), |v| v.to_string())
    ));
    out.push_str(&format!("\nreport: {}\n", s.report.display()));
    out
}
