//! Parameter initialisers with PyTorch's defaults, drawn from our Philox
//! stream ([`Rng`]), so a model built with the same seed is the same model.

use crate::{DType, Device, Error, Result, Rng, Tensor};

/// How a new parameter's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element `value`.
    Const(f64),
    /// Uniform in `[lo, hi)`.
    Uniform {
        /// Lower bound (inclusive).
        lo: f64,
        /// Upper bound (exclusive).
        hi: f64,
    },
    /// Normal with mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `torch.nn.init.kaiming_uniform_(w, a, mode="fan_in", nonlinearity="leaky_relu")`:
    /// uniform in ±√3 · gain / √fan_in with gain = √(2 / (1 + a²)).
    KaimingUniform {
        /// Negative slope of the leaky ReLU that follows (√5 for torch's Linear/Conv default).
        a: f64,
    },
    /// `torch.nn.init.xavier_uniform_(w, gain)`: uniform in ±gain · √(6 / (fan_in + fan_out)).
    XavierUniform {
        /// Scale of the bound.
        gain: f64,
    },
}

impl Init {
    /// All zeros (biases, norm shifts).
    pub const ZEROS: Init = Init::Const(0.0);
    /// All ones (norm scales).
    pub const ONES: Init = Init::Const(1.0);

    /// The default weight init of `nn.Linear` and `nn.Conv2d`: kaiming_uniform_ with a = √5,
    /// which is uniform in ±1/√fan_in.
    pub fn default_weight() -> Init {
        Init::KaimingUniform { a: 5f64.sqrt() }
    }

    /// The default bias init of `nn.Linear` and `nn.Conv2d`: uniform in ±1/√fan_in
    /// (fan_in of the weight), or zeros when the weight has no inputs.
    pub fn default_bias(fan_in: usize) -> Init {
        let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
        Init::Uniform { lo: -bound, hi: bound }
    }

    /// The default of `nn.Embedding`: standard normal.
    pub fn default_embedding() -> Init {
        Init::Normal { mean: 0.0, std: 1.0 }
    }

    /// Draw a tensor of `shape` (advancing `rng` only for random inits).
    pub fn tensor(&self, shape: &[usize], dtype: DType, device: Device, rng: &mut Rng) -> Result<Tensor> {
        match *self {
            Init::Const(v) => Tensor::full(v, shape, dtype, device),
            Init::Uniform { lo, hi } => Tensor::rand(shape, lo, hi, dtype, device, rng),
            Init::Normal { mean, std } => Tensor::randn(shape, mean, std, dtype, device, rng),
            Init::KaimingUniform { a } => {
                let (fan_in, _) = fan_in_fan_out(shape)?;
                let gain = (2.0 / (1.0 + a * a)).sqrt();
                let bound = if fan_in > 0 { 3f64.sqrt() * gain / (fan_in as f64).sqrt() } else { 0.0 };
                Tensor::rand(shape, -bound, bound, dtype, device, rng)
            }
            Init::XavierUniform { gain } => {
                let (fan_in, fan_out) = fan_in_fan_out(shape)?;
                let bound = if fan_in + fan_out > 0 { gain * (6.0 / (fan_in + fan_out) as f64).sqrt() } else { 0.0 };
                Tensor::rand(shape, -bound, bound, dtype, device, rng)
            }
        }
    }
}

/// `(fan_in, fan_out)` of a weight shaped like PyTorch's: `[out, in, k…]`,
/// with the kernel's size multiplying both (torch's `_calculate_fan_in_and_fan_out`).
pub fn fan_in_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::bad_shape(
            "init",
            format!("fan in and fan out need a weight of rank 2 or more (shape {shape:?}); use Uniform or Normal for vectors"),
        ));
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}
