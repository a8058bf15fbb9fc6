//! The `report` stage: gathers whatever the work directory holds into
//! `report.json` and `report.md` with PNG figures (sample grids, s_reid and
//! s_align histograms before and after filtering, ROC curves of the
//! classifiers and of the re-identification network, Grad-CAM++ overlays of
//! the most re-identifiable pairs). A part that has not run is listed as
//! "not run"; it is never an error. A file that exists but cannot be parsed
//! is an error naming it.

use crate::data::{Image, Manifest};
use crate::eval::gradcam::{overlay, siamese_gradcam_pp};
use crate::eval::metrics::RocPoint;
use crate::eval::plots::{histogram_png, image_grid_png, roc_png, HistogramSeries, RocSeries};
use crate::eval::report::{render_markdown, DatasetInfo, Figure, FilterCounts, LabelRow, Report, TableRow};
use crate::io::{write_atomic_bytes, write_atomic_json};
use crate::models::siamese::{SiameseConfig, SiameseReid};
use crate::pipeline::evaluate::EvaluateSummary;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where to read and write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// The work directory.
    pub work: PathBuf,
    /// Output folder (`work/report`).
    pub out: PathBuf,
    /// Prompts shown in the sample grid.
    pub grid_prompts: usize,
    /// Pairs shown with Grad-CAM++ overlays.
    pub gradcam_pairs: usize,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig { work: "work".into(), out: "work/report".into(), grid_prompts: 6, gradcam_pairs: 4 }
    }
}

impl ReportConfig {
    /// The report of `work`, written to `work/report`.
    pub fn for_work(work: &Path) -> ReportConfig {
        ReportConfig { work: work.to_path_buf(), out: work.join("report"), ..ReportConfig::default() }
    }
}

/// One line of `scores.jsonl`.
#[derive(Clone, Debug, Deserialize)]
struct ScoreLine {
    image: String,
    prompt_index: u64,
    #[serde(default)]
    sample_index: u64,
    s_reid: f64,
    #[serde(default)]
    matched_real: Option<String>,
    #[serde(default)]
    s_align: Option<f64>,
}

/// One line of `filtered/decisions.jsonl`.
#[derive(Clone, Debug, Deserialize)]
struct Decision {
    image: String,
    kept: bool,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| Error::file(path, format!("not valid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<Vec<T>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        out.push(serde_json::from_str(line).map_err(|e| Error::file(path, format!("line {}: {e}", i + 1)))?);
    }
    Ok(Some(out))
}

fn load_dataset(dir: &Path) -> Result<Option<Manifest>> {
    if !dir.join("manifest.jsonl").is_file() {
        return Ok(None);
    }
    Manifest::load(dir).map(Some).map_err(|e| Error::msg(e.to_string()))
}

/// A number at the first of `paths` (dotted keys) that holds one; `{"value": x}` objects count as x.
fn number_at(v: &Value, paths: &[&str]) -> Option<f64> {
    paths.iter().find_map(|p| {
        let mut cur = v;
        for key in p.split('.') {
            cur = cur.get(key)?;
        }
        cur.as_f64().or_else(|| cur.get("value").and_then(Value::as_f64))
    })
}

/// ROC points from `[{fpr, tpr, ...}]` or `{"fpr": [...], "tpr": [...]}`.
fn roc_points(v: &Value) -> Option<Vec<RocPoint>> {
    let point = |fpr: f64, tpr: f64| RocPoint { threshold: f64::NAN, fpr, tpr };
    if let Some(arr) = v.as_array() {
        return arr.iter().map(|p| Some(point(p.get("fpr")?.as_f64()?, p.get("tpr")?.as_f64()?))).collect();
    }
    let (f, t) = (v.get("fpr")?.as_array()?, v.get("tpr")?.as_array()?);
    f.iter().zip(t).map(|(a, b)| Some(point(a.as_f64()?, b.as_f64()?))).collect()
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Build the report from the work directory; returns the path of `report.md`.
pub fn run(cfg: &ReportConfig) -> Result<PathBuf> {
    let w = &cfg.work;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut report = Report { version: env!("CARGO_PKG_VERSION").into(), work: w.display().to_string(), ..Report::default() };

    let evaluation: Option<EvaluateSummary> = match read_json(&w.join("eval/evaluation.json"))? {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| Error::file(w.join("eval/evaluation.json"), e.to_string()))?),
        None => None,
    };
    let filter: Option<FilterCounts> = match read_json(&w.join("filtered/filter_summary.json"))? {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| Error::file(w.join("filtered/filter_summary.json"), e.to_string()))?),
        None => None,
    };
    let distill_summary = read_json(&w.join("distill_summary.json"))?;
    let scores: Option<Vec<ScoreLine>> = read_jsonl(&w.join("scores.jsonl"))?;
    let scores_distill: Option<Vec<ScoreLine>> = read_jsonl(&w.join("scores-distill.jsonl"))?;
    let decisions: Option<Vec<Decision>> = read_jsonl(&w.join("filtered/decisions.jsonl"))?;
    let reid_metrics = read_json(&w.join("reid/metrics.json"))?;
    let align_metrics = read_json(&w.join("align/metrics.json"))?;
    let timings = read_json(&w.join("timings.json"))?;
    let real = load_dataset(&w.join("real"))?;
    let synth = load_dataset(&w.join("synth"))?;
    let filtered = load_dataset(&w.join("filtered"))?;
    let distilled = load_dataset(&w.join("synth-distill"))?;

    for (present, what) in [
        (real.is_some(), "real dataset (work/real)"),
        (synth.is_some(), "sampling from the model trained on real data (work/synth)"),
        (reid_metrics.is_some(), "re-identification network (work/reid)"),
        (align_metrics.is_some(), "alignment network (work/align)"),
        (scores.is_some(), "scoring (work/scores.jsonl)"),
        (filter.is_some(), "filtering (work/filtered)"),
        (distilled.is_some(), "sampling from the distilled model (work/synth-distill)"),
        (scores_distill.is_some() || distill_summary.is_some(), "scoring of the distilled samples (work/scores-distill.jsonl)"),
        (evaluation.is_some(), "evaluation (work/eval/evaluation.json)"),
    ] {
        if !present {
            report.not_run.push(what.to_string());
        }
    }
    report.delta = filter.as_ref().map(|f| f.delta);
    report.reid_auc = reid_metrics.as_ref().and_then(|m| number_at(m, &["test_auc", "auc", "test.auc"]));
    if let Some(t) = &timings {
        report.timings = t
            .get("stages")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::file(w.join("timings.json"), e.to_string()))?
            .unwrap_or_default();
    }

    // s_reid and s_align of all samples, of the kept ones, and of the distilled model's samples.
    let kept_images: Option<std::collections::HashSet<&str>> =
        decisions.as_ref().map(|d| d.iter().filter(|d| d.kept).map(|d| d.image.as_str()).collect());
    let sreid_all: Vec<f64> = scores.iter().flatten().map(|s| s.s_reid).collect();
    let salign_all: Vec<f64> = scores.iter().flatten().filter_map(|s| s.s_align).collect();
    let kept_scores: Vec<&ScoreLine> = match (&scores, &kept_images) {
        (Some(s), Some(k)) => s.iter().filter(|s| k.contains(s.image.as_str())).collect(),
        _ => Vec::new(),
    };
    let sreid_kept: Vec<f64> = kept_scores.iter().map(|s| s.s_reid).collect();
    let salign_kept: Vec<f64> = kept_scores.iter().filter_map(|s| s.s_align).collect();
    let sreid_distill: Vec<f64> = scores_distill.iter().flatten().map(|s| s.s_reid).collect();
    let salign_distill: Vec<f64> = scores_distill.iter().flatten().filter_map(|s| s.s_align).collect();
    let delta = report.delta.unwrap_or(0.5);
    let share_at_least = |v: &[f64]| (!v.is_empty()).then(|| v.iter().filter(|&&x| x >= delta).count() as f64 / v.len() as f64);

    // The main table.
    let ds = |name: &str| evaluation.as_ref().and_then(|e| e.datasets.get(name));
    let row = |name: &str, label: &str, images: Option<usize>| {
        let d = ds(name);
        let f = d.and_then(|d| d.fidelity.as_ref());
        TableRow {
            name: label.to_string(),
            images: d.map(|d| d.images).or(images),
            auc: d.and_then(|d| d.classifier.as_ref()).and_then(|c| c.test.mean_auc),
            fid: f.map(|f| f.fid.value),
            kid: f.and_then(|f| f.kid),
            precision: f.and_then(|f| f.prdc.map(|p| p.precision)),
            recall: f.and_then(|f| f.prdc.map(|p| p.recall)),
            ms_ssim: d.and_then(|d| d.ms_ssim),
            ..TableRow::default()
        }
    };
    let mut real_row = row("real", "real", real.as_ref().map(Manifest::len));
    real_row.s_align = align_metrics.as_ref().and_then(|m| number_at(m, &["s_align_real_mean", "test.matched_mean"]));
    let mut synth_row = row("synthetic", "synthetic (D_synth)", synth.as_ref().map(Manifest::len));
    synth_row.r_reid = filter.as_ref().map(|f| f.r_reid).or_else(|| share_at_least(&sreid_all));
    synth_row.s_align = filter.as_ref().and_then(|f| f.s_align_mean_all).or_else(|| mean(&salign_all));
    let mut filtered_row = row("filtered", "filtered (D_filtered)", filtered.as_ref().map(Manifest::len));
    filtered_row.r_reid = share_at_least(&sreid_kept);
    filtered_row.s_align = filter.as_ref().and_then(|f| f.s_align_mean_kept).or_else(|| mean(&salign_kept));
    let mut distill_row = row("distilled", "distilled (D_distill)", distilled.as_ref().map(Manifest::len));
    distill_row.r_reid = distill_summary.as_ref().and_then(|d| number_at(d, &["r_reid"])).or_else(|| share_at_least(&sreid_distill));
    distill_row.s_align = distill_summary.as_ref().and_then(|d| number_at(d, &["s_align_mean"])).or_else(|| mean(&salign_distill));
    report.rows = vec![real_row, synth_row, filtered_row, distill_row];
    report.filter = filter.clone();

    if let Some(e) = &evaluation {
        report.features_source = Some(e.features_source.clone());
        report.settings = serde_json::to_value(&e.settings).unwrap_or(Value::Null);
        for (k, label) in e.labels.iter().enumerate() {
            let auc_of = |name: &str| ds(name).and_then(|d| d.classifier.as_ref()).and_then(|c| c.test.labels.get(k)).and_then(|l| l.auc);
            let test_positives =
                ds("real").and_then(|d| d.classifier.as_ref()).and_then(|c| c.test.labels.get(k)).map_or(0, |l| l.positives);
            report.labels.push(LabelRow {
                label: label.clone(),
                test_positives,
                auc: [auc_of("real"), auc_of("synthetic"), auc_of("distilled")],
            });
        }
        for (name, d) in &e.datasets {
            report.datasets.push(DatasetInfo {
                name: name.clone(),
                path: d.path.display().to_string(),
                images: d.images,
                sha256: d.sha256.clone(),
            });
        }
        if e.settings.features_weights.is_none() {
            report
                .notes
                .push(format!("No torchxrayvision weights were given: FID, KID, precision and recall use the {}.", e.features_source));
        }
    }
    if let Ok(h) = crate::io::hash::sha256_file(w.join("lineage.json")) {
        report
            .notes
            .push(format!("Lineage record work/lineage.json (SHA-256 {h}) lists the content hash of every stage's inputs and outputs."));
    }

    // Figures.
    let fig = |report: &mut Report, file: &str, caption: &str| report.figures.push(Figure { file: file.into(), caption: caption.into() });
    if !sreid_all.is_empty() {
        let mut series = vec![HistogramSeries { label: "D_synth, all samples".into(), values: &sreid_all }];
        if !sreid_kept.is_empty() {
            series.push(HistogramSeries { label: "D_filtered (kept)".into(), values: &sreid_kept });
        }
        if !sreid_distill.is_empty() {
            series.push(HistogramSeries { label: "D_distill".into(), values: &sreid_distill });
        }
        let label = format!("δ = {delta}");
        histogram_png(
            &cfg.out.join("s_reid_hist.png"),
            "Re-identification score before and after filtering",
            "s_reid",
            &series,
            (0.0, 1.0),
            25,
            Some((delta, &label)),
        )?;
        fig(&mut report, "s_reid_hist.png", "s_reid before and after filtering (paper Fig. 4)");
    }
    if !salign_all.is_empty() {
        let mut series = vec![HistogramSeries { label: "D_synth, all samples".into(), values: &salign_all }];
        if !salign_kept.is_empty() {
            series.push(HistogramSeries { label: "D_filtered (kept)".into(), values: &salign_kept });
        }
        if !salign_distill.is_empty() {
            series.push(HistogramSeries { label: "D_distill".into(), values: &salign_distill });
        }
        let all: Vec<f64> = series.iter().flat_map(|s| s.values.iter().copied()).collect();
        let lo = all.iter().cloned().fold(f64::INFINITY, f64::min).min(0.0);
        let hi = all.iter().cloned().fold(f64::NEG_INFINITY, f64::max).max(lo + 1e-6);
        histogram_png(
            &cfg.out.join("s_align_hist.png"),
            "Image-text alignment before and after filtering",
            "s_align",
            &series,
            (lo, hi),
            25,
            None,
        )?;
        fig(&mut report, "s_align_hist.png", "s_align before and after filtering (paper Fig. 4)");
    }
    if let Some(e) = &evaluation {
        let panels: Vec<(String, Vec<RocSeries>)> = e
            .labels
            .iter()
            .enumerate()
            .map(|(k, label)| {
                let curves = ["real", "synthetic", "distilled"]
                    .iter()
                    .filter_map(|name| {
                        let l = ds(name)?.classifier.as_ref()?.test.labels.get(k)?;
                        let auc = l.auc?;
                        Some(RocSeries { label: format!("trained on {name} (AUC {:.3})", auc.value), points: l.roc.clone() })
                    })
                    .collect();
                (label.clone(), curves)
            })
            .collect();
        if panels.iter().any(|(_, c)| !c.is_empty()) {
            roc_png(&cfg.out.join("roc_classifier.png"), "Downstream classifier on the real test split", &panels)?;
            fig(&mut report, "roc_classifier.png", "ROC curves of the downstream classifiers");
        }
    }
    if let Some(points) = reid_metrics.as_ref().and_then(|m| m.get("roc")).and_then(roc_points) {
        let label = format!("siamese re-id (AUC {})", report.reid_auc.map_or("—".into(), |a| format!("{a:.3}")));
        roc_png(
            &cfg.out.join("roc_reid.png"),
            "Re-identification network, test pairs",
            &[("same patient?".into(), vec![RocSeries { label, points }])],
        )?;
        fig(&mut report, "roc_reid.png", "ROC curve of the re-identification network");
    }
    if let (Some(real), Some(synth)) = (&real, &synth) {
        sample_grid(cfg, real, synth, filtered.as_ref(), distilled.as_ref(), scores.as_deref())?;
        fig(&mut report, "samples.png", "Samples for the same prompts: real | synthetic | filtered | distilled");
    }
    if let (Some(real), Some(synth), Some(scores)) = (&real, &synth, &scores) {
        match gradcam_figure(cfg, real, synth, scores) {
            Ok(true) => fig(
                &mut report,
                "gradcam.png",
                "Grad-CAM++ of the re-identification network on the most re-identifiable pairs (paper Fig. 5a)",
            ),
            Ok(false) => {}
            Err(e) => report.notes.push(format!("Grad-CAM++ figure not drawn: {e}")),
        }
    }

    write_atomic_json(cfg.out.join("report.json"), &report)?;
    let md = cfg.out.join("report.md");
    let mut markdown = render_markdown(&report);
    if let Some(section) = privimage_section(w)? {
        markdown.push_str(&section);
    }
    write_atomic_bytes(&md, markdown.as_bytes())?;
    Ok(md)
}

// ---- PrivImage (DP-SGD baseline) section ------------------------------------------------------

/// The "PrivImage (DP-SGD baseline)" table, one row per ε, when `<work>/privimage/summary.json`
/// exists: the same measures as the Privacy Distillation table (R_reid unfiltered, s_align, FID,
/// downstream AUC), so both routes can be read side by side.
fn privimage_section(work: &Path) -> Result<Option<String>> {
    use crate::pipeline::privimage::{summary_path, PrivImageSummary};
    use std::fmt::Write;
    let path = summary_path(work);
    let Some(v) = read_json(&path)? else { return Ok(None) };
    let s: PrivImageSummary = serde_json::from_value(v).map_err(|e| Error::file(&path, e.to_string()))?;
    let opt = |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    let mut out = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "\n## PrivImage (DP-SGD baseline)\n");
    let _ = writeln!(
        out,
        "Public pretraining on {} of {} public images chosen by a DP semantic query (ε_query = {:.3}), then DP-SGD \
         fine-tuning on the real training split. R_reid is the share of samples with s_reid ≥ 0.5, nothing filtered. \
         Real-data classifier AUC: {}.\n",
        s.selected,
        s.public_images,
        s.query_epsilon,
        opt(s.real_auc, 3)
    );
    let _ = writeln!(out, "| ε (target) | ε spent | δ | σ | q | steps | R_reid | s_align | FID | AUC |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for r in &s.results {
        let _ = writeln!(
            out,
            "| {} | {:.4} | {:.0e} | {:.3} | {} | {} | {:.2} % | {} | {} | {} |",
            r.epsilon_target,
            r.epsilon_spent,
            r.delta,
            r.noise_multiplier,
            r.sample_rate,
            r.steps,
            100.0 * r.r_reid,
            opt(r.s_align, 3),
            opt(r.fid, 2),
            opt(r.auc, 3)
        );
    }
    Ok(Some(out))
}

/// Real | synthetic | filtered | distilled images for the first prompts that have a kept sample.
fn sample_grid(
    cfg: &ReportConfig,
    real: &Manifest,
    synth: &Manifest,
    filtered: Option<&Manifest>,
    distilled: Option<&Manifest>,
    scores: Option<&[ScoreLine]>,
) -> Result<()> {
    let by_prompt = |m: &Manifest| -> BTreeMap<u64, usize> {
        let mut map = BTreeMap::new();
        for (i, r) in m.records.iter().enumerate() {
            if let Some(p) = r.prompt_index {
                map.entry(p).or_insert(i);
            }
        }
        map
    };
    let synth_at = by_prompt(synth);
    // Show, where scores exist, the most re-identifiable sample of the prompt: what filtering removes.
    let mut worst: HashMap<u64, (f64, &str)> = HashMap::new();
    for s in scores.into_iter().flatten() {
        let e = worst.entry(s.prompt_index).or_insert((f64::NEG_INFINITY, s.image.as_str()));
        if s.s_reid > e.0 {
            *e = (s.s_reid, s.image.as_str());
        }
    }
    let filtered_at = filtered.map(by_prompt).unwrap_or_default();
    let distilled_at = distilled.map(by_prompt).unwrap_or_default();
    let prompts: Vec<u64> = if filtered_at.is_empty() { synth_at.keys().copied().collect() } else { filtered_at.keys().copied().collect() };
    let load = |m: &Manifest, i: usize| m.load_image(i).ok();
    let mut rows = Vec::new();
    for &p in prompts.iter().filter(|&&p| (p as usize) < real.len()).take(cfg.grid_prompts) {
        let synth_img = match worst.get(&p) {
            Some((_, image)) => image_at(&synth.root().join(image)),
            None => synth_at.get(&p).and_then(|&i| load(synth, i)),
        };
        let label = match worst.get(&p) {
            Some((s, _)) => format!("prompt {p}\ns_reid {s:.2}"),
            None => format!("prompt {p}"),
        };
        rows.push((
            label,
            vec![
                load(real, p as usize),
                synth_img,
                filtered.and_then(|f| filtered_at.get(&p).and_then(|&i| load(f, i))),
                distilled.and_then(|d| distilled_at.get(&p).and_then(|&i| load(d, i))),
            ],
        ));
    }
    let columns = ["real", "synthetic", "filtered", "distilled"].map(String::from);
    let title = "Same prompt: real | synthetic (max s_reid) | kept | distilled";
    image_grid_png(&cfg.out.join("samples.png"), title, &columns, &rows, 144)
}

/// An image for a figure; one that cannot be read shows as an empty cell.
fn image_at(path: &Path) -> Option<Image> {
    crate::data::read_image(path).ok()
}

/// Grad-CAM++ overlays of the `gradcam_pairs` highest-s_reid (synthetic, matched real) pairs; `Ok(false)` when
/// there is no re-identification network to explain.
fn gradcam_figure(cfg: &ReportConfig, real: &Manifest, synth: &Manifest, scores: &[ScoreLine]) -> Result<bool> {
    let dir = cfg.work.join("reid");
    let (config_path, weights) = (dir.join("config.json"), dir.join("model.safetensors"));
    if !config_path.is_file() || !weights.is_file() {
        return Ok(false);
    }
    let v = read_json(&config_path)?.unwrap_or(Value::Null);
    let arch: SiameseConfig = serde_json::from_value(v.get("architecture").cloned().unwrap_or(Value::Null))
        .map_err(|e| Error::file(&config_path, format!("field `architecture`: {e}")))?;
    let size = v.pointer("/input/size").and_then(Value::as_u64).ok_or_else(|| Error::file(&config_path, "field `input.size` is missing"))?
        as usize;
    let store = crate::nn::ParamStore::new(crate::DType::F32, crate::Device::Cpu, 0);
    let model = SiameseReid::new(&store.root().frozen(), &arch)?;
    crate::eval::features::load_store(&store, &weights)?;
    let mut ranked: Vec<&ScoreLine> = scores.iter().filter(|s| s.matched_real.is_some()).collect();
    ranked.sort_by(|a, b| b.s_reid.total_cmp(&a.s_reid));
    let mut rows = Vec::new();
    for s in ranked.into_iter().take(cfg.gradcam_pairs) {
        let matched = s.matched_real.as_deref().unwrap_or_default();
        let (Some(a), Some(b)) = (image_at(&synth.root().join(&s.image)), image_at(&real.root().join(matched))) else { continue };
        let ta = crate::data::reid_input(&a, size).map_err(|e| Error::msg(e.to_string()))?.unsqueeze(0)?;
        let tb = crate::data::reid_input(&b, size).map_err(|e| Error::msg(e.to_string()))?.unsqueeze(0)?;
        let (cam_a, cam_b, logit) = siamese_gradcam_pp(&model, &ta, &tb)?;
        let (a, b) = (a.resize_center_crop(size), b.resize_center_crop(size));
        let label = format!("s_reid {:.2}\nlogit {logit:.2}\nprompt {} #{}", s.s_reid, s.prompt_index, s.sample_index);
        rows.push((label, vec![Some(a.clone()), Some(overlay(&a, &cam_a, 0.5)), Some(b.clone()), Some(overlay(&b, &cam_b, 0.5))]));
    }
    if rows.is_empty() {
        return Ok(false);
    }
    let columns = ["synthetic", "Grad-CAM++", "matched real", "Grad-CAM++"].map(String::from);
    image_grid_png(&cfg.out.join("gradcam.png"), "Grad-CAM++: where the re-identification network looks", &columns, &rows, 144)?;
    Ok(true)
}
