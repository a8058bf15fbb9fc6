//! `privdistill forward`: run any model of the pipeline on inputs from a
//! safetensors file, optionally backpropagating a weighted sum of its first
//! output — the harness of the parity tests and a tool for users.

use crate::io::safetensors::{save_safetensors, SafeTensorsFile};
use crate::models::zoo::{Model, ModelKind};
use crate::{no_grad, DType, Device, Error, Result, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// What to run and where to write.
#[derive(Clone, Debug)]
pub struct ForwardArgs {
    pub model: ModelKind,
    pub config: PathBuf,
    pub weights: PathBuf,
    pub inputs: PathBuf,
    pub output: PathBuf,
    pub device: Device,
    pub dtype: DType,
    /// Tensor `R` shaped like the first output: backpropagate L = sum(output · R).
    pub loss_weights: Option<PathBuf>,
    /// Where to write `input:<name>` and `param:<name>` gradients.
    pub grads_out: Option<PathBuf>,
    /// BatchNorm with batch statistics (running stats updated).
    pub train: bool,
}

/// Build, load, run, and write the outputs (and gradients).
pub fn forward(args: &ForwardArgs) -> Result<()> {
    if args.grads_out.is_some() != args.loss_weights.is_some() {
        return Err(Error::msg("--grads-out and --loss-weights go together"));
    }
    let config = std::fs::read_to_string(&args.config).map_err(|e| Error::io(&args.config, e))?;
    let model = Model::build(args.model, &config, args.dtype, args.device).map_err(|e| Error::file(&args.config, e.to_string()))?;
    model.load_weights(&args.weights)?;
    let file = SafeTensorsFile::open(&args.inputs)?;
    let mut inputs = HashMap::new();
    for (name, t) in file.get_all()? {
        // Float inputs become variables so their gradients can be reported.
        let t = if args.loss_weights.is_some() && t.dtype().is_float() { t.to_variable() } else { t };
        inputs.insert(name, t);
    }
    let outputs = match &args.loss_weights {
        None => no_grad(|| model.run(&inputs, args.train)).map_err(|e| Error::file(&args.inputs, e.to_string()))?,
        Some(_) => model.run(&inputs, args.train).map_err(|e| Error::file(&args.inputs, e.to_string()))?,
    };
    save_safetensors(&args.output, outputs.iter().map(|(n, t)| (n.as_str(), t)), None)?;
    if let (Some(rw), Some(gpath)) = (&args.loss_weights, &args.grads_out) {
        let r = SafeTensorsFile::open(rw)?;
        let first = &outputs[0].1;
        let weights = r.get_checked("R", first.shape(), DType::F32)?.to_dtype(first.dtype())?.to_device(first.device())?;
        let grads = first.mul(&weights)?.sum_all()?.backward()?;
        let mut out: Vec<(String, Tensor)> = Vec::new();
        for (name, t) in &inputs {
            if t.dtype().is_float() {
                out.push((format!("input:{name}"), grads.get(t).cloned().map_or_else(|| t.zeros_like(), Ok)?));
            }
        }
        for (name, p) in model.store().named_parameters() {
            let g = match grads.get(&p) {
                Some(g) => g.clone(),
                None => p.zeros_like()?,
            };
            out.push((format!("param:{name}"), g));
        }
        save_safetensors(gpath, out.iter().map(|(n, t)| (n.as_str(), t)), None)?;
    }
    Ok(())
}
