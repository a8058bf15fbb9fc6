//! The PrivImage chain at toy size: phantom public data, tiny models, two
//! DP-SGD steps — it runs end to end, spends no more than its budget, and
//! refuses a budget that is not positive.

use privdistill::pipeline::privimage::{default_delta, run_privimage, summary_path, PrivImageConfig, PrivImageSummary};
use std::path::{Path, PathBuf};

const VAE: &str = include_str!("fixtures/tiny/vae.json");
const UNET: &str = r#"{"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
  "layers_per_block": 1, "block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2, "cross_attention_dim": 16,
  "norm_num_groups": 8}"#;
const TEXT: &str = r#"{"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
  "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
  "max_position_embeddings": 77, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}"#;

/// The first `n` shipped records, image paths made absolute.
fn sensitive_subset(dir: &Path, n: usize) -> PathBuf {
    let data = dir.join("data");
    privdistill::testing::write_shipped_records(&data, n, false).unwrap();
    data
}

fn tiny_config(dir: &Path) -> PrivImageConfig {
    for (name, text) in [("vae.json", VAE), ("unet.json", UNET), ("text.json", TEXT)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let data = sensitive_subset(dir, 90);
    let mut cfg = PrivImageConfig::demo(&data, &dir.join("work"));
    cfg.public = "phantom:40".into();
    cfg.public_image_size = 32;
    cfg.select = 16;
    cfg.semantic.query_noise_multiplier = 5.0;
    cfg.semantic.classifier.image_size = 32;
    cfg.semantic.classifier.ce_epochs = 1;
    cfg.semantic.classifier.batch_size = 16;
    cfg.semantic.classifier.augment = false;
    let d = dir.display();
    let stages = format!(
        r#"
        [train-vae]
        config = "{d}/vae.json"
        image_size = 32
        batch_size = 4
        steps = 2
        scale_images = 8
        [pretrain]
        unet_config = "{d}/unet.json"
        text_encoder_config = "{d}/text.json"
        image_size = 32
        batch_size = 4
        steps = 2
        [train-ldm-dp]
        image_size = 32
        steps = 2
        sample_rate = 0.1
        noise_multiplicity = 1
        max_physical_batch = 8
        [sample]
        per_prompt = 1
        steps = 2
        limit_prompts = 12
        [train-reid]
        image_size = 32
        max_epochs = 1
        negatives_per_epoch = 16
        bootstrap_resamples = 10
        [train-align]
        image_size = 32
        max_epochs = 1
        bootstrap_resamples = 10
        [evaluate]
        msssim_pairs = 4
        [evaluate.classifier]
        image_size = 32
        ce_epochs = 1
        aucm_epochs = 0
        min_positives = 2
        bootstrap = 10
        [evaluate.kid]
        subsets = 2
        "#
    );
    cfg.stages = toml::from_str(&stages).unwrap();
    cfg
}

#[test]
fn the_chain_runs_within_its_budget_and_rejects_a_non_positive_epsilon() {
    std::env::set_var("PRIVDISTILL_QUIET", "1");
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path());

    let mut bad = cfg.clone();
    bad.epsilons = vec![10.0, 0.0];
    let err = run_privimage(&bad, &[]).unwrap_err().to_string();
    assert!(err.contains("epsilons") && err.contains('0'), "{err}");
    assert!(!cfg.work.join("privimage").exists(), "a bad config writes nothing");

    let summary = run_privimage(&cfg, &[]).unwrap();
    let text = std::fs::read_to_string(summary_path(&cfg.work)).unwrap();
    let saved: PrivImageSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(saved.results.len(), 1);
    let r = &saved.results[0];
    assert_eq!(r.epsilon_target, 10.0);
    assert!(r.epsilon_spent <= r.epsilon_target && r.epsilon_spent > 0.9 * r.epsilon_target, "{r:?}");
    assert!(r.epsilon_spent > saved.query_epsilon, "DP-SGD spends on top of the query");
    assert!(r.noise_multiplier > 0.0 && r.noise_multiplier.is_finite());
    assert_eq!(r.delta, default_delta(r.records));
    assert!(r.r_reid.is_finite() && (0.0..=1.0).contains(&r.r_reid), "{r:?}");
    assert_eq!(r.samples, 12);
    assert!(r.fid.is_some_and(f64::is_finite), "{r:?}");
    assert_eq!(saved.selected, 16);
    assert!((summary.results[0].epsilon_spent - r.epsilon_spent).abs() < 1e-12);

    // A rerun skips every finished stage and reports the same figures.
    let again = run_privimage(&cfg, &[]).unwrap();
    assert_eq!(again.results[0].r_reid, r.r_reid);
    assert!(again.results[0].stage_seconds.values().all(|&s| s == 0.0), "{:?}", again.results[0].stage_seconds);

    // The report gains the PrivImage table.
    let md = privdistill::pipeline::report::run(&privdistill::pipeline::report::ReportConfig::for_work(&cfg.work)).unwrap();
    let report = std::fs::read_to_string(md).unwrap();
    assert!(report.contains("## PrivImage (DP-SGD baseline)") && report.contains("| 10 |"), "{report}");
}

#[test]
fn delta_defaults_to_a_power_of_ten_below_one_over_ten_n() {
    assert_eq!(default_delta(300), 1e-4);
    assert_eq!(default_delta(1000), 1e-4);
    assert_eq!(default_delta(1001), 1e-5);
    assert_eq!(default_delta(5), 1e-2);
}
