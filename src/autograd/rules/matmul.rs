//! Backward rule of matmul: dA = dC·Bᵀ, dB = Aᵀ·dC, summed over broadcast batch dims.

use crate::autograd::per_sample::rows_per_sample;
use crate::autograd::BackwardRule;
use crate::{Error, Result, Tensor};

pub struct MatmulBackward {
    pub lhs: Tensor,
    pub rhs: Tensor,
}
impl BackwardRule for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.lhs, &self.rhs]
    }
    fn backward(&self, _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let ga = if self.lhs.requires_grad() { Some(g.matmul(&self.rhs.t()?)?.sum_to_shape(self.lhs.shape())?) } else { None };
        let gb = if self.rhs.requires_grad() { Some(self.lhs.t()?.matmul(g)?.sum_to_shape(self.rhs.shape())?) } else { None };
        Ok(vec![ga, gb])
    }

    /// A weight on one side, sample-major data on the other. Weight on the
    /// right (`x Wᵀ`, lhs `[B·P, in]` or `[B, …, in]`): sample b's gradient is
    /// `x_bᵀ g_b`, one batched GEMM. Weight on the left (`W x`, rhs
    /// `[B·T, …, k, n]`): `Σ_t g_bt x_btᵀ`.
    fn backward_per_sample(&self, _out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        let run = || -> Result<Vec<Option<Tensor>>> {
            let (a, b) = (&self.lhs, &self.rhs);
            match param_side {
                [false, true] => {
                    if b.rank() != 2 {
                        return Err(Error::msg(format!(
                            "per-sample gradients: op matmul: a parameter right operand must be a matrix, got {:?}",
                            b.shape()
                        )));
                    }
                    let (k, n) = (b.shape()[0], b.shape()[1]);
                    let rows = a.numel() / k.max(1);
                    rows_per_sample(a, batch, "matmul")?;
                    let per = rows / batch;
                    let x = a.reshape(&[batch, per, k])?;
                    let gb = g.reshape(&[batch, per, n])?;
                    let dw = x.transpose(1, 2)?.matmul(&gb)?;
                    let da = if a.requires_grad() { Some(g.matmul(&b.t()?)?.sum_to_shape(a.shape())?) } else { None };
                    Ok(vec![da, Some(dw)])
                }
                [true, false] => {
                    if a.rank() != 2 || b.rank() < 3 {
                        return Err(Error::msg(format!(
                            "per-sample gradients: op matmul: a parameter left operand must be a matrix and the data batched, got {:?} and {:?}",
                            a.shape(),
                            b.shape()
                        )));
                    }
                    rows_per_sample(b, batch, "matmul")?;
                    let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[b.rank() - 1]);
                    let items = b.numel() / (k * n).max(1) / batch;
                    let x = b.reshape(&[batch, items, k, n])?;
                    let gb = g.reshape(&[batch, items, m, n])?;
                    let dw = gb.matmul(&x.transpose(2, 3)?)?.sum(&[1], false)?;
                    let db = if b.requires_grad() { Some(a.t()?.matmul(g)?.sum_to_shape(b.shape())?) } else { None };
                    Ok(vec![Some(dw), db])
                }
                _ => Err(Error::msg("per-sample gradients: op matmul: unexpected operand classification")),
            }
        };
        Some(run())
    }
}
