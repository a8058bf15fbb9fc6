//! The `score` stage: every synthetic image gets s_reid (against the real
//! image of its prompt, or the max over the real images a retrieval network
//! finds nearest when it has no prompt), s_align (against its prompt) and,
//! with the copy gate on, s_copy (its calibrated pixel similarity to the most
//! similar real image, [`crate::privacy::copy_gate`]), written to `scores.jsonl`.
//!
//! Resumable: finished batches are appended to `scores.jsonl.part` and flushed;
//! a rerun skips what is there (a torn last line is discarded) and the part file
//! is renamed to `scores.jsonl` only when every image is scored.

use crate::data::{Image, Manifest};
use crate::privacy::copy_gate::CopyGate;
use crate::privacy::filter::ScoreRecord;
use crate::privacy::score::{AlignModel, NearestReal, ReidModel};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Settings of the `score` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreConfig {
    /// The real dataset the prompts came from (its manifest's record order defines `prompt_index`).
    pub real: PathBuf,
    /// The synthetic dataset to score.
    pub synth: PathBuf,
    /// Re-identification network folder (`train-reid`).
    pub reid: PathBuf,
    /// Alignment network folder (`train-align`); required when any sample has a prompt.
    pub align: Option<PathBuf>,
    /// Retrieval network folder (`train-retrieval`); required when any sample has no prompt.
    pub retrieval: Option<PathBuf>,
    /// Output `scores.jsonl`.
    pub out: PathBuf,
    /// Images per batch.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Real neighbours an unconditional sample is compared with (s_reid is the max over them).
    #[serde(default = "default_neighbours")]
    pub neighbours: usize,
    /// Also compare each prompted sample with its `neighbours` nearest real images (needs `retrieval`)
    /// and keep the highest s_reid. The paper compares with the prompt's image only, which misses a
    /// sample that copies another patient's image — one with the same report, say.
    #[serde(default)]
    pub prompted_neighbours: bool,
    /// Compute s_copy for the filter's copy gate (against every real image).
    #[serde(default = "default_true")]
    pub copy_gate: bool,
    /// Thumbnail side the copy gate compares images at.
    #[serde(default = "default_copy_side")]
    pub copy_gate_side: usize,
    /// Gaussian blur of the copy gate's thumbnails, in thumbnail pixels.
    #[serde(default = "default_copy_smoothing")]
    pub copy_gate_smoothing: f64,
}

fn default_batch() -> usize {
    32
}
fn default_true() -> bool {
    true
}
fn default_copy_side() -> usize {
    crate::privacy::copy_gate::DEFAULT_SIDE
}
fn default_copy_smoothing() -> f64 {
    crate::privacy::copy_gate::DEFAULT_SMOOTHING
}
fn default_neighbours() -> usize {
    5
}

/// What `score` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// Images with a score in the output.
    pub scored: usize,
    /// Of those, scored by an earlier interrupted run.
    pub resumed: usize,
    /// Mean s_reid.
    pub s_reid_mean: f64,
    /// Mean s_align over conditional samples.
    pub s_align_mean: Option<f64>,
    /// With the copy gate: the residual correlation at which s_copy reaches 0.99, and the
    /// median and largest other-patient correlation among the real images it was calibrated on.
    pub copy_gate: Option<CopyGateSummary>,
}

/// How the copy gate was calibrated on the real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyGateSummary {
    /// Thumbnail side.
    pub side: usize,
    /// Thumbnail blur, in thumbnail pixels.
    pub smoothing: f64,
    /// Real images calibrated on.
    pub calibration_images: usize,
    /// Median other-patient correlation.
    pub calibration_median: f64,
    /// Correlation at which s_copy reaches 0.99.
    pub threshold_q99: Option<f64>,
    /// Largest other-patient correlation (s_copy = 1 at and above it).
    pub calibration_max: f64,
}

/// The part file beside `out` that holds finished batches.
pub fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// Check the synthetic set against the real one: every `prompt_index` exists,
/// and where a record names its `source_image` it is that prompt's image.
pub fn check_prompt_links(real: &Manifest, synth: &Manifest) -> Result<()> {
    for (i, r) in synth.records.iter().enumerate() {
        let line = synth.lines.get(i).copied().unwrap_or(i + 1);
        let Some(p) = r.prompt_index else { continue };
        let Some(source) = real.records.get(p as usize) else {
            return Err(Error::file(
                &synth.path,
                format!(
                    "line {line}: field prompt_index = {p} does not exist in {} ({} records): the synthetic set was not \
                     generated from this real set",
                    real.path.display(),
                    real.len()
                ),
            ));
        };
        if let Some(named) = r.extra.get("source_image").and_then(|v| v.as_str()) {
            if named != source.image {
                return Err(Error::file(
                    &synth.path,
                    format!(
                        "line {line}: field source_image = {named} but record {p} of {} is {}: the synthetic set was \
                         generated from a different real set",
                        real.path.display(),
                        source.image
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Score with the given networks (the stage's `run` loads them from their folders).
pub fn score_with(
    cfg: &ScoreConfig,
    reid: &dyn ReidModel,
    align: Option<&dyn AlignModel>,
    nearest: Option<&dyn NearestReal>,
) -> Result<ScoreSummary> {
    if cfg.batch_size == 0 || cfg.neighbours == 0 {
        return Err(Error::msg("score: batch_size and neighbours must be at least 1"));
    }
    if cfg.copy_gate && (cfg.copy_gate_side == 0 || !(cfg.copy_gate_smoothing >= 0.0 && cfg.copy_gate_smoothing.is_finite())) {
        return Err(Error::msg(format!(
            "score: copy_gate_side ({}) must be at least 1 and copy_gate_smoothing ({}) a finite number ≥ 0",
            cfg.copy_gate_side, cfg.copy_gate_smoothing
        )));
    }
    let real = Manifest::load(&cfg.real)?;
    let synth = Manifest::load(&cfg.synth)?;
    check_prompt_links(&real, &synth)?;
    if align.is_none() && synth.records.iter().any(|r| r.prompt_index.is_some()) {
        return Err(Error::msg("score: the synthetic set has prompted samples, so an alignment network (`align`) is needed"));
    }
    if nearest.is_none() && synth.records.iter().any(|r| r.prompt_index.is_none()) {
        return Err(Error::msg("score: the synthetic set has unconditional samples, so a retrieval network (`retrieval`) is needed"));
    }
    if nearest.is_none() && cfg.prompted_neighbours {
        return Err(Error::msg(
            "score: prompted_neighbours compares samples with their nearest real images, so a retrieval network (`retrieval`) is needed",
        ));
    }

    let gate = if cfg.copy_gate {
        let images: Vec<Image> = (0..real.len()).map(|i| real.load_image(i)).collect::<std::result::Result<_, _>>()?;
        let patients: Vec<&str> = real.records.iter().map(|r| r.patient.as_str()).collect();
        Some(
            CopyGate::build(&images, &patients, cfg.copy_gate_side, cfg.copy_gate_smoothing)
                .map_err(|e| Error::file(&real.path, e.to_string()))?,
        )
    } else {
        None
    };

    let part = part_path(&cfg.out);
    let mut done = read_part(&part)?;
    let resumed = done.len();
    let finished: BTreeSet<String> = done.iter().map(|s| s.image.clone()).collect();
    let todo: Vec<usize> = (0..synth.len()).filter(|&i| !finished.contains(&synth.records[i].image)).collect();
    if let Some(parent) = cfg.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&part).map_err(|e| Error::io(&part, e))?;

    let bar = super::progress::bar(synth.len() as u64, "score");
    bar.set_position(resumed as u64);
    let mut real_embeddings: HashMap<usize, crate::Tensor> = HashMap::new();
    for chunk in todo.chunks(cfg.batch_size) {
        let images: Vec<Image> = chunk.iter().map(|&i| synth.load_image(i)).collect::<std::result::Result<_, _>>()?;
        let synth_emb = reid.embed_images(&images)?;
        // The real images each sample is compared with: its prompt's, and/or its retrieved neighbours'.
        let mut pairs: Vec<(usize, usize)> = Vec::new(); // (row in batch, real index)
        let mut neighbours_of: Vec<Vec<usize>> = vec![Vec::new(); chunk.len()];
        let searched: Vec<usize> =
            (0..chunk.len()).filter(|&b| cfg.prompted_neighbours || synth.records[chunk[b]].prompt_index.is_none()).collect();
        if !searched.is_empty() {
            let queries: Vec<Image> = searched.iter().map(|&b| images[b].clone()).collect();
            let found = nearest.expect("checked above").nearest_real(&queries, cfg.neighbours)?;
            for (&b, hits) in searched.iter().zip(found) {
                neighbours_of[b] = hits.into_iter().map(|(g, _)| g).collect();
            }
        }
        for (b, &i) in chunk.iter().enumerate() {
            if let Some(p) = synth.records[i].prompt_index {
                pairs.push((b, p as usize));
            }
            pairs.extend(neighbours_of[b].iter().map(|&g| (b, g)).filter(|pair| !pairs.contains(pair)).collect::<Vec<_>>());
        }
        let missing: Vec<usize> = {
            let mut m: Vec<usize> = pairs.iter().map(|&(_, r)| r).filter(|r| !real_embeddings.contains_key(r)).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        for group in missing.chunks(cfg.batch_size) {
            let imgs: Vec<Image> = group.iter().map(|&r| real.load_image(r)).collect::<std::result::Result<_, _>>()?;
            let emb = reid.embed_images(&imgs)?;
            for (k, &r) in group.iter().enumerate() {
                real_embeddings.insert(r, emb.narrow(0, k, 1)?);
            }
        }
        let (a_rows, b_rows): (Vec<crate::Tensor>, Vec<crate::Tensor>) = pairs
            .iter()
            .map(|&(b, r)| Ok((synth_emb.narrow(0, b, 1)?, real_embeddings[&r].clone())))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let pair_scores = if pairs.is_empty() {
            Vec::new()
        } else {
            reid.pair_scores(&crate::Tensor::cat(&a_rows, 0)?, &crate::Tensor::cat(&b_rows, 0)?)?
        };
        let mut best: Vec<(f64, usize)> = vec![(f64::NEG_INFINITY, usize::MAX); chunk.len()];
        for (&(b, r), &s) in pairs.iter().zip(&pair_scores) {
            if f64::from(s) > best[b].0 {
                best[b] = (f64::from(s), r);
            }
        }
        let prompted: Vec<usize> = (0..chunk.len()).filter(|&b| synth.records[chunk[b]].prompt_index.is_some()).collect();
        let mut align_of: Vec<Option<f64>> = vec![None; chunk.len()];
        if !prompted.is_empty() {
            let imgs: Vec<Image> = prompted.iter().map(|&b| images[b].clone()).collect();
            let texts: Vec<&str> = prompted.iter().map(|&b| synth.records[chunk[b]].text.as_deref().unwrap_or("")).collect();
            let scores = align.expect("checked above").align_scores(&imgs, &texts)?;
            for (&b, s) in prompted.iter().zip(scores) {
                align_of[b] = Some(f64::from(s));
            }
        }
        let copy_scores = gate.as_ref().map(|g| g.score(&images));
        let mut lines = String::new();
        for (b, &i) in chunk.iter().enumerate() {
            let record = &synth.records[i];
            let (s_reid, matched) = best[b];
            if matched == usize::MAX {
                return Err(Error::file(&synth.path, format!("{}: no real image to compare with", record.image)));
            }
            let score = ScoreRecord {
                image: record.image.clone(),
                prompt_index: record.prompt_index,
                sample_index: record.extra.get("sample_index").and_then(|v| v.as_u64()).unwrap_or(0),
                s_reid,
                matched_real: real.records[matched].image.clone(),
                s_align: align_of[b],
                s_copy: copy_scores.as_ref().map(|c| c[b].s_copy),
                copy_match: copy_scores.as_ref().map(|c| real.records[c[b].nearest].image.clone()),
            };
            lines.push_str(&serde_json::to_string(&score).map_err(|e| Error::msg(format!("score: {e}")))?);
            lines.push('\n');
            done.push(score);
        }
        writer.write_all(lines.as_bytes()).and_then(|_| writer.flush()).map_err(|e| Error::io(&part, e))?;
        bar.inc(chunk.len() as u64);
    }
    writer.sync_all().map_err(|e| Error::io(&part, e))?;
    drop(writer);
    bar.finish_and_clear();
    std::fs::rename(&part, &cfg.out).map_err(|e| Error::io(&cfg.out, e))?;

    let n = done.len().max(1) as f64;
    let aligned: Vec<f64> = done.iter().filter_map(|s| s.s_align).collect();
    Ok(ScoreSummary {
        scored: done.len(),
        resumed,
        s_reid_mean: done.iter().map(|s| s.s_reid).sum::<f64>() / n,
        s_align_mean: (!aligned.is_empty()).then(|| aligned.iter().sum::<f64>() / aligned.len() as f64),
        copy_gate: gate.map(|g| CopyGateSummary {
            side: g.side(),
            smoothing: cfg.copy_gate_smoothing,
            calibration_images: g.calibration().len(),
            calibration_median: crate::eval::metrics::quantile(g.calibration(), 0.5),
            threshold_q99: g.threshold(0.99),
            calibration_max: g.calibration().last().copied().unwrap_or(f64::NAN),
        }),
    })
}

/// Finished lines of an interrupted run; a torn last line (no newline) is dropped.
fn read_part(part: &Path) -> Result<Vec<ScoreRecord>> {
    let Ok(text) = std::fs::read_to_string(part) else { return Ok(Vec::new()) };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    if complete.len() != text.len() {
        // Truncate the torn tail so appends start on a line boundary.
        let file = std::fs::OpenOptions::new().write(true).open(part).map_err(|e| Error::io(part, e))?;
        file.set_len(complete.len() as u64).map_err(|e| Error::io(part, e))?;
    }
    complete
        .lines()
        .enumerate()
        .map(|(n, line)| serde_json::from_str(line).map_err(|e| Error::file(part, format!("line {}: {e}", n + 1))))
        .collect()
}

/// Run the stage: load the networks from their folders and score.
pub fn run(cfg: &ScoreConfig) -> Result<ScoreSummary> {
    use crate::privacy::{align::AlignScorer, reid::ReidScorer, retrieval::RetrievalIndex};
    let reid = ReidScorer::load(&cfg.reid)?;
    let align = cfg.align.as_deref().map(AlignScorer::load).transpose()?;
    let nearest = match &cfg.retrieval {
        Some(dir) => {
            // The gallery is the whole real set, so a neighbour's index is its record index.
            let real = Manifest::load(&cfg.real)?;
            let gallery: Vec<Image> = (0..real.len()).map(|i| real.load_image(i)).collect::<std::result::Result<_, _>>()?;
            Some(RetrievalIndex::build(dir, &gallery)?)
        }
        None => None,
    };
    score_with(cfg, &reid, align.as_ref().map(|a| a as &dyn AlignModel), nearest.as_ref().map(|n| n as &dyn NearestReal))
}
