//! The nn layer: parameter store naming and loading, initialiser statistics,
//! layers against naive references and finite differences, optimizers against
//! PyTorch (tests/fixtures/optim_torch.json), clipping, EMA, schedules, and a
//! checkpoint → resume run that must be bit-identical to an uninterrupted one.

use privdistill::io::{Checkpoint, CheckpointMeta};
use privdistill::nn::{
    clip_grad_norm, global_grad_norm, AdamW, AdamWConfig, BatchNorm2d, Conv2d, Conv2dParams, Dropout, Ema, EmaConfig, EmaWarmup, Embedding,
    EntryKind, GroupNorm, Init, LayerNorm, Linear, LrSchedule, Optimizer, ParamStore, Sgd, SgdConfig,
};
use privdistill::testing::{assert_close, check_gradients, rand_f64};
use privdistill::{DType, Device, Gradients, Result, Rng, Tensor};
use std::collections::HashMap;

fn f32_store(seed: u64) -> ParamStore {
    ParamStore::new(DType::F32, Device::Cpu, seed)
}

// ----- parameter store ----------------------------------------------------

#[test]
fn store_names_follow_the_module_tree_in_creation_order() -> Result<()> {
    let vs = f32_store(0);
    let block = vs.pp("down_blocks").pp(0).pp("resnets").pp(1);
    let conv1 = block.pp("conv1");
    conv1.var("weight", &[4, 2, 3, 3], Init::default_weight())?;
    conv1.var("bias", &[4], Init::default_bias(18))?;
    let norm = block.pp("norm1");
    norm.var("weight", &[4], Init::ONES)?;
    norm.buffer("running_mean", Tensor::zeros(&[4], DType::F32, Device::Cpu)?)?;
    norm.buffer("num_batches_tracked", Tensor::scalar(0i64))?;
    vs.pp("conv_out").var("weight", &[1, 4], Init::ZEROS)?;

    let names: Vec<String> = vs.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "down_blocks.0.resnets.1.conv1.weight",
            "down_blocks.0.resnets.1.conv1.bias",
            "down_blocks.0.resnets.1.norm1.weight",
            "conv_out.weight"
        ]
    );
    let state: Vec<String> = vs.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(state[3], "down_blocks.0.resnets.1.norm1.running_mean");
    assert_eq!(state[4], "down_blocks.0.resnets.1.norm1.num_batches_tracked");
    assert_eq!(state.len(), 6);
    assert_eq!(vs.buffers().len(), 2);
    assert_eq!(vs.get_buffer("down_blocks.0.resnets.1.norm1.num_batches_tracked").unwrap().dtype(), DType::I64);
    assert!(vs.get("down_blocks.0.resnets.1.norm1.running_mean").is_none(), "buffers are not parameters");
    assert_eq!(vs.kind("conv_out.weight"), Some(EntryKind::Param { trainable: true }));
    assert_eq!(vs.num_parameters(), 4 * 2 * 9 + 4 + 4 + 4);

    let w = vs.get("down_blocks.0.resnets.1.conv1.weight").unwrap();
    assert_eq!(w.shape(), [4, 2, 3, 3]);
    assert!(w.requires_grad(), "parameters are variables");
    assert_eq!(block.name("x"), "down_blocks.0.resnets.1.x");
    assert_eq!(vs.root().name("x"), "x");

    let dup = conv1.var("weight", &[1], Init::ZEROS).unwrap_err().to_string();
    assert!(dup.contains("down_blocks.0.resnets.1.conv1.weight"), "{dup}");
    Ok(())
}

#[test]
fn freezing_selects_what_the_optimizer_sees() -> Result<()> {
    let vs = f32_store(0);
    Linear::new(&vs.pp("unet").pp("proj"), 3, 2, true)?;
    Linear::new(&vs.pp("unet_extra"), 3, 2, false)?;
    let vae = Linear::new(&vs.pp("vae").frozen().pp("proj"), 3, 2, true)?;
    assert!(!vae.weight.requires_grad(), "a frozen path makes plain tensors");
    assert_eq!(vs.trainable_parameters().len(), 3);
    assert_eq!(vs.named_parameters().len(), 5);

    // "unet" must not catch "unet_extra".
    assert_eq!(vs.set_trainable("unet", false)?, 2);
    let trainable: Vec<String> = vs.trainable_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(trainable, ["unet_extra.weight"]);
    assert_eq!(vs.set_trainable("", false)?, 5);
    assert!(vs.trainable_parameters().is_empty());
    let err = vs.set_trainable("vae", true).unwrap_err().to_string();
    assert!(err.contains("vae.proj.weight") && err.contains("frozen"), "{err}");
    assert_eq!(vs.set_trainable("unet.proj.bias", true)?, 1);
    Ok(())
}

#[test]
fn loading_copies_in_place_and_names_what_does_not_fit() -> Result<()> {
    let vs = f32_store(1);
    let lin = Linear::new(&vs.pp("proj"), 3, 2, true)?;
    vs.pp("bn").buffer("num_batches_tracked", Tensor::scalar(0i64))?;
    let mut saved: HashMap<String, Tensor> = HashMap::new();
    saved.insert("proj.weight".into(), rand_f64(&[2, 3], 5)); // f64 source: cast on load
    saved.insert("proj.bias".into(), Tensor::from_vec(vec![1f32, 2.0], &[2])?);
    saved.insert("bn.num_batches_tracked".into(), Tensor::scalar(7i64));
    vs.load_from(|name, _| saved.get(name).cloned().ok_or_else(|| privdistill::Error::msg("absent")))?;

    // The layer holds the same storage, so it sees the loaded values.
    assert_close(&lin.weight, &rand_f64(&[2, 3], 5), 1e-7, 0.0);
    assert_eq!(lin.weight.dtype(), DType::F32);
    assert_eq!(lin.bias.as_ref().unwrap().to_vec::<f32>()?, [1.0, 2.0]);
    assert!(lin.weight.requires_grad());
    assert_eq!(vs.get_buffer("bn.num_batches_tracked").unwrap().to_vec::<i64>()?, [7]);

    saved.insert("proj.bias".into(), Tensor::zeros(&[3], DType::F32, Device::Cpu)?);
    let err = vs.load_from(|name, _| Ok(saved[name].clone())).unwrap_err().to_string();
    assert!(err.contains("proj.bias") && err.contains("[3]") && err.contains("[2]"), "{err}");

    saved.remove("proj.bias");
    let err = vs.load_from(|name, _| saved.get(name).cloned().ok_or_else(|| privdistill::Error::msg("absent"))).unwrap_err();
    assert!(err.to_string().contains("proj.bias"), "{err}");
    let missing = vs.load_matching(|name, shape| {
        assert_eq!(shape, vs.state_dict().into_iter().find(|(n, _)| n == name).unwrap().1.shape());
        Ok(saved.get(name).cloned())
    })?;
    assert_eq!(missing, ["proj.bias"]);
    Ok(())
}

#[test]
fn a_state_dict_round_trips_through_safetensors_by_name() -> Result<()> {
    let build = |seed| -> Result<(ParamStore, BatchNorm2d)> {
        let vs = f32_store(seed);
        Conv2d::new(&vs.pp("conv_in"), 1, 4, 3, Conv2dParams::new(1, 1), true)?;
        GroupNorm::new(&vs.pp("norm"), 2, 4, 1e-6, true)?;
        let bn = BatchNorm2d::new(&vs.pp("bn"), 4, 1e-5, Some(0.1), true)?;
        Linear::new(&vs.pp("proj_out"), 4, 2, true)?;
        Ok((vs, bn))
    };
    let (saved, bn) = build(1)?;
    bn.forward(&privdistill::testing::rand_f32(&[2, 4, 3, 3], 2), true)?; // non-trivial buffers
    let dir = tempfile::tempdir().map_err(|e| privdistill::Error::msg(e.to_string()))?;
    let path = dir.path().join("model.safetensors");
    privdistill::io::save_safetensors(&path, saved.state_dict(), None)?;

    let (loaded, _) = build(2)?;
    let file = privdistill::io::SafeTensorsFile::open(&path)?;
    loaded.load_from(|name, _| file.get(name))?;
    let bits = |vs: &ParamStore| -> Vec<(String, Vec<u8>)> {
        vs.state_dict().into_iter().map(|(n, t)| (n, t.contiguous().unwrap().storage().cpu().unwrap().as_bytes().to_vec())).collect()
    };
    assert_eq!(bits(&loaded), bits(&saved));
    assert_eq!(loaded.get_buffer("bn.num_batches_tracked").unwrap().to_vec::<i64>()?, [1]);
    Ok(())
}

// ----- initialisers ---------------------------------------------------------

fn mean_and_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

#[test]
fn initialisers_have_pytorch_default_statistics() -> Result<()> {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 3);
    // nn.Linear(64, 256): weight and bias uniform in ±1/√64.
    let lin = Linear::new(&vs.pp("lin"), 64, 256, true)?;
    let bound = 1.0 / 8.0;
    let w = lin.weight.to_vec_f64()?;
    assert!(w.iter().all(|x| x.abs() <= bound));
    let (mean, var) = mean_and_var(&w);
    assert!(mean.abs() < 0.01 * bound * 4.0, "mean {mean}");
    assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.05, "var {var}");
    let b = lin.bias.as_ref().unwrap().to_vec_f64()?;
    assert!(b.iter().all(|x| x.abs() <= bound) && b.iter().any(|x| x.abs() > bound / 2.0));

    // kaiming_uniform_(a=0) on a conv weight: ±√(6 / fan_in), fan_in = 8·3·3.
    let conv = vs.pp("conv").var("weight", &[32, 8, 3, 3], Init::KaimingUniform { a: 0.0 })?.to_vec_f64()?;
    let bound = (6.0f64 / 72.0).sqrt();
    assert!(conv.iter().all(|x| x.abs() <= bound));
    assert!(conv.iter().fold(0.0f64, |m, x| m.max(x.abs())) > 0.95 * bound);

    // xavier_uniform_: ±gain·√(6 / (fan_in + fan_out)).
    let xav = vs.pp("xav").var("weight", &[30, 20], Init::XavierUniform { gain: 2.0 })?.to_vec_f64()?;
    let bound = 2.0 * (6.0f64 / 50.0).sqrt();
    assert!(xav.iter().all(|x| x.abs() <= bound) && xav.iter().any(|x| x.abs() > 0.9 * bound));

    // nn.Embedding: N(0, 1).
    let emb = vs.pp("emb").var("weight", &[100, 100], Init::default_embedding())?.to_vec_f64()?;
    let (mean, var) = mean_and_var(&emb);
    assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");

    // Norm layers: weight 1, bias 0.
    assert!(vs.pp("norm").var("weight", &[5], Init::ONES)?.to_vec_f64()?.iter().all(|&x| x == 1.0));
    assert!(vs.pp("norm").var("bias", &[5], Init::ZEROS)?.to_vec_f64()?.iter().all(|&x| x == 0.0));

    // Vectors have no fan: a clear error naming the parameter.
    let err = vs.pp("bad").var("weight", &[5], Init::default_weight()).unwrap_err().to_string();
    assert!(err.contains("bad.weight") && err.contains("rank 2"), "{err}");

    // The same seed builds the same model.
    let again = ParamStore::new(DType::F64, Device::Cpu, 3);
    let lin2 = Linear::new(&again.pp("lin"), 64, 256, true)?;
    assert_eq!(lin2.weight.to_vec_f64()?, w);
    Ok(())
}

// ----- layers ---------------------------------------------------------------

#[test]
fn linear_matches_a_naive_product_over_any_leading_dims() -> Result<()> {
    let (w, b) = (rand_f64(&[5, 3], 1), rand_f64(&[5], 2));
    let lin = Linear::from_tensors(w.clone(), Some(b.clone()))?;
    let x = rand_f64(&[2, 4, 3], 3);
    let y = lin.forward(&x)?;
    assert_eq!(y.shape(), [2, 4, 5]);
    let (wv, bv, xv) = (w.to_vec_f64()?, b.to_vec_f64()?, x.to_vec_f64()?);
    let mut expect = vec![0.0; 2 * 4 * 5];
    for r in 0..8 {
        for o in 0..5 {
            expect[r * 5 + o] = bv[o] + (0..3).map(|i| xv[r * 3 + i] * wv[o * 3 + i]).sum::<f64>();
        }
    }
    assert_close(&y, &Tensor::from_vec(expect.clone(), &[2, 4, 5])?, 1e-12, 0.0);

    // A rank-1 input and a non-contiguous one.
    let y1 = lin.forward(&x.narrow(1, 2, 1)?.reshape(&[2, 3])?.narrow(0, 1, 1)?.reshape(&[3])?)?;
    assert_close(&y1, &Tensor::from_vec(expect[(4 + 2) * 5..(4 + 2) * 5 + 5].to_vec(), &[5])?, 1e-12, 0.0);
    let xt = rand_f64(&[3, 4], 4).t()?;
    let no_bias = Linear::from_tensors(w.clone(), None)?;
    assert_close(&no_bias.forward(&xt)?, &xt.matmul(&w.t()?)?, 1e-12, 0.0);

    let err = lin.forward(&rand_f64(&[2, 4], 5)).unwrap_err().to_string();
    assert!(err.contains("in_features = 3"), "{err}");

    // f32 agrees with f64.
    let lin32 = Linear::from_tensors(w.to_dtype(DType::F32)?, Some(b.to_dtype(DType::F32)?))?;
    assert_close(&lin32.forward(&x.to_dtype(DType::F32)?)?, &y, 1e-6, 1e-6);
    Ok(())
}

#[test]
fn linear_gradients_match_finite_differences() -> Result<()> {
    let inputs = [rand_f64(&[2, 3, 4], 1), rand_f64(&[5, 4], 2), rand_f64(&[5], 3)];
    check_gradients(&inputs, |v| Linear::from_tensors(v[1].clone(), Some(v[2].clone()))?.forward(&v[0]), 1e-6, 1e-6)?;
    check_gradients(&inputs[..2], |v| Linear::from_tensors(v[1].clone(), None)?.forward(&v[0]), 1e-6, 1e-6)?;
    Ok(())
}

#[test]
fn dropout_masks_in_training_and_is_the_identity_in_evaluation() -> Result<()> {
    let x = Tensor::full(2.0, &[100, 100], DType::F32, Device::Cpu)?;
    let drop = Dropout::new(0.25)?;
    let mut rng = Rng::new(9);
    let eval = drop.forward(&x, false, &mut rng)?;
    assert!(eval.same_storage(&x));
    assert_eq!(rng.offset, 0, "evaluation draws nothing");

    let y = drop.forward(&x, true, &mut rng)?.to_vec::<f32>()?;
    assert_eq!(rng.offset, 10_000, "one uniform per element");
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / 1e4;
    assert!(y.iter().all(|&v| v == 0.0 || (v - 2.0 / 0.75).abs() < 1e-6));
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");

    // The mask is a function of the stream position; the gradient is the mask.
    let again = drop.forward(&x, true, &mut Rng::new(9))?.to_vec::<f32>()?;
    assert_eq!(again, y);
    let xv = x.to_variable();
    let out = drop.forward(&xv, true, &mut Rng::new(9))?;
    let g = out.sum_all()?.backward()?;
    let gv = g.get(&xv).unwrap().to_vec::<f32>()?;
    assert!(gv.iter().zip(&y).all(|(g, y)| *g == y / 2.0));

    let all = Dropout::new(1.0)?.forward(&x, true, &mut rng)?.to_vec::<f32>()?;
    assert!(all.iter().all(|&v| v == 0.0));
    assert!(Dropout::new(1.5).is_err());
    Ok(())
}

#[test]
fn conv2d_layer_names_inits_and_convolves() -> Result<()> {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 4);
    let conv = Conv2d::new(&vs.pp("conv_in"), 2, 3, 3, Conv2dParams::new(1, 1), true)?;
    let names: Vec<String> = vs.iter().map(|p| p.name).collect();
    assert_eq!(names, ["conv_in.weight", "conv_in.bias"]);
    assert_eq!(conv.weight.shape(), [3, 2, 3, 3]);
    let bound = 1.0 / 18f64.sqrt();
    assert!(conv.weight.to_vec_f64()?.iter().chain(&conv.bias.as_ref().unwrap().to_vec_f64()?).all(|x| x.abs() <= bound));

    let x = rand_f64(&[1, 2, 4, 4], 8);
    let y = conv.forward(&x)?;
    assert_eq!(y.shape(), [1, 3, 4, 4]);
    let (xv, wv, bv, yv) = (x.to_vec_f64()?, conv.weight.to_vec_f64()?, conv.bias.as_ref().unwrap().to_vec_f64()?, y.to_vec_f64()?);
    for o in 0..3 {
        for i in 0..4usize {
            for j in 0..4usize {
                let mut acc = bv[o];
                for c in 0..2 {
                    for (di, dj) in (0..3).flat_map(|a| (0..3).map(move |b| (a, b))) {
                        let (si, sj) = ((i + di).wrapping_sub(1), (j + dj).wrapping_sub(1));
                        if si < 4 && sj < 4 {
                            acc += xv[c * 16 + si * 4 + sj] * wv[((o * 2 + c) * 3 + di) * 3 + dj];
                        }
                    }
                }
                assert!((yv[o * 16 + i * 4 + j] - acc).abs() < 1e-12);
            }
        }
    }
    let grouped = Conv2d::new(&vs.pp("dw"), 4, 4, 3, Conv2dParams::new(1, 1).with_groups(4), false)?;
    assert_eq!((grouped.weight.shape(), grouped.in_channels()), (&[4, 1, 3, 3][..], 4));
    assert!(Conv2d::new(&vs.pp("bad"), 3, 4, 3, Conv2dParams::new(1, 1).with_groups(2), false).is_err());
    Ok(())
}

#[test]
fn group_and_layer_norm_layers_normalise_with_torch_defaults() -> Result<()> {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 5);
    let gn = GroupNorm::new(&vs.pp("norm1"), 2, 4, 1e-6, true)?;
    let ln = LayerNorm::new(&vs.pp("ln"), &[6], 1e-5, true)?;
    let names: Vec<String> = vs.iter().map(|p| p.name).collect();
    assert_eq!(names, ["norm1.weight", "norm1.bias", "ln.weight", "ln.bias"]);
    assert!(gn.weight.as_ref().unwrap().to_vec_f64()?.iter().all(|&w| w == 1.0));
    assert!(ln.bias.as_ref().unwrap().to_vec_f64()?.iter().all(|&b| b == 0.0));
    assert!(GroupNorm::new(&vs.pp("bad"), 3, 4, 1e-6, true).is_err());

    // Group norm: each (sample, group) of 2 channels × 3 positions normalised.
    let x = rand_f64(&[2, 4, 3], 6);
    let (xv, yv) = (x.to_vec_f64()?, gn.forward(&x)?.to_vec_f64()?);
    for group in xv.chunks(6).zip(yv.chunks(6)) {
        let (mean, var) = mean_and_var(group.0);
        for (a, b) in group.0.iter().zip(group.1) {
            assert!(((a - mean) / (var + 1e-6).sqrt() - b).abs() < 1e-10);
        }
    }
    let silu = gn.forward_silu(&x)?.to_vec_f64()?;
    assert!(silu.iter().zip(&yv).all(|(s, y)| (s - y / (1.0 + (-y).exp())).abs() < 1e-12));

    // Layer norm over the last dim.
    let x = rand_f64(&[3, 6], 7);
    let (xv, yv) = (x.to_vec_f64()?, ln.forward(&x)?.to_vec_f64()?);
    for row in xv.chunks(6).zip(yv.chunks(6)) {
        let (mean, var) = mean_and_var(row.0);
        for (a, b) in row.0.iter().zip(row.1) {
            assert!(((a - mean) / (var + 1e-5).sqrt() - b).abs() < 1e-10);
        }
    }
    let plain = LayerNorm::new(&vs.pp("plain"), &[6], 1e-5, false)?;
    assert!(plain.weight.is_none() && vs.get("plain.weight").is_none());
    Ok(())
}

#[test]
fn batch_norm_tracks_running_statistics_like_torch() -> Result<()> {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 6);
    let bn = BatchNorm2d::new(&vs.pp("bn1"), 2, 1e-5, Some(0.1), true)?;
    let state: Vec<String> = vs.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(state, ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]);
    assert_eq!(vs.trainable_parameters().len(), 2);
    assert_eq!(bn.num_batches_tracked.dtype(), DType::I64);

    let x = rand_f64(&[3, 2, 2, 2], 9);
    let xv = x.to_vec_f64()?;
    let channel = |c: usize| -> Vec<f64> { (0..3).flat_map(|n| xv[(n * 2 + c) * 4..(n * 2 + c) * 4 + 4].to_vec()).collect() };
    let y = bn.forward(&x, true)?.to_vec_f64()?;
    let (rm, rv) = (bn.running_mean.to_vec_f64()?, bn.running_var.to_vec_f64()?);
    for c in 0..2 {
        let (mean, var) = mean_and_var(&channel(c));
        assert!((rm[c] - 0.1 * mean).abs() < 1e-12);
        assert!((rv[c] - (0.9 + 0.1 * var * 12.0 / 11.0)).abs() < 1e-12, "running_var uses the unbiased variance");
        assert!((y[c * 4] - (xv[c * 4] - mean) / (var + 1e-5).sqrt()).abs() < 1e-10);
    }
    assert_eq!(bn.num_batches_tracked.to_vec::<i64>()?, [1]);

    // Evaluation: running statistics, nothing updated.
    let e = bn.forward(&x, false)?.to_vec_f64()?;
    assert!((e[0] - (xv[0] - rm[0]) / (rv[0] + 1e-5).sqrt()).abs() < 1e-10);
    assert_eq!(bn.num_batches_tracked.to_vec::<i64>()?, [1]);
    assert_eq!(bn.running_mean.to_vec_f64()?, rm);

    // momentum=None: a cumulative average, 1 / batches seen.
    let cumulative = BatchNorm2d::new(&vs.pp("bn2"), 2, 1e-5, None, false)?;
    cumulative.forward(&x, true)?;
    let (mean0, _) = mean_and_var(&channel(0));
    assert!((cumulative.running_mean.to_vec_f64()?[0] - mean0).abs() < 1e-12, "the first batch has weight 1");
    cumulative.forward(&x.affine(1.0, 1.0)?, true)?;
    assert!((cumulative.running_mean.to_vec_f64()?[0] - (mean0 + 0.5)).abs() < 1e-12, "the second has weight 1/2");
    assert_eq!(cumulative.num_batches_tracked.to_vec::<i64>()?, [2]);
    Ok(())
}

#[test]
fn embedding_layer_picks_rows_and_learns_them() -> Result<()> {
    let vs = ParamStore::new(DType::F64, Device::Cpu, 7);
    let emb = Embedding::new(&vs.pp("token_embedding"), 10, 4)?;
    assert_eq!(vs.iter().next().unwrap().name, "token_embedding.weight");
    assert_eq!((emb.num_embeddings(), emb.embedding_dim()), (10, 4));
    let ids = Tensor::from_vec(vec![3i64, 0, 3, 9], &[2, 2])?;
    let out = emb.forward(&ids)?;
    assert_eq!(out.shape(), [2, 2, 4]);
    let (w, o) = (emb.weight.to_vec_f64()?, out.to_vec_f64()?);
    for (p, &id) in [3usize, 0, 3, 9].iter().enumerate() {
        assert_eq!(o[p * 4..p * 4 + 4], w[id * 4..id * 4 + 4]);
    }
    let g = out.sum_all()?.backward()?;
    let gw = g.get(&emb.weight).unwrap().to_vec_f64()?;
    assert_eq!(gw[3 * 4], 2.0, "a repeated id collects both gradients");
    assert_eq!(gw[4], 0.0);
    Ok(())
}

// ----- clipping, EMA, schedules -------------------------------------------

#[test]
fn clip_grad_norm_scales_to_the_global_norm() -> Result<()> {
    let (a, b, c) = (Tensor::zeros(&[2], DType::F32, Device::Cpu)?, Tensor::zeros(&[3], DType::F32, Device::Cpu)?, Tensor::scalar(0f32));
    let mut grads = Gradients::default();
    grads.insert(&a, Tensor::from_vec(vec![3f32, 4.0], &[2])?);
    grads.insert(&b, Tensor::from_vec(vec![12f32, 0.0, 0.0], &[3])?);
    let params = [a.clone(), b.clone(), c];
    assert_eq!(global_grad_norm(&grads, &params)?, 13.0);

    // Above the norm: untouched.
    let mut loose = grads.clone();
    assert_eq!(clip_grad_norm(&mut loose, &params, 20.0)?, 13.0);
    assert_eq!(loose.get(&a).unwrap().to_vec::<f32>()?, [3.0, 4.0]);

    let total = clip_grad_norm(&mut grads, &params, 6.5)?;
    assert_eq!(total, 13.0);
    let k = (6.5 / (13.0 + 1e-6)) as f32;
    assert_eq!(grads.get(&a).unwrap().to_vec::<f32>()?, [3.0 * k, 4.0 * k]);
    assert_eq!(grads.get(&b).unwrap().to_vec::<f32>()?, [12.0 * k, 0.0, 0.0]);
    assert!((global_grad_norm(&grads, &params)? - 6.5).abs() < 1e-5);
    Ok(())
}

#[test]
fn ema_decay_warms_up_like_diffusers() -> Result<()> {
    let ratio = EmaConfig { decay: 0.5, ..EmaConfig::default() };
    // Step 1 copies; then (1 + t) / (10 + t) with t = step − 1, capped at the decay.
    assert_eq!(ratio.decay_at(1), 0.0);
    assert_eq!(ratio.decay_at(2), 2.0 / 11.0);
    assert_eq!(ratio.decay_at(3), 3.0 / 12.0);
    assert_eq!(ratio.decay_at(9), 9.0 / 18.0);
    assert_eq!(ratio.decay_at(100), 0.5);
    let delayed = EmaConfig { update_after_step: 3, min_decay: 0.25, ..ratio };
    assert_eq!(delayed.decay_at(4), 0.0);
    assert_eq!(delayed.decay_at(5), 0.25, "2/11 raised to min_decay");
    let power = EmaConfig { decay: 0.9999, warmup: EmaWarmup::Power { inv_gamma: 1.0, power: 0.75 }, ..EmaConfig::default() };
    assert!((power.decay_at(11) - (1.0 - 11f64.powf(-0.75))).abs() < 1e-15);
    let off = EmaConfig { decay: 0.9, warmup: EmaWarmup::Off, ..EmaConfig::default() };
    assert_eq!(off.decay_at(2), 0.9);

    // The average follows: a ← a − (1 − d)(a − p).
    let p = Tensor::from_vec(vec![1f64, -2.0], &[2])?.to_variable();
    let frozen = Tensor::from_vec(vec![5f64], &[1])?;
    let mut ema = Ema::new(&[("p".into(), p.clone()), ("f".into(), frozen.clone())], ratio)?;
    let mut expect = [1.0, -2.0];
    for (step, target) in [(1u64, [3.0, 0.0]), (2, [5.0, 1.0]), (3, [-1.0, 4.0])] {
        p.assign(&Tensor::from_vec(target.to_vec(), &[2])?)?;
        frozen.assign(&Tensor::from_vec(vec![step as f64], &[1])?)?;
        let d = ema.update()?;
        assert_eq!(d, ratio.decay_at(step));
        for (e, t) in expect.iter_mut().zip(target) {
            *e -= (1.0 - d) * (*e - t);
        }
        let averages = ema.averages();
        assert_eq!(averages[0].1.to_vec::<f64>()?, expect);
        assert_eq!(averages[1].1.to_vec::<f64>()?, [step as f64], "frozen parameters are copied");
    }
    assert_eq!(ema.optimization_step(), 3);
    ema.copy_to_params()?;
    assert_eq!(p.to_vec::<f64>()?, expect);
    Ok(())
}

#[test]
fn lr_schedules_match_hand_computed_values() {
    let warm = LrSchedule::ConstantWithWarmup { warmup_steps: 4 };
    let got: Vec<f64> = (0..6).map(|s| warm.factor(s)).collect();
    assert_eq!(got, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    assert_eq!(warm.lr(2e-4, 1), 5e-5);
    assert_eq!(LrSchedule::ConstantWithWarmup { warmup_steps: 0 }.factor(0), 1.0);
    assert_eq!(LrSchedule::Constant.factor(123), 1.0);

    // Cosine, warm-up 2, 10 steps: after warm-up 0.5(1 + cos(π·(s − 2)/8)).
    let cos = LrSchedule::cosine(2, 10);
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    close(cos.factor(0), 0.0);
    close(cos.factor(1), 0.5);
    close(cos.factor(2), 1.0);
    close(cos.factor(4), 0.5 * (1.0 + std::f64::consts::FRAC_PI_4.cos()));
    close(cos.factor(6), 0.5);
    close(cos.factor(10), 0.0);
    close(cos.factor(12), 0.5 * (1.0 + (1.25 * std::f64::consts::PI).cos())); // past the end the cosine rises again, as in transformers
    let full = LrSchedule::Cosine { warmup_steps: 0, total_steps: 4, num_cycles: 1.0 };
    close(full.factor(1), 0.5);
    close(full.factor(2), 0.0);

    let lin = LrSchedule::Linear { warmup_steps: 2, total_steps: 6 };
    let got: Vec<f64> = (0..8).map(|s| lin.factor(s)).collect();
    assert_eq!(got, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
}

// ----- optimizers against PyTorch ------------------------------------------

#[derive(serde::Deserialize)]
struct FixtureParam {
    name: String,
    shape: Vec<usize>,
    init: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct FixtureRun {
    optimizer: String,
    config: HashMap<String, serde_json::Value>,
    params_after_step: Vec<HashMap<String, Vec<f64>>>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    steps: usize,
    params: Vec<FixtureParam>,
    grads: Vec<HashMap<String, Option<Vec<f64>>>>,
    runs: HashMap<String, FixtureRun>,
}

fn load_fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/optim_torch.json");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/optim_torch.json (made by make_optim_fixture.py)");
    serde_json::from_str(&text).expect("fixture parses")
}

fn f32_tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<f32>>(), shape).unwrap()
}

/// Run one fixture run with our optimizer; return the worst relative error over all steps.
fn replay(fx: &Fixture, run: &FixtureRun) -> Result<f64> {
    let num = |k: &str, default: f64| run.config.get(k).and_then(|v| v.as_f64()).unwrap_or(default);
    let params: Vec<(String, Tensor)> = fx.params.iter().map(|p| (p.name.clone(), f32_tensor(&p.init, &p.shape).to_variable())).collect();
    let mut opt: Box<dyn Optimizer> = match run.optimizer.as_str() {
        "AdamW" => Box::new(AdamW::new(
            params.clone(),
            AdamWConfig {
                lr: num("lr", 0.0),
                beta1: num("beta1", 0.0),
                beta2: num("beta2", 0.0),
                eps: num("eps", 0.0),
                weight_decay: num("weight_decay", 0.0),
            },
        )?),
        "SGD" => Box::new(Sgd::new(
            params.clone(),
            SgdConfig {
                lr: num("lr", 0.0),
                momentum: num("momentum", 0.0),
                dampening: num("dampening", 0.0),
                weight_decay: num("weight_decay", 0.0),
                nesterov: run.config.get("nesterov").and_then(|v| v.as_bool()).unwrap_or(false),
            },
        )?),
        other => panic!("unknown optimizer {other}"),
    };
    let mut worst: f64 = 0.0;
    for step in 0..fx.steps {
        let mut grads = Gradients::default();
        for (p, fp) in params.iter().zip(&fx.params) {
            if let Some(g) = &fx.grads[step][&fp.name] {
                grads.insert(&p.1, f32_tensor(g, &fp.shape));
            }
        }
        opt.step(&grads)?;
        for (name, p) in &params {
            let ours = p.to_vec_f64()?;
            let theirs = &run.params_after_step[step][name];
            for (a, b) in ours.iter().zip(theirs) {
                let err = (a - b).abs() / b.abs().max(1e-3);
                worst = worst.max(err);
            }
        }
    }
    Ok(worst)
}

#[test]
fn optimizers_reproduce_pytorch_over_ten_steps() -> Result<()> {
    let fx = load_fixture();
    assert!(fx.grads.iter().any(|g| g.values().any(|v| v.is_none())), "the fixture skips a gradient somewhere");
    let mut names: Vec<&String> = fx.runs.keys().collect();
    names.sort();
    assert!(names.len() >= 3);
    for name in names {
        let worst = replay(&fx, &fx.runs[name])?;
        println!("{name}: worst relative error {worst:.2e}");
        assert!(worst <= 1e-6, "{name}: relative error {worst:e} against torch");
    }
    Ok(())
}

#[test]
fn optimizer_state_round_trips_and_reports_what_is_missing() -> Result<()> {
    let p = Tensor::from_vec(vec![1f32, 2.0, 3.0], &[3])?.to_variable();
    let q = Tensor::from_vec(vec![-1f32], &[1])?.to_variable();
    let mut grads = Gradients::default();
    grads.insert(&p, Tensor::from_vec(vec![0.5f32, -0.25, 1.0], &[3])?);
    let mut adam = AdamW::new(vec![("p".into(), p.clone()), ("q".into(), q.clone())], AdamWConfig::default())?;
    adam.step(&grads)?;
    adam.step(&grads)?;
    assert_eq!((adam.step_count("p"), adam.step_count("q")), (2, 0), "a parameter without a gradient is skipped");
    assert_eq!(q.to_vec::<f32>()?, [-1.0]);
    let state = adam.state_tensors()?;
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["exp_avg.p", "exp_avg_sq.p", "step.p", "exp_avg.q", "exp_avg_sq.q", "step.q"]);

    let saved: HashMap<String, Tensor> = state.into_iter().map(|(n, t)| (n, t.to_dtype(DType::F64).unwrap())).collect();
    let mut fresh = AdamW::new(vec![("p".into(), p.clone()), ("q".into(), q.clone())], AdamWConfig::default())?;
    fresh.load_state_tensors(&|k| Ok(saved.get(k).cloned()))?;
    assert_eq!(fresh.step_count("p"), 2);
    for ((_, a), (_, b)) in fresh.state_tensors()?.iter().zip(adam.state_tensors()?.iter()) {
        assert_eq!(a.to_vec_f64()?, b.to_vec_f64()?);
    }
    let err = fresh.load_state_tensors(&|k| Ok(saved.get(k).cloned().filter(|_| k != "exp_avg_sq.q"))).err().unwrap().to_string();
    assert!(err.contains("exp_avg_sq.q"), "{err}");

    let mut sgd = Sgd::new(vec![("p".into(), p.clone())], SgdConfig { momentum: 0.9, ..SgdConfig::default() })?;
    assert!(sgd.state_tensors()?.is_empty(), "torch creates the momentum buffer at the first step");
    sgd.step(&grads)?;
    assert_eq!(sgd.state_tensors()?[0].0, "momentum_buffer.p");
    assert!(Sgd::new(vec![], SgdConfig { nesterov: true, ..SgdConfig::default() }).is_err());

    let mut bad = Gradients::default();
    bad.insert(&p, Tensor::zeros(&[2], DType::F32, Device::Cpu)?);
    let err = adam.step(&bad).unwrap_err().to_string();
    assert!(err.contains("`p`") && err.contains("[2]"), "{err}");
    Ok(())
}

#[test]
fn large_tensors_update_across_threads_exactly_like_small_ones() -> Result<()> {
    let n = 100_003; // above the threading threshold, not a multiple of the chunk
    let values: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
    let grad: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos() * 0.1).collect();
    let big = Tensor::from_vec(values.clone(), &[n])?.to_variable();
    let pieces: Vec<Tensor> = values.chunks(1000).map(|c| Tensor::from_vec(c.to_vec(), &[c.len()]).unwrap().to_variable()).collect();
    let named = |ts: &[Tensor]| ts.iter().enumerate().map(|(i, t)| (format!("p{i}"), t.clone())).collect::<Vec<_>>();
    let config = AdamWConfig { lr: 0.01, ..AdamWConfig::default() };
    let mut adam_big = AdamW::new(named(std::slice::from_ref(&big)), config)?;
    let mut adam_small = AdamW::new(named(&pieces), config)?;
    let sgd_config = SgdConfig { lr: 0.01, momentum: 0.9, nesterov: true, weight_decay: 0.1, ..SgdConfig::default() };
    let big_sgd = big.detach().affine(1.0, 0.0)?.to_variable();
    let mut sgd_big = Sgd::new(named(std::slice::from_ref(&big_sgd)), sgd_config)?;
    for _ in 0..3 {
        let mut g = Gradients::default();
        g.insert(&big, Tensor::from_vec(grad.clone(), &[n])?);
        g.insert(&big_sgd, Tensor::from_vec(grad.clone(), &[n])?);
        adam_big.step(&g)?;
        sgd_big.step(&g)?;
        let mut gs = Gradients::default();
        for (t, c) in pieces.iter().zip(grad.chunks(1000)) {
            gs.insert(t, Tensor::from_vec(c.to_vec(), &[c.len()])?);
        }
        adam_small.step(&gs)?;
    }
    let small: Vec<f32> = pieces.iter().flat_map(|t| t.to_vec::<f32>().unwrap()).collect();
    assert!(big.to_vec::<f32>()?.iter().zip(&small).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(big_sgd.to_vec::<f32>()?.iter().zip(&values).any(|(a, b)| a != b));
    Ok(())
}

// ----- checkpoint → resume ---------------------------------------------------

/// A Linear–tanh–dropout–Linear regressor and its whole training state.
struct Trainer {
    store: ParamStore,
    l1: Linear,
    l2: Linear,
    dropout: Dropout,
    adam: AdamW,
    ema: Ema,
    schedule: LrSchedule,
    step: u64,
    epoch: u64,
    rng: Rng,
    order: Vec<usize>,
    position: usize,
}

const SAMPLES: usize = 48;
const BATCH: usize = 8;
const BASE_LR: f64 = 0.02;

fn dataset() -> (Tensor, Tensor) {
    let mut rng = Rng::new(100);
    let x = Tensor::randn(&[SAMPLES, 4], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let y = x.narrow(1, 0, 2).unwrap().mul(&x.narrow(1, 2, 2).unwrap()).unwrap().sin().unwrap();
    (x, y)
}

impl Trainer {
    fn new(init_seed: u64) -> Result<Trainer> {
        let store = f32_store(init_seed);
        let l1 = Linear::new(&store.pp("net").pp(0), 4, 16, true)?;
        let l2 = Linear::new(&store.pp("net").pp(2), 16, 2, true)?;
        let adam = AdamW::new(store.trainable_parameters(), AdamWConfig { lr: BASE_LR, ..AdamWConfig::default() })?;
        let ema = Ema::new(&store.trainable_parameters(), EmaConfig { decay: 0.9, ..EmaConfig::default() })?;
        Ok(Trainer {
            store,
            l1,
            l2,
            dropout: Dropout::new(0.1)?,
            adam,
            ema,
            schedule: LrSchedule::cosine(3, 20),
            step: 0,
            epoch: 0,
            rng: Rng::new(2024),
            order: Vec::new(),
            position: SAMPLES,
        })
    }

    /// The next mini-batch: an epoch is a fresh shuffle drawn from the run's generator.
    fn next_batch(&mut self) -> Vec<usize> {
        if self.position + BATCH > SAMPLES {
            self.order = (0..SAMPLES).collect();
            self.rng.shuffle(&mut self.order);
            self.position = 0;
            self.epoch += 1;
        }
        self.position += BATCH;
        self.order[self.position - BATCH..self.position].to_vec()
    }

    fn train_step(&mut self, data: &(Tensor, Tensor)) -> Result<()> {
        let batch = self.next_batch();
        let pick = |t: &Tensor| -> Result<Tensor> {
            let rows = batch.iter().map(|&i| t.narrow(0, i, 1)).collect::<Result<Vec<_>>>()?;
            let v: Vec<f32> = rows.iter().flat_map(|r| r.to_vec::<f32>().unwrap()).collect();
            Tensor::from_vec(v, &[batch.len(), t.shape()[1]])
        };
        let (x, y) = (pick(&data.0)?, pick(&data.1)?);
        let h = self.dropout.forward(&self.l1.forward(&x)?.tanh()?, true, &mut self.rng)?;
        let loss = self.l2.forward(&h)?.sub(&y)?.square()?.mean_all()?;
        let mut grads = loss.backward()?;
        let params: Vec<Tensor> = self.store.trainable_parameters().into_iter().map(|(_, t)| t).collect();
        clip_grad_norm(&mut grads, &params, 0.5)?;
        self.adam.set_learning_rate(self.schedule.lr(BASE_LR, self.step));
        self.adam.step(&grads)?;
        self.ema.update()?;
        self.step += 1;
        Ok(())
    }

    /// Write everything needed to continue to a checkpoint file.
    fn save(&self, path: &std::path::Path) -> Result<()> {
        let mut meta =
            CheckpointMeta { step: self.step, epoch: self.epoch, data_position: self.position as u64, rng: self.rng, ..Default::default() };
        meta.extra.insert("data_order".into(), serde_json::json!(self.order));
        meta.extra.insert("ema_step".into(), serde_json::json!(self.ema.optimization_step()));
        let mut ck = Checkpoint::new(meta);
        ck.insert_group("param.", self.store.state_dict());
        ck.insert_group("optim.", self.adam.state_tensors()?);
        ck.insert_group("ema.", self.ema.averages());
        ck.save(path)
    }

    /// A fresh trainer continued from a checkpoint file.
    fn restore(path: &std::path::Path) -> Result<Trainer> {
        let ck = Checkpoint::load(path)?;
        // A different init seed: every value must come from the checkpoint.
        let mut t = Trainer::new(999)?;
        t.store.load_from(|name, _| Ok(ck.get(&format!("param.{name}"))?.clone()))?;
        t.adam.load_state_tensors(&|name| Ok(ck.tensors.get(&format!("optim.{name}")).cloned()))?;
        let ema_step = ck.meta.extra["ema_step"].as_u64().expect("ema_step");
        t.ema.load(ema_step, &|name| Ok(ck.tensors.get(&format!("ema.{name}")).cloned()))?;
        t.step = ck.meta.step;
        t.epoch = ck.meta.epoch;
        t.rng = ck.meta.rng;
        t.order = serde_json::from_value(ck.meta.extra["data_order"].clone()).expect("data_order");
        t.position = ck.meta.data_position as usize;
        Ok(t)
    }

    fn bits(&self) -> Vec<(String, Vec<u32>)> {
        let mut all: Vec<(String, Vec<u32>)> = Vec::new();
        for (n, t) in self.store.state_dict().into_iter().chain(self.ema.averages()) {
            all.push((n, t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()));
        }
        all
    }
}

#[test]
fn checkpoint_and_resume_is_bit_identical() -> Result<()> {
    let data = dataset();
    let mut straight = Trainer::new(7)?;
    let before = straight.bits();
    for _ in 0..20 {
        straight.train_step(&data)?;
    }

    let mut first = Trainer::new(7)?;
    for _ in 0..10 {
        first.train_step(&data)?;
    }
    let dir = tempfile::tempdir().map_err(|e| privdistill::Error::msg(e.to_string()))?;
    let path = dir.path().join("step10.safetensors");
    first.save(&path)?;
    let checkpoint_epoch = first.epoch;
    drop(first);
    let mut resumed = Trainer::restore(&path)?;
    for _ in 0..10 {
        resumed.train_step(&data)?;
    }

    assert_ne!(straight.bits(), before, "training moved the parameters");
    assert_eq!(resumed.step, 20);
    assert_eq!(resumed.rng, straight.rng);
    assert_eq!((resumed.epoch, resumed.position), (straight.epoch, straight.position));
    assert!(checkpoint_epoch < resumed.epoch, "the resumed run crosses an epoch boundary");
    for ((name, a), (_, b)) in straight.bits().iter().zip(resumed.bits().iter()) {
        assert!(a == b, "`{name}` differs after resuming");
    }
    Ok(())
}
