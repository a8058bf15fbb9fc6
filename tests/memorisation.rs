//! Issue 7's memorisation check at test size. A tiny latent diffusion model is
//! over-trained on the four validation patients of a phantom dataset until it
//! reproduces their images; its samples are scored (against the prompt's image
//! and the nearest real images) and filtered like any synthetic set. Which
//! samples really are copies is decided without the re-identification network,
//! by pixel correlation with the real images. The audit must report exactly what
//! the filter did to the copies and to the other samples; the ≥ 99 % bar is a
//! separate, ignored test (see there).
//! (`scripts/memorisation.sh` runs the same experiment at a larger size.)

use privdistill::data::phantom::{write_phantom, PhantomConfig};
use privdistill::data::{split_manifest, Manifest, SplitConfig};
use privdistill::diffusion::sampler::SamplerKind;
use privdistill::models::resnet::ResNetConfig;
use privdistill::nn::{AdamWConfig, EmaConfig, LrSchedule};
use privdistill::pipeline::audit::{self, AuditConfig};
use privdistill::pipeline::filter::{self, FilterConfig};
use privdistill::pipeline::sample::{self, SampleConfig};
use privdistill::pipeline::score::{self, ScoreConfig};
use privdistill::pipeline::train_align::{self, TrainAlignConfig};
use privdistill::pipeline::train_ldm::{self, TrainLdmConfig};
use privdistill::pipeline::train_reid::{self, TrainReidConfig};
use privdistill::pipeline::train_retrieval::{self, TrainRetrievalConfig};
use privdistill::pipeline::train_vae::{self, TrainVaeConfig};
use privdistill::privacy::align::bert_config;
use privdistill::privacy::audit::{Attack, PixelIndex};
use privdistill::privacy::filter::FilterRule;
use std::path::Path;

const VAE: &str = include_str!("fixtures/tiny/vae.json");
const UNET: &str = include_str!("fixtures/tiny/unet.json");
const TEXT: &str = include_str!("fixtures/tiny/text_encoder.json");

fn tiny_resnet() -> ResNetConfig {
    ResNetConfig { layers: [1, 1, 1, 1], num_classes: 32, in_channels: 3, width_per_group: 64, base_planes: 8 }
}

fn images(dir: &Path) -> Vec<privdistill::data::Image> {
    let m = Manifest::load(dir).unwrap();
    (0..m.len()).map(|i| m.load_image(i).unwrap()).collect()
}

/// What the experiment leaves for the assertions.
struct Experiment {
    _tmp: tempfile::TempDir,
    real: std::path::PathBuf,
    synth: std::path::PathBuf,
    scores: std::path::PathBuf,
    filtered: std::path::PathBuf,
    audit_md: String,
    kept: usize,
    copies: privdistill::privacy::audit::NearCopyAudit,
    gate_heldout: audit::GateHeldout,
}

/// The whole experiment, run once and shared by the tests.
fn experiment() -> &'static Experiment {
    static RUN: std::sync::OnceLock<Experiment> = std::sync::OnceLock::new();
    RUN.get_or_init(run_experiment)
}

fn run_experiment() -> Experiment {
    std::env::set_var("PRIVDISTILL_QUIET", "1");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, body) in [("vae.json", VAE), ("unet.json", UNET), ("text.json", TEXT)] {
        std::fs::write(dir.join(name), body).unwrap();
    }

    // 40 phantom patients with two images each; the 4 validation patients are what the LDM memorises.
    let real = dir.join("real");
    let mut manifest = write_phantom(&PhantomConfig { patients: 40, images_per_patient: 2, size: 32, seed: 21 }, &real).unwrap();
    split_manifest(&mut manifest, &SplitConfig { val: 0.1, test: 0.2, seed: 0, stratify: false }).unwrap();
    manifest.save().unwrap();

    let vae = dir.join("vae");
    train_vae::run(&TrainVaeConfig {
        data: real.clone(),
        splits: vec![],
        out: vae.clone(),
        config: Some(dir.join("vae.json")),
        image_size: 32,
        batch_size: 16,
        steps: 400,
        optimizer: AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() },
        scale_images: 32,
        checkpoint_every: 0,
        ..Default::default()
    })
    .unwrap();

    let ldm = dir.join("ldm-memo");
    let trained = train_ldm::run(&TrainLdmConfig {
        data: real.clone(),
        splits: vec!["val".into()],
        out: ldm.clone(),
        vae,
        unet_config: Some(dir.join("unet.json")),
        text_encoder_config: Some(dir.join("text.json")),
        image_size: 32,
        batch_size: 8,
        gradient_accumulation: 1,
        steps: 1500,
        optimizer: AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() },
        lr_schedule: LrSchedule::Constant,
        ema: Some(EmaConfig { decay: 0.999, ..Default::default() }),
        cfg_dropout: 0.0,
        checkpoint_every: 0,
        seed: 5,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(trained.train_images, 8, "the LDM trains on the validation split only");

    let synth = dir.join("synth-memo");
    let sampled = sample::run(&SampleConfig {
        model: ldm,
        prompts: real.clone(),
        splits: vec!["val".into()],
        out: synth.clone(),
        per_prompt: 4,
        guidance_scale: 4.0,
        steps: 20,
        sampler: Some(SamplerKind::Ddim),
        batch_size: 8,
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(sampled.images, 32);

    // The scorer networks learn on other phantom patients, as the paper's re-identification
    // net learned on another dataset; they only ever compare images.
    let scorer_data = dir.join("scorer-data");
    let mut m = write_phantom(&PhantomConfig { patients: 150, images_per_patient: 3, size: 32, seed: 22 }, &scorer_data).unwrap();
    split_manifest(&mut m, &SplitConfig { val: 0.15, test: 0.15, seed: 0, stratify: false }).unwrap();
    m.save().unwrap();
    let reid = dir.join("reid");
    train_reid::run(&TrainReidConfig {
        data: scorer_data.clone(),
        out: reid.clone(),
        backbone: tiny_resnet(),
        embedding_dim: 32,
        image_size: 32,
        batch_size: 16,
        lr: 2e-3,
        negatives_per_epoch: 512,
        max_epochs: 10,
        patience: 10,
        bootstrap_resamples: 50,
        // The recipe that makes the filter see copies: augmented self-pairs and the
        // exposure shifts and smoothing a generator leaves (see TrainReidConfig).
        copy_positives: 0.5,
        max_blur_sigma: 0.75,
        max_brightness: 0.15,
        max_contrast: 0.3,
        ..TrainReidConfig::default()
    })
    .unwrap();
    let retrieval = dir.join("retrieval");
    train_retrieval::run(&TrainRetrievalConfig {
        data: scorer_data,
        out: retrieval.clone(),
        backbone: tiny_resnet(),
        image_size: 32,
        patients_per_batch: 8,
        images_per_patient: 2,
        steps_per_epoch: 8,
        max_epochs: 4,
        patience: 4,
        lr: 1e-3,
        memory_size: 64,
        ..TrainRetrievalConfig::default()
    })
    .unwrap();
    let align = dir.join("align");
    train_align::run(&TrainAlignConfig {
        data: real.clone(),
        out: align.clone(),
        image_backbone: tiny_resnet(),
        text_encoder: bert_config(30522, 32, 1, 2, 32),
        projection_dim: 16,
        image_size: 32,
        max_len: 32,
        batch_size: 16,
        max_epochs: 2,
        bootstrap_resamples: 20,
        ..TrainAlignConfig::default()
    })
    .unwrap();

    let scores = dir.join("scores.jsonl");
    score::run(&ScoreConfig {
        real: real.clone(),
        synth: synth.clone(),
        reid: reid.clone(),
        align: Some(align),
        // Prompted samples are also compared with their nearest real images: a sample may copy
        // another patient's image (one with the same report), which the prompt's image misses.
        retrieval: Some(retrieval),
        out: scores.clone(),
        batch_size: 16,
        neighbours: 10,
        prompted_neighbours: true,
        copy_gate: true,
        copy_gate_side: 32,
        copy_gate_smoothing: 1.0,
    })
    .unwrap();
    let filtered = dir.join("filtered");
    let kept =
        filter::run(&FilterConfig { scores: scores.clone(), synth: synth.clone(), out: filtered.clone(), rule: FilterRule::default() })
            .unwrap();

    let audited = audit::run(&AuditConfig {
        synthetic: Some(synth.clone()),
        scores: Some(scores.clone()),
        attacks: vec![Attack::Flip],
        strengths: vec![0.0, 1.0],
        max_images: 16,
        bootstrap_resamples: 200,
        ..AuditConfig::demo(&reid, &real, &dir.join("audit"))
    })
    .unwrap();
    let copies = audited.near_copies.expect("the audit of a synthetic set has a near-copy section");
    eprintln!("LDM loss {:.4}; near-copy audit {copies:?}", trained.final_loss);
    let audit_md = std::fs::read_to_string(dir.join("audit/audit.md")).unwrap();
    let gate_heldout = audited.copy_gate_heldout.expect("the copy gate is on and the real set has held-out patients");
    Experiment { real, synth, scores, filtered, audit_md, kept: kept.kept, copies, gate_heldout, _tmp: tmp }
}

/// Runs under `cargo test`: the model memorised, the near-copy threshold is the
/// data's, and the audit reports exactly what the filter did.
#[test]
fn an_over_trained_model_copies_its_training_images_and_the_audit_reports_what_the_filter_removed() {
    let e = experiment();
    let copies = &e.copies;
    assert_eq!(copies.samples, 32);
    assert!(copies.near_copies >= 16, "only {} of 32 samples are near-copies: the LDM did not memorise", copies.near_copies);
    // The default threshold: closer to a real image than any other patient's image ever is.
    assert_eq!(copies.threshold, copies.distinct_real_max);
    assert!(copies.removed_from_scores);

    // Recompute the near-copies and the filter's decisions independently of the audit.
    let index = PixelIndex::new(&images(&e.real), copies.side).unwrap();
    let synth = Manifest::load(&e.synth).unwrap();
    let nearest = index.nearest(&images(&e.synth));
    // The filter's rule, recomputed from the recorded scores: s_reid ≥ δ, or the copy gate's s_copy ≥ its quantile.
    let rule = FilterRule::default();
    let scores: std::collections::HashMap<String, bool> =
        filter::read_scores(&e.scores).unwrap().into_iter().map(|s| (s.image.clone(), rule.drops(&s))).collect();
    let kept: std::collections::HashSet<String> = Manifest::load(&e.filtered).unwrap().records.iter().map(|r| r.image.clone()).collect();
    let copy_images: Vec<&str> =
        synth.records.iter().zip(&nearest).filter(|(_, (_, c))| *c >= copies.threshold).map(|(r, _)| r.image.as_str()).collect();
    assert_eq!(copy_images.len(), copies.near_copies);
    let removed = copy_images.iter().filter(|i| scores[**i]).count();
    let rate = copies.removed.expect("near-copies exist");
    assert_eq!(rate.n, copy_images.len());
    assert!((rate.estimate.value - removed as f64 / copy_images.len() as f64).abs() < 1e-12);
    assert!(rate.estimate.lo <= rate.estimate.value && rate.estimate.value <= rate.estimate.hi);
    // What catching them cost: the same rule over the samples that are not copies.
    let others: Vec<&str> =
        synth.records.iter().zip(&nearest).filter(|(_, (_, c))| *c < copies.threshold).map(|(r, _)| r.image.as_str()).collect();
    let others_removed = others.iter().filter(|i| scores[**i]).count();
    let other_rate = copies.removed_others.expect("some samples are not copies");
    assert_eq!(other_rate.n, others.len());
    assert!((other_rate.estimate.value - others_removed as f64 / others.len() as f64).abs() < 1e-12);
    // A removed copy never reaches the filtered set.
    for image in copy_images.iter().filter(|i| scores[**i]) {
        assert!(!kept.iter().any(|k| k.ends_with(image.rsplit('/').next().unwrap())), "{image} was dropped but kept");
    }
    assert_eq!(e.kept, kept.len());
    assert!(e.audit_md.contains("Near-copies among the memorising model's samples"), "{}", e.audit_md);
    assert!(e.audit_md.contains(&format!("| 32 | {} |", copies.near_copies)), "{}", e.audit_md);
}

/// Issue 7's acceptance bar, and what it cost. The filter — s_reid ≥ δ, or the copy gate's
/// s_copy ≥ 0.99 — must remove ≥ 99 % of the near-copies. The re-identification nets we can
/// train here also drop most of the *other* samples (a memorising model's samples all look like
/// its few training patients), so the bar alone could be met by dropping everything. The copy gate
/// must therefore carry it on its own terms: remove ≥ 90 % of the copies by itself while passing
/// at least half of the other samples and ≥ 75 % of held-out patients' real images. (At this
/// size the gate is calibrated on 56 training images, so its q = 0.99 threshold is their maximum,
/// a noisy estimate: 3 of the 24 held-out images pass it here, against 0–3 of 80 at demo size.)
#[test]
fn the_filter_removes_at_least_99_percent_of_the_near_copies() {
    let e = experiment();
    let c = &e.copies;
    let removed = c.removed.expect("near-copies exist");
    assert!(removed.estimate.value >= 0.99, "the filter removed only {:.3} of {} near-copies", removed.estimate.value, removed.n);
    let by_gate = c.removed_by_gate.expect("the copy gate is on").estimate.value;
    let others_by_gate = c.others_removed_by_gate.expect("some samples are not copies").estimate.value;
    assert!(by_gate >= 0.9, "the copy gate alone removed {by_gate:.3} of the near-copies");
    assert!(others_by_gate <= 0.5, "the copy gate also removed {others_by_gate:.3} of the other samples");
    let fpr = e.gate_heldout.flagged.estimate.value;
    assert!(fpr <= 0.25, "the copy gate flagged {fpr:.3} of {} held-out patients' real images", e.gate_heldout.flagged.n);
}
