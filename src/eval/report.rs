//! The evaluation report as data ([`Report`], saved as `report.json`) and as
//! Markdown (`report.md`): a Table-2 style comparison of the real, synthetic,
//! filtered and distilled data (R_reid, AUC, s_align, FID, KID,
//! precision/recall, MS-SSIM), per-pathology AUCs, the filter's counts and δ,
//! dataset hashes, stage timings and the figures. Anything a run did not
//! produce is listed as "not run" rather than failing the report.

use crate::eval::fid::Kid;
use crate::eval::metrics::Estimate;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One row of the main table (one dataset).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TableRow {
    /// `real`, `synthetic`, `filtered` or `distilled`.
    pub name: String,
    /// Images in the dataset.
    pub images: Option<usize>,
    /// Share of samples re-identified (s_reid ≥ δ).
    pub r_reid: Option<f64>,
    /// Mean downstream AUC on the real test split (classifier trained on this dataset).
    pub auc: Option<Estimate>,
    /// Mean image-text alignment.
    pub s_align: Option<f64>,
    /// FID against the real training split.
    pub fid: Option<f64>,
    /// KID against the real training split.
    pub kid: Option<Kid>,
    /// k-NN precision against the real training split.
    pub precision: Option<f64>,
    /// k-NN recall against the real training split.
    pub recall: Option<f64>,
    /// Mean pairwise MS-SSIM within the set (lower = more diverse).
    pub ms_ssim: Option<f64>,
}

/// One pathology's AUC for each training set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LabelRow {
    /// The pathology.
    pub label: String,
    /// Positives in the real test split.
    pub test_positives: usize,
    /// AUC of the classifier trained on real, synthetic and distilled data (in that order).
    pub auc: [Option<Estimate>; 3],
}

/// What the filter did (the lead's `filter_summary.json`; unknown fields ignored).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterCounts {
    /// The threshold δ.
    pub delta: f64,
    /// Samples scored.
    pub generated: usize,
    /// Samples with s_reid ≥ δ.
    pub reidentified: usize,
    /// `reidentified / generated`.
    pub r_reid: f64,
    /// Samples kept (one per prompt at most).
    pub kept: usize,
    /// Samples dropped.
    pub dropped: usize,
    /// Prompts sampled.
    pub prompts: usize,
    /// Prompts none of whose samples survived.
    pub prompts_all_dropped: Vec<u64>,
    /// Mean s_align of every sample.
    pub s_align_mean_all: Option<f64>,
    /// Mean s_align of the kept samples.
    pub s_align_mean_kept: Option<f64>,
    /// Mean s_reid of every sample.
    pub s_reid_mean_all: Option<f64>,
    /// The copy gate's threshold on s_copy, when it was applied.
    #[serde(default)]
    pub copy_gate: Option<f64>,
    /// Samples the copy gate flagged.
    #[serde(default)]
    pub near_copies: usize,
    /// Samples dropped by the copy gate alone (s_reid < δ).
    #[serde(default)]
    pub dropped_near_copy: usize,
}

/// A dataset the report covers, with its content hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// `real`, `synthetic`, `filtered` or `distilled`.
    pub name: String,
    /// The folder.
    pub path: String,
    /// Records in its manifest.
    pub images: usize,
    /// SHA-256 of the dataset folder (manifest and images).
    pub sha256: String,
}

/// A stage's wall time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// The stage.
    pub name: String,
    /// Wall time.
    pub seconds: f64,
    /// Whether the stage found its outputs done and skipped the work.
    #[serde(default)]
    pub skipped: bool,
}

/// A figure file (relative to the report) and what it shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    /// File name next to the report.
    pub file: String,
    /// What it shows.
    pub caption: String,
}

/// Everything the report states.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// privdistill version that wrote it.
    pub version: String,
    /// The work directory reported on.
    pub work: String,
    /// The re-identification threshold δ.
    pub delta: Option<f64>,
    /// Where the FID features came from, in words.
    pub features_source: Option<String>,
    /// Main table rows: real, synthetic, filtered, distilled.
    pub rows: Vec<TableRow>,
    /// Per-pathology AUCs.
    pub labels: Vec<LabelRow>,
    /// The filter's counts.
    pub filter: Option<FilterCounts>,
    /// Re-identification network test AUC.
    pub reid_auc: Option<f64>,
    /// Datasets and their hashes.
    pub datasets: Vec<DatasetInfo>,
    /// Stage timings.
    pub timings: Vec<Timing>,
    /// Figures written next to the report.
    pub figures: Vec<Figure>,
    /// Parts of the pipeline whose outputs were absent.
    pub not_run: Vec<String>,
    /// Remarks on settings and caveats.
    pub notes: Vec<String>,
    /// Settings of the evaluation (the `evaluation.json` settings, verbatim).
    pub settings: serde_json::Value,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn estimate(e: &Option<Estimate>) -> String {
    e.as_ref().map_or("—".into(), |e| format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi))
}

/// The report as Markdown.
pub fn render_markdown(r: &Report) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(s, "# Privacy Distillation report\n");
    let _ = writeln!(s, "Work directory `{}`, privdistill {}.", r.work, r.version);
    if let Some(d) = r.delta {
        let _ = writeln!(s, "Re-identification threshold δ = {d}.");
    }
    if let Some(src) = &r.features_source {
        let _ = writeln!(s, "FID/KID/precision/recall features: {src}.");
    }
    let _ = writeln!(s, "\n## Results (Table 2 of the paper)\n");
    let _ = writeln!(s, "| data | images | R_reid | AUC (95% CI) | s_align | FID | KID ×10³ | precision | recall | MS-SSIM |");
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in &r.rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            row.images.map_or("—".into(), |n| n.to_string()),
            row.r_reid.map_or("—".into(), |v| format!("{:.1}%", 100.0 * v)),
            estimate(&row.auc),
            opt(row.s_align, 3),
            opt(row.fid, 2),
            row.kid.map_or("—".into(), |k| format!("{:.2} ± {:.2}", 1e3 * k.mean, 1e3 * k.std)),
            opt(row.precision, 3),
            opt(row.recall, 3),
            opt(row.ms_ssim, 3),
        );
    }
    let _ = writeln!(
        s,
        "\nR_reid: share of samples the re-identification network matches to the real image of their prompt \
         (s_reid ≥ δ). AUC: mean over pathologies of a DenseNet trained on that data and tested on the real test split, \
         with a percentile-bootstrap interval. FID, KID, precision and recall against the real training split; for the \
         real row, the real test split against the real training split. MS-SSIM: mean over random pairs within the set \
         (lower = more diverse)."
    );
    if !r.labels.is_empty() {
        let _ = writeln!(s, "\n## Downstream AUC per pathology (real test split)\n");
        let _ = writeln!(s, "| pathology | test positives | trained on real | on synthetic | on distilled |");
        let _ = writeln!(s, "|---|---:|---|---|---|");
        for l in &r.labels {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                l.label,
                l.test_positives,
                estimate(&l.auc[0]),
                estimate(&l.auc[1]),
                estimate(&l.auc[2])
            );
        }
    }
    if let Some(f) = &r.filter {
        let _ = writeln!(s, "\n## Filtering\n");
        let _ = writeln!(s, "| δ | generated | re-identified | R_reid | kept | dropped | prompts | prompts with every sample dropped |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1}% | {} | {} | {} | {} |",
            f.delta,
            f.generated,
            f.reidentified,
            100.0 * f.r_reid,
            f.kept,
            f.dropped,
            f.prompts,
            f.prompts_all_dropped.len()
        );
        match f.copy_gate {
            Some(q) => {
                let _ = writeln!(
                    s,
                    "\nCopy gate (beyond the paper; s_copy ≥ {q}, a pixel-level near-copy of a real image): {} samples flagged, \
                     {} of them dropped by the gate alone (s_reid < δ). R_reid counts s_reid only, as in the paper.",
                    f.near_copies, f.dropped_near_copy
                );
            }
            None => {
                let _ = writeln!(s, "\nCopy gate off: the paper's rule alone.");
            }
        }
    }
    if let Some(auc) = r.reid_auc {
        let _ = writeln!(s, "\nRe-identification network: test AUC {auc:.3}.");
    }
    if !r.figures.is_empty() {
        let _ = writeln!(s, "\n## Figures\n");
        for f in &r.figures {
            let _ = writeln!(s, "**{}**\n\n![{}]({})\n", f.caption, f.caption, f.file);
        }
    }
    if !r.datasets.is_empty() {
        let _ = writeln!(s, "\n## Datasets\n");
        let _ = writeln!(s, "| data | path | images | SHA-256 |");
        let _ = writeln!(s, "|---|---|---:|---|");
        for d in &r.datasets {
            let _ = writeln!(s, "| {} | `{}` | {} | `{}` |", d.name, d.path, d.images, d.sha256);
        }
    }
    if !r.timings.is_empty() {
        let _ = writeln!(s, "\n## Timings\n");
        let _ = writeln!(s, "| stage | seconds |");
        let _ = writeln!(s, "|---|---:|");
        let mut total = 0.0;
        for t in &r.timings {
            total += t.seconds;
            let _ = writeln!(
                s,
                "| {} | {}{} |",
                t.name,
                format_args!("{:.1}", t.seconds),
                if t.skipped { " (skipped, done earlier)" } else { "" }
            );
        }
        let _ = writeln!(s, "| **total** | **{total:.1}** |");
    }
    if !r.not_run.is_empty() {
        let _ = writeln!(s, "\n## Not run\n");
        for n in &r.not_run {
            let _ = writeln!(s, "- {n}");
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
