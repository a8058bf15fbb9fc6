//! Evaluation: FID/KID/precision-recall/MS-SSIM, AUC-M + PESG, Grad-CAM++, the torchxrayvision
//! conversion, the downstream classifier, and the report over a fake work directory.
//! Reference values come from tests/fixtures/make_eval_fixtures.py (numpy/scipy/torch).

use privdistill::eval::aucm::{AucmLoss, Pesg, PesgConfig};
use privdistill::eval::fid::{fid, frechet_distance, kid, mmd2_unbiased, Features, GaussianStats, KidSettings};
use privdistill::eval::prdc::prdc;
use privdistill::io::SafeTensorsFile;
use privdistill::{no_grad, Tensor};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval").join(name)
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
}

fn assert_tensor_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_vec_f64().unwrap(), want.to_vec_f64().unwrap());
    for (i, (x, y)) in g.iter().zip(&w).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

// ----- FID / KID / precision-recall ------------------------------------------------------

#[test]
fn frechet_distance_of_gaussians_matches_closed_form() {
    // Diagonal covariances: FID = |μ1−μ2|² + Σ (σ1 − σ2)².
    let rows_a: Vec<Vec<f64>> = vec![vec![1.0, 0.0], vec![-1.0, 0.0], vec![0.0, 2.0], vec![0.0, -2.0]];
    let rows_b: Vec<Vec<f64>> = rows_a.iter().map(|r| vec![3.0 * r[0] + 1.0, 0.5 * r[1] - 2.0]).collect();
    let (a, b) = (Features::from_rows(&rows_a).unwrap(), Features::from_rows(&rows_b).unwrap());
    let (sa, sb) = (GaussianStats::of(&a).unwrap(), GaussianStats::of(&b).unwrap());
    // var of a: dim0 = 2/3, dim1 = 8/3; b scales them by 9 and 0.25.
    let (v0, v1) = (2.0f64 / 3.0, 8.0f64 / 3.0);
    let expected_trace = (v0.sqrt() - (9.0 * v0).sqrt()).powi(2) + (v1.sqrt() - (0.25 * v1).sqrt()).powi(2);
    let d = frechet_distance(&sa, &sb).unwrap();
    close(d.mean_term, 1.0 + 4.0, 1e-12, "mean term");
    close(d.trace_term, expected_trace, 1e-10, "trace term");
    // Identical sets are at distance zero, and the distance is symmetric.
    close(fid(&a, &a).unwrap().value, 0.0, 1e-9, "FID of a set with itself");
    close(fid(&b, &a).unwrap().value, d.value, 1e-10, "symmetry");
}

#[test]
fn fid_matches_scipy_sqrtm_reference() {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("fid.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[k].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect()
    };
    let d = fid(&Features::from_rows(&rows("a")).unwrap(), &Features::from_rows(&rows("b")).unwrap()).unwrap();
    close(d.value, v["fid"].as_f64().unwrap(), 1e-9, "FID");
    close(d.mean_term, v["mean_term"].as_f64().unwrap(), 1e-12, "mean term");
}

#[test]
fn fid_survives_singular_covariances() {
    // 3 samples in 6 dimensions: rank-2 covariances, where a naive sqrtm of the product goes complex.
    let a = Features::new(3, 6, (0..18).map(|i| ((i * 7) % 5) as f64).collect()).unwrap();
    let b = Features::new(3, 6, (0..18).map(|i| ((i * 3) % 4) as f64 * 0.5).collect()).unwrap();
    let d = fid(&a, &b).unwrap();
    assert!(d.value.is_finite() && d.value > 0.0, "{d:?}");
    close(fid(&a, &a).unwrap().value, 0.0, 1e-9, "singular self-distance");
}

#[test]
fn kid_is_the_unbiased_mmd_with_the_cubic_kernel() {
    // 1-d points: k(x, y) = (xy + 1)³.
    let a = Features::new(3, 1, vec![0.0, 1.0, 2.0]).unwrap();
    let b = Features::new(3, 1, vec![1.0, -1.0, 0.5]).unwrap();
    let k = |x: f64, y: f64| (x * y + 1.0f64).powi(3);
    let within =
        |p: &[f64]| -> f64 { (0..3).flat_map(|i| (0..3).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| k(p[i], p[j])).sum() };
    let (pa, pb) = ([0.0, 1.0, 2.0], [1.0, -1.0, 0.5]);
    let cross: f64 = pa.iter().flat_map(|&x| pb.iter().map(move |&y| k(x, y))).sum();
    let expected = (within(&pa) + within(&pb)) / 6.0 - 2.0 * cross / 9.0;
    close(mmd2_unbiased(&a, &[0, 1, 2], &b, &[0, 1, 2]), expected, 1e-12, "MMD²");
    // With subsets as large as the sets, every subset is the whole set: mean = the MMD², std = 0.
    let r = kid(&a, &b, &KidSettings { subsets: 5, max_subset_size: 10, seed: 1 }).unwrap();
    close(r.mean, expected, 1e-12, "KID mean");
    close(r.std, 0.0, 1e-12, "KID std");
    assert_eq!(r.subset_size, 3);
}

#[test]
fn precision_recall_on_hand_made_point_sets() {
    // Real: 0, 1, 2, 3 on a line; k = 1 radii are all 1.
    let real = Features::new(4, 1, vec![0.0, 1.0, 2.0, 3.0]).unwrap();
    // Fake: 0.5 (inside), 10 and 11 (outside, each other's neighbours: radius 1).
    let fake = Features::new(3, 1, vec![0.5, 10.0, 11.0]).unwrap();
    let r = prdc(&real, &fake, 1).unwrap();
    close(r.precision, 1.0 / 3.0, 1e-12, "precision");
    // Fake radii: 0.5→9.5 (its nearest other fake is 10), 10→1, 11→1: the ball at 0.5 holds every real point.
    close(r.recall, 1.0, 1e-12, "recall");
    // 0.5 is inside the balls of 0 and 1 (radius 1): density = 2 / (1·3).
    close(r.density, 2.0 / 3.0, 1e-12, "density");
    // Real balls holding a fake: 0 and 1 → coverage 2/4.
    close(r.coverage, 0.5, 1e-12, "coverage");
}

// ----- MS-SSIM -------------------------------------------------------------------------------

#[test]
fn ms_ssim_is_one_for_identical_images_and_drops_with_noise() {
    use privdistill::data::Image;
    use privdistill::eval::msssim::{ms_ssim, ms_ssim_diversity, scales_for};
    let n = 64;
    let base: Vec<f32> = (0..n * n).map(|i| 0.5 + 0.4 * ((i % n) as f32 / 7.0).sin() * ((i / n) as f32 / 11.0).cos()).collect();
    let img = Image::grey(n, n, base.clone());
    close(ms_ssim(&img, &img).unwrap(), 1.0, 1e-9, "self MS-SSIM");
    let mut rng = privdistill::Rng::new(3);
    let noisy = |s: f32, rng: &mut privdistill::Rng| {
        Image::grey(n, n, base.iter().map(|v| (v + s * rng.normal() as f32).clamp(0.0, 1.0)).collect())
    };
    let (light, heavy) = (noisy(0.05, &mut rng), noisy(0.3, &mut rng));
    let (m_light, m_heavy) = (ms_ssim(&img, &light).unwrap(), ms_ssim(&img, &heavy).unwrap());
    assert!(1.0 > m_light && m_light > m_heavy && m_heavy >= 0.0, "{m_light} {m_heavy}");
    close(ms_ssim(&light, &img).unwrap(), m_light, 1e-12, "symmetry");
    assert_eq!((scales_for(64), scales_for(256), scales_for(10)), (3, 5, 0));
    // A set of copies is not diverse; a set of different noise images is.
    let copies = vec![img.clone(), img.clone(), img.clone()];
    close(ms_ssim_diversity(&copies, 10, 0).unwrap(), 1.0, 1e-9, "diversity of copies");
    let varied: Vec<Image> = (0..4).map(|_| noisy(0.5, &mut rng)).collect();
    assert!(ms_ssim_diversity(&varied, 10, 0).unwrap() < 0.9);
}

// ----- AUC-M + PESG ---------------------------------------------------------------------------

#[test]
fn aucm_loss_and_pesg_steps_match_libauc_formulas() {
    let f = SafeTensorsFile::open(fixture("aucm.safetensors")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("aucm.json")).unwrap()).unwrap();
    let get = |n: &str| f.get(n).unwrap();
    let var = |n: &str| get(n).contiguous().unwrap().to_variable();
    let (x, targets) = (get("x"), get("targets"));
    let (w, bias) = (var("w0"), var("bias0"));
    let imratio: Vec<f64> = meta["imratio"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let loss_fn = AucmLoss::new(meta["margin"].as_f64().unwrap(), imratio).unwrap();
    no_grad(|| {
        loss_fn.a.assign(&get("a0")).unwrap();
        loss_fn.b.assign(&get("b0")).unwrap();
        loss_fn.alpha.assign(&get("alpha0")).unwrap();
    });
    let cfg = PesgConfig {
        margin: 1.0,
        lr: meta["lr"].as_f64().unwrap(),
        gamma: meta["gamma"].as_f64().unwrap(),
        weight_decay: meta["weight_decay"].as_f64().unwrap(),
        clip_value: meta["clip_value"].as_f64().unwrap(),
        decay_factor: meta["decay_factor"].as_f64().unwrap(),
        decay_epochs: vec![1],
    };
    let mut pesg = Pesg::new(vec![("w".into(), w.clone()), ("bias".into(), bias.clone())], &loss_fn, cfg).unwrap();
    for step in 1..=2 {
        let scores = x.matmul(&w.t().unwrap()).unwrap().add(&bias).unwrap().sigmoid().unwrap();
        let loss = loss_fn.forward(&scores, &targets).unwrap();
        close(loss.to_scalar_f64().unwrap(), meta["losses"][step - 1].as_f64().unwrap(), 1e-5, &format!("loss {step}"));
        let grads = loss.backward().unwrap();
        for (name, t) in [("w", &w), ("bias", &bias), ("a", &loss_fn.a), ("b", &loss_fn.b), ("alpha", &loss_fn.alpha)] {
            assert_tensor_close(grads.get(t).unwrap(), &get(&format!("grad{step}.{name}")), 1e-5, &format!("grad{step}.{name}"));
        }
        pesg.step(&grads).unwrap();
        for (name, t) in [("w", &w), ("bias", &bias), ("a", &loss_fn.a), ("b", &loss_fn.b), ("alpha", &loss_fn.alpha)] {
            assert_tensor_close(t, &get(&format!("after{step}.{name}")), 1e-5, &format!("after{step}.{name}"));
        }
        pesg.end_epoch(step).unwrap();
    }
    close(pesg.learning_rate(), 0.01, 1e-12, "decayed lr");
}

// ----- Grad-CAM++ ------------------------------------------------------------------------------

#[test]
fn gradcam_pp_matches_torch_on_the_siamese_fixture() {
    use privdistill::eval::gradcam::{gradcam_pp, siamese_gradcam_pp};
    use privdistill::models::siamese::{SiameseConfig, SiameseReid};
    let case = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/siamese_reid");
    let cfg: SiameseConfig = serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    let store = privdistill::nn::ParamStore::new(privdistill::DType::F32, privdistill::Device::Cpu, 0);
    let model = SiameseReid::new(&store.root(), &cfg).unwrap();
    privdistill::eval::features::load_store(&store, &case.join("weights.safetensors")).unwrap();
    let f = SafeTensorsFile::open(fixture("gradcam.safetensors")).unwrap();
    // The fixture's formula inputs.
    let s = 128usize;
    let mut a = Vec::with_capacity(3 * s * s);
    let mut b = Vec::with_capacity(3 * s * s);
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                let (c, y, x) = (c as f32, y as f32, x as f32);
                a.push((0.07 * (x + 1.0) * (c + 1.0)).sin() + (0.05 * y * (c + 2.0)).cos());
                b.push((0.11 * x + 0.3 * c).sin() * (0.09 * (y + 2.0)).cos());
            }
        }
    }
    let a = Tensor::from_vec(a, &[1, 3, s, s]).unwrap();
    let b = Tensor::from_vec(b, &[1, 3, s, s]).unwrap();
    // The map arithmetic alone, on torch's activations and gradients.
    let act = f.get("act_a").unwrap();
    let (k, h, w) = (act.shape()[1], act.shape()[2], act.shape()[3]);
    let cam = gradcam_pp(&act.to_vec_f32().unwrap(), &f.get("grad_a").unwrap().to_vec_f32().unwrap(), k, h, w).unwrap();
    assert_tensor_close(&Tensor::from_vec(cam.values, &[h, w]).unwrap(), &f.get("cam_a").unwrap(), 1e-4, "cam from torch grads");
    // The whole path through our network and autograd.
    let (cam_a, cam_b, logit) = siamese_gradcam_pp(&model, &a, &b).unwrap();
    close(logit, f.get("logit_a").unwrap().to_vec_f64().unwrap()[0], 1e-4, "logit");
    let want_a = f.get("cam_a").unwrap();
    let scale = want_a.to_vec_f64().unwrap().iter().cloned().fold(0.0, f64::max);
    assert!(scale > 0.0, "the fixture's map must not be empty");
    for (name, cam, want) in [("a", cam_a, want_a), ("b", cam_b, f.get("cam_b").unwrap())] {
        let got = Tensor::from_vec(cam.values.iter().map(|v| v / scale as f32).collect::<Vec<f32>>(), &[cam.height, cam.width]).unwrap();
        let want = want.mul_scalar(1.0 / scale).unwrap();
        assert_tensor_close(&got, &want, 2e-3, &format!("cam_{name}"));
    }
}

// ----- torchxrayvision weights ------------------------------------------------------------------

#[test]
fn converted_torchxrayvision_densenet_gives_the_reference_features() {
    use privdistill::eval::features::FeatureExtractor;
    let cfg: privdistill::models::densenet::DenseNetConfig =
        serde_json::from_str(&std::fs::read_to_string(fixture("xrv_tiny.json")).unwrap()).unwrap();
    let fx = FeatureExtractor::torchxrayvision(&fixture("xrv_tiny.safetensors"), Some(cfg)).unwrap();
    let manifest = std::sync::Arc::new(privdistill::data::Manifest::load(&fixture("xrv_images")).unwrap());
    let got = fx.extract(&manifest, vec![0, 1], 2, 1).unwrap();
    let want = SafeTensorsFile::open(fixture("xrv_features.safetensors")).unwrap().get("features").unwrap();
    assert_tensor_close(
        &Tensor::from_vec(got.data.iter().map(|&v| v as f32).collect::<Vec<f32>>(), &[got.n, got.dim]).unwrap(),
        &want,
        1e-3,
        "features",
    );
    // A file without the network's tensors is refused by name.
    let err = FeatureExtractor::torchxrayvision(&fixture("aucm.safetensors"), None).err().unwrap().to_string();
    assert!(err.contains("aucm.safetensors") && err.contains("missing"), "{err}");
}

// ----- evaluate + report over a fake work directory ------------------------------------------------

mod workdir {
    use privdistill::data::{Image, Manifest, Record, Split};
    use privdistill::eval::classifier::ClassifierConfig;
    use privdistill::eval::fid::KidSettings;
    use privdistill::models::densenet::DenseNetConfig;
    use privdistill::pipeline::evaluate::{self, EvaluateConfig};
    use privdistill::pipeline::report::{self, ReportConfig};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A 32×32 picture whose look depends on `kind` (the label) and `seed` (the patient).
    fn picture(kind: usize, seed: usize) -> Image {
        let n = 32;
        let data = (0..n * n)
            .map(|i| {
                let (x, y) = ((i % n) as f32, (i / n) as f32);
                let base = 0.5 + 0.3 * ((x + seed as f32) / 5.0).sin() * ((y - seed as f32) / 7.0).cos();
                (base + if kind == 1 && (x - 16.0).abs() < 6.0 { 0.25 } else { 0.0 }).clamp(0.0, 1.0)
            })
            .collect();
        Image::grey(n, n, data)
    }

    fn write_dataset(dir: &Path, records: Vec<Record>, images: &[(String, Image)]) {
        std::fs::create_dir_all(dir.join("images")).unwrap();
        for (name, img) in images {
            img.save_png(&dir.join(name)).unwrap();
        }
        Manifest::new(dir.join("manifest.jsonl"), records).save().unwrap();
    }

    fn write_json(path: &Path, v: serde_json::Value) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
    }

    /// real (32 images, 16 patients, splits, labels A and B), synth (2 per train prompt, no labels),
    /// filtered, synth-distill, scores, filter summary, decisions, timings, re-id and align metrics.
    pub fn build(w: &Path) {
        let (mut recs, mut imgs) = (Vec::new(), Vec::new());
        for i in 0..32 {
            let a = usize::from(i % 2 == 0);
            let name = format!("images/r{i}.png");
            let mut r = Record::new(&name, format!("p{}", i / 2));
            r.labels = Some(BTreeMap::from([("A".to_string(), a as u8), ("B".to_string(), u8::from(i % 4 < 2))]));
            r.text = Some(format!("report {i}"));
            r.split = Some(if i < 20 { Split::Train } else { Split::Test });
            recs.push(r);
            imgs.push((name, picture(a, i / 2)));
        }
        write_dataset(&w.join("real"), recs, &imgs);
        let (mut synth, mut simgs, mut scores, mut decisions, mut filtered, mut distill, mut dimgs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for p in 0..20usize {
            for j in 0..2usize {
                let name = format!("images/s{p}_{j}.png");
                let mut r = Record::new(&name, format!("p{}", p / 2));
                r.prompt_index = Some(p as u64);
                r.extra.insert("sample_index".into(), j.into());
                synth.push(r);
                simgs.push((name.clone(), picture(usize::from(p % 2 == 0), p / 2 + 3 + j)));
                let s_reid = if j == 0 { 0.9 } else { 0.1 + 0.01 * p as f64 };
                scores.push(serde_json::json!({"image": name, "prompt_index": p, "sample_index": j, "s_reid": s_reid,
                    "matched_real": format!("images/r{p}.png"), "s_align": 0.2 + 0.01 * (p + j) as f64}));
                decisions.push(
                    serde_json::json!({"image": name, "kept": j == 1, "reason": if j == 1 { "best s_align" } else { "s_reid >= delta" }}),
                );
                if j == 1 {
                    let mut f = Record::new(format!("../synth/{name}"), format!("p{}", p / 2));
                    f.prompt_index = Some(p as u64);
                    filtered.push(f);
                }
            }
            let dname = format!("images/d{p}.png");
            let mut d = Record::new(&dname, "uncond");
            d.prompt_index = Some(p as u64);
            distill.push(d);
            dimgs.push((dname, picture(usize::from(p % 2 == 0), p + 7)));
        }
        write_dataset(&w.join("synth"), synth, &simgs);
        write_dataset(&w.join("synth-distill"), distill, &dimgs);
        std::fs::create_dir_all(w.join("filtered")).unwrap();
        Manifest::new(w.join("filtered/manifest.jsonl"), filtered).save().unwrap();
        let lines = |v: &[serde_json::Value]| v.iter().map(|x| x.to_string() + "\n").collect::<String>();
        std::fs::write(w.join("scores.jsonl"), lines(&scores)).unwrap();
        std::fs::write(w.join("filtered/decisions.jsonl"), lines(&decisions)).unwrap();
        write_json(
            &w.join("filtered/filter_summary.json"),
            serde_json::json!({"delta": 0.5, "generated": 40, "reidentified": 20,
            "r_reid": 0.5, "kept": 20, "dropped": 20, "prompts": 20, "prompts_all_dropped": [], "s_align_mean_all": 0.3,
            "s_align_mean_kept": 0.345, "s_reid_mean_all": 0.6}),
        );
        write_json(
            &w.join("distill_summary.json"),
            serde_json::json!({"r_reid": 0.075, "generated": 20, "reidentified": 1, "s_align_mean": 0.271}),
        );
        write_json(
            &w.join("reid/metrics.json"),
            serde_json::json!({"test_auc": {"value": 0.875, "lo": 0.8, "hi": 0.95, "level": 0.95, "resamples": 10},
            "roc": [{"threshold": null, "fpr": 0.0, "tpr": 0.0}, {"threshold": 0.5, "fpr": 0.1, "tpr": 0.8}, {"threshold": 0.0, "fpr": 1.0, "tpr": 1.0}]}),
        );
        write_json(&w.join("align/metrics.json"), serde_json::json!({"s_align_real_mean": 0.417}));
        write_json(
            &w.join("timings.json"),
            serde_json::json!({"stages": [{"name": "train-ldm", "seconds": 12.5, "skipped": false}, {"name": "sample", "seconds": 3.25, "skipped": true}]}),
        );
    }

    pub fn tiny_evaluation(w: &Path) -> EvaluateConfig {
        EvaluateConfig {
            classifier: ClassifierConfig {
                densenet: DenseNetConfig {
                    growth_rate: 4,
                    block_config: vec![1, 1],
                    num_init_features: 8,
                    bn_size: 2,
                    num_classes: 1,
                    in_channels: 1,
                },
                image_size: 32,
                min_positives: 3,
                batch_size: 8,
                ce_epochs: 1,
                aucm_epochs: 1,
                bootstrap: 20,
                workers: 1,
                ..ClassifierConfig::demo()
            },
            kid: KidSettings { subsets: 4, max_subset_size: 50, seed: 0 },
            msssim_pairs: 4,
            ..evaluate::for_work(w)
        }
    }

    #[test]
    fn evaluate_and_report_on_a_small_work_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let w = tmp.path();
        build(w);
        let summary = evaluate::run(&tiny_evaluation(w)).unwrap();
        assert_eq!(summary.labels, ["A", "B"], "both labels have 10 positives and negatives in training and 6 of each in test");
        for name in ["real", "synthetic", "filtered", "distilled"] {
            let d = &summary.datasets[name];
            assert!(d.fidelity.as_ref().unwrap().fid.value.is_finite(), "{name}");
            assert!(d.ms_ssim.unwrap() > 0.0, "{name}");
        }
        assert!(summary.datasets["filtered"].classifier.is_none());
        // Synthetic records had no labels: they were copied from the real record of their prompt.
        assert_eq!(summary.datasets["synthetic"].classifier.as_ref().unwrap().training.images, 20, "capped at the real training split");
        assert!(w.join("eval/evaluation.json").is_file() && w.join("eval/classifier-real/model.safetensors").is_file());

        let md_path = report::run(&ReportConfig::for_work(w)).unwrap();
        let md = std::fs::read_to_string(&md_path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(w.join("report/report.json")).unwrap()).unwrap();
        let fid_synth = summary.datasets["synthetic"].fidelity.as_ref().unwrap().fid.value;
        for needle in [
            "δ = 0.5",
            "| synthetic (D_synth) | 40 | 50.0% |",
            "| distilled (D_distill) | 20 | 7.5% |",
            "0.417",
            "0.345",
            "0.271",
            "test AUC 0.875",
            "| train-ldm | 12.5 |",
            "skipped",
            &format!("{fid_synth:.2}"),
            "our own DenseNet classifier",
        ] {
            assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
        }
        // The filtered row: every kept sample is under δ.
        assert!(md.contains("| filtered (D_filtered) | 20 | 0.0% |"), "{md}");
        assert_eq!(json["rows"][1]["r_reid"], 0.5);
        assert!((json["rows"][1]["fid"].as_f64().unwrap() - fid_synth).abs() < 1e-12);
        assert!(json["not_run"].as_array().unwrap().is_empty(), "{}", json["not_run"]);
        for png in ["s_reid_hist.png", "s_align_hist.png", "roc_classifier.png", "roc_reid.png", "samples.png"] {
            let img = privdistill::data::read_image(&w.join("report").join(png)).unwrap();
            assert!(img.width > 300 && img.height > 300 && img.channels == 3, "{png}");
            assert!(md.contains(png), "report.md does not show {png}");
        }

        // The CLI: FID between two sets on the features of the trained real classifier.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_privdistill"))
            .args(["eval", "fid"])
            .arg(w.join("real"))
            .arg(w.join("synth"))
            .arg("--classifier")
            .arg(w.join("eval/classifier-real"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for needle in ["FID:", "KID:", "precision:", "recall:", "32 vs 40"] {
            assert!(stdout.contains(needle), "eval fid output lacks {needle:?}:\n{stdout}");
        }
        // The CLI: a classifier trained on the unlabelled synthetic set (labels through prompt_index), tested on real.
        let tiny = [
            "densenet.growth_rate=4",
            "densenet.block_config=[1, 1]",
            "densenet.num_init_features=8",
            "image_size=32",
            "ce_epochs=1",
            "aucm_epochs=1",
            "batch_size=8",
            "bootstrap=10",
            "min_positives=3",
            "workers=1",
        ];
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_privdistill"))
            .args(["eval", "classifier", "--demo", "--train"])
            .arg(w.join("synth"))
            .arg("--test")
            .arg(w.join("real"))
            .args(tiny.iter().flat_map(|s| ["--set", s]))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for needle in ["trained on 40 images", "tested on 12 images", "\nA ", "\nB ", "\nmean "] {
            assert!(stdout.contains(needle), "eval classifier output lacks {needle:?}:\n{stdout}");
        }
    }

    #[test]
    fn report_of_an_empty_work_directory_lists_what_did_not_run() {
        let tmp = tempfile::tempdir().unwrap();
        let md = std::fs::read_to_string(report::run(&ReportConfig::for_work(tmp.path())).unwrap()).unwrap();
        assert!(md.contains("## Not run") && md.contains("evaluation (work/eval/evaluation.json)") && md.contains("filtering"), "{md}");
        // A file that exists but is broken is an error naming it.
        std::fs::create_dir_all(tmp.path().join("filtered")).unwrap();
        std::fs::write(tmp.path().join("filtered/filter_summary.json"), "{not json").unwrap();
        let err = report::run(&ReportConfig::for_work(tmp.path())).unwrap_err().to_string();
        assert!(err.contains("filter_summary.json"), "{err}");
    }
}

#[test]
fn classifier_starts_from_converted_torchxrayvision_weights() {
    use privdistill::eval::classifier::{Classifier, ClassifierConfig};
    let densenet: privdistill::models::densenet::DenseNetConfig =
        serde_json::from_str(&std::fs::read_to_string(fixture("xrv_tiny.json")).unwrap()).unwrap();
    let cfg = ClassifierConfig { densenet, pretrained: Some(fixture("xrv_tiny.safetensors")), ..ClassifierConfig::demo() };
    let clf = Classifier::new(&cfg, vec!["A".into(), "B".into()]).unwrap();
    let file = SafeTensorsFile::open(fixture("xrv_tiny.safetensors")).unwrap();
    for name in ["features.conv0.weight", "features.denseblock1.denselayer1.norm1.running_var", "features.norm5.bias"] {
        assert_tensor_close(&clf.store.state_dict().into_iter().find(|(n, _)| n == name).unwrap().1, &file.get(name).unwrap(), 0.0, name);
    }
    // The 18-output head does not fit 2 labels: it keeps its initialisation.
    assert_eq!(clf.store.get("classifier.weight").unwrap().shape()[0], 2);
    let bad = ClassifierConfig { pretrained: Some(fixture("aucm.safetensors")), ..cfg };
    let err = Classifier::new(&bad, vec!["A".into()]).err().unwrap().to_string();
    assert!(err.contains("aucm.safetensors") && err.contains("no tensor matches"), "{err}");
}
