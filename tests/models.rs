//! Parity of every model with its reference implementation (diffusers,
//! transformers, torchvision) on the committed fixtures made by
//! tests/fixtures/make_fixtures.py: outputs to 1e-4 of the output's largest
//! magnitude, gradients (of L = sum(first output · R)) to 1e-3 of the
//! gradient's largest magnitude.
//!
//! Some gradients are zero in exact arithmetic (the key-projection biases of
//! softmax attention: adding a constant to every score of a row changes
//! nothing) and hold only float32 rounding noise in both implementations;
//! others are sums of thousands of terms that nearly cancel (DenseNet's
//! `features.norm0.weight`: PyTorch's own float32 result differs from its
//! float64 result by 1.02e-3 of the tensor's magnitude). A tensor is
//! therefore measured against the larger of its own largest magnitude and
//! 1e-3 of the largest gradient in the case.

use privdistill::io::safetensors::SafeTensorsFile;
use privdistill::models::zoo::{Model, ModelKind};
use privdistill::{no_grad, DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

fn case_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models").join(name)
}

fn max_abs(t: &Tensor) -> f64 {
    t.to_vec_f64().unwrap().iter().fold(0f64, |m, v| m.max(v.abs()))
}

/// Largest |a − b| relative to the largest |b| (or to `floor`, if larger).
fn rel_err_floor(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    assert_eq!(a.shape(), b.shape(), "shape");
    let (av, bv) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    let scale = max_abs(b).max(floor).max(1e-30);
    av.iter().zip(&bv).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    rel_err_floor(a, b, 0.0)
}

fn check(kind: ModelKind, name: &str, train: bool) {
    let dir = case_dir(name);
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let model = Model::build(kind, &config, DType::F32, Device::Cpu).unwrap();
    model.load_weights(&dir.join("weights.safetensors")).unwrap();
    let inputs_file = SafeTensorsFile::open(dir.join("inputs.safetensors")).unwrap();
    let inputs: HashMap<String, Tensor> =
        inputs_file.get_all().unwrap().into_iter().map(|(n, t)| if t.dtype().is_float() { (n, t.to_variable()) } else { (n, t) }).collect();
    let outputs = model.run(&inputs, train).unwrap();
    let want = SafeTensorsFile::open(dir.join("outputs.safetensors")).unwrap();
    for (n, t) in &outputs {
        let e = rel_err(t, &want.get(n).unwrap());
        println!("{name}: output {n}: rel err {e:.2e}");
        assert!(e <= 1e-4, "{name}: output {n} differs by {e:.3e} of its max magnitude");
    }
    let r = SafeTensorsFile::open(dir.join("loss_weights.safetensors")).unwrap().get("R").unwrap();
    let grads = outputs[0].1.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let want = SafeTensorsFile::open(dir.join("grads.safetensors")).unwrap();
    let params: HashMap<String, Tensor> = model.store().named_parameters().into_iter().collect();
    let mut checked = 0;
    let mut failures = Vec::new();
    let case_max = want.names().iter().map(|k| max_abs(&want.get(k).unwrap())).fold(0f64, f64::max);
    for key in want.names() {
        let reference = want.get(key).unwrap();
        let ours = if let Some(input) = key.strip_prefix("input:") {
            grads.get(&inputs[input]).cloned()
        } else {
            let p = key.strip_prefix("param:").unwrap();
            let p = params.get(p).or_else(|| params.get(&format!("text_model.{p}"))).unwrap_or_else(|| panic!("{name}: no parameter {p}"));
            grads.get(p).cloned()
        };
        let ours = ours.unwrap_or_else(|| reference.zeros_like().unwrap());
        let e = rel_err_floor(&ours, &reference, 1e-3 * case_max);
        if e > 1e-3 {
            let max = reference.to_vec_f64().unwrap().iter().fold(0f64, |m, v| m.max(v.abs()));
            failures.push(format!("{key}: rel err {e:.3e} (reference max |g| {max:.3e})"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{name}: gradients differ:\n{}", failures.join("\n"));
    println!("{name}: {checked} gradients match");
    if train {
        let buffers = SafeTensorsFile::open(dir.join("buffers_after.safetensors")).unwrap();
        for (n, b) in model.store().buffers() {
            if n.ends_with("num_batches_tracked") {
                continue;
            }
            let e = rel_err(&b, &buffers.get(&n).unwrap());
            assert!(e <= 1e-4, "{name}: running stat {n} differs by {e:.3e}");
        }
        check_eval_mode(&model, name, &inputs);
    }
}

/// Eval mode with the running statistics the training forward left behind,
/// against the reference: once as inference (no gradients: convolution,
/// BatchNorm, skip connection and ReLU run fused) and once with gradients on
/// (the same function as separate differentiable ops).
fn check_eval_mode(model: &Model, name: &str, inputs: &HashMap<String, Tensor>) {
    let want = SafeTensorsFile::open(case_dir(name).join("outputs_eval.safetensors")).unwrap();
    let inference = no_grad(|| model.run(inputs, false)).unwrap();
    let differentiable = model.run(inputs, false).unwrap();
    for (path, outputs) in [("fused inference", &inference), ("differentiable", &differentiable)] {
        for (n, t) in outputs {
            let e = rel_err(t, &want.get(n).unwrap());
            println!("{name}: eval ({path}) output {n}: rel err {e:.2e}");
            assert!(e <= 1e-4, "{name}: eval-mode ({path}) output {n} differs by {e:.3e} of its max magnitude");
        }
    }
    assert!(differentiable[0].1.requires_grad(), "{name}: with gradients on, the eval forward is on the tape");
}

#[test]
fn unet_sd15_matches_diffusers() {
    check(ModelKind::Unet, "unet_sd15", false);
}

#[test]
fn unet_sd2_matches_diffusers() {
    check(ModelKind::Unet, "unet_sd2", false);
}

#[test]
fn vae_encoder_matches_diffusers() {
    check(ModelKind::VaeEncoder, "vae_encoder", false);
}

#[test]
fn vae_decoder_matches_diffusers() {
    check(ModelKind::VaeDecoder, "vae_decoder", false);
}

#[test]
fn clip_text_matches_transformers() {
    check(ModelKind::ClipText, "clip_text", false);
    check(ModelKind::ClipText, "clip_text_eos", false);
}

#[test]
fn bert_matches_transformers() {
    check(ModelKind::Bert, "bert", false);
}

#[test]
fn resnet_matches_torchvision_in_training_mode() {
    check(ModelKind::Resnet50, "resnet50", true);
}

#[test]
fn densenet_matches_torchvision_in_training_mode() {
    check(ModelKind::Densenet121, "densenet121", true);
}

#[test]
fn siamese_matches_reference_in_training_mode() {
    check(ModelKind::SiameseReid, "siamese_reid", true);
}

#[test]
fn tokenizers_match_transformers_on_real_reports() {
    use privdistill::models::tokenizer::{BertTokenizer, ClipTokenizer};
    let clip = ClipTokenizer::shipped().unwrap();
    let bert = BertTokenizer::shipped().unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers.json")).unwrap(),
    )
    .unwrap();
    let mut long = 0;
    for c in &cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<i64> = c["clip_input_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(clip.encode(text).unwrap(), want, "CLIP ids of {text:?}");
        let want_b: Vec<i64> = c["bert_input_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let want_m: Vec<i64> = c["bert_attention_mask"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let (ids, mask) = bert.encode(text, 128).unwrap();
        assert_eq!(ids, want_b, "BERT ids of {text:?}");
        assert_eq!(mask, want_m, "BERT mask of {text:?}");
        if c["clip_untruncated_len"].as_u64().unwrap() > 77 {
            long += 1;
        }
    }
    assert!(long >= 2, "the fixture must hold texts longer than 77 tokens");
}

#[test]
fn forward_command_writes_outputs_and_gradients() {
    let dir = case_dir("densenet121");
    let out = tempfile::tempdir().unwrap();
    let run = |extra: &[&str], inputs: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_privdistill"))
            .args(["forward", "--model", "densenet121", "--train"])
            .arg("--config")
            .arg(dir.join("config.json"))
            .arg("--weights")
            .arg(dir.join("weights.safetensors"))
            .arg("--inputs")
            .arg(inputs)
            .arg("--output")
            .arg(out.path().join("out.safetensors"))
            .args(extra)
            .output()
            .unwrap()
    };
    let lw = dir.join("loss_weights.safetensors");
    let go = out.path().join("grads.safetensors");
    let o = run(&["--loss-weights", lw.to_str().unwrap(), "--grads-out", go.to_str().unwrap()], &dir.join("inputs.safetensors"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = SafeTensorsFile::open(out.path().join("out.safetensors")).unwrap();
    let want = SafeTensorsFile::open(dir.join("outputs.safetensors")).unwrap();
    assert!(rel_err(&ours.get("logits").unwrap(), &want.get("logits").unwrap()) <= 1e-4);
    let grads = SafeTensorsFile::open(&go).unwrap();
    let want_g = SafeTensorsFile::open(dir.join("grads.safetensors")).unwrap();
    assert!(rel_err(&grads.get("input:pixel_values").unwrap(), &want_g.get("input:pixel_values").unwrap()) <= 1e-3);
    assert!(grads.contains("param:features.conv0.weight"));

    // Inputs under the wrong name: a clear error naming what is expected, no output file.
    let bad = out.path().join("bad.safetensors");
    let x = SafeTensorsFile::open(dir.join("inputs.safetensors")).unwrap().get("pixel_values").unwrap();
    privdistill::io::safetensors::save_safetensors(&bad, [("images", &x)], None).unwrap();
    std::fs::remove_file(out.path().join("out.safetensors")).unwrap();
    let o = run(&[], &bad);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("pixel_values") && err.contains("images"), "{err}");
    assert!(!out.path().join("out.safetensors").exists());
}

#[test]
fn stable_diffusion_configs_load() {
    use privdistill::models::unet::UNetConfig;
    use privdistill::models::vae::VaeConfig;
    // The shipped `unet/config.json` of Stable Diffusion 1.5 and 2.1, verbatim keys.
    let sd15 = r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
        "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
        "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}"#;
    let sd21 = r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.10.0.dev0", "act_fn": "silu",
        "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
        "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
        "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "num_class_embeds": null,
        "only_cross_attention": false, "out_channels": 4, "resnet_time_scale_shift": "default", "sample_size": 96,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "upcast_attention": true, "use_linear_projection": true}"#;
    let c15 = UNetConfig::from_json(sd15).unwrap();
    assert_eq!(c15.heads().unwrap(), vec![8, 8, 8, 8]);
    let c21 = UNetConfig::from_json(sd21).unwrap();
    assert_eq!(c21.heads().unwrap(), vec![5, 10, 20, 20]);
    assert!(c21.use_linear_projection && c21.upcast_attention);
    let vae = r#"{"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#;
    assert_eq!(VaeConfig::from_json(vae).unwrap().downscale(), 8);
    // A feature we do not implement is refused by name, not silently ignored.
    let err = UNetConfig::from_json(&sd15.replace(r#""act_fn": "silu""#, r#""act_fn": "mish""#)).unwrap_err().to_string();
    assert!(err.contains("mish"), "{err}");
}
