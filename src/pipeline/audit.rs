//! `privdistill audit`: the re-identification filter's sensitivity and
//! specificity (bootstrap 95 % intervals) on held-out real pairs, on augmented
//! copies of training images at graded strengths, and optionally on the
//! samples of a deliberately memorising model. Writes `audit.json`,
//! `audit.md` (one table row per set and attack strength) and `audit.png`
//! (sensitivity against attack strength, one line per attack).

use crate::data::{Image, Manifest, PairSampler};
use crate::pipeline::progress;
use crate::pipeline::scorer_stage::create_out_dir;
use crate::privacy::audit::{
    audit_augmented, audit_row, near_copy_audit, rate, Attack, AuditRow, AuditSettings, CopyOf, NearCopyAudit, PixelIndex, Rate,
    SampleCopyCheck,
};
use crate::privacy::copy_gate::CopyGate;
use crate::privacy::dataset::SplitDataset;
use crate::privacy::reid::ReidScorer;
use crate::privacy::scorer_folder::data_error;
use crate::{Error, Result, Rng};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options of `audit`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The re-identification scorer folder.
    pub reid: PathBuf,
    /// The real dataset (with splits).
    pub data: PathBuf,
    /// The filter's threshold: s_reid ≥ delta flags a pair.
    pub delta: f64,
    /// The attacks applied to training images.
    pub attacks: Vec<Attack>,
    /// Attack strengths in [0, 1].
    pub strengths: Vec<f64>,
    /// At most this many training images are attacked.
    pub max_images: usize,
    /// A synthetic dataset sampled from a memorising model (records carry `prompt_index`).
    pub synthetic: Option<PathBuf>,
    /// Residual pixel correlation with a real image at or above which a synthetic sample counts as a
    /// near-copy of it (`None`: the largest correlation between two real patients' images).
    pub copy_threshold: Option<f64>,
    /// Thumbnail side at which samples and real images are compared for near-copies.
    pub copy_compare_side: usize,
    /// `score`'s output for `synthetic`: the filter's own s_reid (and s_copy), so "removed by
    /// the filter" is what the filter did (otherwise: s_reid against the prompt's image).
    pub scores: Option<PathBuf>,
    /// Whether the filter applies the copy gate (as `filter`'s `copy_gate`); its removals then
    /// count, from the recorded s_copy, and its false-positive rate is measured on held-out patients.
    pub copy_gate: bool,
    /// The copy gate's threshold on s_copy (as `filter`'s `copy_quantile`).
    pub copy_quantile: f64,
    /// Thumbnail side of the copy gate (as `score`'s `copy_gate_side`).
    pub copy_gate_side: usize,
    /// Thumbnail blur of the copy gate (as `score`'s `copy_gate_smoothing`).
    pub copy_gate_smoothing: f64,
    /// Where the tables and the plot go.
    pub out: PathBuf,
    /// Bootstrap resamples per interval.
    pub bootstrap_resamples: usize,
    /// Seeds image choice, attack noise and the bootstrap.
    pub seed: u64,
    /// Accepted for a uniform command line; the audit is short and always starts afresh.
    pub resume: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            reid: PathBuf::from("work/reid"),
            data: PathBuf::from("work/real"),
            delta: 0.5,
            attacks: Attack::ALL.to_vec(),
            strengths: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            max_images: 500,
            synthetic: None,
            copy_threshold: None,
            copy_compare_side: 16,
            scores: None,
            copy_gate: true,
            copy_quantile: 0.99,
            copy_gate_side: crate::privacy::copy_gate::DEFAULT_SIDE,
            copy_gate_smoothing: crate::privacy::copy_gate::DEFAULT_SMOOTHING,
            out: PathBuf::from("work/audit"),
            bootstrap_resamples: 1000,
            seed: 0,
            resume: false,
        }
    }
}

impl AuditConfig {
    /// The demo preset: 64 training images, 500 bootstrap resamples.
    pub fn demo(reid: &Path, data: &Path, out: &Path) -> Self {
        AuditConfig {
            reid: reid.to_path_buf(),
            data: data.to_path_buf(),
            out: out.to_path_buf(),
            max_images: 64,
            bootstrap_resamples: 500,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.delta) {
            return Err(Error::msg(format!("audit: delta {} must lie in [0, 1]", self.delta)));
        }
        if let Some(s) = self.strengths.iter().find(|s| !(0.0..=1.0).contains(*s)) {
            return Err(Error::msg(format!("audit: strength {s} must lie in [0, 1]")));
        }
        if let Some(t) = self.copy_threshold.filter(|t| !(-1.0..=1.0).contains(t)) {
            return Err(Error::msg(format!("audit: copy_threshold {t} must lie in [-1, 1]")));
        }
        if self.copy_compare_side == 0 || self.copy_gate_side == 0 {
            return Err(Error::msg("audit: copy_compare_side and copy_gate_side must be at least 1"));
        }
        if !(self.copy_gate_smoothing >= 0.0 && self.copy_gate_smoothing.is_finite()) {
            return Err(Error::msg(format!("audit: copy_gate_smoothing {} must be a finite number ≥ 0", self.copy_gate_smoothing)));
        }
        if !(self.copy_quantile > 0.0 && self.copy_quantile <= 1.0) {
            return Err(Error::msg(format!("audit: copy_quantile {} must lie in (0, 1]", self.copy_quantile)));
        }
        if self.max_images == 0 {
            return Err(Error::msg("audit: max_images must be at least 1"));
        }
        Ok(())
    }
}

/// What `audit` reports (also written to `audit.json`).
#[derive(Clone, Debug, Serialize)]
pub struct AuditSummary {
    /// The output folder.
    pub out: PathBuf,
    /// The threshold audited.
    pub delta: f64,
    /// One row per set (and attack strength).
    pub rows: Vec<AuditRow>,
    /// With `synthetic`: the samples that are pixel-level near-copies of real images, and how many the filter removes.
    pub near_copies: Option<NearCopyAudit>,
    /// With the copy gate: the fraction of held-out patients' real images (validation and test
    /// splits) it would drop, calibrated on the training patients' images — its false-positive rate.
    pub copy_gate_heldout: Option<GateHeldout>,
    /// Wall time.
    pub wall_seconds: f64,
}

/// The copy gate on real images of patients it was not calibrated on.
#[derive(Clone, Debug, Serialize)]
pub struct GateHeldout {
    /// The threshold on s_copy.
    pub quantile: f64,
    /// Thumbnail side.
    pub side: usize,
    /// Training-split images the gate was calibrated on.
    pub calibration_images: usize,
    /// Fraction of held-out images with s_copy ≥ quantile (each is a new patient, so every one is a false positive).
    pub flagged: Rate,
}

/// Runs the audit and writes its table and plot.
pub fn run(cfg: &AuditConfig) -> Result<AuditSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let scorer = ReidScorer::load(&cfg.reid)?;
    let data = SplitDataset::load(&cfg.data)?;
    // The gate's removals can only be counted from recorded s_copy values.
    let copy_quantile = (cfg.copy_gate && cfg.scores.is_some()).then_some(cfg.copy_quantile);
    let settings = AuditSettings { delta: cfg.delta, resamples: cfg.bootstrap_resamples, seed: cfg.seed, copy_quantile };
    let steps = 1 + cfg.attacks.len() * cfg.strengths.len() + usize::from(cfg.synthetic.is_some());
    let bar = progress::bar(steps as u64, "audit");
    let mut rows = vec![heldout_row(&scorer, &data, settings)?];
    bar.inc(1);

    let (originals, others) = augmentation_sources(&data, cfg.max_images, cfg.seed)?;
    rows.extend(audit_augmented(&scorer, &originals, &others, &cfg.attacks, &cfg.strengths, settings, || bar.inc(1))?);

    let mut near_copies = None;
    if let Some(dir) = &cfg.synthetic {
        let recorded = match &cfg.scores {
            Some(path) => crate::pipeline::filter::read_scores(path)?.into_iter().map(|s| (s.image.clone(), s)).collect(),
            None => std::collections::HashMap::new(),
        };
        let (row, copies) = memorised(&scorer, &data, dir, (cfg.copy_threshold, cfg.copy_compare_side), &recorded, settings)?;
        rows.push(row);
        near_copies = Some(copies);
        bar.inc(1);
    }
    let copy_gate_heldout = if cfg.copy_gate { gate_heldout(&data, cfg, settings)? } else { None };
    bar.finish_and_clear();

    create_out_dir(&cfg.out)?;
    let summary = AuditSummary {
        out: cfg.out.clone(),
        delta: cfg.delta,
        rows,
        near_copies,
        copy_gate_heldout,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    crate::io::write_atomic_json(cfg.out.join("audit.json"), &summary)?;
    crate::io::write_atomic_bytes(cfg.out.join("audit.md"), markdown(&summary).as_bytes())?;
    plot(&summary, &cfg.out.join("audit.png"))?;
    Ok(summary)
}

/// Same- and different-patient pairs of the patients the network never trained on
/// (validation and test splits): every distinct positive pair and as many negatives.
fn heldout_row(scorer: &ReidScorer, data: &SplitDataset, settings: AuditSettings) -> Result<AuditRow> {
    let heldout: Vec<usize> = data.val.iter().chain(&data.test).copied().collect();
    let sampler = PairSampler::new(&data.manifest, &heldout)
        .map_err(|e| Error::file(&data.manifest.path, format!("held-out (val + test) patients: {e}")))?;
    let pairs = sampler.epoch(sampler.n_positive_pairs(), &mut Rng::new(settings.seed));
    let load = |i: usize| data.manifest.load_image(i).map_err(data_error);
    let a = pairs.iter().map(|p| load(p.a)).collect::<Result<Vec<_>>>()?;
    let b = pairs.iter().map(|p| load(p.b)).collect::<Result<Vec<_>>>()?;
    let scores = scorer.score_pairs(&a, &b)?;
    let (mut positives, mut negatives) = (Vec::new(), Vec::new());
    for (p, s) in pairs.iter().zip(scores) {
        if p.same_patient {
            positives.push(s)
        } else {
            negatives.push(s)
        }
    }
    audit_row("heldout", None, &positives, &negatives, settings.delta, settings.resamples, settings.seed)
}

/// The copy gate calibrated on the training split, applied to the validation and test
/// splits' images (other patients, by the patient-level split). `None` without held-out images.
fn gate_heldout(data: &SplitDataset, cfg: &AuditConfig, settings: AuditSettings) -> Result<Option<GateHeldout>> {
    let heldout: Vec<usize> = data.val.iter().chain(&data.test).copied().collect();
    if heldout.is_empty() {
        return Ok(None);
    }
    let load = |i: &usize| data.manifest.load_image(*i).map_err(data_error);
    let train = data.train.iter().map(load).collect::<Result<Vec<_>>>()?;
    let patients: Vec<&str> = data.train.iter().map(|&i| data.manifest.records[i].patient.as_str()).collect();
    let gate = CopyGate::build(&train, &patients, cfg.copy_gate_side, cfg.copy_gate_smoothing)
        .map_err(|e| Error::file(&data.manifest.path, e.to_string()))?;
    let queries = heldout.iter().map(load).collect::<Result<Vec<_>>>()?;
    let flagged: Vec<bool> = gate.score(&queries).iter().map(|s| s.s_copy >= cfg.copy_quantile).collect();
    let flagged = rate(&flagged, settings.resamples, settings.seed ^ 0x6761)?.expect("held-out images exist");
    Ok(Some(GateHeldout { quantile: cfg.copy_quantile, side: cfg.copy_gate_side, calibration_images: train.len(), flagged }))
}

/// Up to `max_images` training images (a seeded choice) and, for each, an image of another training patient.
fn augmentation_sources(data: &SplitDataset, max_images: usize, seed: u64) -> Result<(Vec<Image>, Vec<Image>)> {
    let mut chosen = data.train.clone();
    let mut rng = Rng::new(seed).fork(0x6175_6774);
    rng.shuffle(&mut chosen);
    chosen.truncate(max_images);
    let records = &data.manifest.records;
    if data.train.iter().all(|&i| records[i].patient == records[data.train[0]].patient) {
        return Err(Error::file(&data.manifest.path, "audit: the training split needs at least 2 patients"));
    }
    let (mut originals, mut others) = (Vec::new(), Vec::new());
    for &i in &chosen {
        let other = loop {
            let j = data.train[rng.below(data.train.len())];
            if records[j].patient != records[i].patient {
                break j;
            }
        };
        originals.push(data.manifest.load_image(i).map_err(data_error)?);
        others.push(data.manifest.load_image(other).map_err(data_error)?);
    }
    Ok((originals, others))
}

/// Every synthetic sample against the real image of its prompt (should be flagged:
/// the model memorises) and against the image of a random other patient (should
/// pass); then the near-copy audit: which samples are pixel-level copies of a real
/// image (any record of `data`), whose image that is, and whether the filter's
/// score — s_reid against the prompt's image — removes them.
fn memorised(
    scorer: &ReidScorer,
    data: &SplitDataset,
    dir: &Path,
    (copy_threshold, side): (Option<f64>, usize),
    recorded: &std::collections::HashMap<String, crate::privacy::filter::ScoreRecord>,
    settings: AuditSettings,
) -> Result<(AuditRow, NearCopyAudit)> {
    let synthetic = Manifest::load(dir).map_err(data_error)?;
    let records = &data.manifest.records;
    let mut rng = Rng::new(settings.seed).fork(0x006d_656d);
    let (mut samples, mut prompts, mut sources, mut others) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut filter_scores = Vec::new();
    for (k, r) in synthetic.records.iter().enumerate() {
        let Some(p) = r.prompt_index else {
            return Err(Error::file(
                &synthetic.path,
                format!(
                    "line {}: field `prompt_index` is missing — the audit needs the real record each sample was prompted with",
                    synthetic.lines[k]
                ),
            ));
        };
        let p = p as usize;
        if p >= records.len() {
            return Err(Error::file(
                &synthetic.path,
                format!("line {}: field `prompt_index` is {p}, past the real manifest's {} records", synthetic.lines[k], records.len()),
            ));
        }
        let other = (0..64).map(|_| rng.below(records.len())).find(|&j| records[j].patient != records[p].patient);
        let Some(other) = other else { continue };
        samples.push(synthetic.load_image(k).map_err(data_error)?);
        prompts.push(p);
        if !recorded.is_empty() {
            let s = recorded.get(&r.image).ok_or_else(|| {
                Error::file(
                    &synthetic.path,
                    format!("line {}: image {} has no score in the given scores file", synthetic.lines[k], r.image),
                )
            })?;
            filter_scores.push((Some(s.s_reid), s.s_copy));
        } else {
            filter_scores.push((None, None));
        }
        sources.push(data.manifest.load_image(p).map_err(data_error)?);
        others.push(data.manifest.load_image(other).map_err(data_error)?);
    }
    let sample_emb = scorer.embed(&samples)?;
    let positives = scorer.score_embeddings(&sample_emb, &scorer.embed(&sources)?)?;
    let negatives = scorer.score_embeddings(&sample_emb, &scorer.embed(&others)?)?;
    let row = audit_row("memorised", None, &positives, &negatives, settings.delta, settings.resamples, settings.seed)?;

    let reals = (0..records.len()).map(|i| data.manifest.load_image(i).map_err(data_error)).collect::<Result<Vec<_>>>()?;
    let index = PixelIndex::new(&reals, side)?;
    let nearest = index.nearest(&samples);
    let nearest_images: Vec<Image> = nearest.iter().map(|&(j, _)| reals[j].clone()).collect();
    let against_nearest = scorer.score_embeddings(&sample_emb, &scorer.embed(&nearest_images)?)?;
    let checks: Vec<SampleCopyCheck> = nearest
        .iter()
        .zip(prompts.iter().zip(&filter_scores))
        .zip(positives.iter().zip(&against_nearest))
        .map(|((&(j, correlation), (&p, &(s_reid_filter, s_copy_filter))), (&s_prompt, &s_nearest))| SampleCopyCheck {
            correlation,
            copy_of: if j == p {
                CopyOf::PromptImage
            } else if records[j].patient == records[p].patient {
                CopyOf::PromptPatient
            } else {
                CopyOf::OtherPatient
            },
            s_reid_prompt: s_prompt,
            s_reid_filter,
            s_reid_nearest: s_nearest,
            s_copy_filter,
        })
        .collect();
    let patients: Vec<&str> = records.iter().map(|r| r.patient.as_str()).collect();
    let copies = near_copy_audit(&checks, &index.nearest_other_patient(&patients), copy_threshold, side, settings)?;
    Ok((row, copies))
}

fn format_rate(r: &Option<Rate>) -> (String, String) {
    match r {
        Some(r) => (r.n.to_string(), format!("{:.3} [{:.3}, {:.3}]", r.estimate.value, r.estimate.lo, r.estimate.hi)),
        None => ("0".into(), "–".into()),
    }
}

/// The audit as a markdown table.
pub fn markdown(summary: &AuditSummary) -> String {
    let mut s = format!(
        "# Re-identification filter audit (δ = {})\n\nSensitivity: fraction of same-patient pairs or copies flagged (s_reid ≥ δ). \
         Specificity: fraction of different-patient pairs passed. Intervals: percentile bootstrap, 95 %.\n\n\
         | set | attack | strength | n+ | sensitivity [95 % CI] | n− | specificity [95 % CI] | mean s_reid+ |\n|---|---|---|---|---|---|---|---|\n",
        summary.delta
    );
    for r in &summary.rows {
        let (np, sens) = format_rate(&r.sensitivity);
        let (nn, spec) = format_rate(&r.specificity);
        s.push_str(&format!(
            "| {} | {} | {} | {np} | {sens} | {nn} | {spec} | {} |\n",
            r.set,
            r.attack.map_or("–", Attack::as_str),
            r.strength.map_or("–".into(), |v| format!("{v:.2}")),
            r.mean_positive_score.map_or("–".into(), |v| format!("{v:.3}")),
        ));
    }
    if let Some(c) = &summary.near_copies {
        s.push_str(&near_copy_markdown(c));
    }
    if let Some(g) = &summary.copy_gate_heldout {
        s.push_str(&gate_heldout_markdown(g));
    }
    s
}

/// The near-copy section: how many samples copy a real image and how many the filter removes.
fn near_copy_markdown(c: &NearCopyAudit) -> String {
    let show = |r: &Option<Rate>| format_rate(r).1;
    let mean = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
    let side = c.side;
    let reid_source = if c.removed_from_scores { "the s_reid recorded by `score`" } else { "s_reid against the prompt's real image" };
    let rule = match c.copy_quantile {
        Some(q) => format!("{reid_source} ≥ δ, or the recorded s_copy ≥ {q} (the copy gate)"),
        None => format!("{reid_source} ≥ δ"),
    };
    let mut s = format!(
        "\n## Near-copies among the memorising model's samples\n\n\
         Images are compared as {side}×{side} thumbnails minus the mean real thumbnail (Pearson correlation of the residuals). \
         A sample is a near-copy when its correlation with the most similar real image is ≥ {:.3}. \
         A real image's correlation with the most similar image of another patient has median {:.3} and maximum {:.3}; \
         the samples' correlation with their most similar real image has median {:.3} and maximum {:.3}.\n\n\
         \"Removed by the filter\": {rule}. The other samples' removal rate is what catching the copies cost: \
         a filter that drops everything catches every copy.\n\n\
         | samples | near-copies | of the prompt's image | of the prompt's patient | of another patient | flagged against the nearest real image | mean s_reid: copies / others |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {} | {} | {} | {} / {} |\n\n\
         | removed [95 % CI] | by the filter | by s_reid ≥ δ alone | by the copy gate alone |\n|---|---|---|---|\n\
         | near-copies | {} | {} | {} |\n\
         | other samples | {} | {} | {} |\n",
        c.threshold,
        c.distinct_real_median,
        c.distinct_real_max,
        c.sample_median,
        c.sample_max,
        c.samples,
        c.near_copies,
        c.of_prompt_image,
        c.of_prompt_patient,
        c.of_other_patient,
        show(&c.flagged_against_nearest),
        mean(c.mean_s_reid_copies),
        mean(c.mean_s_reid_others),
        show(&c.removed),
        show(&c.removed_by_reid),
        show(&c.removed_by_gate),
        show(&c.removed_others),
        show(&c.others_removed_by_reid),
        show(&c.others_removed_by_gate),
    );
    if c.copy_quantile.is_none() {
        s.push_str("\nThe copy gate was off (or no scores were given), so the filter is the paper's rule alone.\n");
    }
    s
}

/// The copy gate's false-positive rate on held-out patients.
fn gate_heldout_markdown(g: &GateHeldout) -> String {
    format!(
        "\n## Copy gate on held-out patients\n\n\
         Calibrated on the {} training-split images ({}×{} thumbnails); applied to the {} validation and test images, \
         whose patients it never saw, s_copy ≥ {} flags {:.3} [{:.3}, {:.3}] of them. Each is a false positive; \
         about {:.3} is expected by construction.\n",
        g.calibration_images,
        g.side,
        g.side,
        g.flagged.n,
        g.quantile,
        g.flagged.estimate.value,
        g.flagged.estimate.lo,
        g.flagged.estimate.hi,
        1.0 - g.quantile,
    )
}

/// Sensitivity against attack strength, one line with 95 % interval bars per attack;
/// the held-out and memorised sensitivities as dashed horizontal references.
pub fn plot(summary: &AuditSummary, path: &Path) -> Result<()> {
    use crate::eval::plots::{with_canvas, FONT, SERIES_COLOURS as COLOURS};
    let err = |e: &dyn std::fmt::Debug| Error::file(path, format!("drawing failed: {e:?}"));
    with_canvas(path, 900, 560, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Re-identification filter sensitivity (δ = {})", summary.delta), (FONT, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.02f64..1.02f64, 0f64..1.02f64)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("attack strength")
            .y_desc("sensitivity (flagged fraction)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|e| err(&e))?;
        let mut colour = 0;
        for attack in Attack::ALL {
            let points: Vec<(f64, f64, f64, f64)> = summary
                .rows
                .iter()
                .filter(|r| r.attack == Some(attack))
                .filter_map(|r| Some((r.strength?, r.sensitivity?.estimate)))
                .map(|(x, e)| (x, e.value, e.lo, e.hi))
                .collect();
            if points.is_empty() {
                continue;
            }
            let c = COLOURS[colour % COLOURS.len()];
            colour += 1;
            chart
                .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(attack.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(points.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled()))).map_err(|e| err(&e))?;
            chart
                .draw_series(points.iter().map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(1))))
                .map_err(|e| err(&e))?;
        }
        for set in ["heldout", "memorised"] {
            let Some(rate) = summary.rows.iter().find(|r| r.set == set).and_then(|r| r.sensitivity) else { continue };
            let c = COLOURS[colour % COLOURS.len()];
            colour += 1;
            let y = rate.estimate.value;
            let dashes: Vec<PathElement<(f64, f64)>> =
                (0..25).map(|k| PathElement::new(vec![(k as f64 * 0.04, y), (k as f64 * 0.04 + 0.02, y)], c.stroke_width(2))).collect();
            chart
                .draw_series(dashes)
                .map_err(|e| err(&e))?
                .label(format!("{set} pairs"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 7, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    })
}
