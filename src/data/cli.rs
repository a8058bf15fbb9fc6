//! `privdistill data …`: argument structs (clap) and the functions they call.
//! `main.rs` holds one enum variant and one call to [`run`].

use super::import::{folder, mimic, table, ImportOptions, UncertainPolicy};
use super::manifest::Manifest;
use super::phantom::{self, PhantomConfig};
use super::split::{split_manifest, SplitConfig};
use super::stats::dataset_stats;
use super::tokens::{WordPieceEstimate, PAPER_TOKEN_LIMIT};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `privdistill data`.
#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The data subcommands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Assign train/val/test by patient (deterministic by seed, label-stratified) and rewrite the manifest.
    Split(SplitArgs),
    /// Make a manifest from MIMIC-CXR-JPG, a CSV table or a patient/image folder tree.
    Import(ImportArgs),
    /// Generate phantom chest X-rays with ground-truth patient identity.
    Phantom(PhantomArgs),
    /// Summarise a dataset: images, patients, labels, text lengths, views.
    Stats(StatsArgs),
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Dataset folder or manifest path.
    pub dataset: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub val: f64,
    #[arg(long, default_value_t = 0.1)]
    pub test: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not balance labels across splits.
    #[arg(long)]
    pub no_stratify: bool,
    /// Write here instead of rewriting the dataset's manifest (image paths must stay valid from there).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub source: ImportSource,
    /// Output dataset folder (its manifest.jsonl is written).
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Re-encode images as SIZE×SIZE grey PNGs under OUT/images/ (default: reference them in place).
    #[arg(long, global = true)]
    pub size: Option<usize>,
    /// Drop texts longer than this many tokens (word-piece estimate).
    #[arg(long, global = true, default_value_t = PAPER_TOKEN_LIMIT)]
    pub max_tokens: usize,
    /// Keep texts of any length.
    #[arg(long, global = true)]
    pub no_token_limit: bool,
    /// Uncertain labels (-1) become: zero, one, or drop the image.
    #[arg(long, global = true, value_enum, default_value_t = UncertainPolicy::Zero)]
    pub uncertain: UncertainPolicy,
}

#[derive(Subcommand, Debug)]
pub enum ImportSource {
    /// MIMIC-CXR-JPG 2.0.0 (metadata, split and chexpert CSVs; files/pXX/pN/sM/*.jpg; reports sM.txt).
    Mimic {
        /// The MIMIC-CXR-JPG folder.
        #[arg(long)]
        root: PathBuf,
        /// Folder holding the reports' files/ tree (default: ROOT).
        #[arg(long)]
        reports: Option<PathBuf>,
        /// Use FINDINGS when a report has no IMPRESSION.
        #[arg(long)]
        findings_fallback: bool,
    },
    /// A CSV table with image, patient, text and label columns.
    Csv {
        #[arg(long)]
        table: PathBuf,
        #[arg(long, default_value = "image")]
        image_column: String,
        #[arg(long, default_value = "patient")]
        patient_column: String,
        #[arg(long)]
        text_column: Option<String>,
        #[arg(long)]
        view_column: Option<String>,
        #[arg(long)]
        split_column: Option<String>,
        /// A label column (repeat for several).
        #[arg(long = "label-column")]
        label_columns: Vec<String>,
        /// Folder image paths are relative to (default: the table's folder).
        #[arg(long)]
        image_root: Option<PathBuf>,
    },
    /// A ROOT/patient/…/image.(png|jpg) tree; image.txt beside an image is its text.
    Folder { root: PathBuf },
}

#[derive(Args, Debug)]
pub struct PhantomArgs {
    #[arg(long, default_value_t = 50)]
    pub patients: usize,
    #[arg(long, default_value_t = 4)]
    pub images_per_patient: usize,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output dataset folder.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Dataset folder or manifest path.
    pub dataset: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also decode every image (reports the first bad one).
    #[arg(long)]
    pub check_images: bool,
    /// Also measure pixel-space nearest-neighbour re-identification (images resized to 64).
    #[arg(long)]
    pub reid: bool,
}

/// Runs a data subcommand.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Split(a) => {
            let mut m = Manifest::load(&a.dataset)?;
            let cfg = SplitConfig { val: a.val, test: a.test, seed: a.seed, stratify: !a.no_stratify };
            let report = split_manifest(&mut m, &cfg)?;
            if let Some(out) = a.out {
                m.path = out;
            }
            m.save().with_context(|| format!("writing {}", m.path.display()))?;
            print!("{report}");
            println!("wrote {}", m.path.display());
        }
        DataCommand::Import(a) => {
            let out = a.out.context("--out is required: the folder the imported manifest.jsonl goes to")?;
            let mut opts = ImportOptions::new(out);
            opts.resize = a.size;
            opts.token_limit = (!a.no_token_limit).then_some(a.max_tokens);
            opts.uncertain = a.uncertain;
            let report = match a.source {
                ImportSource::Mimic { root, reports, findings_fallback } => {
                    let mut m = mimic::MimicOptions::new(root);
                    m.reports = reports;
                    m.fallback_findings = findings_fallback;
                    mimic::import_mimic(&m, &opts)?
                }
                ImportSource::Csv {
                    table,
                    image_column,
                    patient_column,
                    text_column,
                    view_column,
                    split_column,
                    label_columns,
                    image_root,
                } => {
                    let t = table::TableOptions {
                        table,
                        image_column,
                        patient_column,
                        text_column,
                        view_column,
                        split_column,
                        label_columns,
                        image_root,
                    };
                    table::import_table(&t, &opts)?
                }
                ImportSource::Folder { root } => folder::import_folder(&root, &opts)?,
            };
            print!("{report}");
        }
        DataCommand::Phantom(a) => {
            let cfg = PhantomConfig { patients: a.patients, images_per_patient: a.images_per_patient, size: a.size, seed: a.seed };
            let m = phantom::write_phantom(&cfg, &a.out)?;
            println!(
                "wrote {}: {} images of {} phantom patients ({}×{}, seed {})",
                m.path.display(),
                m.len(),
                cfg.patients,
                cfg.size,
                cfg.size,
                cfg.seed
            );
        }
        DataCommand::Stats(a) => {
            let m = Manifest::load(&a.dataset)?;
            if a.check_images {
                m.check_images()?;
            }
            let stats = dataset_stats(&m, &WordPieceEstimate, PAPER_TOKEN_LIMIT);
            let reid = if a.reid {
                use rayon::prelude::*;
                let images = (0..m.len())
                    .into_par_iter()
                    .map(|i| Ok(m.load_image(i)?.to_grey().resize_center_crop(64)))
                    .collect::<super::DataResult<Vec<_>>>()?;
                let patients: Vec<String> = m.records.iter().map(|r| r.patient.clone()).collect();
                Some(phantom::pixel_reid(&images, &patients)?)
            } else {
                None
            };
            if a.json {
                let mut v = serde_json::to_value(&stats)?;
                if let Some(r) = &reid {
                    v["pixel_reid"] = serde_json::to_value(r)?;
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{stats}");
                if a.check_images {
                    println!("images: all {} decode", m.len());
                }
                if let Some(r) = reid {
                    println!(
                        "pixel-space nearest-neighbour re-identification (64×64, standardised): top-1 {:.3} over {} queries (chance {:.3}); same/different patient median distance ratio {:.3}",
                        r.top1, r.queries, r.chance, r.distance_ratio
                    );
                }
            }
        }
    }
    Ok(())
}
