//! The work directory of one Privacy Distillation run, and the stage runner
//! that skips a stage whose inputs and outputs are unchanged since it last
//! finished (so an interrupted `run` resumes where it stopped).

use crate::io::hash::{sha256_bytes, sha256_path};
use crate::privacy::lineage::{Lineage, StageRecord};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Paths of a work directory (layout in DESIGN.md).
#[derive(Debug, Clone)]
pub struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// A work directory rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> WorkDir {
        WorkDir { root: root.into() }
    }
    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `name` below the root.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    /// The real dataset with its patient-level split.
    pub fn real(&self) -> PathBuf {
        self.path("real")
    }
    /// `lineage.json`.
    pub fn lineage(&self) -> PathBuf {
        self.path("lineage.json")
    }
    /// `timings.json`.
    pub fn timings(&self) -> PathBuf {
        self.path("timings.json")
    }
    /// The summary a stage returned, kept so a skipped stage can still be reported.
    pub fn summary(&self, stage: &str) -> PathBuf {
        self.path("summaries").join(format!("{stage}.json"))
    }
}

/// Wall time of one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    /// Stage name.
    pub name: String,
    /// Seconds it ran (0 when skipped).
    pub seconds: f64,
    /// Whether it was skipped because its inputs and outputs were unchanged.
    pub skipped: bool,
}

/// The `timings.json` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Stages in the order they ran.
    pub stages: Vec<StageTiming>,
}

/// What a stage hands back to the runner.
#[derive(Debug, Default)]
pub struct StageOutput {
    /// The stage's summary (written to `summaries/<stage>.json`).
    pub summary: serde_json::Value,
    /// Content hashes of images the stage generated (sampling stages).
    pub generated_images: BTreeSet<String>,
}

impl StageOutput {
    /// A summary only.
    pub fn summary(value: impl Serialize) -> Result<StageOutput> {
        let summary = serde_json::to_value(value).map_err(|e| Error::msg(format!("stage summary: {e}")))?;
        Ok(StageOutput { summary, generated_images: BTreeSet::new() })
    }
}

/// Runs stages in a work directory, recording lineage and timings.
pub struct StageRunner {
    work: WorkDir,
    lineage: Lineage,
    timings: Timings,
    force: BTreeSet<String>,
    log: bool,
}

impl StageRunner {
    /// Open `work` (reading its lineage if any). Stages named in `force` run even when unchanged.
    pub fn open(work: WorkDir, force: impl IntoIterator<Item = String>, log: bool) -> Result<StageRunner> {
        std::fs::create_dir_all(work.root()).map_err(|e| Error::io(work.root(), e))?;
        let lineage = Lineage::load_or_new(&work.lineage())?;
        Ok(StageRunner { work, lineage, timings: Timings::default(), force: force.into_iter().collect(), log })
    }

    /// The work directory.
    pub fn work(&self) -> &WorkDir {
        &self.work
    }

    /// The lineage so far.
    pub fn lineage(&self) -> &Lineage {
        &self.lineage
    }

    /// Mutable lineage (to register the real dataset).
    pub fn lineage_mut(&mut self) -> &mut Lineage {
        &mut self.lineage
    }

    /// Timings so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Run `stage` unless it finished before with the same config and input
    /// hashes and its outputs are unchanged. `inputs` and `outputs` are labelled
    /// paths (files or folders). Returns the stage's summary (the stored one when skipped).
    pub fn stage(
        &mut self,
        name: &str,
        config: &impl Serialize,
        inputs: &[(&str, &Path)],
        outputs: &[(&str, &Path)],
        run: impl FnOnce() -> Result<StageOutput>,
    ) -> Result<serde_json::Value> {
        let mut input_hashes = BTreeMap::new();
        let config_json = serde_json::to_string(config).map_err(|e| Error::msg(format!("{name}: config: {e}")))?;
        input_hashes.insert("config".to_string(), sha256_bytes(config_json.as_bytes()));
        for (label, path) in inputs {
            if !path.exists() {
                return Err(Error::file(path, format!("input `{label}` of stage {name} does not exist")));
            }
            input_hashes.insert(label.to_string(), sha256_path(path)?);
        }
        if !self.force.contains(name) {
            if let Some(previous) = self.lineage.stages.get(name) {
                let summary_path = self.work.summary(name);
                if previous.inputs == input_hashes && summary_path.exists() && outputs_unchanged(previous, outputs)? {
                    if self.log {
                        eprintln!("{name:>16}: unchanged since it last finished, skipped");
                    }
                    self.timings.stages.push(StageTiming { name: name.into(), seconds: 0.0, skipped: true });
                    self.save_timings()?;
                    let text = std::fs::read_to_string(&summary_path).map_err(|e| Error::io(&summary_path, e))?;
                    return serde_json::from_str(&text).map_err(|e| Error::file(&summary_path, e.to_string()));
                }
            }
        }
        let start = Instant::now();
        let output = run()?;
        let seconds = start.elapsed().as_secs_f64();
        let mut output_hashes = BTreeMap::new();
        for (label, path) in outputs {
            if !path.exists() {
                return Err(Error::file(path, format!("stage {name} finished without writing its output `{label}`")));
            }
            output_hashes.insert(label.to_string(), sha256_path(path)?);
        }
        let summary_path = self.work.summary(name);
        if let Some(dir) = summary_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        crate::io::write_atomic_json(&summary_path, &output.summary)?;
        self.lineage
            .record(name, StageRecord { inputs: input_hashes, outputs: output_hashes, generated_images: output.generated_images, seconds });
        self.lineage.save(&self.work.lineage())?;
        if self.log {
            eprintln!("{name:>16}: done in {}", super::progress::format_seconds(seconds));
        }
        self.timings.stages.push(StageTiming { name: name.into(), seconds, skipped: false });
        self.save_timings()?;
        Ok(output.summary)
    }

    /// Save the lineage (after registering the real dataset, say).
    pub fn save_lineage(&self) -> Result<()> {
        self.lineage.save(&self.work.lineage())
    }

    fn save_timings(&self) -> Result<()> {
        crate::io::write_atomic_json(self.work.timings(), &self.timings)
    }
}

fn outputs_unchanged(previous: &StageRecord, outputs: &[(&str, &Path)]) -> Result<bool> {
    for (label, path) in outputs {
        let Some(recorded) = previous.outputs.get(*label) else { return Ok(false) };
        if !path.exists() || &sha256_path(path)? != recorded {
            return Ok(false);
        }
    }
    Ok(true)
}
