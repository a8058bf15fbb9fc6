//! The latent diffusion stages end to end on tiny models and a handful of
//! shipped images: train-vae, train-ldm (loss falls, resume is bit-exact, a
//! diverging run stops), sample (prompts steer the images, reruns and resumed
//! runs write identical bytes), export (a complete diffusers folder with a
//! model card), and the errors bad input gets.

use privdistill::diffusion::sampler::SamplerKind;
use privdistill::io::safetensors::{save_safetensors, SafeTensorsFile};
use privdistill::nn::{AdamWConfig, LrSchedule};
use privdistill::pipeline::export::{self, ExportConfig};
use privdistill::pipeline::model_folder::{read_scheduler_config, ModelFolder};
use privdistill::pipeline::sample::{self, SampleConfig};
use privdistill::pipeline::train_ldm::{self, configure, TrainLdmConfig};
use privdistill::pipeline::train_vae::{self, TrainVaeConfig};
use privdistill::{DType, Device, Rng, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const VAE: &str = include_str!("fixtures/tiny/vae.json");
const UNET: &str = include_str!("fixtures/tiny/unet.json");
const TEXT: &str = include_str!("fixtures/tiny/text_encoder.json");

fn quiet() {
    std::env::set_var("PRIVDISTILL_QUIET", "1");
}

/// A temporary folder that lives for the whole test run.
fn scratch() -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::mem::forget(dir);
    path
}

/// Six shipped images with distinct reports, and the tiny configs.
struct Fixture {
    dir: PathBuf,
    data: PathBuf,
    vae: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        quiet();
        let dir = scratch();
        let data = dir.join("real");
        privdistill::testing::write_shipped_records(&data, 6, true).unwrap();
        for (name, body) in [("vae.json", VAE), ("unet.json", UNET), ("text.json", TEXT)] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        let vae = dir.join("vae");
        let summary = train_vae::run(&TrainVaeConfig {
            data: data.clone(),
            splits: vec![],
            out: vae.clone(),
            config: Some(dir.join("vae.json")),
            image_size: 32,
            batch_size: 6,
            steps: 40,
            optimizer: AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() },
            scale_images: 6,
            checkpoint_every: 0,
            ..Default::default()
        })
        .unwrap();
        assert!(summary.scaling_factor.is_finite() && summary.scaling_factor > 0.0);
        Fixture { dir, data, vae }
    })
}

fn ldm_config(f: &Fixture, out: &Path, steps: u64) -> TrainLdmConfig {
    TrainLdmConfig {
        data: f.data.clone(),
        splits: vec![],
        out: out.to_path_buf(),
        vae: f.vae.clone(),
        unet_config: Some(f.dir.join("unet.json")),
        text_encoder_config: Some(f.dir.join("text.json")),
        image_size: 32,
        batch_size: 6,
        gradient_accumulation: 1,
        steps,
        optimizer: AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() },
        lr_schedule: LrSchedule::Constant,
        ema: None,
        checkpoint_every: 0,
        seed: 7,
        ..Default::default()
    }
}

/// The tiny LDM trained for 300 steps (shared by the sampling tests).
fn trained() -> &'static (PathBuf, train_ldm::TrainLdmSummary) {
    static M: OnceLock<(PathBuf, train_ldm::TrainLdmSummary)> = OnceLock::new();
    M.get_or_init(|| {
        let f = fixture();
        let out = f.dir.join("ldm");
        let summary = train_ldm::run(&ldm_config(f, &out, 300)).unwrap();
        (out, summary)
    })
}

fn prompts_file(dir: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(fixture().data.join("manifest.jsonl")).unwrap();
    let texts: Vec<String> = manifest
        .lines()
        .take(2)
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect();
    let path = dir.join("prompts.txt");
    std::fs::write(&path, format!("{}\n{}\n\n", texts[0], texts[1])).unwrap();
    path
}

fn sample_config(model: &Path, prompts: &Path, out: &Path) -> SampleConfig {
    SampleConfig {
        model: model.to_path_buf(),
        prompts: prompts.to_path_buf(),
        splits: vec![],
        out: out.to_path_buf(),
        per_prompt: 2,
        guidance_scale: 3.0,
        steps: 10,
        sampler: Some(SamplerKind::Ddim),
        batch_size: 2,
        seed: 11,
        ..Default::default()
    }
}

fn pixels(path: &Path) -> Vec<f64> {
    privdistill::data::read_image(path).unwrap().data.iter().map(|&v| v as f64).collect()
}

fn mean_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}

/// Every file below `dir`, relative, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn assert_no_temp_files(dir: &Path) {
    for (name, _) in files(dir) {
        assert!(!name.ends_with(".tmp"), "temporary file left behind: {name}");
    }
}

#[test]
fn a_tiny_ldm_learns_and_its_prompts_steer_the_samples() {
    let (model, summary) = trained();
    let curve: Vec<f64> = summary.loss_curve.iter().map(|p| p.1).collect();
    assert_eq!(summary.steps, 300);
    let head = curve[..10].iter().sum::<f64>() / 10.0;
    let tail = summary.final_loss;
    println!("loss: first points {head:.4}, last 20 steps {tail:.4}; {:.1} img/s", summary.images_per_second);
    assert!(tail < 0.6 * head, "the loss should fall: {head:.4} -> {tail:.4}");
    let folder = ModelFolder::open(model).unwrap();
    assert!((folder.vae_config.scaling_factor - 1.0).abs() > 1e-6, "the VAE's estimated scaling factor is carried over");

    // The same initial noise for every prompt, so only the prompt differs.
    let dir = scratch();
    let prompts = prompts_file(&dir);
    let one = Tensor::randn(&[1, 4, 8, 8], 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(3)).unwrap();
    let latents = Tensor::cat(&[one.clone(), one.clone(), one], 0).unwrap();
    save_safetensors(dir.join("latents.safetensors"), [("latents", &latents)], None).unwrap();
    let mut cfg = sample_config(model, &prompts, &dir.join("synth"));
    cfg.per_prompt = 1;
    cfg.latents = Some(dir.join("latents.safetensors"));
    let s = sample::run(&cfg).unwrap();
    assert_eq!((s.images, s.generated, s.prompts), (3, 3, 3));
    let a = pixels(&dir.join("synth").join(sample::image_name(0, 0)));
    let b = pixels(&dir.join("synth").join(sample::image_name(1, 0)));
    let u = pixels(&dir.join("synth").join(sample::image_name(2, 0)));
    let (ab, au, bu) = (mean_abs_diff(&a, &b), mean_abs_diff(&a, &u), mean_abs_diff(&b, &u));
    println!("mean |pixel difference|: prompt A vs B {ab:.4}, A vs unconditional {au:.4}, B vs unconditional {bu:.4}");
    for d in [ab, au, bu] {
        assert!(d > 0.005, "images for different prompts should differ by more than 0.5% of the range: {ab:.4} {au:.4} {bu:.4}");
    }
    // The manifest follows the synthetic-dataset contract.
    let text = std::fs::read_to_string(dir.join("synth/manifest.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
    assert_eq!(rec["patient"], "uncond");
    assert_eq!(rec["text"], "");
    assert_eq!(rec["prompt_index"], 2);
    assert_eq!(rec["model"].as_str().unwrap(), folder.content_hash().unwrap());
    assert_eq!(rec["extra"]["sample_index"], 0);
    assert_eq!(rec["extra"]["sampler"], "ddim");
}

#[test]
fn sampling_is_reproducible_and_resumes_to_the_same_bytes() {
    let (model, _) = trained();
    let dir = scratch();
    let prompts = prompts_file(&dir);
    let full = sample::run(&sample_config(model, &prompts, &dir.join("full"))).unwrap();
    assert_eq!((full.images, full.generated), (6, 6));
    let again = sample::run(&sample_config(model, &prompts, &dir.join("again"))).unwrap();
    assert_eq!(again.generated, 6);
    assert_eq!(files(&dir.join("full")), files(&dir.join("again")), "same seed, same bytes");

    // Interrupted after one batch of two, then rerun: the same folder as an uninterrupted run.
    let mut cut = sample_config(model, &prompts, &dir.join("cut"));
    cut.stop_after_batches = Some(1);
    let first = sample::run(&cut).unwrap();
    assert!(first.interrupted && first.generated == 2);
    assert!(!dir.join("cut/manifest.jsonl").exists(), "no manifest before the run is complete");
    cut.stop_after_batches = None;
    let rest = sample::run(&cut).unwrap();
    assert_eq!(rest.generated, 4, "finished batches are skipped");
    assert_eq!(files(&dir.join("full")), files(&dir.join("cut")));
    assert_no_temp_files(&dir.join("cut"));

    // A subset of prompts regenerates the same images: noise depends on (seed, prompt index, sample index) only.
    let mut sub = sample_config(model, &prompts, &dir.join("subset"));
    sub.prompt_indices = Some(vec![1]);
    sub.batch_size = 2;
    sample::run(&sub).unwrap();
    for j in 0..2 {
        let name = sample::image_name(1, j);
        assert_eq!(std::fs::read(dir.join("full").join(&name)).unwrap(), std::fs::read(dir.join("subset").join(&name)).unwrap());
    }

    // Other settings into the same folder are refused.
    let mut other = sample_config(model, &prompts, &dir.join("full"));
    other.guidance_scale = 5.0;
    let e = sample::run(&other).unwrap_err().to_string();
    assert!(e.contains("other settings") && e.contains("guidance_scale"), "{e}");
}

#[test]
fn training_resumes_bit_exactly_and_stops_on_a_nan_loss() {
    let f = fixture();
    let dir = scratch();
    let straight = ldm_config(f, &dir.join("straight"), 12);
    let s = train_ldm::run(&straight).unwrap();
    assert!(!s.interrupted);

    // Interrupted at step 5 (with a checkpoint), then resumed.
    let mut cut = ldm_config(f, &dir.join("cut"), 12);
    cut.checkpoint_every = 4;
    cut.stop_after = Some(5);
    let first = train_ldm::run(&cut).unwrap();
    assert!(first.interrupted && first.steps == 5);
    assert!(dir.join("cut/checkpoint.safetensors").is_file());
    assert!(!dir.join("cut/model_index.json").exists(), "an interrupted run leaves no complete-looking folder");
    cut.stop_after = None;
    cut.resume = true;
    let second = train_ldm::run(&cut).unwrap();
    assert_eq!((second.resumed_from, second.steps), (5, 12));
    // checkpoint_every differs between the runs but is not part of the model.
    assert_eq!(files(&dir.join("straight")), files(&dir.join("cut")), "resumed run = uninterrupted run, byte for byte");
    assert_eq!(s.loss_curve, second.loss_curve);
    assert!(!dir.join("cut/checkpoint.safetensors").exists(), "the checkpoint is removed once the model folder is complete");

    // Resuming with other settings is refused.
    let mut changed = ldm_config(f, &dir.join("changed"), 12);
    changed.stop_after = Some(2);
    train_ldm::run(&changed).unwrap();
    changed.stop_after = None;
    changed.resume = true;
    changed.cfg_dropout = 0.5;
    let e = train_ldm::run(&changed).unwrap_err().to_string();
    assert!(e.contains("different settings") && e.contains("cfg_dropout"), "{e}");

    // A diverging run stops with a clear message and keeps its last checkpoint.
    let mut wild = ldm_config(f, &dir.join("wild"), 20);
    wild.optimizer.lr = 1e30;
    wild.max_grad_norm = None;
    wild.checkpoint_every = 1;
    let e = train_ldm::run(&wild).unwrap_err().to_string();
    assert!(e.contains("loss became") && e.contains("checkpoint"), "{e}");
    let ckpt = privdistill::io::Checkpoint::load(dir.join("wild/checkpoint.safetensors")).unwrap();
    assert!(ckpt.meta.step >= 1);
    assert!(!dir.join("wild/model_index.json").exists());
}

#[test]
fn vae_training_resumes_bit_exactly() {
    let f = fixture();
    let dir = scratch();
    let cfg = |out: &str| TrainVaeConfig {
        data: f.data.clone(),
        splits: vec![],
        out: dir.join(out),
        config: Some(f.dir.join("vae.json")),
        image_size: 32,
        batch_size: 4,
        steps: 6,
        scale_images: 6,
        checkpoint_every: 0,
        optimizer: AdamWConfig { lr: 1e-3, ..Default::default() },
        discriminator: train_vae::DiscriminatorConfig { enabled: true, start_step: 2, channels: 8, layers: 2, ..Default::default() },
        ..Default::default()
    };
    let straight = train_vae::run(&cfg("straight")).unwrap();
    assert!(straight.final_reconstruction_l1.is_finite());
    let mut cut = cfg("cut");
    cut.stop_after = Some(3);
    assert!(train_vae::run(&cut).unwrap().interrupted);
    cut.stop_after = None;
    cut.resume = true;
    train_vae::run(&cut).unwrap();
    assert_eq!(files(&dir.join("straight")), files(&dir.join("cut")));
}

#[test]
fn export_writes_a_complete_diffusers_folder_with_a_model_card() {
    let (model, _) = trained();
    let dir = scratch();
    let mut card = serde_json::Map::new();
    card.insert("data".into(), serde_json::json!("filtered synthetic set (work/filtered)"));
    card.insert("delta".into(), serde_json::json!(0.5));
    card.insert("R_reid".into(), serde_json::json!(0.0125));
    export::run(&ExportConfig { model: model.clone(), out: dir.join("shared"), card, ..Default::default() }).unwrap();
    let shared = ModelFolder::open(dir.join("shared")).unwrap();
    let readme = std::fs::read_to_string(dir.join("shared/README.md")).unwrap();
    assert!(readme.contains("| delta | 0.5000 |") && readme.contains("| R_reid | 0.0125 |"), "{readme}");
    for f in ["tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer.json", "unet/diffusion_pytorch_model.safetensors"] {
        assert!(dir.join("shared").join(f).is_file(), "{f}");
    }
    // The weights are the model's, byte for byte.
    for f in ["unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"] {
        assert_eq!(std::fs::read(model.join(f)).unwrap(), std::fs::read(dir.join("shared").join(f)).unwrap());
    }
    assert_eq!(shared.unet_config, ModelFolder::open(model).unwrap().unet_config);
    let e = export::run(&ExportConfig { model: model.clone(), out: model.clone(), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("model folder itself"), "{e}");
}

#[test]
fn bad_input_gets_a_clear_error_or_warning() {
    let (model, _) = trained();
    let dir = scratch();

    // Unknown keys in a stage config.
    std::fs::write(dir.join("train.toml"), "stepz = 3\n").unwrap();
    let e = configure::<TrainLdmConfig>(Some(&dir.join("train.toml")), TrainLdmConfig::default(), &[]).unwrap_err().to_string();
    assert!(e.contains("stepz") && e.contains("train.toml"), "{e}");
    let e = configure::<TrainLdmConfig>(None, TrainLdmConfig::default(), &["optimizer.lrr=1".into()]).unwrap_err().to_string();
    assert!(e.contains("optimizer.lrr"), "{e}");
    let e = configure::<TrainLdmConfig>(None, TrainLdmConfig::default(), &["ema.decai=0.9".into()]).unwrap_err().to_string();
    assert!(e.contains("ema.decai"), "{e}");
    let ok: TrainLdmConfig = configure(None, TrainLdmConfig::default(), &["steps=12".into(), "optimizer.lr=0.5".into()]).unwrap();
    assert_eq!((ok.steps, ok.optimizer.lr), (12, 0.5));

    // Unknown scheduler keys warn; ones that would change sampling are refused.
    let sched = dir.join("scheduler_config.json");
    std::fs::write(&sched, r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "karras_magic": 3}"#).unwrap();
    let (_, warnings) = read_scheduler_config(&sched).unwrap();
    assert!(warnings.len() == 1 && warnings[0].contains("karras_magic"), "{warnings:?}");
    std::fs::write(&sched, r#"{"thresholding": true}"#).unwrap();
    let e = read_scheduler_config(&sched).unwrap_err().to_string();
    assert!(e.contains("thresholding"), "{e}");
    std::fs::write(&sched, r#"{"beta_schedule": "cubic"}"#).unwrap();
    let e = read_scheduler_config(&sched).unwrap_err().to_string();
    assert!(e.contains("cubic"), "{e}");

    // A prompt over the token limit is truncated and counted.
    let long = "bilateral patchy consolidation ".repeat(40);
    std::fs::write(dir.join("long.txt"), format!("{long}\nclear lungs\n")).unwrap();
    let mut cfg = sample_config(model, &dir.join("long.txt"), &dir.join("long"));
    cfg.per_prompt = 1;
    cfg.steps = 2;
    assert_eq!(sample::run(&cfg).unwrap().truncated_prompts, 1);

    // A latents file of the wrong shape.
    let bad = Tensor::zeros(&[5, 4, 8, 8], DType::F32, Device::Cpu).unwrap();
    save_safetensors(dir.join("bad.safetensors"), [("latents", &bad)], None).unwrap();
    cfg.out = dir.join("bad-latents");
    cfg.latents = Some(dir.join("bad.safetensors"));
    let e = sample::run(&cfg).unwrap_err().to_string();
    assert!(e.contains("bad.safetensors") && e.contains("[2, 4, 8, 8]"), "{e}");

    // Missing parts, an incomplete folder, and a config that does not match the weights.
    let copy = |name: &str| {
        let to = dir.join(name);
        for (rel, bytes) in files(model) {
            let p = to.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        to
    };
    let no_vae = copy("no-vae");
    std::fs::remove_dir_all(no_vae.join("vae")).unwrap();
    let e = ModelFolder::open(&no_vae).unwrap_err().to_string();
    assert!(e.contains("vae/") && e.contains("missing"), "{e}");
    let no_index = copy("no-index");
    std::fs::remove_file(no_index.join("model_index.json")).unwrap();
    let e = ModelFolder::open(&no_index).unwrap_err().to_string();
    assert!(e.contains("model_index.json"), "{e}");
    let no_weights = copy("no-weights");
    std::fs::remove_file(no_weights.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let e = ModelFolder::open(&no_weights).unwrap_err().to_string();
    assert!(e.contains("unet") && e.contains("diffusion_pytorch_model.safetensors"), "{e}");
    let mismatched = copy("mismatched");
    let unet_cfg = mismatched.join("unet/config.json");
    let text = std::fs::read_to_string(&unet_cfg).unwrap().replace("\"layers_per_block\": 1", "\"layers_per_block\": 2");
    std::fs::write(&unet_cfg, text).unwrap();
    let folder = ModelFolder::open(&mismatched).unwrap();
    let store = privdistill::nn::ParamStore::new(DType::F32, Device::Cpu, 0);
    let e = folder.load_unet(&store, false).err().expect("a mismatched config must not load").to_string();
    assert!(e.contains("does not match the weights"), "{e}");
    let resized = copy("resized");
    let te_cfg = resized.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&te_cfg).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&te_cfg, text).unwrap();
    let store = privdistill::nn::ParamStore::new(DType::F32, Device::Cpu, 0);
    let e = ModelFolder::open(&resized).unwrap().load_text_encoder(&store, false).err().expect("must not load").to_string();
    assert!(e.contains("fc1") && e.contains("does not match"), "{e}");

    // No split assigned, but the default filter asks for the training split.
    let mut ldm = ldm_config(fixture(), &dir.join("nosplit"), 1);
    ldm.splits = vec!["train".into()];
    let e = train_ldm::run(&ldm).unwrap_err().to_string();
    assert!(e.contains("no records in splits") && e.contains("data split"), "{e}");
    ldm.splits = vec!["holdout".into()];
    assert!(train_ldm::run(&ldm).unwrap_err().to_string().contains("holdout"));

    // Weights read back by name: the safetensors file of a part holds the reference names.
    let unet = SafeTensorsFile::open(model.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert!(unet.contains("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"));
    let te = SafeTensorsFile::open(model.join("text_encoder/model.safetensors")).unwrap();
    assert!(te.contains("text_model.embeddings.token_embedding.weight"));
}

#[test]
fn a_folder_laid_out_like_stable_diffusion_1_5_is_accepted() {
    // SD-1.5 ships fp16 weight variants beside safety_checker/ and feature_extractor/,
    // a slow tokenizer (vocab.json + merges.txt, no tokenizer.json) and extra config keys.
    let (model, _) = trained();
    let dir = scratch().join("sd-like");
    for (rel, bytes) in files(model) {
        let rel = rel.replace("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors");
        if rel == "tokenizer/tokenizer.json" {
            continue;
        }
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::create_dir_all(dir.join("safety_checker")).unwrap();
    std::fs::write(dir.join("safety_checker/config.json"), "{}").unwrap();
    let te = dir.join("text_encoder/config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&te).unwrap()).unwrap();
    v["projection_dim"] = serde_json::json!(768);
    v["torch_dtype"] = serde_json::json!("float32");
    std::fs::write(&te, v.to_string()).unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    let (_, note) = folder.tokenizer().unwrap();
    assert!(note.unwrap().contains("shipped CLIP tokenizer"));
    let out = scratch();
    let prompts = prompts_file(&out);
    let mut cfg = sample_config(&dir, &prompts, &out.join("synth"));
    cfg.per_prompt = 1;
    // The same images as from the original folder: only the file layout differs.
    let mut reference = sample_config(model, &prompts, &out.join("reference"));
    reference.per_prompt = 1;
    sample::run(&cfg).unwrap();
    sample::run(&reference).unwrap();
    for i in 0..3 {
        let name = sample::image_name(i, 0);
        assert_eq!(std::fs::read(out.join("synth").join(&name)).unwrap(), std::fs::read(out.join("reference").join(&name)).unwrap());
    }
}
