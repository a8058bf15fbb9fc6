//! Samplers against diffusers, step for step (fixture from
//! tests/fixtures/make_scheduler_fixture.py): a deterministic stand-in model
//! eps(x, t) = 0.8·x·t/1000 + 0.1·sin(3x), stochastic draws from the recorded noise.

use privdistill::diffusion::sampler::{Sampler, SamplerKind};
use privdistill::diffusion::schedule::{NoiseSchedule, SchedulerConfig};
use privdistill::io::safetensors::SafeTensorsFile;
use privdistill::testing::max_abs_diff;
use privdistill::{Result, Tensor};
use std::path::PathBuf;

fn stand_in_model(x: &Tensor, t: i64) -> Result<Tensor> {
    x.mul_scalar(0.8 * t as f64 / 1000.0)?.add(&x.mul_scalar(3.0)?.sin()?.mul_scalar(0.1)?)
}

#[test]
fn samplers_match_diffusers_step_for_step() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cases: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("schedulers.json")).unwrap()).unwrap();
    let data = SafeTensorsFile::open(dir.join("schedulers.safetensors")).unwrap();
    let initial = data.get("initial").unwrap();
    assert!(cases.len() >= 10);
    for (name, case) in &cases {
        let config: SchedulerConfig = serde_json::from_value(case["scheduler_config"].clone()).unwrap();
        let kind = match case["kind"].as_str().unwrap() {
            "pndm" => SamplerKind::Pndm,
            "ddim" => SamplerKind::Ddim,
            _ => SamplerKind::Ddpm,
        };
        let schedule = NoiseSchedule::new(&config).unwrap();
        let mut sampler = Sampler::new(kind, &schedule, case["steps"].as_u64().unwrap() as usize, case["eta"].as_f64().unwrap()).unwrap();
        let want_t = data.get(&format!("{name}/timesteps")).unwrap().to_vec::<i64>().unwrap();
        assert_eq!(sampler.timesteps(), &want_t[..], "{name}: timesteps");
        let latents = data.get(&format!("{name}/latents")).unwrap();
        let noise = data.get(&format!("{name}/noise")).unwrap();
        let mut draws = 0;
        let mut x = initial.mul_scalar(sampler.init_noise_sigma()).unwrap();
        let timesteps = sampler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let eps = stand_in_model(&x, t).unwrap();
            let mut source = |_like: &Tensor| -> Result<Tensor> {
                let n = noise.narrow(0, draws, 1)?.squeeze(0)?;
                draws += 1;
                Ok(n)
            };
            x = sampler.step(&eps, t, &x, &mut source).unwrap();
            let want = latents.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
            let err = max_abs_diff(&x, &want).unwrap();
            assert!(err <= 1e-5, "{name}: step {i} (t = {t}) differs by {err:.3e}");
        }
        assert_eq!(draws as u64, case["noise_draws"].as_u64().unwrap(), "{name}: noise draws");
        println!("{name}: {} steps match", timesteps.len());
    }
}

/// The small SD-1.5-shaped UNet of the model fixtures, with its reference weights.
fn tiny_unet() -> (privdistill::nn::ParamStore, privdistill::models::unet::UNet2DConditionModel) {
    use privdistill::models::unet::{UNet2DConditionModel, UNetConfig};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/unet_sd15");
    let cfg = UNetConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let store = privdistill::nn::ParamStore::new(privdistill::DType::F32, privdistill::Device::Cpu, 0);
    let unet = UNet2DConditionModel::new(&store.root(), &cfg).unwrap();
    let file = SafeTensorsFile::open(dir.join("weights.safetensors")).unwrap();
    store.load_from(|name, _| file.get(name)).unwrap();
    (store, unet)
}

#[test]
fn diffusion_loss_trains_the_unet_and_min_snr_reweights_it() {
    use privdistill::diffusion::objective::{diffusion_loss, ObjectiveConfig};
    use privdistill::Rng;
    let (store, unet) = tiny_unet();
    let schedule = NoiseSchedule::new(&SchedulerConfig::stable_diffusion()).unwrap();
    let mut rng = Rng::new(3);
    let latents = Tensor::randn(&[2, 4, 16, 16], 0.0, 1.0, privdistill::DType::F32, privdistill::Device::Cpu, &mut rng).unwrap();
    let ctx = Tensor::randn(&[2, 7, 16], 0.0, 1.0, privdistill::DType::F32, privdistill::Device::Cpu, &mut rng).unwrap();
    let plain = diffusion_loss(&unet, &schedule, &latents, &ctx, &mut Rng::new(9), ObjectiveConfig { min_snr_gamma: None }).unwrap();
    let v = plain.to_scalar_f64().unwrap();
    assert!(v.is_finite() && v > 0.0, "loss {v}");
    // Same draws (same rng seed) with min-SNR-5 weighting: each item's weight is min(snr, 5)/snr ≤ 1.
    let weighted =
        diffusion_loss(&unet, &schedule, &latents, &ctx, &mut Rng::new(9), ObjectiveConfig { min_snr_gamma: Some(5.0) }).unwrap();
    assert!(weighted.to_scalar_f64().unwrap() <= v * (1.0 + 1e-6));
    let grads = plain.backward().unwrap();
    let reached = store.trainable_parameters().iter().filter(|(_, p)| grads.get(p).is_some()).count();
    assert_eq!(reached, store.trainable_parameters().len(), "every UNet parameter gets a gradient");
}

#[test]
fn cfg_dropout_replaces_about_p_of_the_prompts() {
    use privdistill::diffusion::objective::cfg_dropout;
    let mut prompts: Vec<Vec<i64>> = (0..2000).map(|i| vec![49406, i, 49407]).collect();
    let empty = vec![49406, 49407];
    let dropped = cfg_dropout(&mut prompts, &empty, 0.1, &mut privdistill::Rng::new(1));
    assert!((150..250).contains(&dropped), "{dropped} of 2000 dropped at p = 0.1");
    assert_eq!(prompts.iter().filter(|p| **p == empty).count(), dropped);
}

#[test]
fn guided_sampling_with_scale_one_is_plain_conditional_sampling() {
    use privdistill::diffusion::guidance::{sample_latents, SampleConfig};
    use privdistill::Rng;
    let (_store, unet) = tiny_unet();
    let schedule = NoiseSchedule::new(&SchedulerConfig::stable_diffusion()).unwrap();
    let mut rng = Rng::new(5);
    let cond = Tensor::randn(&[2, 7, 16], 0.0, 1.0, privdistill::DType::F32, privdistill::Device::Cpu, &mut rng).unwrap();
    let uncond = Tensor::randn(&[1, 7, 16], 0.0, 1.0, privdistill::DType::F32, privdistill::Device::Cpu, &mut rng).unwrap();
    let cfg = |g: f64| SampleConfig { sampler: SamplerKind::Ddim, steps: 4, guidance_scale: g, eta: 0.0 };
    let mut steps = 0;
    let a = sample_latents(&unet, &schedule, &cfg(1.0), &cond, &uncond, [4, 8, 8], &mut Rng::new(11), |_, _| steps += 1).unwrap();
    assert_eq!(steps, 4);
    // By hand: the same noise, the conditional model alone.
    let mut r = Rng::new(11);
    let mut x = Tensor::randn(&[2, 4, 8, 8], 0.0, 1.0, privdistill::DType::F32, privdistill::Device::Cpu, &mut r).unwrap();
    let mut sampler = Sampler::new(SamplerKind::Ddim, &schedule, 4, 0.0).unwrap();
    for t in sampler.timesteps().to_vec() {
        let eps = privdistill::no_grad(|| unet.forward(&x, &[t as f64], &cond)).unwrap();
        x = sampler.step(&eps, t, &x, &mut |_| unreachable!("deterministic DDIM draws no noise")).unwrap();
    }
    assert!(max_abs_diff(&a, &x).unwrap() < 1e-5);
    // Guidance changes the result, and stays finite.
    let b = sample_latents(&unet, &schedule, &cfg(4.0), &cond, &uncond, [4, 8, 8], &mut Rng::new(11), |_, _| {}).unwrap();
    assert!(max_abs_diff(&a, &b).unwrap() > 1e-4);
    assert!(b.to_vec_f64().unwrap().iter().all(|v| v.is_finite()));
}
