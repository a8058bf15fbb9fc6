//! Backward rules of the broadcasting binary ops; gradients of broadcast
//! operands are summed back to their shapes.

use crate::autograd::per_sample::sum_to_param_per_sample;
use crate::autograd::BackwardRule;
use crate::backend::op::BinaryOp;
use crate::{Error, Result, Tensor};

pub struct BinaryBackward {
    pub lhs: Tensor,
    pub rhs: Tensor,
    pub op: BinaryOp,
}
impl BackwardRule for BinaryBackward {
    fn name(&self) -> &'static str {
        self.op.name()
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.lhs, &self.rhs]
    }
    fn backward(&self, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&self.lhs, &self.rhs);
        let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
        let (ga, gb) = match self.op {
            BinaryOp::Add => (need_a.then(|| g.clone()), need_b.then(|| g.clone())),
            BinaryOp::Sub => (need_a.then(|| g.clone()), if need_b { Some(g.neg()?) } else { None }),
            BinaryOp::Mul => (if need_a { Some(g.mul(b)?) } else { None }, if need_b { Some(g.mul(a)?) } else { None }),
            BinaryOp::Div => (
                if need_a { Some(g.div(b)?) } else { None },
                // d(a/b)/db = -a/b² = -out/b
                if need_b { Some(g.mul(out)?.div(b)?.neg()?) } else { None },
            ),
            BinaryOp::Pow => (
                // d(a^b)/da = b·a^(b-1); d(a^b)/db = ln(a)·a^b
                if need_a { Some(g.mul(b)?.mul(&a.pow(&b.add_scalar(-1.0)?)?)?) } else { None },
                if need_b { Some(g.mul(out)?.mul(&a.log()?)?) } else { None },
            ),
            BinaryOp::Maximum | BinaryOp::Minimum => {
                // The gradient goes to the operand that was selected; ties split it.
                let pick_a = a.broadcast_to(out.shape())?.eq(out)?.to_dtype(g.dtype())?;
                let pick_b = b.broadcast_to(out.shape())?.eq(out)?.to_dtype(g.dtype())?;
                let share = pick_a.add(&pick_b)?;
                (
                    if need_a { Some(g.mul(&pick_a)?.div(&share)?) } else { None },
                    if need_b { Some(g.mul(&pick_b)?.div(&share)?) } else { None },
                )
            }
        };
        Ok(vec![ga.map(|t| t.sum_to_shape(a.shape())).transpose()?, gb.map(|t| t.sum_to_shape(b.shape())).transpose()?])
    }

    /// A parameter broadcast against sample-major data (a bias, a norm's or
    /// layer scale's affine weight): the full-shape gradient of the parameter
    /// operand, summed per sample over everything it was broadcast across.
    fn backward_per_sample(&self, out: &Tensor, g: &Tensor, batch: usize, param_side: &[bool]) -> Option<Result<Vec<Option<Tensor>>>> {
        if !matches!(self.op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div) {
            return None;
        }
        let run = || -> Result<Vec<Option<Tensor>>> {
            let (a, b) = (&self.lhs, &self.rhs);
            let (param_is_lhs, param, data) = match param_side {
                [true, false] => (true, a, b),
                [false, true] => (false, b, a),
                _ => return Err(Error::msg("per-sample gradients: unexpected operand classification")),
            };
            // Full-shape gradients of each operand (before summing broadcast dims).
            let full = |of_lhs: bool| -> Result<Tensor> {
                match (self.op, of_lhs) {
                    (BinaryOp::Add, _) | (BinaryOp::Sub, true) => Ok(g.clone()),
                    (BinaryOp::Sub, false) => g.neg(),
                    (BinaryOp::Mul, true) => g.mul(b),
                    (BinaryOp::Mul, false) => g.mul(a),
                    (BinaryOp::Div, true) => g.div(b),
                    _ => g.mul(out)?.div(b)?.neg(),
                }
            };
            let d_param = sum_to_param_per_sample(&full(param_is_lhs)?, batch, param.shape(), self.op.name())?;
            let d_data = if data.requires_grad() { Some(full(!param_is_lhs)?.sum_to_shape(data.shape())?) } else { None };
            Ok(if param_is_lhs { vec![Some(d_param), d_data] } else { vec![d_data, Some(d_param)] })
        };
        Some(run())
    }
}
