//! Every model of the pipeline behind one interface: build from a config,
//! load weights by the reference's names, run on named inputs. Used by the
//! `forward` command, the parity tests and the benchmarks.

use crate::io::safetensors::SafeTensorsFile;
use crate::models::bert::{BertConfig, BertModel};
use crate::models::clip_text::{ClipTextConfig, ClipTextModel};
use crate::models::densenet::{DenseNet, DenseNetConfig};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::siamese::{SiameseConfig, SiameseReid};
use crate::models::unet::{UNet2DConditionModel, UNetConfig};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::nn::ParamStore;
use crate::{DType, Device, Error, Result, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Which network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    Unet,
    VaeEncoder,
    VaeDecoder,
    ClipText,
    Bert,
    Resnet50,
    Densenet121,
    SiameseReid,
}

impl ModelKind {
    /// Input names, each with the dtypes it accepts (first = the one to use).
    pub fn inputs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ModelKind::Unet => {
                &[("sample", "float [B, C, H, W]"), ("timestep", "i64 or float [B] or [1]"), ("encoder_hidden_states", "float [B, L, D]")]
            }
            ModelKind::VaeEncoder => &[("sample", "float [B, C, H, W]")],
            ModelKind::VaeDecoder => &[("latent", "float [B, C, h, w]")],
            ModelKind::ClipText => &[("input_ids", "i64 [B, L]")],
            ModelKind::Bert => &[("input_ids", "i64 [B, L]"), ("attention_mask", "i64 [B, L]")],
            ModelKind::Resnet50 | ModelKind::Densenet121 => &[("pixel_values", "float [B, C, H, W]")],
            ModelKind::SiameseReid => &[("image_a", "float [B, C, H, W]"), ("image_b", "float [B, C, H, W]")],
        }
    }

    /// Output names, in order; the first drives `--loss-weights`.
    pub fn outputs(self) -> &'static [&'static str] {
        match self {
            ModelKind::Unet | ModelKind::VaeDecoder => &["sample"],
            ModelKind::VaeEncoder => &["mean", "logvar"],
            ModelKind::ClipText | ModelKind::Bert => &["last_hidden_state", "pooler_output"],
            ModelKind::Resnet50 | ModelKind::Densenet121 => &["logits", "features"],
            ModelKind::SiameseReid => &["logit", "score"],
        }
    }
}

enum Net {
    Unet(Box<UNet2DConditionModel>),
    Vae(Box<AutoencoderKL>),
    ClipText(ClipTextModel),
    Bert(BertModel),
    ResNet(ResNet),
    DenseNet(DenseNet),
    Siamese(SiameseReid),
}

/// A built model and its parameters.
pub struct Model {
    kind: ModelKind,
    net: Net,
    store: ParamStore,
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::msg(format!("{what} config: {e}")))
}

impl Model {
    /// Build `kind` from its config JSON (diffusers/transformers `config.json`,
    /// or constructor arguments for the torchvision models), with fresh parameters.
    pub fn build(kind: ModelKind, config_json: &str, dtype: DType, device: Device) -> Result<Model> {
        let store = ParamStore::new(dtype, device, 0);
        let vs = store.root();
        let net = match kind {
            ModelKind::Unet => Net::Unet(Box::new(UNet2DConditionModel::new(&vs, &UNetConfig::from_json(config_json)?)?)),
            ModelKind::VaeEncoder | ModelKind::VaeDecoder => {
                Net::Vae(Box::new(AutoencoderKL::new(&vs, &VaeConfig::from_json(config_json)?)?))
            }
            ModelKind::ClipText => Net::ClipText(ClipTextModel::new(&vs, &parse::<ClipTextConfig>(config_json, "CLIP text")?)?),
            ModelKind::Bert => Net::Bert(BertModel::new(&vs, &parse::<BertConfig>(config_json, "BERT")?)?),
            ModelKind::Resnet50 => Net::ResNet(ResNet::new(&vs, &parse::<ResNetConfig>(config_json, "ResNet")?)?),
            ModelKind::Densenet121 => Net::DenseNet(DenseNet::new(&vs, &parse::<DenseNetConfig>(config_json, "DenseNet")?)?),
            ModelKind::SiameseReid => Net::Siamese(SiameseReid::new(&vs, &parse::<SiameseConfig>(config_json, "siamese")?)?),
        };
        Ok(Model { kind, net, store })
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Load every parameter and buffer from a safetensors file by name.
    /// A CLIP text encoder also loads from files whose names lack the
    /// `text_model.` prefix (newer transformers); BatchNorm's
    /// `num_batches_tracked` may be absent (older torchvision files).
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let file = SafeTensorsFile::open(path)?;
        let missing = self.store.load_matching(|name, shape| {
            let candidates = [name.to_string(), name.strip_prefix("text_model.").unwrap_or(name).to_string()];
            for c in candidates {
                if file.contains(&c) {
                    return file.get_checked(&c, shape, file.info(&c)?.0).map(Some);
                }
            }
            Ok(None)
        })?;
        let missing: Vec<String> = missing.into_iter().filter(|n| !n.ends_with("num_batches_tracked")).collect();
        if !missing.is_empty() {
            let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
            return Err(Error::file(
                path,
                format!(
                    "{} parameters of the {:?} model are missing, e.g. {shown:?} — is this the right weights file for the config?",
                    missing.len(),
                    self.kind
                ),
            ));
        }
        Ok(())
    }

    /// Run on named inputs; returns the outputs by name, in [`ModelKind::outputs`] order.
    /// `train` selects BatchNorm batch statistics (running stats are updated).
    pub fn run(&self, inputs: &HashMap<String, Tensor>, train: bool) -> Result<Vec<(String, Tensor)>> {
        let expected = self.kind.inputs();
        let get = |name: &str| -> Result<&Tensor> {
            inputs.get(name).ok_or_else(|| {
                let want: Vec<String> = expected.iter().map(|(n, d)| format!("`{n}` ({d})")).collect();
                let have: Vec<&String> = inputs.keys().collect();
                Error::msg(format!("input `{name}` is missing: {:?} expects {} — got {have:?}", self.kind, want.join(", ")))
            })
        };
        for name in inputs.keys() {
            if !expected.iter().any(|(n, _)| n == name) {
                let want: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
                return Err(Error::msg(format!("unexpected input `{name}`: {:?} takes {want:?}", self.kind)));
            }
        }
        let dtype = self.store.dtype();
        let float = |name: &str| -> Result<Tensor> {
            let t = get(name)?;
            if !t.dtype().is_float() {
                return Err(Error::msg(format!("input `{name}` must be a float tensor, got {:?}", t.dtype())));
            }
            t.to_dtype(dtype)?.to_device(self.store.device())
        };
        let int = |name: &str| -> Result<Tensor> {
            let t = get(name)?;
            if t.dtype().is_float() {
                return Err(Error::msg(format!("input `{name}` must be an integer tensor (i64), got {:?}", t.dtype())));
            }
            t.to_dtype(DType::I64)?.to_device(self.store.device())
        };
        let names = self.kind.outputs();
        let outs: Vec<Tensor> = match &self.net {
            Net::Unet(m) => {
                let ts = get("timestep")?.to_vec_f64()?;
                vec![m.forward(&float("sample")?, &ts, &float("encoder_hidden_states")?)?]
            }
            Net::Vae(m) if self.kind == ModelKind::VaeEncoder => {
                let d = m.encode(&float("sample")?)?;
                vec![d.mean, d.logvar]
            }
            Net::Vae(m) => vec![m.decode(&float("latent")?)?],
            Net::ClipText(m) => {
                let o = m.forward(&int("input_ids")?)?;
                vec![o.last_hidden_state, o.pooler_output]
            }
            Net::Bert(m) => {
                let mask = inputs.contains_key("attention_mask").then(|| int("attention_mask")).transpose()?;
                let o = m.forward(&int("input_ids")?, mask.as_ref())?;
                vec![o.last_hidden_state, o.pooler_output]
            }
            Net::ResNet(m) => {
                let o = m.forward(&float("pixel_values")?, train)?;
                vec![o.logits, o.features]
            }
            Net::DenseNet(m) => {
                let o = m.forward(&float("pixel_values")?, train)?;
                vec![o.logits, o.features]
            }
            Net::Siamese(m) => {
                let o = m.forward(&float("image_a")?, &float("image_b")?, train)?;
                vec![o.logit, o.score]
            }
        };
        Ok(names.iter().map(|n| n.to_string()).zip(outs).collect())
    }
}
