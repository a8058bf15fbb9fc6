//! DP-SGD: per-sample gradients from one backward pass equal each sample's
//! gradient computed alone (a small net with every layer kind the U-Net uses,
//! and a tiny conditional U-Net with noise multiplicity), clipping bounds every
//! per-sample norm, the privacy noise has the stated scale, the Poisson
//! sampler is unbiased and deterministic, and `train-ldm-dp` trains, resumes
//! bit-exactly and rejects bad settings.

use privdistill::models::blocks::Attention;
use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
use privdistill::nn::{BatchNorm2d, Conv2d, Conv2dParams, GroupNorm, Init, LayerNorm, Linear, ParamStore};
use privdistill::privacy::dp::sgd::{
    clip_and_noise, clip_and_sum, clip_per_sample, per_sample_norms, ClipStats, DpSgdConfig, PoissonSampler,
};
use privdistill::{DType, Device, Gradients, Rng, Tensor};

/// A net with grouped strided convolution, group norm (plain and fused with
/// SiLU), layer norm, cross-attention, a linear layer and a broadcast bias
/// and scale of its own; per-sample input `[2, 8, 8]`, context `[3, 6]`.
struct TinyNet {
    conv1: Conv2d,
    norm1: GroupNorm,
    conv2: Conv2d,
    norm2: GroupNorm,
    ln: LayerNorm,
    attn: Attention,
    head: Linear,
    bias: Tensor,
    scale: Tensor,
}

impl TinyNet {
    fn new(vs: &ParamStore) -> TinyNet {
        let r = vs.root();
        let p = |p: Conv2dParams| p;
        TinyNet {
            conv1: Conv2d::new(&r.pp("conv1"), 2, 4, 3, p(Conv2dParams::new(2, 1).with_groups(2)), true).unwrap(),
            norm1: GroupNorm::new(&r.pp("norm1"), 2, 4, 1e-5, true).unwrap(),
            conv2: Conv2d::new(&r.pp("conv2"), 4, 8, 1, Conv2dParams::default(), true).unwrap(),
            norm2: GroupNorm::new(&r.pp("norm2"), 4, 8, 1e-5, true).unwrap(),
            ln: LayerNorm::new(&r.pp("ln"), &[8], 1e-5, true).unwrap(),
            attn: Attention::new(&r.pp("attn"), 8, Some(6), 2, 4, true).unwrap(),
            head: Linear::new(&r.pp("head"), 8, 5, true).unwrap(),
            bias: r.var("extra_bias", &[5], Init::Uniform { lo: -0.5, hi: 0.5 }).unwrap(),
            scale: r.var("extra_scale", &[1, 5], Init::Uniform { lo: 0.5, hi: 1.5 }).unwrap(),
        }
    }

    /// `[B, 16, 5]` for `x` `[B, 2, 8, 8]` and `context` `[B, 3, 6]`.
    fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let h = self.norm1.forward_silu(&self.conv1.forward(x).unwrap()).unwrap();
        // Perturb the normalised activations so the affine weights get non-trivial gradients.
        let h = self.norm2.forward(&self.conv2.forward(&h).unwrap()).unwrap().gelu().unwrap();
        let b = x.shape()[0];
        let tokens = h.permute(&[0, 2, 3, 1]).unwrap().reshape(&[b, 16, 8]).unwrap();
        let t = self.ln.forward(&tokens).unwrap();
        let t = self.attn.forward(&t, Some(context)).unwrap().add(&tokens).unwrap();
        self.head.forward(&t).unwrap().add(&self.bias).unwrap().mul(&self.scale).unwrap()
    }
}

/// Sum over samples of each sample's squared error: a per-sample loss summed.
fn sum_loss(out: &Tensor, target: &Tensor) -> Tensor {
    out.sub(target).unwrap().square().unwrap().sum_all().unwrap()
}

fn params_of(vs: &ParamStore) -> Vec<Tensor> {
    vs.trainable_parameters().into_iter().map(|(_, t)| t).collect()
}

fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    // A floor for gradients that are zero in exact arithmetic (an attention
    // key bias shifts every score of a query equally: softmax ignores it).
    diff / norm.max(1e-6)
}

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(shape, 0.0, 1.0, dtype, Device::Cpu, &mut Rng::new(seed)).unwrap()
}

/// Check per-sample gradients against per-sample backward passes and the batch backward.
fn check_against_alone(names: &[(String, Tensor)], per_sample: &Gradients, alone: &[Gradients], batch_grads: &Gradients, tolerance: f64) {
    for (name, p) in names {
        let stack = per_sample.get(p).unwrap_or_else(|| panic!("{name}: no per-sample gradient"));
        assert_eq!(stack.shape()[0], alone.len(), "{name}");
        assert_eq!(&stack.shape()[1..], p.shape(), "{name}");
        for (b, grads) in alone.iter().enumerate() {
            let own = grads.get(p).unwrap();
            let slice = stack.narrow(0, b, 1).unwrap().reshape(p.shape()).unwrap();
            let d = rel_diff(&slice, own);
            assert!(d < tolerance, "{name}, sample {b}: relative difference {d:e}");
        }
        let summed = stack.sum(&[0], false).unwrap();
        let d = rel_diff(&summed, batch_grads.get(p).unwrap());
        assert!(d < tolerance, "{name}: the sum over samples differs from the batch gradient by {d:e}");
    }
}

#[test]
fn per_sample_gradients_of_a_small_net_equal_each_sample_alone() {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 11);
    let net = TinyNet::new(&vs);
    let batch = 3;
    let x = randn(&[batch, 2, 8, 8], DType::F64, 1);
    let context = randn(&[batch, 3, 6], DType::F64, 2);
    let target = randn(&[batch, 16, 5], DType::F64, 3);
    let params = params_of(&vs);
    let names = vs.trainable_parameters();

    let per_sample = sum_loss(&net.forward(&x, &context), &target).backward_per_sample(batch, &params).unwrap();
    let batch_grads = sum_loss(&net.forward(&x, &context), &target).backward().unwrap();
    let alone: Vec<Gradients> = (0..batch)
        .map(|b| {
            let (xb, cb, tb) = (x.narrow(0, b, 1).unwrap(), context.narrow(0, b, 1).unwrap(), target.narrow(0, b, 1).unwrap());
            sum_loss(&net.forward(&xb, &cb), &tb).backward().unwrap()
        })
        .collect();
    assert_eq!(per_sample.len(), params.len(), "every parameter gets per-sample gradients");
    check_against_alone(&names, &per_sample, &alone, &batch_grads, 1e-9);
}

fn error_of(r: privdistill::Result<Gradients>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn per_sample_gradients_reject_coupled_samples_and_unknown_ops() {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 3);
    let bn = BatchNorm2d::new(&vs.root().pp("bn"), 2, 1e-5, Some(0.1), true).unwrap();
    let x = randn(&[4, 2, 3, 3], DType::F64, 4);
    let loss = bn.forward(&x, true).unwrap().square().unwrap().sum_all().unwrap();
    let err = error_of(loss.backward_per_sample(4, &params_of(&vs)));
    assert!(err.contains("batch_norm") && err.contains("couples"), "{err}");
    // In evaluation mode the running statistics are constants: per-sample gradients exist.
    let loss = bn.forward(&x, false).unwrap().square().unwrap().sum_all().unwrap();
    let g = loss.backward_per_sample(4, &params_of(&vs)).unwrap();
    assert_eq!(g.get(&bn.weight.clone().unwrap()).unwrap().shape(), &[4, 2]);

    // A parameter concatenated to the data has no per-sample rule: the error names the op.
    let w = vs.root().var("token", &[1, 2, 3, 3], Init::ONES).unwrap();
    let loss = Tensor::cat(&[x.clone(), w.clone()], 0).unwrap().square().unwrap().sum_all().unwrap();
    let err = error_of(loss.backward_per_sample(4, &[w]));
    assert!(err.contains("op cat has no per-sample rule"), "{err}");

    // Data that is not sample-major for the batch is refused.
    let lin = Linear::new(&vs.root().pp("lin"), 3, 2, true).unwrap();
    let loss = lin.forward(&randn(&[5, 3], DType::F64, 5)).unwrap().sum_all().unwrap();
    let err = error_of(loss.backward_per_sample(2, std::slice::from_ref(&lin.weight)));
    assert!(err.contains("sample-major"), "{err}");
}

const UNET: &str = r#"{"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
  "layers_per_block": 1, "block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2, "cross_attention_dim": 12,
  "norm_num_groups": 8}"#;

/// Mean squared error of each row of `pred` against `target`, averaged over
/// each sample's `k` adjacent rows and summed over samples.
fn unet_loss(unet: &UNet2DConditionModel, x: &Tensor, ts: &[f64], context: &Tensor, target: &Tensor, k: usize) -> Tensor {
    let pred = unet.forward(x, ts, context).unwrap();
    pred.sub(target).unwrap().square().unwrap().mean(&[1, 2, 3], false).unwrap().sum_all().unwrap().affine(1.0 / k as f64, 0.0).unwrap()
}

#[test]
fn per_sample_gradients_of_a_conditional_unet_equal_each_sample_alone_and_average_noise_draws() {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 5);
    let unet = UNet2DConditionModel::new(&vs.root(), &UNetConfig::from_json(UNET).unwrap()).unwrap();
    let params = params_of(&vs);
    let names = vs.trainable_parameters();
    let (batch, k) = (2, 3);
    // Rows are sample-major: sample b's k noise draws are rows b·k .. b·k + k.
    let x = randn(&[batch * k, 4, 8, 8], DType::F64, 6);
    let target = randn(&[batch * k, 4, 8, 8], DType::F64, 7);
    let ts: Vec<f64> = (0..batch * k).map(|i| (97 * i % 1000) as f64).collect();
    let context = randn(&[batch, 5, 12], DType::F64, 8);
    let rows = |t: &Tensor, idx: &[usize]| -> Tensor {
        let i = Tensor::from_vec(idx.iter().map(|&v| v as i64).collect::<Vec<i64>>(), &[idx.len()]).unwrap();
        t.index_select(0, &i).unwrap()
    };
    let sample_of_row: Vec<usize> = (0..batch * k).map(|r| r / k).collect();
    let ctx_rows = rows(&context, &sample_of_row);

    // k = 1: the first draw of each sample, against each sample alone and the batch backward.
    let first: Vec<usize> = (0..batch).map(|b| b * k).collect();
    let ts_first: Vec<f64> = first.iter().map(|&r| ts[r]).collect();
    let loss_first = || unet_loss(&unet, &rows(&x, &first), &ts_first, &context, &rows(&target, &first), 1);
    let per_sample = loss_first().backward_per_sample(batch, &params).unwrap();
    let batch_grads = loss_first().backward().unwrap();
    let alone: Vec<Gradients> = (0..batch)
        .map(|b| {
            let r = [b * k];
            unet_loss(&unet, &rows(&x, &r), &[ts[b * k]], &rows(&context, &[b]), &rows(&target, &r), 1).backward().unwrap()
        })
        .collect();
    assert_eq!(per_sample.len(), params.len());
    check_against_alone(&names, &per_sample, &alone, &batch_grads, 1e-8);

    // k = 3 draws per sample in one pass == the mean of the three single-draw per-sample gradients.
    let multi = unet_loss(&unet, &x, &ts, &ctx_rows, &target, k).backward_per_sample(batch, &params).unwrap();
    let singles: Vec<Gradients> = (0..k)
        .map(|j| {
            let r: Vec<usize> = (0..batch).map(|b| b * k + j).collect();
            let t: Vec<f64> = r.iter().map(|&i| ts[i]).collect();
            unet_loss(&unet, &rows(&x, &r), &t, &context, &rows(&target, &r), 1).backward_per_sample(batch, &params).unwrap()
        })
        .collect();
    for (name, p) in &names {
        let mean = singles.iter().map(|g| g.get(p).unwrap().clone()).reduce(|a, b| a.add(&b).unwrap()).unwrap();
        let mean = mean.affine(1.0 / k as f64, 0.0).unwrap();
        let d = rel_diff(multi.get(p).unwrap(), &mean);
        assert!(d < 1e-8, "{name}: noise multiplicity differs from the mean of single draws by {d:e}");
    }
}

/// Per-sample gradients of the small net for a few samples (F64).
fn small_net_per_sample(batch: usize) -> (ParamStore, Vec<Tensor>, Gradients) {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 21);
    let net = TinyNet::new(&vs);
    let x = randn(&[batch, 2, 8, 8], DType::F64, 22);
    let context = randn(&[batch, 3, 6], DType::F64, 23);
    let target = randn(&[batch, 16, 5], DType::F64, 24).affine(3.0, 0.0).unwrap();
    let params = params_of(&vs);
    let g = sum_loss(&net.forward(&x, &context), &target).backward_per_sample(batch, &params).unwrap();
    (vs, params, g)
}

#[test]
fn clipping_bounds_every_per_sample_norm_and_leaves_small_ones_unchanged() {
    let batch = 6;
    let (_vs, params, per_sample) = small_net_per_sample(batch);
    let norms = per_sample_norms(&per_sample, &params).unwrap();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let c = (sorted[2] + sorted[3]) / 2.0; // half the samples above, half below
    let (clipped, stats) = clip_per_sample(&per_sample, &params, c).unwrap();
    assert_eq!(stats, ClipStats { samples: batch, clipped: 3, mean_norm: norms.iter().sum::<f64>() / 6.0, max_norm: sorted[5] });
    assert!((stats.clipped_fraction() - 0.5).abs() < 1e-12);
    let after = per_sample_norms(&clipped, &params).unwrap();
    for (b, (&before, &now)) in norms.iter().zip(&after).enumerate() {
        assert!(now <= c + 1e-6, "sample {b}: clipped norm {now} exceeds C = {c}");
        if before <= c {
            for p in &params {
                let (orig, kept) = (per_sample.get(p).unwrap().narrow(0, b, 1).unwrap(), clipped.get(p).unwrap().narrow(0, b, 1).unwrap());
                assert_eq!(orig.to_vec_f64().unwrap(), kept.to_vec_f64().unwrap(), "sample {b} under C was changed");
            }
        } else {
            assert!((now - c).abs() < 1e-9 * c, "sample {b}: a clipped gradient has norm {now}, not C = {c}");
        }
    }
    // The fused clip-and-sum equals the sum of the clipped per-sample gradients.
    let (sum, sum_stats) = clip_and_sum(&per_sample, &params, c).unwrap();
    assert_eq!(sum_stats, stats);
    for p in &params {
        let d = rel_diff(sum.get(p).unwrap(), &clipped.get(p).unwrap().sum(&[0], false).unwrap());
        assert!(d < 1e-12, "clip_and_sum differs by {d:e}");
    }
    // With σ = 0 the DP gradient is that sum over the expected batch size.
    let cfg = DpSgdConfig { max_grad_norm: c, noise_multiplier: 0.0, sample_rate: 0.5, noise_multiplicity: 1, seed: 0 };
    let (g, _) = clip_and_noise(&per_sample, &params, &cfg, &mut Rng::new(1), 4.0).unwrap();
    for p in &params {
        let d = rel_diff(g.get(p).unwrap(), &sum.get(p).unwrap().affine(0.25, 0.0).unwrap());
        assert!(d < 1e-12);
    }
}

/// Wilson–Hilferty approximation of the χ² quantile with `k` degrees of
/// freedom at the standard normal quantile `z`.
fn chi2_quantile(k: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

#[test]
fn privacy_noise_has_the_stated_scale() {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 0);
    let w = vs.root().var("w", &[100, 80], Init::ZEROS).unwrap();
    let b = vs.root().var("b", &[40], Init::ZEROS).unwrap();
    let params = vec![w.clone(), b.clone()];
    let batch = 3;
    let mut per_sample = Gradients::default();
    per_sample.insert(&w, Tensor::zeros(&[batch, 100, 80], DType::F64, Device::Cpu).unwrap());
    per_sample.insert(&b, Tensor::zeros(&[batch, 40], DType::F64, Device::Cpu).unwrap());
    let cfg = DpSgdConfig { max_grad_norm: 0.7, noise_multiplier: 1.3, sample_rate: 0.05, noise_multiplicity: 1, seed: 0 };
    let expected_batch = 0.05 * 400.0;
    let (g, stats) = clip_and_noise(&per_sample, &params, &cfg, &mut Rng::new(2024), expected_batch).unwrap();
    assert_eq!((stats.samples, stats.clipped), (batch, 0));
    let mut values = g.get(&w).unwrap().to_vec_f64().unwrap();
    values.extend(g.get(&b).unwrap().to_vec_f64().unwrap());
    let n = values.len() as f64;
    let sigma = 1.3 * 0.7 / expected_batch;
    let mean = values.iter().sum::<f64>() / n;
    assert!(mean.abs() < 3.29 * sigma / n.sqrt(), "noise mean {mean} is not ≈ 0 (σ = {sigma})");
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
    // (n − 1) s² / σ² ~ χ²(n − 1): a two-sided 99.9 % interval.
    let stat = (n - 1.0) * var / (sigma * sigma);
    let (lo, hi) = (chi2_quantile(n - 1.0, -3.2905), chi2_quantile(n - 1.0, 3.2905));
    assert!(stat > lo && stat < hi, "noise std {} vs stated {sigma}: χ² = {stat} outside [{lo}, {hi}]", var.sqrt());
    // The same seed draws the same noise; another seed other noise.
    let again = clip_and_noise(&per_sample, &params, &cfg, &mut Rng::new(2024), expected_batch).unwrap().0;
    assert_eq!(again.get(&w).unwrap().to_vec_f64().unwrap(), g.get(&w).unwrap().to_vec_f64().unwrap());
    let other = clip_and_noise(&per_sample, &params, &cfg, &mut Rng::new(2025), expected_batch).unwrap().0;
    assert_ne!(other.get(&w).unwrap().to_vec_f64().unwrap(), g.get(&w).unwrap().to_vec_f64().unwrap());
    // An empty batch (no per-sample gradients at all) still gets the noise.
    let (empty, stats) = clip_and_noise(&Gradients::default(), &params, &cfg, &mut Rng::new(2024), expected_batch).unwrap();
    assert_eq!(stats.samples, 0);
    assert_eq!(empty.get(&w).unwrap().to_vec_f64().unwrap(), g.get(&w).unwrap().to_vec_f64().unwrap());
}

#[test]
fn poisson_sampler_is_unbiased_and_deterministic() {
    let (n, q) = (1000, 0.05);
    let sampler = PoissonSampler::new(n, q, 9).unwrap();
    assert_eq!(sampler.expected_batch(), 50.0);
    let steps = 400;
    let sizes: Vec<usize> = (0..steps).map(|s| sampler.sample(s).len()).collect();
    let mean = sizes.iter().sum::<usize>() as f64 / steps as f64;
    // Standard error of the mean batch: sqrt(n q (1 − q) / steps) ≈ 0.34.
    assert!((mean - 50.0).abs() < 1.5, "mean Poisson batch {mean}, expected 50");
    let var = sizes.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / (steps as f64 - 1.0);
    assert!((var - 47.5).abs() < 15.0, "batch-size variance {var}, expected n q (1 − q) = 47.5");
    let batch = sampler.sample(17);
    assert!(batch.windows(2).all(|w| w[0] < w[1]) && batch.iter().all(|&i| i < n));
    assert_eq!(batch, PoissonSampler::new(n, q, 9).unwrap().sample(17), "a step's batch is a function of (seed, step)");
    assert_ne!(batch, sampler.sample(18));
    assert_ne!(batch, PoissonSampler::new(n, q, 10).unwrap().sample(17));
    // Every record is eventually drawn, and a tiny rate gives empty batches.
    let mut seen = vec![false; n];
    (0..steps).flat_map(|s| sampler.sample(s)).for_each(|i| seen[i] = true);
    assert!(seen.iter().all(|&s| s));
    assert!((0..50).any(|s| PoissonSampler::new(10, 0.01, 1).unwrap().sample(s).is_empty()));
    assert!(PoissonSampler::new(10, 0.0, 1).is_err() && PoissonSampler::new(10, 1.5, 1).is_err());
}

// ----- train-ldm-dp ---------------------------------------------------------

mod stage {
    use privdistill::diffusion::sampler::SamplerKind;
    use privdistill::diffusion::schedule::SchedulerConfig;
    use privdistill::models::clip_text::{ClipTextConfig, ClipTextModel};
    use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
    use privdistill::models::vae::{AutoencoderKL, VaeConfig};
    use privdistill::nn::{AdamWConfig, EmaConfig, ParamStore};
    use privdistill::pipeline::model_folder::{config_json, scheduler_json, FolderContents, ModelFolder, Part, PartWeights};
    use privdistill::pipeline::train_ldm::configure;
    use privdistill::pipeline::train_ldm_dp::{read_dp_record, run, TrainLdmDpConfig};
    use privdistill::{DType, Device};
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    const VAE: &str = include_str!("fixtures/tiny/vae.json");
    const UNET: &str = r#"{"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
      "layers_per_block": 1, "block_out_channels": [16, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 2, "cross_attention_dim": 16,
      "norm_num_groups": 8}"#;
    const TEXT: &str = r#"{"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": 49408,
      "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
      "max_position_embeddings": 77, "hidden_act": "quick_gelu", "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}"#;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Eight shipped images with distinct reports, and a seeded random tiny model folder to fine-tune.
    pub struct Fixture {
        pub dir: PathBuf,
        pub data: PathBuf,
        pub init: PathBuf,
    }

    pub fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            std::env::set_var("PRIVDISTILL_QUIET", "1");
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            std::mem::forget(tmp);
            let data = dir.join("real");
            privdistill::testing::write_shipped_records(&data, 8, true).unwrap();

            let (vae_cfg, unet_cfg, text_cfg): (VaeConfig, UNetConfig, ClipTextConfig) =
                (serde_json::from_str(VAE).unwrap(), UNetConfig::from_json(UNET).unwrap(), serde_json::from_str(TEXT).unwrap());
            let stores = [1, 2, 3].map(|s| ParamStore::new(DType::F32, Device::Cpu, s));
            let vae = AutoencoderKL::new(&stores[0].root(), &vae_cfg).unwrap();
            let unet = UNet2DConditionModel::new(&stores[1].root(), &unet_cfg).unwrap();
            let text = ClipTextModel::new(&stores[2].root(), &text_cfg).unwrap();
            let part = |config: serde_json::Value, part: Part, store: &ParamStore| PartWeights {
                config: config_json(&config, part, Some(&config)).unwrap(),
                tensors: store.state_dict(),
            };
            let contents = FolderContents {
                unet: part(serde_json::to_value(unet.config()).unwrap(), Part::Unet, &stores[1]),
                vae: part(serde_json::to_value(vae.config()).unwrap(), Part::Vae, &stores[0]),
                text_encoder: part(serde_json::to_value(text.config()).unwrap(), Part::TextEncoder, &stores[2]),
                tokenizer: root().join("weights/clip-tokenizer/tokenizer.json"),
                scheduler: scheduler_json(&SchedulerConfig::stable_diffusion(), SamplerKind::Ddim).unwrap(),
            };
            let init = dir.join("init");
            ModelFolder::write(&init, &contents).unwrap();
            Fixture { dir, data, init }
        })
    }

    pub fn config(out: &Path, steps: u64) -> TrainLdmDpConfig {
        let f = fixture();
        TrainLdmDpConfig {
            data: f.data.clone(),
            splits: vec![],
            init: f.init.clone(),
            out: out.to_path_buf(),
            image_size: 32,
            sample_rate: 1.0,
            noise_multiplier: 0.0,
            max_grad_norm: 1.0,
            noise_multiplicity: 2,
            steps,
            max_physical_batch: 3,
            optimizer: AdamWConfig { lr: 2e-3, weight_decay: 0.0, ..Default::default() },
            ema: None,
            checkpoint_every: 0,
            seed: 5,
            ..Default::default()
        }
    }

    pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
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

    #[test]
    fn without_noise_the_loss_falls_and_with_noise_a_complete_folder_is_written() {
        let f = fixture();
        let clean = run(&config(&f.dir.join("clean"), 50)).unwrap();
        let head: f64 = clean.loss_curve[..8].iter().map(|p| p.1).sum::<f64>() / 8.0;
        let tail: f64 = clean.loss_curve[clean.loss_curve.len() - 8..].iter().map(|p| p.1).sum::<f64>() / 8.0;
        assert!(tail < head - 0.03, "σ = 0: the loss should fall, first steps {head:.4}, last {tail:.4}");
        assert_eq!((clean.mean_batch, clean.records, clean.steps), (8.0, 8, 50), "q = 1 takes every record");

        let out = f.dir.join("noisy");
        let mut cfg = config(&out, 6);
        cfg.noise_multiplier = 1.1;
        cfg.sample_rate = 0.5;
        cfg.max_grad_norm = 0.05;
        let noisy = run(&cfg).unwrap();
        assert!(!noisy.interrupted && noisy.final_loss.is_finite());
        assert!(noisy.clipped_fraction > 0.5, "a small C clips most samples, got {}", noisy.clipped_fraction);
        let folder = ModelFolder::open(&out).unwrap();
        assert!(folder.part(Part::Unet).join("diffusion_pytorch_model.safetensors").is_file());
        assert!(!out.join("checkpoint.safetensors").exists());
        let dp = read_dp_record(&out).unwrap();
        assert_eq!(dp["sample_rate"], 0.5);
        assert_eq!(dp["noise_multiplier"], 1.1);
        assert_eq!(dp["max_grad_norm"], 0.05);
        assert_eq!(dp["noise_multiplicity"], 2);
        assert_eq!(dp["steps"], 6);
        assert_eq!(dp["records"], 8);
        // The noise moved the weights away from the init's.
        let before = files(&f.init);
        let after = files(&out);
        let unet_of =
            |v: &[(String, Vec<u8>)]| v.iter().find(|(n, _)| n.starts_with("unet/") && n.ends_with(".safetensors")).unwrap().1.clone();
        assert_ne!(unet_of(&before), unet_of(&after));
    }

    #[test]
    fn an_interrupted_run_resumes_to_the_same_bytes() {
        let f = fixture();
        let mut cfg = config(&f.dir.join("straight"), 6);
        cfg.noise_multiplier = 0.8;
        cfg.sample_rate = 0.6;
        cfg.max_physical_batch = 2;
        cfg.ema = Some(EmaConfig { decay: 0.9, ..Default::default() });
        cfg.checkpoint_every = 2;
        let straight = run(&cfg).unwrap();
        assert!(!straight.interrupted);

        cfg.out = f.dir.join("resumed");
        cfg.stop_after = Some(3);
        let first = run(&cfg).unwrap();
        assert!(first.interrupted && first.steps == 3);
        assert!(cfg.out.join("checkpoint.safetensors").is_file());
        cfg.stop_after = None;
        let second = run(&cfg).unwrap();
        assert_eq!((second.resumed_from, second.steps), (3, 6));
        assert_eq!(second.loss_curve, straight.loss_curve);
        assert_eq!(files(&f.dir.join("straight")), files(&cfg.out), "a resumed run writes the same bytes");
    }

    #[test]
    fn bad_settings_get_a_clear_error() {
        let f = fixture();
        let out = f.dir.join("bad");
        type Change = Box<dyn Fn(&mut TrainLdmDpConfig)>;
        let cases: [(&str, Change); 6] = [
            ("sample_rate", Box::new(|c| c.sample_rate = 0.0)),
            ("noise_multiplier", Box::new(|c| c.noise_multiplier = -1.0)),
            ("max_grad_norm", Box::new(|c| c.max_grad_norm = 0.0)),
            ("noise_multiplicity", Box::new(|c| c.noise_multiplicity = 0)),
            ("max_physical_batch", Box::new(|c| c.max_physical_batch = 0)),
            ("init", Box::new(|c| c.init = "/nonexistent/model".into())),
        ];
        for (what, change) in cases {
            let mut cfg = config(&out, 2);
            change(&mut cfg);
            let err = run(&cfg).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
        assert!(!out.join("dp.json").exists(), "no output after a refused config");
        let err = configure(None, config(&out, 2), &["noise_multipler=1.0".into()]).unwrap_err().to_string();
        assert!(err.contains("noise_multipler"), "{err}");
        // The defaults and the demo preset are valid settings.
        let demo = TrainLdmDpConfig::demo("work/real", "work/ldm-real", "work/ldm-dp");
        assert!(demo.mechanism().validate().is_ok() && TrainLdmDpConfig::default().mechanism().validate().is_ok());
    }
}
