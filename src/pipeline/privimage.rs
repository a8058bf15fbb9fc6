//! `privimage`: PrivImage (Li et al., USENIX Security 2024), the
//! differential-privacy baseline, chained in one work directory beside the
//! Privacy Distillation run it is compared with.
//!
//! public set → semantic classifier (public data only) → DP semantic query of
//! the sensitive training split (one Gaussian mechanism, σ_q) → the public
//! subset that matches the noisy semantic distribution → VAE and LDM
//! pretrained on that subset (shared by every ε) → per ε: DP-SGD fine-tuning
//! on the sensitive split with σ calibrated so that query + DP-SGD spend at
//! most ε at δ, sampling, scoring (R_reid, s_align with the work directory's
//! `reid/` and `align/`), evaluation (FID, downstream AUC).
//!
//! Everything PrivImage writes lives under `<work>/privimage/` (its own
//! lineage, timings and stage summaries, so the Privacy Distillation run's
//! are untouched); the real dataset `<work>/real` and the scorer networks
//! `<work>/reid`, `<work>/align` are shared and created only when missing.
//! Each ε's model is a separate release: its guarantee covers the query and
//! its own fine-tuning, not the other ε values' models.

use super::config::{apply_overrides, parse_config};
use super::prepare::{prepare_real, SplitSettings};
use super::run::{customise, image_hashes, Preset};
use super::workdir::{StageOutput, StageRunner, WorkDir};
use super::{evaluate, progress, sample, score, train_align, train_ldm, train_ldm_dp, train_reid, train_vae};
use crate::data::phantom::{write_phantom, PhantomConfig};
use crate::data::{Manifest, Split};
use crate::io::write_atomic_json;
use crate::privacy::dp::rdp::{calibrate_noise_multiplier, RdpAccountant};
use crate::privacy::dp::semantic::{
    records_in, selected_manifest, semantic_query, train_semantic_classifier, SemanticClassifier, SemanticConfig,
};
use crate::privacy::filter::{apply_filter, FilterRule};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Stage names whose configs `[stages.<name>]` may override.
pub const PRIVIMAGE_STAGES: &[&str] =
    &["prepare", "train-vae", "pretrain", "train-ldm-dp", "sample", "train-reid", "train-align", "score", "evaluate"];

/// `privimage.toml`: the PrivImage chain's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivImageConfig {
    /// The sensitive (real) dataset.
    pub data: PathBuf,
    /// The work directory (shared with a Privacy Distillation run; PrivImage writes below `privimage/`).
    pub work: PathBuf,
    /// The public dataset: a dataset folder, or `phantom:N` to generate N phantom chest X-rays.
    #[serde(default = "default_public")]
    pub public: String,
    /// Side of generated phantom images.
    #[serde(default = "default_public_size")]
    pub public_image_size: usize,
    /// Public images selected by the semantic query for pretraining.
    #[serde(default = "default_select")]
    pub select: usize,
    /// The semantic classifier and query (σ_q, top-k).
    #[serde(default)]
    pub semantic: SemanticConfig,
    /// Privacy budgets ε; one DP fine-tuned model per value.
    #[serde(default = "default_epsilons")]
    pub epsilons: Vec<f64>,
    /// δ; `None`: 1/(10·N) rounded down to a power of ten, N = sensitive training records.
    #[serde(default)]
    pub delta: Option<f64>,
    /// Model and run sizes of the stages.
    #[serde(default)]
    pub preset: Preset,
    /// Seed of every stage.
    #[serde(default)]
    pub seed: u64,
    /// Patient-level split of the sensitive data (used when it has none and `<work>/real` is missing).
    #[serde(default)]
    pub split: SplitSettings,
    /// An existing VAE trained on public data; `None` trains one on the selected public subset.
    #[serde(default)]
    pub vae: Option<PathBuf>,
    /// Per-stage overrides: `[stages.train-ldm-dp] steps = 80` (stages: [`PRIVIMAGE_STAGES`]).
    #[serde(default)]
    pub stages: BTreeMap<String, toml::Table>,
}

fn default_public() -> String {
    "phantom:4000".into()
}
fn default_public_size() -> usize {
    256
}
fn default_select() -> usize {
    1000
}
fn default_epsilons() -> Vec<f64> {
    vec![1.0, 5.0, 10.0]
}

impl PrivImageConfig {
    /// The demo preset: 400 phantoms at 64 px as the public set, 200 selected, the demo presets of
    /// every stage, ε = 10.
    pub fn demo(data: &Path, work: &Path) -> PrivImageConfig {
        PrivImageConfig {
            data: data.to_path_buf(),
            work: work.to_path_buf(),
            public: "phantom:400".into(),
            public_image_size: 64,
            select: 200,
            semantic: SemanticConfig::demo(),
            epsilons: vec![10.0],
            delta: None,
            preset: Preset::Demo,
            seed: 0,
            split: SplitSettings { val: 0.15, test: 0.2, seed: 0 },
            vae: None,
            stages: BTreeMap::new(),
        }
    }

    /// Read `privimage.toml`, applying `--set key=value` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<PrivImageConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let text = if overrides.is_empty() { text } else { apply_overrides(&text, overrides, path)? };
        parse_config(&text, path)
    }

    /// Checks what does not depend on the data.
    pub fn validate(&self) -> Result<()> {
        if self.epsilons.is_empty() {
            return Err(Error::msg("privimage: field `epsilons` is empty: give at least one privacy budget"));
        }
        if let Some(e) = self.epsilons.iter().find(|e| !(e.is_finite() && **e > 0.0)) {
            return Err(Error::msg(format!("privimage: field `epsilons`: {e} is not a finite budget > 0")));
        }
        if let Some(d) = self.delta {
            if !(d > 0.0 && d < 1.0) {
                return Err(Error::msg(format!("privimage: field `delta` = {d} must lie in (0, 1)")));
            }
        }
        if self.select == 0 {
            return Err(Error::msg("privimage: field `select` must be at least 1"));
        }
        self.public_source()?;
        self.semantic.validate()?;
        for name in self.stages.keys() {
            if !PRIVIMAGE_STAGES.contains(&name.as_str()) {
                return Err(Error::msg(format!(
                    "privimage config: [stages.{name}] is not a stage (stages: {})",
                    PRIVIMAGE_STAGES.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn public_source(&self) -> Result<PublicSource> {
        match self.public.strip_prefix("phantom:") {
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => Ok(PublicSource::Phantom(n)),
                _ => Err(Error::msg(format!("privimage: field `public` = {:?}: `phantom:N` needs a count N ≥ 1", self.public))),
            },
            None => Ok(PublicSource::Folder(PathBuf::from(&self.public))),
        }
    }
}

enum PublicSource {
    Phantom(usize),
    Folder(PathBuf),
}

/// δ = 1/(10·N) rounded down to a power of ten.
pub fn default_delta(records: usize) -> f64 {
    // In integers, so that N = 1000 gives exactly 1e-4 (a float log10 may land just below -4).
    let ten_n = 10 * records.max(1) as u128;
    let mut exponent = 0u32;
    while 10u128.pow(exponent) < ten_n {
        exponent += 1;
    }
    format!("1e-{exponent}").parse().unwrap_or(f64::MIN_POSITIVE)
}

/// One ε's DP model and what it produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpsilonResult {
    /// The budget asked for.
    pub epsilon_target: f64,
    /// ε spent by the semantic query and DP-SGD together, as accounted (≤ the target).
    pub epsilon_spent: f64,
    /// δ.
    pub delta: f64,
    /// σ: DP-SGD's calibrated noise multiplier.
    pub noise_multiplier: f64,
    /// q: DP-SGD's sampling rate.
    pub sample_rate: f64,
    /// DP-SGD steps.
    pub steps: u64,
    /// σ_q: the semantic query's noise multiplier.
    pub query_noise_multiplier: f64,
    /// N: sensitive training records.
    pub records: usize,
    /// Fraction of samples with s_reid ≥ 0.5 (nothing filtered).
    pub r_reid: f64,
    /// Samples scored.
    pub samples: usize,
    /// Mean s_align of the samples.
    pub s_align: Option<f64>,
    /// FID of the samples against the real training split.
    pub fid: Option<f64>,
    /// Mean AUC on the real test split of the classifier trained on the samples.
    pub auc: Option<f64>,
    /// The DP model folder.
    pub model: PathBuf,
    /// The samples.
    pub synth: PathBuf,
    /// Wall seconds of this ε's stages (0 = skipped as unchanged).
    pub stage_seconds: BTreeMap<String, f64>,
}

/// `privimage/summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivImageSummary {
    /// Public images available.
    pub public_images: usize,
    /// Public images selected for pretraining.
    pub selected: usize,
    /// Semantic classes of the query.
    pub classes: Vec<String>,
    /// The released noisy semantic distribution.
    pub noisy_distribution: Vec<f64>,
    /// ε of the semantic query alone at the first result's δ.
    pub query_epsilon: f64,
    /// Mean AUC of the classifier trained on real data (the reference).
    pub real_auc: Option<f64>,
    /// One entry per ε.
    pub results: Vec<EpsilonResult>,
    /// Wall seconds of the shared stages (0 = skipped as unchanged).
    pub stage_seconds: BTreeMap<String, f64>,
    /// Total wall time of this run.
    pub seconds: f64,
}

/// `privimage/summary.json` of a work directory.
pub fn summary_path(work: &Path) -> PathBuf {
    work.join("privimage").join("summary.json")
}

/// ε formatted for folder and stage names (`10`, `0.5`).
fn eps_tag(eps: f64) -> String {
    format!("eps-{eps}")
}

fn json_f64(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_f64)
}

/// Copy the files (not subfolders) of `from` into `to`.
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let entry = entry.map_err(|e| Error::io(from, e))?;
        if entry.path().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// Run the PrivImage chain. `force` names stages to rerun even when unchanged
/// (per-ε stages are named `<stage>@eps-<ε>`).
pub fn run_privimage(cfg: &PrivImageConfig, force: &[String]) -> Result<PrivImageSummary> {
    cfg.validate()?;
    let start = Instant::now();
    let work = WorkDir::new(&cfg.work);
    let pi = WorkDir::new(work.path("privimage"));
    let mut runner = StageRunner::open(pi.clone(), force.iter().cloned(), true)?;
    let over = |name: &str| cfg.stages.get(name);
    macro_rules! preset {
        ($demo:expr, $paper:expr) => {
            match cfg.preset {
                Preset::Demo => $demo,
                Preset::Paper => $paper,
            }
        };
    }

    // The sensitive dataset with its split: the Privacy Distillation run's, or prepared here.
    let real = work.real();
    if !real.join("manifest.jsonl").exists() {
        let split = customise(cfg.split, "prepare", over("prepare"))?;
        runner.stage("prepare", &(&cfg.data, &split), &[("data", &cfg.data)], &[("manifest", &real.join("manifest.jsonl"))], || {
            StageOutput::summary(prepare_real(&cfg.data, &real, &split)?)
        })?;
    }
    let sensitive = Arc::new(Manifest::load(&real)?);
    let train_records = records_in(&sensitive, Split::Train);
    if train_records.is_empty() {
        return Err(Error::file(&sensitive.path, "field `split`: no training record to fine-tune on"));
    }

    // 1. The public dataset.
    let public_dir = match cfg.public_source()? {
        PublicSource::Folder(p) => p,
        PublicSource::Phantom(n) => {
            let dir = pi.path("public");
            let phantom = PhantomConfig { patients: n, images_per_patient: 1, size: cfg.public_image_size, seed: cfg.seed };
            let key = (n, cfg.public_image_size, cfg.seed);
            runner.stage("public", &key, &[], &[("public", &dir)], || {
                let m = write_phantom(&phantom, &dir)?;
                StageOutput::summary(serde_json::json!({ "images": m.len(), "size": cfg.public_image_size }))
            })?;
            dir
        }
    };
    // Absolute, so the selected manifest's image paths resolve from its own folder.
    let public_dir = std::path::absolute(&public_dir).map_err(|e| Error::io(&public_dir, e))?;
    let public = Arc::new(Manifest::load(&public_dir)?);

    // 2. The semantic classifier, trained on public data only.
    let semantic_dir = pi.path("semantic");
    let mut semantic_cfg = cfg.semantic.clone();
    semantic_cfg.classifier.seed = cfg.seed;
    runner.stage(
        "semantic-classifier",
        &(&semantic_cfg.labels, semantic_cfg.ranking, &semantic_cfg.classifier),
        &[("public", &public_dir)],
        &[("classifier", &semantic_dir)],
        || {
            let bar = progress::bar(0, "semantic classifier");
            let (classifier, training) = train_semantic_classifier(&semantic_cfg, &public, &bar)?;
            bar.finish_and_clear();
            classifier.save(&semantic_dir)?;
            StageOutput::summary(training)
        },
    )?;

    // 3. The DP semantic query and the public subset it selects.
    let selected_dir = pi.path("selected");
    let query_path = pi.path("query.json");
    let query = runner.stage(
        "semantic-query",
        &(&semantic_cfg, cfg.select),
        &[("classifier", &semantic_dir), ("real", &real), ("public", &public_dir)],
        &[("selected", &selected_dir), ("query", &query_path)],
        || {
            let classifier = SemanticClassifier::load(&semantic_dir)?;
            let q = semantic_query(&semantic_cfg, &classifier, &sensitive, &train_records, &public, cfg.select)?;
            if q.selection.indices.is_empty() {
                return Err(Error::msg("privimage: the semantic query selected no public image"));
            }
            selected_manifest(&public, &q.selection, &selected_dir.join("manifest.jsonl")).save()?;
            write_atomic_json(&query_path, &q)?;
            StageOutput::summary(&q)
        },
    )?;
    let classes: Vec<String> = serde_json::from_value(query["classes"].clone()).unwrap_or_default();
    let noisy_distribution: Vec<f64> = serde_json::from_value(query["noisy_distribution"].clone()).unwrap_or_default();
    let selected = Manifest::load(&selected_dir)?.len();

    // 4. VAE and LDM pretrained on the selected public subset, shared by every ε.
    let vae = match &cfg.vae {
        Some(p) => p.clone(),
        None => {
            let dir = pi.path("vae");
            let mut c = preset!(
                train_vae::TrainVaeConfig::demo(&selected_dir, &dir),
                train_vae::TrainVaeConfig { data: selected_dir.clone(), out: dir.clone(), ..Default::default() }
            );
            c.splits = Vec::new();
            c.seed = cfg.seed;
            c.resume = true;
            let c = customise(c, "train-vae", over("train-vae"))?;
            runner.stage("train-vae", &c, &[("public", &selected_dir)], &[("vae", &dir)], || StageOutput::summary(train_vae::run(&c)?))?;
            dir
        }
    };
    let pretrained = pi.path("ldm-public");
    let mut c = preset!(
        train_ldm::TrainLdmConfig::demo(&selected_dir, &vae, &pretrained),
        train_ldm::TrainLdmConfig { data: selected_dir.clone(), vae: vae.clone(), out: pretrained.clone(), ..Default::default() }
    );
    c.splits = Vec::new();
    c.seed = cfg.seed;
    c.resume = true;
    let pretrain_cfg = customise(c, "pretrain", over("pretrain"))?;
    runner.stage("pretrain", &pretrain_cfg, &[("public", &selected_dir), ("vae", &vae)], &[("model", &pretrained)], || {
        StageOutput::summary(train_ldm::run(&pretrain_cfg)?)
    })?;

    // 5. The scorer networks of the work directory (trained on the real data only when missing).
    let reid = work.path("reid");
    if !reid.join("model.safetensors").exists() {
        let mut c = preset!(
            train_reid::TrainReidConfig::demo(&real, &reid),
            train_reid::TrainReidConfig { data: real.clone(), out: reid.clone(), ..Default::default() }
        );
        c.seed = cfg.seed;
        c.resume = true;
        let c = customise(c, "train-reid", over("train-reid"))?;
        runner.stage("train-reid", &c, &[("real", &real)], &[("reid", &reid)], || StageOutput::summary(train_reid::run(&c)?))?;
    }
    let align = work.path("align");
    if !align.join("model.safetensors").exists() {
        let mut c = preset!(
            train_align::TrainAlignConfig::demo(&real, &align),
            train_align::TrainAlignConfig { data: real.clone(), out: align.clone(), ..Default::default() }
        );
        c.seed = cfg.seed;
        c.resume = true;
        let c = customise(c, "train-align", over("train-align"))?;
        runner.stage("train-align", &c, &[("real", &real)], &[("align", &align)], || StageOutput::summary(train_align::run(&c)?))?;
    }

    // 6. Per ε: calibrate, fine-tune with DP-SGD, sample, score, evaluate.
    let records = train_records.len();
    let delta = cfg.delta.unwrap_or_else(|| default_delta(records));
    let mut base = RdpAccountant::new();
    base.compose_gaussian(cfg.semantic.query_noise_multiplier)?;
    let query_epsilon = base.epsilon(delta)?.0;
    let mut results = Vec::new();
    let mut real_auc = None;
    let mut real_classifier: Option<PathBuf> = Some(work.path("eval").join("classifier-real")).filter(|p| p.is_dir());
    for &eps in &cfg.epsilons {
        let tag = eps_tag(eps);
        let dir = pi.path(&tag);
        let name = |stage: &str| format!("{stage}@{tag}");

        let model = dir.join("ldm-dp");
        let mut dp = preset!(
            train_ldm_dp::TrainLdmDpConfig::demo(&real, &pretrained, &model),
            train_ldm_dp::TrainLdmDpConfig { data: real.clone(), init: pretrained.clone(), out: model.clone(), ..Default::default() }
        );
        dp.seed = cfg.seed;
        dp.resume = true;
        let mut dp = customise(dp, "train-ldm-dp", over("train-ldm-dp"))?;
        if eps <= query_epsilon {
            return Err(Error::msg(format!(
                "privimage: ε = {eps} is spent by the semantic query alone (ε_query = {query_epsilon:.3} at δ = {delta:e}); \
                 raise ε or semantic.query_noise_multiplier"
            )));
        }
        dp.noise_multiplier = calibrate_noise_multiplier(&base, eps, dp.sample_rate, dp.steps, delta)?;
        let mut spent = base.clone();
        spent.compose_subsampled_gaussian(dp.sample_rate, dp.noise_multiplier, dp.steps)?;
        let epsilon_spent = spent.epsilon(delta)?.0;
        eprintln!(
            "{:>16}: ε = {eps}: σ = {:.4} for q = {}, {} steps, δ = {delta:e} (query σ_q = {}: ε_query = {query_epsilon:.3}); ε spent {epsilon_spent:.4}",
            "privimage", dp.noise_multiplier, dp.sample_rate, dp.steps, cfg.semantic.query_noise_multiplier
        );
        runner.stage(&name("train-ldm-dp"), &dp, &[("real", &real), ("init", &pretrained)], &[("model", &model)], || {
            StageOutput::summary(train_ldm_dp::run(&dp)?)
        })?;

        let synth = dir.join("synth");
        let mut s = preset!(
            sample::SampleConfig::demo(&model, &real, &synth),
            sample::SampleConfig { model: model.clone(), prompts: real.clone(), out: synth.clone(), ..Default::default() }
        );
        s.seed = cfg.seed;
        let s = customise(s, "sample", over("sample"))?;
        runner.stage(&name("sample"), &s, &[("model", &model), ("real", &real)], &[("synth", &synth)], || {
            let summary = sample::run(&s)?;
            Ok(StageOutput { generated_images: image_hashes(&synth)?, ..StageOutput::summary(summary)? })
        })?;

        let scores = dir.join("scores.jsonl");
        let scores_summary = dir.join("scores-summary.json");
        let sc = customise(
            score::ScoreConfig {
                real: real.clone(),
                synth: synth.clone(),
                reid: reid.clone(),
                align: Some(align.clone()),
                retrieval: None,
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
        let scored = runner.stage(
            &name("score"),
            &sc,
            &[("real", &real), ("synth", &synth), ("reid", &reid), ("align", &align)],
            &[("scores", &scores), ("summary", &scores_summary)],
            || {
                score::run(&sc)?;
                let (_, f) = apply_filter(&super::filter::read_scores(&scores)?, &FilterRule::default())?;
                let summary = serde_json::json!({
                    "r_reid": f.r_reid, "generated": f.generated, "reidentified": f.reidentified,
                    "s_align_mean": f.s_align_mean_all, "s_reid_mean": f.s_reid_mean_all, "delta": f.delta,
                });
                write_atomic_json(&scores_summary, &summary)?;
                StageOutput::summary(summary)
            },
        )?;

        let eval_dir = dir.join("eval");
        let mut e = preset!(evaluate::demo(work.root()), evaluate::for_work(work.root()));
        e.synth = Some(synth.clone());
        e.filtered = None;
        e.distill = None;
        e.out = eval_dir.clone();
        e.seed = cfg.seed;
        let e = customise(e, "evaluate", over("evaluate"))?;
        // The reference classifier on real data is the same for every synthetic set: reuse a trained
        // one (evaluate retrains it unless its settings-and-data key matches).
        if let Some(from) = &real_classifier {
            let to = eval_dir.join("classifier-real");
            if !to.exists() {
                copy_files(from, &to)?;
            }
        }
        let evaluation = runner.stage(&name("evaluate"), &e, &[("real", &real), ("synth", &synth)], &[("eval", &eval_dir)], || {
            StageOutput::summary(evaluate::run(&e)?)
        })?;
        real_classifier = Some(eval_dir.join("classifier-real"));
        real_auc = real_auc.or_else(|| json_f64(&evaluation, &["datasets", "real", "classifier", "test", "mean_auc", "value"]));

        let stage_seconds = runner
            .timings()
            .stages
            .iter()
            .filter_map(|t| t.name.strip_suffix(&format!("@{tag}")).map(|n| (n.to_string(), t.seconds)))
            .collect();
        let r_reid = json_f64(&scored, &["r_reid"]).ok_or_else(|| Error::file(&scores_summary, "field `r_reid` is missing"))?;
        results.push(EpsilonResult {
            epsilon_target: eps,
            epsilon_spent,
            delta,
            noise_multiplier: dp.noise_multiplier,
            sample_rate: dp.sample_rate,
            steps: dp.steps,
            query_noise_multiplier: cfg.semantic.query_noise_multiplier,
            records,
            r_reid,
            samples: scored.get("generated").and_then(Value::as_u64).unwrap_or(0) as usize,
            s_align: json_f64(&scored, &["s_align_mean"]),
            fid: json_f64(&evaluation, &["datasets", "synthetic", "fidelity", "fid", "value"]),
            auc: json_f64(&evaluation, &["datasets", "synthetic", "classifier", "test", "mean_auc", "value"]),
            model,
            synth,
            stage_seconds,
        });
    }

    let stage_seconds = runner.timings().stages.iter().filter(|t| !t.name.contains('@')).map(|t| (t.name.clone(), t.seconds)).collect();
    let summary = PrivImageSummary {
        public_images: public.len(),
        selected,
        classes,
        noisy_distribution,
        query_epsilon,
        real_auc,
        results,
        stage_seconds,
        seconds: start.elapsed().as_secs_f64(),
    };
    write_atomic_json(summary_path(work.root()), &summary)?;
    Ok(summary)
}

/// The table `privimage` ends with.
pub fn format_privimage_summary(s: &PrivImageSummary) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    let mut out = format!(
        "\nPrivImage: {} of {} public images selected; semantic query ε = {:.3}; real-data AUC {}\n",
        s.selected,
        s.public_images,
        s.query_epsilon,
        opt(s.real_auc, 3)
    );
    out.push_str("ε target  ε spent  δ        σ       q      steps  R_reid    s_align  FID      AUC\n");
    for r in &s.results {
        out.push_str(&format!(
            "{:<9} {:<8.4} {:<8.0e} {:<7.3} {:<6} {:<6} {:<9} {:<8} {:<8} {}\n",
            r.epsilon_target,
            r.epsilon_spent,
            r.delta,
            r.noise_multiplier,
            r.sample_rate,
            r.steps,
            format!("{:.2} %", 100.0 * r.r_reid),
            opt(r.s_align, 3),
            opt(r.fid, 2),
            opt(r.auc, 3)
        ));
    }
    out.push_str(&format!("total {}\n", progress::format_seconds(s.seconds)));
    out
}

/// `privdistill privimage`.
#[derive(clap::Args, Debug, Clone)]
pub struct PrivImageArgs {
    /// The PrivImage config (TOML); see configs/privimage.example.toml.
    #[arg(long, conflicts_with = "demo")]
    pub config: Option<PathBuf>,
    /// Use the demo preset (phantom public data, small models, ε = 10).
    #[arg(long)]
    pub demo: bool,
    /// The sensitive dataset (demo default: the shipped chest X-rays).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The work directory (demo default: work/demo).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Override one key, e.g. `--set epsilons=[1.0,5.0,10.0]` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Rerun these stages even if unchanged (per-ε stages: `train-ldm-dp@eps-10`; repeatable).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
}

/// Run `privimage`.
pub fn cli(args: &PrivImageArgs) -> Result<()> {
    let mut cfg = match (&args.config, args.demo) {
        (Some(path), _) => PrivImageConfig::load(path, &args.overrides)?,
        (None, true) => {
            let data = args.data.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/cxr-real-a"));
            let work = args.work.clone().unwrap_or_else(|| PathBuf::from("work/demo"));
            let base = PrivImageConfig::demo(&data, &work);
            if args.overrides.is_empty() {
                base
            } else {
                let text = toml::to_string(&base).map_err(|e| Error::msg(format!("privimage demo: {e}")))?;
                let path = PathBuf::from("privimage demo preset");
                parse_config(&apply_overrides(&text, &args.overrides, &path)?, &path)?
            }
        }
        (None, false) => return Err(Error::msg("privimage: give --config FILE or --demo")),
    };
    if args.config.is_some() {
        if let Some(d) = &args.data {
            cfg.data = d.clone();
        }
        if let Some(w) = &args.work {
            cfg.work = w.clone();
        }
    }
    eprintln!("privdistill privimage: sensitive data {}, work directory {}", cfg.data.display(), cfg.work.display());
    let summary = run_privimage(&cfg, &args.force)?;
    print!("{}", format_privimage_summary(&summary));
    println!("summary: {}", summary_path(&cfg.work).display());
    Ok(())
}
