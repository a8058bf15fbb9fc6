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
