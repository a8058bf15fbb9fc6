//! The filter rule on hand-made scores, the filter stage's files and errors,
//! and the lineage check that keeps real images out of the distilled model.

use privdistill::data::{Image, Manifest, Record};
use privdistill::pipeline::filter::{relative_path, run as run_filter, FilterConfig};
use privdistill::privacy::filter::{apply_filter, FilterRule, Reason, ScoreRecord};
use privdistill::privacy::lineage::{Lineage, StageRecord};
use std::path::Path;

fn score(prompt: Option<u64>, sample: u64, s_reid: f64, s_align: Option<f64>) -> ScoreRecord {
    ScoreRecord {
        image: format!("images/p{}_s{sample}.png", prompt.map_or("u".to_string(), |p| p.to_string())),
        prompt_index: prompt,
        sample_index: sample,
        s_reid,
        matched_real: "images/real.png".into(),
        s_align,
        s_copy: Some(0.5),
        copy_match: Some("images/real.png".into()),
    }
}

#[test]
fn drops_reidentified_then_keeps_best_alignment() {
    let scores = vec![
        score(Some(0), 0, 0.10, Some(0.30)),
        score(Some(0), 1, 0.70, Some(0.90)), // best alignment but re-identified: must not be kept
        score(Some(0), 2, 0.20, Some(0.50)),
        score(Some(0), 3, 0.50, Some(0.40)), // exactly δ counts as re-identified
        score(Some(1), 0, 0.90, Some(0.20)),
        score(Some(1), 1, 0.95, Some(0.10)), // prompt 1 loses every sample
        score(Some(2), 0, 0.00, Some(0.60)), // tie on s_align: the lower sample index wins
        score(Some(2), 1, 0.00, Some(0.60)),
        score(None, 0, 0.30, None),
        score(None, 1, 0.80, None),
    ];
    let (decisions, summary) = apply_filter(&scores, &FilterRule::default()).unwrap();
    let kept: Vec<&str> = decisions.iter().filter(|d| d.kept).map(|d| d.score.image.as_str()).collect();
    assert_eq!(kept, vec!["images/p0_s2.png", "images/p2_s0.png", "images/pu_s0.png"]);
    let reason = |i: usize| decisions[i].reason;
    assert_eq!(reason(1), Reason::Reidentified);
    assert_eq!(reason(3), Reason::Reidentified);
    assert_eq!(reason(0), Reason::Outranked);
    assert_eq!(decisions[0].rank, Some(2));
    assert_eq!(reason(7), Reason::Outranked);
    assert_eq!(reason(8), Reason::UnconditionalPassed);
    assert_eq!(summary.generated, 10);
    assert_eq!(summary.reidentified, 5);
    assert!((summary.r_reid - 0.5).abs() < 1e-12);
    assert_eq!((summary.kept, summary.dropped, summary.prompts), (3, 7, 3));
    assert_eq!(summary.prompts_all_dropped, vec![1]);
    let all_align = (0.30 + 0.90 + 0.50 + 0.40 + 0.20 + 0.10 + 0.60 + 0.60) / 8.0;
    assert!((summary.s_align_mean_all.unwrap() - all_align).abs() < 1e-12);
    assert!((summary.s_align_mean_kept.unwrap() - 0.55).abs() < 1e-12);

    // Top-2 per prompt.
    let (decisions, summary) = apply_filter(&scores, &FilterRule { delta: 0.5, keep_per_prompt: 2, ..FilterRule::default() }).unwrap();
    assert_eq!(summary.kept, 5);
    assert!(decisions[0].kept && decisions[7].kept);
}

#[test]
fn filter_rejects_bad_settings_and_scores() {
    let ok = vec![score(Some(0), 0, 0.1, Some(0.2))];
    for delta in [-0.1, 1.5, f64::NAN] {
        let err = apply_filter(&ok, &FilterRule { delta, keep_per_prompt: 1, ..FilterRule::default() }).unwrap_err().to_string();
        assert!(err.contains("delta"), "{err}");
    }
    assert!(apply_filter(&ok, &FilterRule { delta: 0.5, keep_per_prompt: 0, ..FilterRule::default() }).is_err());
    let err = apply_filter(&[score(Some(0), 0, f64::NAN, Some(0.2))], &FilterRule::default()).unwrap_err().to_string();
    assert!(err.contains("images/p0_s0.png") && err.contains("s_reid"), "{err}");
    let err = apply_filter(&[score(Some(0), 0, 0.1, None)], &FilterRule::default()).unwrap_err().to_string();
    assert!(err.contains("without s_align"), "{err}");
    let twice = vec![score(Some(0), 0, 0.1, Some(0.2)), score(Some(0), 0, 0.1, Some(0.2))];
    assert!(apply_filter(&twice, &FilterRule::default()).unwrap_err().to_string().contains("twice"));
    // δ = 0 drops everything, δ = 1 keeps everything below certainty.
    let (_, s) = apply_filter(&ok, &FilterRule { delta: 0.0, keep_per_prompt: 1, ..FilterRule::default() }).unwrap();
    assert_eq!(s.kept, 0);
    let (_, s) = apply_filter(&ok, &FilterRule { delta: 1.0, keep_per_prompt: 1, ..FilterRule::default() }).unwrap();
    assert_eq!(s.kept, 1);
}

#[test]
fn the_copy_gate_drops_near_copies_the_reid_rule_passes() {
    let with_copy = |mut s: ScoreRecord, c: f64| {
        s.s_copy = Some(c);
        s
    };
    let scores = vec![
        with_copy(score(Some(0), 0, 0.10, Some(0.90)), 0.995), // best aligned, a near-copy: dropped by the gate
        with_copy(score(Some(0), 1, 0.20, Some(0.50)), 0.99),  // exactly the quantile counts as a copy
        with_copy(score(Some(0), 2, 0.30, Some(0.40)), 0.50),
        with_copy(score(Some(1), 0, 0.80, Some(0.70)), 1.00), // re-identified and a copy: reported as re-identified
        with_copy(score(Some(1), 1, 0.10, Some(0.60)), 1.00), // prompt 1 loses every sample
        with_copy(score(None, 0, 0.10, None), 0.999),
    ];
    let (decisions, summary) = apply_filter(&scores, &FilterRule::default()).unwrap();
    let reasons: Vec<Reason> = decisions.iter().map(|d| d.reason).collect();
    assert_eq!(
        reasons,
        vec![Reason::NearCopy, Reason::NearCopy, Reason::BestAlignment, Reason::Reidentified, Reason::NearCopy, Reason::NearCopy]
    );
    assert_eq!((summary.kept, summary.reidentified, summary.near_copies, summary.dropped_near_copy), (1, 1, 5, 4));
    assert_eq!(summary.copy_gate, Some(0.99));
    assert_eq!(summary.prompts_all_dropped, vec![1]);
    // R_reid stays the paper's (s_reid only).
    assert!((summary.r_reid - 1.0 / 6.0).abs() < 1e-12);

    // The paper's rule alone: the gate is off, and s_copy is not needed.
    let paper = FilterRule { copy_gate: false, ..FilterRule::default() };
    let (decisions, summary) = apply_filter(&scores, &paper).unwrap();
    assert_eq!(decisions[0].reason, Reason::BestAlignment);
    assert_eq!((summary.near_copies, summary.dropped_near_copy, summary.copy_gate), (0, 0, None));
    let unscored: Vec<ScoreRecord> = scores.iter().map(|s| ScoreRecord { s_copy: None, ..s.clone() }).collect();
    assert!(apply_filter(&unscored, &paper).is_ok());

    // With the gate on, a missing or out-of-range s_copy and a bad quantile are errors naming what is wrong.
    let err = apply_filter(&unscored, &FilterRule::default()).unwrap_err().to_string();
    assert!(err.contains("images/p0_s0.png") && err.contains("no s_copy") && err.contains("copy_gate = false"), "{err}");
    let err = apply_filter(&[with_copy(score(Some(0), 0, 0.1, Some(0.2)), 1.5)], &FilterRule::default()).unwrap_err().to_string();
    assert!(err.contains("s_copy = 1.5"), "{err}");
    for q in [0.0, -0.5, 1.01, f64::NAN] {
        let err = apply_filter(&scores, &FilterRule { copy_quantile: q, ..FilterRule::default() }).unwrap_err().to_string();
        assert!(err.contains("copy_quantile"), "{err}");
    }
}

fn write_png(path: &Path, value: f32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<f32> = (0..64).map(|i| (value + i as f32 / 640.0).min(1.0)).collect();
    Image::grey(8, 8, data).save_png(path).unwrap();
}

fn write_manifest(dir: &Path, records: Vec<Record>) -> Manifest {
    let m = Manifest::new(dir.join("manifest.jsonl"), records);
    std::fs::write(&m.path, m.to_jsonl()).unwrap();
    Manifest::load(dir).unwrap()
}

/// A work dir with 2 real images and a synthetic set of 4 (2 prompts × 2).
fn fake_work(root: &Path) -> (Manifest, Manifest) {
    let real_dir = root.join("real");
    let synth_dir = root.join("synth");
    let mut real = Vec::new();
    for i in 0..2 {
        write_png(&real_dir.join(format!("images/r{i}.png")), 0.1 * i as f32);
        let mut r = Record::new(format!("images/r{i}.png"), format!("patient{i}"));
        r.text = Some(format!("report {i}"));
        real.push(r);
    }
    let mut synth = Vec::new();
    for p in 0..2u64 {
        for j in 0..2u64 {
            let name = format!("images/p{p}_s{j}.png");
            write_png(&synth_dir.join(&name), 0.5 + 0.1 * (2 * p + j) as f32);
            let mut r = Record::new(name, format!("patient{p}"));
            r.prompt_index = Some(p);
            r.text = Some(format!("report {p}"));
            synth.push(r);
        }
    }
    (write_manifest(&real_dir, real), write_manifest(&synth_dir, synth))
}

fn write_scores(path: &Path, scores: &[ScoreRecord]) {
    let text: String = scores.iter().map(|s| serde_json::to_string(s).unwrap() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn filter_stage_writes_manifest_log_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (_real, synth) = fake_work(dir.path());
    let scores: Vec<ScoreRecord> = synth
        .records
        .iter()
        .map(|r| ScoreRecord {
            image: r.image.clone(),
            prompt_index: r.prompt_index,
            sample_index: if r.image.ends_with("s1.png") { 1 } else { 0 },
            s_reid: if r.image == "images/p0_s0.png" { 0.9 } else { 0.1 },
            matched_real: "images/r0.png".into(),
            s_align: Some(if r.image.ends_with("s1.png") { 0.8 } else { 0.3 }),
            s_copy: Some(0.2),
            copy_match: Some("images/r1.png".into()),
        })
        .collect();
    write_scores(&dir.path().join("scores.jsonl"), &scores);
    let cfg = FilterConfig {
        scores: dir.path().join("scores.jsonl"),
        synth: dir.path().join("synth"),
        out: dir.path().join("filtered"),
        rule: FilterRule::default(),
    };
    let summary = run_filter(&cfg).unwrap();
    assert_eq!((summary.generated, summary.reidentified, summary.kept), (4, 1, 2));
    let filtered = Manifest::load(&dir.path().join("filtered")).unwrap();
    let images: Vec<&str> = filtered.records.iter().map(|r| r.image.as_str()).collect();
    assert_eq!(images, vec!["../synth/images/p0_s1.png", "../synth/images/p1_s1.png"]);
    filtered.check_images().unwrap();
    let log = std::fs::read_to_string(dir.path().join("filtered/decisions.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4);
    assert!(log.contains("\"reason\":\"reidentified\""));

    // Scores for an image that is not in the synthetic set, and an unscored image: clear errors naming the file.
    write_scores(&cfg.scores, &[scores[0].clone(), ScoreRecord { image: "images/ghost.png".into(), ..scores[1].clone() }]);
    let err = run_filter(&cfg).unwrap_err().to_string();
    assert!(err.contains("scores.jsonl") && err.contains("ghost.png"), "{err}");
    write_scores(&cfg.scores, &scores[..3]);
    let err = run_filter(&cfg).unwrap_err().to_string();
    assert!(err.contains("no score for images/p1_s1.png"), "{err}");
    std::fs::write(&cfg.scores, "{\"image\": 3}\n").unwrap();
    let err = run_filter(&cfg).unwrap_err().to_string();
    assert!(err.contains("scores.jsonl") && err.contains("line 1"), "{err}");
}

#[test]
fn lineage_refuses_real_images_and_unknown_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let (real, synth) = fake_work(dir.path());
    let mut lineage = Lineage::load_or_new(&dir.path().join("lineage.json")).unwrap();
    // Without a registered real set nothing can be proven.
    assert!(lineage.check_synthetic_only(&synth).unwrap_err().to_string().contains("no registered real dataset"));
    lineage.register_real(&real).unwrap();
    // Synthetic images not recorded by a sampling stage: unknown provenance.
    let err = lineage.check_synthetic_only(&synth).unwrap_err().to_string();
    assert!(err.contains("not generated by any sampling stage") && err.contains("line 1"), "{err}");
    let mut sample = StageRecord::default();
    for i in 0..synth.len() {
        sample.generated_images.insert(privdistill::io::hash::sha256_file(synth.image_path(i)).unwrap());
    }
    lineage.record("sample-real", sample);
    lineage.check_synthetic_only(&synth).unwrap();

    // A training set that smuggles in a real image (a byte-identical copy under a synthetic name) is refused.
    std::fs::copy(real.image_path(1), synth.image_path(2)).unwrap();
    let err = lineage.check_synthetic_only(&synth).unwrap_err().to_string();
    assert!(err.contains("line 3") && err.contains("is a real image"), "{err}");

    // Round trip through the file.
    let path = dir.path().join("lineage.json");
    lineage.save(&path).unwrap();
    assert_eq!(Lineage::load_or_new(&path).unwrap(), lineage);
    std::fs::write(&path, "{\"version\": 99, \"real_images\": [], \"stages\": {}}").unwrap();
    assert!(Lineage::load_or_new(&path).unwrap_err().to_string().contains("version 99"));
}

#[test]
fn relative_paths_between_stage_folders() {
    assert_eq!(relative_path(Path::new("/w/filtered"), Path::new("/w/synth")).unwrap(), Path::new("../synth"));
    assert_eq!(relative_path(Path::new("/w/a/b"), Path::new("/w/c")).unwrap(), Path::new("../../c"));
    assert_eq!(relative_path(Path::new("/w"), Path::new("/w/./x/../y")).unwrap(), Path::new("y"));
}

mod scoring {
    use super::*;
    use privdistill::pipeline::score::{part_path, score_with, ScoreConfig};
    use privdistill::privacy::score::{AlignModel, NearestReal, ReidModel};
    use privdistill::{Result, Tensor};

    /// Pixels as the embedding; same-patient probability 1 / (1 + 1000·MSE).
    struct PixelReid;
    impl ReidModel for PixelReid {
        fn embed_images(&self, images: &[Image]) -> Result<Tensor> {
            let rows: Vec<f32> = images.iter().flat_map(|im| im.resize(8, 8).to_grey().data).collect();
            Tensor::from_vec(rows, &[images.len(), 64])
        }
        fn pair_scores(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f32>> {
            let mse = a.sub(b)?.square()?.mean(&[1], false)?.to_vec::<f32>()?;
            Ok(mse.into_iter().map(|m| 1.0 / (1.0 + 1000.0 * m)).collect())
        }
    }
    /// Brighter images "align" better with longer texts: enough to test the plumbing.
    struct BrightnessAlign;
    impl AlignModel for BrightnessAlign {
        fn align_scores(&self, images: &[Image], texts: &[&str]) -> Result<Vec<f32>> {
            Ok(images.iter().zip(texts).map(|(im, t)| im.data.iter().sum::<f32>() / im.data.len() as f32 * t.len() as f32 / 10.0).collect())
        }
    }
    struct BruteForce(Vec<Image>);
    impl NearestReal for BruteForce {
        fn nearest_real(&self, queries: &[Image], k: usize) -> Result<Vec<Vec<(usize, f32)>>> {
            Ok(queries
                .iter()
                .map(|q| {
                    let mut d: Vec<(usize, f32)> = self
                        .0
                        .iter()
                        .enumerate()
                        .map(|(i, g)| (i, q.data.iter().zip(&g.data).map(|(a, b)| (a - b) * (a - b)).sum::<f32>()))
                        .collect();
                    d.sort_by(|a, b| a.1.total_cmp(&b.1));
                    d.truncate(k);
                    d
                })
                .collect())
        }
    }

    fn config(root: &Path) -> ScoreConfig {
        ScoreConfig {
            real: root.join("real"),
            synth: root.join("synth"),
            reid: root.join("reid"),
            align: None,
            retrieval: None,
            out: root.join("scores.jsonl"),
            batch_size: 3,
            neighbours: 2,
            prompted_neighbours: false,
            // These flat test images carry no structure for the pixel gate; it has its own test below.
            copy_gate: false,
            copy_gate_side: 16,
            copy_gate_smoothing: 1.0,
        }
    }

    #[test]
    fn copies_of_the_prompt_image_score_as_reidentified() {
        let dir = tempfile::tempdir().unwrap();
        let (real, synth) = fake_work(dir.path());
        // Sample 1 of prompt 1 is a byte copy of real image 1; add an unconditional copy of real image 0.
        std::fs::copy(real.image_path(1), synth.image_path(3)).unwrap();
        std::fs::copy(real.image_path(0), synth.root().join("images/u0.png")).unwrap();
        let mut records = synth.records.clone();
        let mut u = Record::new("images/u0.png", "uncond");
        u.extra.insert("sample_index".into(), 0.into());
        records.push(u);
        for (k, r) in records.iter_mut().enumerate().take(4) {
            r.extra.insert("sample_index".into(), ((k % 2) as u64).into());
        }
        write_manifest(&synth.root(), records);
        let gallery: Vec<Image> = (0..real.len()).map(|i| real.load_image(i).unwrap()).collect();
        let cfg = config(dir.path());
        let summary = score_with(&cfg, &PixelReid, Some(&BrightnessAlign), Some(&BruteForce(gallery.clone()))).unwrap();
        assert_eq!((summary.scored, summary.resumed), (5, 0));
        let scores = privdistill::pipeline::filter::read_scores(&cfg.out).unwrap();
        let copy = scores.iter().find(|s| s.image == "images/p1_s1.png").unwrap();
        assert_eq!((copy.s_reid, copy.matched_real.as_str(), copy.sample_index), (1.0, "images/r1.png", 1));
        let uncond = scores.iter().find(|s| s.image == "images/u0.png").unwrap();
        assert_eq!((uncond.s_reid, uncond.matched_real.as_str(), uncond.s_align), (1.0, "images/r0.png", None));
        let other = scores.iter().find(|s| s.image == "images/p0_s0.png").unwrap();
        assert!(other.s_reid < 0.5 && other.s_align.is_some(), "{other:?}");
        let clean = std::fs::read_to_string(&cfg.out).unwrap();

        // Interrupted run: the part file holds the first line and a torn second one; the rerun completes it identically.
        let lines: Vec<&str> = clean.lines().collect();
        std::fs::remove_file(&cfg.out).unwrap();
        std::fs::write(part_path(&cfg.out), format!("{}\n{}", lines[0], &lines[1][..10])).unwrap();
        let summary = score_with(&cfg, &PixelReid, Some(&BrightnessAlign), Some(&BruteForce(gallery))).unwrap();
        assert_eq!(summary.resumed, 1);
        assert_eq!(std::fs::read_to_string(&cfg.out).unwrap(), clean);
        assert!(!part_path(&cfg.out).exists());

        // Missing networks are named.
        let err = score_with(&cfg, &PixelReid, None, None).unwrap_err().to_string();
        assert!(err.contains("alignment network"), "{err}");
    }

    /// A re-identification net that never recognises anyone: the failure the copy gate exists for.
    struct BlindReid;
    impl ReidModel for BlindReid {
        fn embed_images(&self, images: &[Image]) -> Result<Tensor> {
            Tensor::from_vec(vec![0f32; images.len()], &[images.len(), 1])
        }
        fn pair_scores(&self, a: &Tensor, _b: &Tensor) -> Result<Vec<f32>> {
            Ok(vec![0.1; a.dims()[0]])
        }
    }

    #[test]
    fn score_records_s_copy_and_the_filter_drops_the_copy_a_blind_reid_net_passes() {
        use privdistill::data::phantom::{write_phantom, PhantomConfig};
        let dir = tempfile::tempdir().unwrap();
        let real =
            write_phantom(&PhantomConfig { patients: 12, images_per_patient: 2, size: 32, seed: 5 }, &dir.path().join("real")).unwrap();
        let strangers =
            write_phantom(&PhantomConfig { patients: 1, images_per_patient: 1, size: 32, seed: 77 }, &dir.path().join("other")).unwrap();
        // Prompt 3's sample 0 is its real image, smoothed and with its exposure shifted, as a memorising decoder emits it;
        // sample 1 is an image of a patient who is not in the real set.
        let synth_dir = dir.path().join("synth");
        let mut copy = real.load_image(3).unwrap().gaussian_blur(0.7);
        copy.data.iter_mut().for_each(|v| *v = (0.85 * *v + 0.08).clamp(0.0, 1.0));
        std::fs::create_dir_all(synth_dir.join("images")).unwrap();
        copy.save_png(&synth_dir.join("images/copy.png")).unwrap();
        strangers.load_image(0).unwrap().save_png(&synth_dir.join("images/stranger.png")).unwrap();
        let records: Vec<Record> = ["images/copy.png", "images/stranger.png"]
            .iter()
            .enumerate()
            .map(|(j, name)| {
                let mut r = Record::new(*name, real.records[3].patient.clone());
                r.prompt_index = Some(3);
                r.text = Some("No acute findings.".into());
                r.extra.insert("sample_index".into(), (j as u64).into());
                r
            })
            .collect();
        write_manifest(&synth_dir, records);
        let cfg = ScoreConfig { copy_gate: true, copy_gate_side: 32, ..config(dir.path()) };
        let summary = score_with(&cfg, &BlindReid, Some(&BrightnessAlign), None).unwrap();
        let gate = summary.copy_gate.expect("the gate was on");
        assert_eq!((gate.side, gate.calibration_images), (32, 24));
        let scores = privdistill::pipeline::filter::read_scores(&cfg.out).unwrap();
        assert_eq!(scores[0].copy_match.as_deref(), Some(real.records[3].image.as_str()));
        assert_eq!(scores[0].s_copy, Some(1.0), "{:?}", scores[0]);
        assert!(scores[1].s_copy.unwrap() < 0.99, "{:?}", scores[1]);

        let filtered = run_filter(&FilterConfig {
            scores: cfg.out.clone(),
            synth: synth_dir.clone(),
            out: dir.path().join("filtered"),
            rule: FilterRule::default(),
        })
        .unwrap();
        assert_eq!((filtered.reidentified, filtered.dropped_near_copy, filtered.kept), (0, 1, 1));
        let log = std::fs::read_to_string(dir.path().join("filtered/decisions.jsonl")).unwrap();
        assert!(log.lines().next().unwrap().contains("\"reason\":\"near_copy\""), "{log}");
    }

    #[test]
    fn prompt_indices_must_exist_in_the_real_set() {
        let dir = tempfile::tempdir().unwrap();
        let (_real, synth) = fake_work(dir.path());
        let mut records = synth.records.clone();
        records[2].prompt_index = Some(812);
        write_manifest(&synth.root(), records.clone());
        let err = score_with(&config(dir.path()), &PixelReid, Some(&BrightnessAlign), None).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("prompt_index = 812") && err.contains("2 records"), "{err}");
        records[2].prompt_index = Some(1);
        records[2].extra.insert("source_image".into(), "images/elsewhere.png".into());
        write_manifest(&synth.root(), records);
        let err = score_with(&config(dir.path()), &PixelReid, Some(&BrightnessAlign), None).unwrap_err().to_string();
        assert!(err.contains("source_image") && err.contains("different real set"), "{err}");
    }
}
