//! PrivImage's semantic query: the top-k histogram, its sensitivity, the query noise and the
//! public-data selection, on hand-made scores; then the whole query with a small semantic classifier
//! trained on phantom data.

use privdistill::data::phantom::{write_phantom, PhantomConfig};
use privdistill::data::{Manifest, Record};
use privdistill::privacy::dp::semantic::*;
use privdistill::Rng;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// `n` rows of `classes` uniform scores.
fn random_scores(n: usize, classes: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.uniform_vec(classes)).collect()
}

fn l2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn histogram_counts_each_images_top_k_classes() {
    let scores = vec![
        vec![0.9, 0.1, 0.5, 0.2], // top-2: 0, 2
        vec![0.1, 0.8, 0.7, 0.9], // top-2: 3, 1
        vec![0.3, 0.3, 0.1, 0.0], // tie: lower index first → 0, 1
        vec![0.2, 0.6, 0.4, 0.1], // top-2: 1, 2
    ];
    assert_eq!(histogram_from_scores(&scores, 1).unwrap(), vec![2.0, 1.0, 0.0, 1.0]);
    assert_eq!(histogram_from_scores(&scores, 2).unwrap(), vec![2.0, 3.0, 2.0, 1.0]);
    assert_eq!(histogram_from_scores(&scores, 4).unwrap(), vec![4.0; 4]);
    assert_eq!(top_k_classes(&scores[1], 3), vec![3, 1, 2]);
    // Every image votes exactly k times.
    let many = random_scores(200, 7, 3);
    for k in 1..=7 {
        assert_eq!(histogram_from_scores(&many, k).unwrap().iter().sum::<f64>(), (200 * k) as f64);
    }
}

#[test]
fn histogram_sensitivity_is_sqrt_k_for_add_or_remove_one() {
    let scores = random_scores(60, 6, 11);
    let extra = random_scores(5, 6, 12);
    for k in 1..=4 {
        assert!((l2_sensitivity(k) - (k as f64).sqrt()).abs() < 1e-12);
        let h = histogram_from_scores(&scores, k).unwrap();
        let mut worst: f64 = 0.0;
        for removed in 0..scores.len() {
            let mut neighbour = scores.clone();
            neighbour.remove(removed);
            let d = l2(&h, &histogram_from_scores(&neighbour, k).unwrap());
            assert!(d <= l2_sensitivity(k) + 1e-12, "k = {k}: removing row {removed} moved the histogram by {d}");
            worst = worst.max(d);
        }
        for row in &extra {
            let mut neighbour = scores.clone();
            neighbour.push(row.clone());
            let d = l2(&h, &histogram_from_scores(&neighbour, k).unwrap());
            assert!(d <= l2_sensitivity(k) + 1e-12, "k = {k}: adding a row moved the histogram by {d}");
        }
        // The bound is tight: one image's k distinct votes move it by exactly √k.
        assert!((worst - l2_sensitivity(k)).abs() < 1e-12, "k = {k}: worst change {worst}");
    }
}

#[test]
fn query_noise_has_std_sigma_q_sqrt_k_and_is_seeded() {
    let (sigma_q, k) = (3.0, 4);
    assert!((noise_std(sigma_q, k) - 6.0).abs() < 1e-12);
    let h = vec![1000.0; 20_000];
    let noisy = noisy_counts(&h, sigma_q, k, &mut Rng::new(7)).unwrap();
    let n = noisy.len() as f64;
    let mean = noisy.iter().sum::<f64>() / n;
    let std = (noisy.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!((mean - 1000.0).abs() < 0.15, "mean {mean}");
    assert!((std / 6.0 - 1.0).abs() < 0.03, "std {std}, expected 6");
    assert_eq!(noisy, noisy_counts(&h, sigma_q, k, &mut Rng::new(7)).unwrap());
    assert_ne!(noisy, noisy_counts(&h, sigma_q, k, &mut Rng::new(8)).unwrap());
    // With σ_q = 0 the counts come back as they are.
    assert_eq!(noisy_counts(&[3.0, 5.0], 0.0, 2, &mut Rng::new(1)).unwrap(), vec![3.0, 5.0]);
}

#[test]
fn noisy_histogram_is_the_clamped_normalised_noisy_counts() {
    let h = vec![50.0, 5.0, 0.0, 20.0, 1.0];
    let counts = noisy_counts(&h, 4.0, 2, &mut Rng::new(21)).unwrap();
    let dist = noisy_histogram(&h, 4.0, 2, &mut Rng::new(21)).unwrap();
    let total: f64 = counts.iter().map(|v| v.max(0.0)).sum();
    for (c, d) in counts.iter().zip(&dist) {
        assert!((c.max(0.0) / total - d).abs() < 1e-12);
    }
    assert!((dist.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert!(dist.iter().all(|&d| d >= 0.0));
    // Noiseless: the histogram's own frequencies.
    let exact = noisy_histogram(&h, 0.0, 2, &mut Rng::new(0)).unwrap();
    assert!((exact[0] - 50.0 / 76.0).abs() < 1e-12);
    // Nothing positive left after the noise: the uniform (data-independent) answer.
    assert_eq!(noisy_histogram(&[-1e9, -1e9, -1e9, -1e9], 1.0, 1, &mut Rng::new(0)).unwrap(), vec![0.25; 4]);
}

#[test]
fn selection_matches_a_skewed_target_and_is_deterministic() {
    let public = random_scores(1000, 4, 5);
    let target = [0.8, 0.2, 0.0, 0.0];
    let sel = select_public(&public, &target, 300, 2, 9).unwrap();
    assert_eq!(sel.indices.len(), 300);
    assert_eq!(sel.shortfall, 0);
    assert_eq!(sel.quotas, vec![240, 60, 0, 0]);
    assert_eq!(sel.taken, vec![240, 60, 0, 0]);
    assert!(sel.indices.windows(2).all(|w| w[0] < w[1]), "indices ascending and unique");
    let achieved = top1_distribution(&public, &sel.indices);
    for (a, t) in achieved.iter().zip(target) {
        assert!((a - t).abs() < 0.01, "achieved {achieved:?} vs target {target:?}");
    }
    assert_eq!(sel, select_public(&public, &target, 300, 2, 9).unwrap());
    let other = select_public(&public, &target, 300, 2, 10).unwrap();
    assert_ne!(sel.indices, other.indices, "another seed draws another subset");
    assert_eq!(other.taken, sel.taken);
}

#[test]
fn selection_from_a_noisy_skewed_query_tracks_the_sensitive_distribution() {
    // Sensitive images: 80% show class 0 most, 20% class 1 (k = 1).
    let mut rng = Rng::new(31);
    let sensitive: Vec<Vec<f64>> = (0..500)
        .map(|i| {
            let mut row = rng.uniform_vec(5).into_iter().map(|v| 0.5 * v).collect::<Vec<f64>>();
            row[if i % 5 == 0 { 1 } else { 0 }] = 0.9;
            row
        })
        .collect();
    let h = histogram_from_scores(&sensitive, 1).unwrap();
    assert_eq!(h, vec![400.0, 100.0, 0.0, 0.0, 0.0]);
    let dist = noisy_histogram(&h, 5.0, 1, &mut Rng::new(2)).unwrap();
    let public = random_scores(2000, 5, 32);
    let sel = select_public(&public, &dist, 400, 1, 3).unwrap();
    let achieved = top1_distribution(&public, &sel.indices);
    assert!((achieved[0] - 0.8).abs() < 0.05 && (achieved[1] - 0.2).abs() < 0.05, "{achieved:?}");
    assert!(achieved[2] + achieved[3] + achieved[4] < 0.1, "{achieved:?}");
}

#[test]
fn a_short_class_falls_back_to_lower_ranks_then_passes_on_its_deficit() {
    let public = random_scores(1000, 4, 6);
    let top1: Vec<usize> = public.iter().map(|r| top_k_classes(r, 1)[0]).collect();
    let top2: Vec<Vec<usize>> = public.iter().map(|r| top_k_classes(r, 2)).collect();
    let class0_top1 = top1.iter().filter(|&&c| c == 0).count();
    // 400 for class 0 is more than its ~250 top-1 images: the rest rank it second.
    let sel = select_public(&public, &[0.8, 0.2, 0.0, 0.0], 500, 2, 4).unwrap();
    assert_eq!(sel.indices.len(), 500);
    assert_eq!(sel.taken, vec![400, 100, 0, 0]);
    let taken_top1_0 = sel.indices.iter().filter(|&&i| top1[i] == 0).count();
    assert_eq!(taken_top1_0, class0_top1, "every image whose top-1 is class 0 is used before any that ranks it second");
    assert!(sel.indices.iter().all(|&i| top2[i].iter().any(|&c| c < 2)), "only images showing a wanted class");
    // With k = 1 only top-1 images qualify: class 0 runs out, class 1 absorbs what it can, the rest is a shortfall.
    let eligible = top1.iter().filter(|&&c| c < 2).count();
    let sel = select_public(&public, &[0.8, 0.2, 0.0, 0.0], 900, 1, 4).unwrap();
    assert_eq!(sel.indices.len(), eligible);
    assert_eq!(sel.shortfall, 900 - eligible);
    assert_eq!(sel.taken[0], class0_top1);
    assert!(sel.taken[1] > sel.quotas[1], "class 1 took over class 0's deficit: {:?}", sel);
    let unique: HashSet<usize> = sel.indices.iter().copied().collect();
    assert_eq!(unique.len(), sel.indices.len());
}

#[test]
fn lift_ranks_what_an_image_shows_beyond_the_common_classes() {
    // A common view (prior 0.6) at 0.7 against a rare finding (prior 0.15) at 0.5.
    let probabilities = vec![vec![0.7, 0.5, 0.1]];
    let priors = [0.6, 0.15, 0.1];
    assert_eq!(top_k_classes(&ranking_scores(probabilities.clone(), &priors, Ranking::Probability)[0], 1), vec![0]);
    let lift = ranking_scores(probabilities, &priors, Ranking::Lift);
    assert_eq!(top_k_classes(&lift[0], 3), vec![1, 0, 2]);
    let logit = |p: f64| (p / (1.0 - p)).ln();
    assert!((lift[0][1] - (logit(0.5) - logit(0.15))).abs() < 1e-12);
    assert!(lift[0][2].abs() < 1e-12, "at its prior a class has lift 0");
    // Saturated probabilities stay finite.
    assert!(ranking_scores(vec![vec![1.0, 0.0]], &[0.5, 0.5], Ranking::Lift)[0].iter().all(|v| v.is_finite()));
}

#[test]
fn bad_inputs_are_errors() {
    let s = random_scores(10, 3, 1);
    assert!(histogram_from_scores(&s, 0).is_err());
    assert!(histogram_from_scores(&s, 4).is_err());
    assert!(histogram_from_scores(&[], 1).is_err());
    assert!(histogram_from_scores(&[vec![0.1, f64::NAN, 0.2]], 1).is_err());
    assert!(histogram_from_scores(&[vec![0.1, 0.2], vec![0.3]], 1).is_err());
    assert!(noisy_counts(&[1.0], -1.0, 1, &mut Rng::new(0)).unwrap_err().to_string().contains("query_noise_multiplier"));
    assert!(noisy_counts(&[1.0], f64::NAN, 1, &mut Rng::new(0)).is_err());
    assert!(noisy_histogram(&[], 1.0, 1, &mut Rng::new(0)).is_err());
    assert!(select_public(&s, &[1.0, 0.0], 5, 1, 0).is_err(), "distribution length");
    assert!(select_public(&s, &[1.0, -0.1, 0.0], 5, 1, 0).is_err(), "negative weight");
    assert!(select_public(&s, &[0.0, 0.0, 0.0], 5, 1, 0).is_err(), "all-zero distribution");
    assert!(select_public(&s, &[1.0, 0.0, 0.0], 0, 1, 0).is_err(), "n = 0");
    assert!(select_public(&s, &[1.0, 0.0, 0.0], 5, 0, 0).is_err(), "k = 0");
    let mut cfg = SemanticConfig { top_k: 0, ..SemanticConfig::default() };
    assert!(cfg.validate().unwrap_err().to_string().contains("top_k"));
    cfg.top_k = 2;
    cfg.classifier.labels = Some(vec!["Edema".into()]);
    assert!(cfg.validate().unwrap_err().to_string().contains("classifier.labels"));
}

#[test]
fn config_reads_toml_with_defaults_and_rejects_unknown_fields() {
    let cfg: SemanticConfig =
        toml::from_str("top_k = 3\nranking = \"probability\"\nquery_noise_multiplier = 12.5\n[classifier]\nce_epochs = 2\n").unwrap();
    assert_eq!((cfg.top_k, cfg.query_noise_multiplier, cfg.classifier.ce_epochs), (3, 12.5, 2));
    assert_eq!(cfg.ranking, Ranking::Probability);
    assert_eq!(SemanticConfig::default().ranking, Ranking::Lift);
    assert!(cfg.labels.is_empty());
    assert_eq!(cfg.classifier.image_size, 224, "paper-size classifier by default");
    assert_eq!(SemanticConfig::demo().classifier.aucm_epochs, 0);
    assert!(toml::from_str::<SemanticConfig>("top_kk = 3\n").is_err());
}

#[test]
fn default_classes_are_informative_labels_and_views() {
    let rec = |labels: &[(&str, u8)], view: Option<&str>, i: usize| {
        let mut r = Record::new(format!("{i}.png"), format!("p{i}"));
        r.labels = Some(labels.iter().map(|(n, v)| (n.to_string(), *v)).collect::<BTreeMap<_, _>>());
        r.view = view.map(str::to_string);
        r
    };
    let m = Manifest::new(
        "m/manifest.jsonl",
        vec![
            rec(&[("Edema", 1), ("Never", 0), ("Always", 1)], Some("PA"), 0),
            rec(&[("Edema", 0), ("Never", 0), ("Always", 1)], Some("AP"), 1),
            rec(&[("Edema", 0), ("Never", 0), ("Always", 1)], None, 2),
        ],
    );
    assert_eq!(default_classes(&m), vec!["Edema", "view:AP", "view:PA"]);
}

/// Trains a tiny semantic classifier on phantom images and runs the whole query (about 10 s in release).
#[test]
fn semantic_query_end_to_end_on_phantoms() {
    let tmp = tempfile::tempdir().unwrap();
    let public =
        write_phantom(&PhantomConfig { patients: 16, images_per_patient: 3, size: 32, seed: 1 }, &tmp.path().join("public")).unwrap();
    let sensitive =
        write_phantom(&PhantomConfig { patients: 8, images_per_patient: 2, size: 32, seed: 2 }, &tmp.path().join("sens")).unwrap();
    let mut cfg = SemanticConfig::demo();
    cfg.classifier.image_size = 32;
    cfg.classifier.ce_epochs = 1;
    cfg.classifier.batch_size = 16;
    cfg.classifier.augment = false;
    cfg.query_noise_multiplier = 1.0;
    let (classifier, training) = train_semantic_classifier(&cfg, &public, &indicatif::ProgressBar::hidden()).unwrap();
    assert_eq!(training.classes, default_classes(&public));
    assert!(training.classes.iter().any(|c| c.starts_with(VIEW_PREFIX)), "{:?}", training.classes);
    assert_eq!(training.images, 48);
    assert!(training.log.ce_loss.iter().all(|l| l.is_finite()));

    let sensitive = Arc::new(sensitive);
    let indices = records_in(&sensitive, privdistill::data::Split::Train);
    assert_eq!(indices.len(), 16, "no splits: every record is queried");
    let h = semantic_histogram(&classifier, &sensitive, &indices, cfg.top_k).unwrap();
    assert_eq!(h.len(), training.classes.len());
    assert_eq!(h.iter().sum::<f64>(), (16 * cfg.top_k) as f64);

    let public = Arc::new(public);
    let query = semantic_query(&cfg, &classifier, &sensitive, &indices, &public, 20).unwrap();
    assert_eq!(query.classes, training.classes);
    assert_eq!(query.sensitive_records, 16);
    assert!((query.noisy_distribution.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert_eq!(query.selection.indices.len() + query.selection.shortfall, 20);
    let again = semantic_query(&cfg, &classifier, &sensitive, &indices, &public, 20).unwrap();
    assert_eq!(again.selection, query.selection, "same seed, same subset");

    // The classifier folder round-trips; the selected manifest points at the public images.
    let folder = tmp.path().join("semantic");
    classifier.save(&folder).unwrap();
    let loaded = SemanticClassifier::load(&folder).unwrap();
    assert_eq!(loaded.classes(), classifier.classes());
    assert_eq!(loaded.card, classifier.card);
    assert_eq!(classifier.card.priors[0], training.positives[0] as f64 / 48.0);
    let idx = [0usize, 5, 9];
    assert_eq!(loaded.scores(&public, &idx, 4, 1).unwrap(), classifier.scores(&public, &idx, 4, 1).unwrap());
    let chosen = selected_manifest(&public, &query.selection, &tmp.path().join("chosen/manifest.jsonl"));
    assert_eq!(chosen.len(), query.selection.indices.len());
    assert!(chosen.load_image(0).is_ok());
}
