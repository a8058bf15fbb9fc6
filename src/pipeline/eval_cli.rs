//! Command-line front ends of the evaluation: `privdistill eval fid`,
//! `privdistill eval classifier`, `privdistill train-classifier`,
//! `privdistill evaluate` and `privdistill report`.

use crate::data::{Manifest, Split};
use crate::eval::classifier::{select_labels, Classifier, ClassifierConfig, ClassifierMetrics, LabelledSet};
use crate::eval::features::FeatureExtractor;
use crate::eval::fid::{fid, kid, KidSettings};
use crate::eval::prdc::prdc;
use crate::pipeline::config::{apply_overrides, parse_config};
use crate::pipeline::evaluate::{self, EvaluateConfig};
use crate::pipeline::progress;
use crate::pipeline::report::{self, ReportConfig};
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `privdistill eval …`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: EvalCommand,
}

/// The evaluation tools.
#[derive(clap::Subcommand, Debug)]
pub enum EvalCommand {
    /// FID (with KID, precision and recall) between two image sets.
    Fid(FidArgs),
    /// Train the downstream classifier on one set and print per-pathology AUC on another.
    Classifier(ClassifierArgs),
}

/// `privdistill eval fid SET_A SET_B`.
#[derive(clap::Args, Debug)]
pub struct FidArgs {
    /// First dataset (folder with manifest.jsonl), e.g. the real one.
    pub set_a: PathBuf,
    /// Second dataset.
    pub set_b: PathBuf,
    /// torchxrayvision DenseNet-121 weights converted by tests/fixtures/convert_torchxrayvision.py.
    #[arg(long)]
    pub features_weights: Option<PathBuf>,
    /// Instead: the features of a classifier folder written by `train-classifier` or `evaluate`.
    #[arg(long, conflicts_with = "features_weights")]
    pub classifier: Option<PathBuf>,
    /// Neighbourhood size of precision/recall.
    #[arg(long, default_value_t = 3)]
    pub k: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// `privdistill eval classifier` and `privdistill train-classifier`.
#[derive(clap::Args, Debug)]
pub struct ClassifierArgs {
    /// Training dataset (its train split if it has one, else every record).
    #[arg(long)]
    pub train: PathBuf,
    /// Test dataset (its test split if it has one, else every record).
    #[arg(long)]
    pub test: PathBuf,
    /// The real dataset synthetic records' `prompt_index` points into (default: the test dataset).
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Where to save the classifier folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Classifier settings (TOML, the keys of `ClassifierConfig`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The small demo classifier instead of DenseNet-121 at 224.
    #[arg(long)]
    pub demo: bool,
    /// Override a setting: `--set ce_epochs=2`.
    #[arg(long = "set")]
    pub overrides: Vec<String>,
}

/// `privdistill evaluate`.
#[derive(clap::Args, Debug)]
pub struct EvaluateArgs {
    /// Work directory: evaluates work/real, work/synth, work/filtered, work/synth-distill into work/eval.
    #[arg(long, default_value = "work")]
    pub work: PathBuf,
    /// Settings (TOML, the keys of `EvaluateConfig`); paths in it win over --work.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The demo preset (small classifier at 64×64).
    #[arg(long)]
    pub demo: bool,
    /// Override a setting: `--set classifier.ce_epochs=2`.
    #[arg(long = "set")]
    pub overrides: Vec<String>,
}

/// `privdistill report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Work directory to report on.
    #[arg(long, default_value = "work")]
    pub work: PathBuf,
    /// Output folder (default: WORK/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A config: the file (or `base`) with `--set` overrides applied.
fn settings<T: Serialize + DeserializeOwned>(base: T, file: Option<&Path>, overrides: &[String]) -> Result<T> {
    let (text, path) = match file {
        Some(p) => (std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?, p.to_path_buf()),
        None => (toml::to_string(&base).map_err(|e| Error::msg(format!("settings: {e}")))?, PathBuf::from("<defaults>.toml")),
    };
    let text = if overrides.is_empty() { text } else { apply_overrides(&text, overrides, &path)? };
    parse_config(&text, &path)
}

fn load(path: &Path) -> Result<Arc<Manifest>> {
    Manifest::load(path).map(Arc::new).map_err(|e| Error::msg(e.to_string()))
}

fn split_or_all(m: &Manifest, split: Split) -> Vec<usize> {
    let idx = m.indices_in(split);
    if idx.is_empty() {
        (0..m.len()).collect()
    } else {
        idx
    }
}

/// `eval fid`: prints FID, KID, precision and recall.
pub fn run_fid(a: &FidArgs) -> Result<()> {
    let extractor = match (&a.features_weights, &a.classifier) {
        (Some(w), _) => FeatureExtractor::torchxrayvision(w, None)?,
        (None, Some(dir)) => {
            Classifier::load(dir)?.into_feature_extractor(format!("pooled features of the classifier in {}", dir.display()))
        }
        (None, None) => {
            return Err(Error::msg(
                "eval fid: give --features-weights (torchxrayvision DenseNet-121 converted by \
                 tests/fixtures/convert_torchxrayvision.py) or --classifier (a folder from train-classifier/evaluate)",
            ))
        }
    };
    let (ma, mb) = (load(&a.set_a)?, load(&a.set_b)?);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bar = progress::bar(2, "features");
    let fa = extractor.extract(&ma, (0..ma.len()).collect(), a.batch_size, workers)?;
    bar.inc(1);
    let fb = extractor.extract(&mb, (0..mb.len()).collect(), a.batch_size, workers)?;
    bar.finish_and_clear();
    let d = fid(&fa, &fb)?;
    println!("features:  {}", extractor.source);
    println!("images:    {} vs {}", fa.n, fb.n);
    println!("FID:       {:.4} (mean term {:.4}, covariance term {:.4})", d.value, d.mean_term, d.trace_term);
    match kid(&fa, &fb, &KidSettings::default()) {
        Ok(k) => println!("KID:       {:.6} ± {:.6} ({} subsets of {})", k.mean, k.std, k.subsets, k.subset_size),
        Err(e) => println!("KID:       not defined ({e})"),
    }
    match prdc(&fa, &fb, a.k) {
        Ok(p) => {
            println!("precision: {:.4}", p.precision);
            println!("recall:    {:.4}", p.recall);
            println!("density:   {:.4}", p.density);
            println!("coverage:  {:.4}", p.coverage);
        }
        Err(e) => println!("precision/recall: not defined ({e})"),
    }
    Ok(())
}

/// Train a classifier (`eval classifier`, `train-classifier`), print its test AUCs, and save it when `--out` is given.
pub fn run_classifier(a: &ClassifierArgs) -> Result<ClassifierMetrics> {
    let base = if a.demo { ClassifierConfig::demo() } else { ClassifierConfig::default() };
    let cfg: ClassifierConfig = settings(base, a.config.as_deref(), &a.overrides)?;
    let (train_m, test_m) = (load(&a.train)?, load(&a.test)?);
    let real = match &a.real {
        Some(r) => load(r)?,
        None => test_m.clone(),
    };
    let (train_idx, test_idx) = (split_or_all(&train_m, Split::Train), split_or_all(&test_m, Split::Test));
    let labels = match &cfg.labels {
        Some(l) if !l.is_empty() => l.clone(),
        _ => {
            let real_train = split_or_all(&real, Split::Train);
            let real_test = split_or_all(&real, Split::Test);
            select_labels(&real, &real_train, &real_test, cfg.min_positives)?
        }
    };
    let train = LabelledSet::new(train_m, train_idx, &labels, Some(&real))?;
    let test = LabelledSet::new(test_m, test_idx, &labels, Some(&real))?;
    let mut model = Classifier::new(&cfg, labels)?;
    let bar = progress::bar(0, "classifier");
    let log = model.train(&cfg, &train, &bar)?;
    bar.finish_and_clear();
    let metrics = model.evaluate(&test, cfg.bootstrap, cfg.seed, cfg.workers)?;
    if let Some(out) = &a.out {
        model.save(out)?;
        Classifier::save_metrics(out, &metrics, &log)?;
    }
    println!("trained on {} images in {:.1}s, tested on {} images", log.images, log.seconds, metrics.test_images);
    println!("{:<28} {:>5} {:>7}  AUC [95% CI]", "pathology", "pos", "neg");
    for l in &metrics.labels {
        let auc = l.auc.map_or("not defined (one class)".into(), |e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi));
        println!("{:<28} {:>5} {:>7}  {auc}", l.name, l.positives, l.negatives);
    }
    match metrics.mean_auc {
        Some(e) => println!("{:<28} {:>5} {:>7}  {:.3} [{:.3}, {:.3}]", "mean", "", "", e.value, e.lo, e.hi),
        None => println!("mean AUC: not defined"),
    }
    Ok(metrics)
}

/// `evaluate`: run the stage and print where the summary went.
pub fn run_evaluate(a: &EvaluateArgs) -> Result<()> {
    let base = if a.demo { evaluate::demo(&a.work) } else { evaluate::for_work(&a.work) };
    let mut cfg: EvaluateConfig = settings(base, a.config.as_deref(), &a.overrides)?;
    // Datasets that do not exist yet are left out rather than failing the stage.
    for p in [&mut cfg.synth, &mut cfg.filtered, &mut cfg.distill] {
        if p.as_ref().is_some_and(|d| !d.join("manifest.jsonl").is_file()) {
            *p = None;
        }
    }
    let summary = evaluate::run(&cfg)?;
    for (name, d) in &summary.datasets {
        let fid = d.fidelity.as_ref().map_or("—".into(), |f| format!("{:.2}", f.fid.value));
        let auc = d.classifier.as_ref().and_then(|c| c.test.mean_auc).map_or("—".into(), |e| format!("{:.3}", e.value));
        println!("{name:<10} images {:>6}  FID {fid:>8}  mean AUC {auc}", d.images);
    }
    println!("wrote {}", cfg.out.join("evaluation.json").display());
    Ok(())
}

/// `report`: write the report and print its path.
pub fn run_report(a: &ReportArgs) -> Result<()> {
    let mut cfg = ReportConfig::for_work(&a.work);
    if let Some(out) = &a.out {
        cfg.out = out.clone();
    }
    let md = report::run(&cfg)?;
    println!("wrote {}", md.display());
    Ok(())
}
