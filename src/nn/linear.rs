//! `nn.Linear`: `y = x Wᵀ + b` over the last dimension.

use crate::nn::init::Init;
use crate::nn::store::ParamPath;
use crate::{Error, Result, Tensor};

/// A fully connected layer; `weight` is `[out_features, in_features]` as in PyTorch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Create `weight` (and `bias`) under `vs` with PyTorch's default init.
    pub fn new(vs: &ParamPath, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = vs.var("weight", &[out_features, in_features], Init::default_weight())?;
        let bias = if bias { Some(vs.var("bias", &[out_features], Init::default_bias(in_features))?) } else { None };
        Ok(Linear { weight, bias })
    }

    /// A layer over existing tensors (checked for consistent shapes).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::bad_shape("linear", format!("weight must be [out, in], got {:?}", weight.shape())));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::ShapeMismatch { op: "linear bias", lhs: weight.shape().to_vec(), rhs: b.shape().to_vec() });
            }
        }
        Ok(Linear { weight, bias })
    }

    /// Size of the input's last dimension.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Size of the output's last dimension.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x Wᵀ + b` for `x` of shape `[…, in_features]`, giving `[…, out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (inp, out) = (self.in_features(), self.out_features());
        if x.rank() == 0 || x.shape()[x.rank() - 1] != inp {
            return Err(Error::bad_shape("linear", format!("input {:?} must end in in_features = {inp}", x.shape())));
        }
        // One GEMM over every leading position; Wᵀ is a strided view, never copied.
        let rows = x.numel() / inp.max(1);
        let y = x.reshape(&[rows, inp])?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        };
        let mut shape = x.shape()[..x.rank() - 1].to_vec();
        shape.push(out);
        y.reshape(&shape)
    }
}
