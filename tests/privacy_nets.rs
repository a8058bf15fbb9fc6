//! The privacy scorer networks end to end on small phantom datasets: training
//! stages, their folders, the scoring API, the audit, and bad input.

use privdistill::data::phantom::{write_phantom, PhantomConfig};
use privdistill::data::{split_manifest, Image, Manifest, SplitConfig};
use privdistill::models::resnet::ResNetConfig;
use privdistill::pipeline::audit::{self, AuditConfig};
use privdistill::pipeline::scorer_stage::configure;
use privdistill::pipeline::train_align::{self, TrainAlignConfig};
use privdistill::pipeline::train_reid::{self, TrainReidConfig};
use privdistill::pipeline::train_retrieval::{self, TrainRetrievalConfig};
use privdistill::privacy::align::{bert_config, AlignScorer};
use privdistill::privacy::audit::Attack;
use privdistill::privacy::reid::ReidScorer;
use privdistill::privacy::retrieval::RetrievalIndex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn tiny_resnet() -> ResNetConfig {
    ResNetConfig { layers: [1, 1, 1, 1], num_classes: 32, in_channels: 3, width_per_group: 64, base_planes: 8 }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("privdistill-privacy-nets-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A phantom dataset (distinctive patients, several images each) with a patient-level split.
fn phantom_dataset(name: &str, patients: usize, per_patient: usize) -> PathBuf {
    let dir = scratch(name);
    let mut manifest = write_phantom(&PhantomConfig { patients, images_per_patient: per_patient, size: 48, seed: 11 }, &dir).unwrap();
    split_manifest(&mut manifest, &SplitConfig { val: 0.25, test: 0.25, seed: 3, stratify: false }).unwrap();
    manifest.save().unwrap();
    dir
}

struct TrainedReid {
    data: PathBuf,
    folder: PathBuf,
    summary: train_reid::TrainReidSummary,
}

/// One small re-identification network, trained once and shared by the tests that score with it.
fn trained_reid() -> &'static TrainedReid {
    static TRAINED: OnceLock<TrainedReid> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let data = phantom_dataset("reid-data", 24, 4);
        let folder = data.parent().unwrap().join(format!("privdistill-privacy-nets-{}-reid", std::process::id()));
        let cfg = TrainReidConfig {
            data: data.clone(),
            out: folder.clone(),
            backbone: tiny_resnet(),
            embedding_dim: 32,
            image_size: 32,
            batch_size: 16,
            lr: 2e-3,
            negatives_per_epoch: 96,
            max_epochs: 4,
            patience: 4,
            bootstrap_resamples: 100,
            ..TrainReidConfig::default()
        };
        let summary = train_reid::run(&cfg).unwrap();
        TrainedReid { data, folder, summary }
    })
}

fn images_of(data: &Path) -> (Manifest, Vec<Image>) {
    let m = Manifest::load(data).unwrap();
    let images = (0..m.len()).map(|i| m.load_image(i).unwrap()).collect();
    (m, images)
}

#[test]
fn reid_training_beats_chance_and_writes_its_folder() {
    let t = trained_reid();
    let best = t.summary.val_auc.iter().cloned().fold(f64::MIN, f64::max);
    assert!(best > 0.65, "validation AUC never rose clearly above chance: {:?}", t.summary.val_auc);
    let auc = t.summary.test_auc;
    assert!(auc.lo <= auc.value && auc.value <= auc.hi && auc.resamples > 0, "{auc:?}");
    assert!((0.0..=1.0).contains(&t.summary.test_accuracy.value));
    for file in ["config.json", "model.safetensors", "metrics.json"] {
        assert!(t.folder.join(file).is_file(), "{file} missing");
    }
    assert!(!t.folder.join("checkpoint.safetensors").exists(), "the checkpoint is removed once training ends");
}

#[test]
fn reid_scorer_scores_an_image_against_itself_above_another_patient() {
    let t = trained_reid();
    let scorer = ReidScorer::load(&t.folder).unwrap();
    let (m, images) = images_of(&t.data);
    // Image k of patient p is record p * 4 + k; compare each first image with itself and with the next patient's.
    let (mut same, mut other) = (Vec::new(), Vec::new());
    for p in 0..23 {
        let (a, b) = (&images[p * 4], &images[(p + 1) * 4]);
        assert_ne!(m.records[p * 4].patient, m.records[(p + 1) * 4].patient);
        let s = scorer.score_pairs(&[a.clone(), a.clone()], &[a.clone(), b.clone()]).unwrap();
        same.push(s[0]);
        other.push(s[1]);
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    assert!(mean(&same) > mean(&other), "self {} vs other patient {}", mean(&same), mean(&other));
    // Embedding once and pairing later gives the same scores as scoring the pairs.
    let ea = scorer.embed(&images[..4]).unwrap();
    let eb = scorer.embed(&images[4..8]).unwrap();
    let direct = scorer.score_pairs(&images[..4], &images[4..8]).unwrap();
    assert_eq!(scorer.score_embeddings(&ea, &eb).unwrap(), direct);
    assert!(direct.iter().all(|s| (0.0..=1.0).contains(s)));
}

#[test]
fn retrieval_training_reports_metrics_and_finds_an_exact_copy() {
    let data = phantom_dataset("retrieval-data", 16, 3);
    let out = scratch("retrieval");
    let cfg = TrainRetrievalConfig {
        data: data.clone(),
        out: out.clone(),
        backbone: tiny_resnet(),
        image_size: 32,
        patients_per_batch: 4,
        images_per_patient: 2,
        steps_per_epoch: 4,
        max_epochs: 2,
        patience: 2,
        lr: 1e-3,
        memory_size: 32,
        ..TrainRetrievalConfig::default()
    };
    let summary = train_retrieval::run(&cfg).unwrap();
    assert!((0.0..=1.0).contains(&summary.test.map_at_r) && (0.0..=1.0).contains(&summary.test.precision_at_1));
    assert!(summary.test.queries > 0 && summary.epochs >= 1);

    let (_, images) = images_of(&data);
    let gallery = &images[..20];
    let index = RetrievalIndex::build(&out, gallery).unwrap();
    let queries: Vec<Image> = [3usize, 11, 17].iter().map(|&i| gallery[i].clone()).collect();
    let found = index.nearest(&queries, 3).unwrap();
    for (q, &i) in found.iter().zip(&[3usize, 11, 17]) {
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].0, i, "an exact copy's nearest neighbour is its original");
        assert!(q[0].1 < 1e-3, "distance to the copy {}", q[0].1);
        assert!(q[0].1 <= q[1].1 && q[1].1 <= q[2].1, "sorted by distance");
    }
}

#[test]
fn align_loss_falls_and_matching_text_beats_a_mismatched_one() {
    // Twelve training pairs, each with its own report, so the encoders can fit them. The
    // validation and test records repeat training pairs, so early stopping keeps the best fit.
    let dir = scratch("align-data");
    let mut manifest = write_phantom(&PhantomConfig { patients: 18, images_per_patient: 1, size: 48, seed: 5 }, &dir).unwrap();
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"];
    for i in 0..18 {
        let source = if i < 12 { i } else { i - 12 };
        manifest.records[i].text = Some(format!("report {} with finding {source}", words[source]));
        manifest.records[i].split = Some(match i {
            0..12 => privdistill::data::Split::Train,
            12..15 => privdistill::data::Split::Val,
            _ => privdistill::data::Split::Test,
        });
        if i >= 12 {
            std::fs::copy(manifest.image_path(source), manifest.image_path(i)).unwrap();
        }
    }
    manifest.save().unwrap();
    let out = scratch("align");
    let cfg = TrainAlignConfig {
        data: dir.clone(),
        out: out.clone(),
        image_backbone: tiny_resnet(),
        text_encoder: bert_config(30522, 32, 1, 2, 32),
        projection_dim: 16,
        image_size: 32,
        max_len: 16,
        batch_size: 12,
        lr: 2e-3,
        max_epochs: 60,
        patience: 60,
        augment: false,
        bootstrap_resamples: 50,
        ..TrainAlignConfig::default()
    };
    let summary = train_align::run(&cfg).unwrap();
    let (first, last) = (summary.train_loss[0], *summary.train_loss.last().unwrap());
    assert!(last < first - 0.3, "CLIP loss {first} → {last}");

    let scorer = AlignScorer::load(&out).unwrap();
    let (m, images) = images_of(&dir);
    let texts: Vec<&str> = m.records[..12].iter().map(|r| r.text.as_deref().unwrap()).collect();
    let matched = scorer.score(&images[..12], &texts).unwrap();
    let shifted: Vec<&str> = (0..12).map(|i| texts[(i + 5) % 12]).collect();
    let mismatched = scorer.score(&images[..12], &shifted).unwrap();
    let wins = matched.iter().zip(&mismatched).filter(|(a, b)| a > b).count();
    assert!(wins >= 9, "matching text scored higher in only {wins} of 12 training pairs");
    assert!(matched.iter().all(|s| (-1.0001..=1.0001).contains(s)), "cosines: {matched:?}");
    assert_eq!(scorer.embed_texts(&texts[..3]).unwrap().shape(), &[3, 16]);
}

#[test]
fn audit_of_augmented_copies_gives_rates_with_intervals_and_is_deterministic() {
    let t = trained_reid();
    let out = scratch("audit");
    // "Memorised" samples: exact copies of six real images, each naming its real record.
    let synthetic = scratch("audit-synthetic");
    let real = Manifest::load(&t.data).unwrap();
    let records = (0..6)
        .map(|k| {
            let image = format!("images/s{k}.png");
            std::fs::create_dir_all(synthetic.join("images")).unwrap();
            std::fs::copy(real.image_path(k * 5), synthetic.join(&image)).unwrap();
            let mut r = privdistill::data::Record::new(image, real.records[k * 5].patient.clone());
            r.prompt_index = Some((k * 5) as u64);
            r
        })
        .collect();
    Manifest::new(synthetic.join("manifest.jsonl"), records).save().unwrap();
    let cfg = AuditConfig {
        reid: t.folder.clone(),
        data: t.data.clone(),
        synthetic: Some(synthetic.clone()),
        attacks: vec![Attack::Noise, Attack::Blur, Attack::Flip],
        strengths: vec![0.5, 1.0],
        max_images: 12,
        out: out.clone(),
        bootstrap_resamples: 100,
        ..AuditConfig::default()
    };
    let first = audit::run(&cfg).unwrap();
    assert_eq!(first.rows.len(), 1 + 3 * 2 + 1);
    let memorised = first.rows.last().unwrap();
    assert_eq!((memorised.set.as_str(), memorised.sensitivity.unwrap().n), ("memorised", 6));
    for row in first.rows.iter().filter(|r| r.set == "augmented") {
        for rate in [row.sensitivity.unwrap(), row.specificity.unwrap()] {
            let e = rate.estimate;
            assert_eq!(rate.n, 12);
            assert!(0.0 <= e.lo && e.lo <= e.value && e.value <= e.hi && e.hi <= 1.0, "{row:?}");
        }
    }
    for file in ["audit.json", "audit.md", "audit.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let md = std::fs::read_to_string(out.join("audit.md")).unwrap();
    assert!(md.contains("| augmented | noise | 0.50 |") && md.contains("| heldout |"), "{md}");
    let cfg_again = cfg.clone();
    let second = audit::run(&AuditConfig { out: scratch("audit-again"), ..cfg }).unwrap();
    assert_eq!(first.rows, second.rows, "same seed, same audit");

    // A synthetic record that does not say which prompt it came from.
    let mut m = Manifest::load(&synthetic).unwrap();
    m.records[2].prompt_index = None;
    m.save().unwrap();
    let e = audit::run(&AuditConfig { out: scratch("audit-bad"), ..cfg_again }).err().unwrap().to_string();
    assert!(e.contains("manifest.jsonl") && e.contains("line 3") && e.contains("prompt_index"), "{e}");
}

#[test]
fn bad_input_gets_clear_errors() {
    let missing = std::env::temp_dir().join("privdistill-no-such-scorer");
    let e = ReidScorer::load(&missing).err().unwrap().to_string();
    assert!(e.contains("privdistill-no-such-scorer") && e.contains("train-reid"), "{e}");

    // A folder of another kind.
    let t = trained_reid();
    let e = AlignScorer::load(&t.folder).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("kind") && e.contains("reid"), "{e}");

    // A config that does not describe the weights.
    let wrong = scratch("wrong-config");
    std::fs::copy(t.folder.join("model.safetensors"), wrong.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(t.folder.join("config.json")).unwrap()).unwrap();
    config["architecture"]["backbone"]["base_planes"] = serde_json::json!(16);
    std::fs::write(wrong.join("config.json"), config.to_string()).unwrap();
    let e = ReidScorer::load(&wrong).err().unwrap().to_string();
    assert!(e.contains("model.safetensors") && e.contains("config"), "{e}");

    // A dataset without splits.
    let unsplit = scratch("unsplit");
    write_phantom(&PhantomConfig { patients: 4, images_per_patient: 2, size: 32, seed: 1 }, &unsplit).unwrap();
    let cfg = TrainReidConfig { data: unsplit, out: scratch("unsplit-out"), ..TrainReidConfig::default() };
    let e = train_reid::run(&cfg).err().unwrap().to_string();
    assert!(e.contains("manifest.jsonl") && e.contains("split") && e.contains("privdistill data split"), "{e}");

    // A recipe knob out of range is refused before anything is read or written.
    let out = std::env::temp_dir().join(format!("privdistill-privacy-nets-{}-bad-copy", std::process::id()));
    let cfg = TrainReidConfig { data: t.data.clone(), out: out.clone(), copy_positives: 1.5, ..TrainReidConfig::default() };
    let e = train_reid::run(&cfg).err().unwrap().to_string();
    assert!(e.contains("copy_positives") && e.contains("1.5"), "{e}");
    assert!(!out.exists(), "nothing is written for a refused config");
}

#[test]
fn stage_configs_layer_file_and_overrides_and_reject_unknown_keys() {
    let dir = scratch("config");
    let file = dir.join("reid.toml");
    std::fs::write(&file, "max_epochs = 7\n[backbone]\nbase_planes = 8\n").unwrap();
    let base = TrainReidConfig::demo(Path::new("d"), Path::new("o"));
    let cfg: TrainReidConfig = configure(&base, Some(&file), &["lr=0.5".into()]).unwrap();
    assert_eq!((cfg.max_epochs, cfg.backbone.base_planes, cfg.lr), (7, 8, 0.5));
    assert_eq!((cfg.image_size, cfg.backbone.layers), (64, [1, 1, 1, 1]), "keys the file does not set keep the preset's values");
    std::fs::write(&file, "max_epoch = 7\n").unwrap();
    let e = configure(&base, Some(&file), &[]).err().unwrap().to_string();
    assert!(e.contains("max_epoch"), "{e}");
}
