//! Scaled dot-product attention, `softmax(scale·QKᵀ + mask)·V`, computed
//! blockwise with an online softmax (see `backend::cpu::attention`).

use super::with_contiguous;
use super::{cuda_tensor, same_device, same_dtype, unsupported, with_cuda};
use crate::autograd::rules::attention::AttentionBackward;
use crate::backend::cpu::attention::{AttentionDims, AttentionGradInputs, HeadMatrices, Operand, Scores};
use crate::backend::{cpu, cuda};
use crate::tensor::{Float, Storage, Tensor};
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// `softmax(scale·q·kᵀ + mask)·v`; see [`Tensor::scaled_dot_product_attention`].
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    q.scaled_dot_product_attention(k, v, mask, causal, scale)
}

/// The validated sizes of one call, with the mask's broadcast shape.
struct Checked {
    dims: AttentionDims,
    out_shape: [usize; 4],
    score_shape: [usize; 4],
    scale: f64,
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: Option<f64>) -> Result<Checked> {
    let op = "scaled_dot_product_attention";
    for (name, t) in [("query", q), ("key", k), ("value", v)] {
        if t.rank() != 4 {
            return Err(Error::bad_shape(op, format!("{name} must be [batch, heads, length, head_dim], got shape {:?}", t.shape())));
        }
    }
    same_device(op, q, k)?;
    same_device(op, q, v)?;
    same_dtype(op, q, k)?;
    same_dtype(op, q, v)?;
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if qs[..2] != ks[..2] || qs[..2] != vs[..2] || qs[3] != ks[3] || ks[2] != vs[2] {
        return Err(Error::bad_shape(
            op,
            format!("query {qs:?}, key {ks:?} and value {vs:?} must be [B, H, Lq, D], [B, H, Lk, D] and [B, H, Lk, Dv]"),
        ));
    }
    if qs[3] == 0 || vs[3] == 0 {
        return Err(Error::bad_shape(op, "head dimensions must be positive"));
    }
    let score_shape = [qs[0], qs[1], qs[2], ks[2]];
    if let Some(m) = mask {
        same_device(op, q, m)?;
        if m.dtype() != q.dtype() {
            return Err(Error::bad_shape(
                op,
                format!("the mask must be additive in the query dtype {:?} (0 to keep, -inf to hide), got {:?}", q.dtype(), m.dtype()),
            ));
        }
        if m.rank() > 4 {
            return Err(Error::bad_shape(op, format!("mask of shape {:?} does not broadcast to {score_shape:?}", m.shape())));
        }
        m.layout().broadcast_to(&score_shape)?;
    }
    Ok(Checked {
        dims: AttentionDims { bh: qs[0] * qs[1], lq: qs[2], lk: ks[2], d: qs[3], dv: vs[3] },
        out_shape: [qs[0], qs[1], qs[2], vs[3]],
        score_shape,
        scale: scale.unwrap_or(1.0 / (qs[3] as f64).sqrt()),
    })
}

/// The sizes of a checked call, as the CUDA kernels take them.
fn cuda_shape(c: &Checked) -> cuda::AttentionShape {
    let [batch, heads, lq, lk] = c.score_shape;
    cuda::AttentionShape { batch, heads, lq, lk, d: c.dims.d, dv: c.out_shape[3] }
}

/// The elements of a CPU storage of type `T`.
fn slice<T: Float>(st: &Storage) -> Result<&[T]> {
    st.cpu()
        .and_then(|s| s.as_slice::<T>())
        .ok_or_else(|| Error::msg("scaled_dot_product_attention: expected CPU tensors of one float dtype"))
}

/// Run `f` with the CPU score definition of (q, k, mask) and the value operand.
fn with_operands<T: Float, R>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    c: &Checked,
    f: impl FnOnce(Scores<T>, Operand<T>) -> R,
) -> Result<R> {
    let guards = [q.storage(), k.storage(), v.storage()];
    let (qd, kd, vd) = (slice(&guards[0])?, slice(&guards[1])?, slice(&guards[2])?);
    let mask_guard = mask.map(|m| m.storage());
    let mask_layout = mask.map(|m| m.layout().broadcast_to(&c.score_shape)).transpose()?;
    let mask_op = match (&mask_guard, &mask_layout) {
        (Some(g), Some(l)) => Some(Operand { data: slice(g)?, heads: HeadMatrices::new(l) }),
        _ => None,
    };
    let scores = Scores {
        q: Operand { data: qd, heads: HeadMatrices::new(q.layout()) },
        k: Operand { data: kd, heads: HeadMatrices::new(k.layout()) },
        mask: mask_op,
        causal,
        scale: T::from_f64(c.scale),
        dims: c.dims,
    };
    Ok(f(scores, Operand { data: vd, heads: HeadMatrices::new(v.layout()) }))
}

impl Tensor {
    /// Scaled dot-product attention with this tensor as the queries:
    /// `softmax(scale·q·kᵀ + mask)·v` for `q` `[B, H, Lq, D]`, `k`
    /// `[B, H, Lk, D]`, `v` `[B, H, Lk, Dv]`, giving `[B, H, Lq, Dv]`.
    ///
    /// - `mask`: additive, in the query dtype, broadcastable to `[B, H, Lq, Lk]`
    ///   (e.g. a BERT key-padding mask `[B, 1, 1, Lk]` of 0 and −∞ or a large
    ///   negative value). It receives no gradient.
    /// - `causal`: query `i` attends to keys `j <= i` (top-left aligned, like
    ///   PyTorch's `is_causal`); may be combined with `mask`.
    /// - `scale`: defaults to `1/sqrt(D)`.
    ///
    /// Computed blockwise (FlashAttention style) without materialising the
    /// `Lq × Lk` score matrix. A query row whose scores are all −∞ gets an
    /// output of 0 (and zero gradients) rather than NaN.
    pub fn scaled_dot_product_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        scale: Option<f64>,
    ) -> Result<Tensor> {
        let (out, lse) = self.scaled_dot_product_attention_with_lse(k, v, mask, causal, scale)?;
        // The shapes are valid by now; the backward needs the scale actually used.
        let scale = scale.unwrap_or(1.0 / (self.shape()[3] as f64).sqrt());
        Ok(out.recorded(&[self, k, v], || {
            Arc::new(AttentionBackward { q: self.clone(), k: k.clone(), v: v.clone(), mask: mask.cloned(), causal, scale, lse })
        }))
    }

    /// The attention output (not recorded on the tape) and the `[B, H, Lq]`
    /// log-sum-exp of each query row's scores (−∞ for fully masked rows),
    /// which the backward needs. On a GPU the log-sum-exp is kept in the
    /// accumulation dtype (f32 for f16/bf16 queries, f64 for f64).
    pub fn scaled_dot_product_attention_with_lse(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        scale: Option<f64>,
    ) -> Result<(Tensor, Tensor)> {
        let op = "scaled_dot_product_attention";
        let c = check(self, k, v, mask, scale)?;
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (out, lse) = with_operands::<T, _>(self, k, v, mask, causal, &c, cpu::attention::attention_fwd)?;
                Ok((Tensor::from_cpu_vec(out, &c.out_shape), Tensor::from_cpu_vec(lse, &c.out_shape[..3])))
            }),
            Device::Cuda(_) => {
                let mask_layout = mask.map(|m| m.layout().broadcast_to(&c.score_shape)).transpose()?;
                let (out, lse) = with_cuda(op, &[Some(self), Some(k), Some(v), mask], |o| {
                    let &[Some(q), Some(k), Some(v), m] = o else { return Err(unsupported(op, self)) };
                    let m = m.zip(mask_layout.as_ref()).map(|(m, l)| cuda::Operand::new(m.storage, l));
                    cuda::attention_forward(q, k, v, m, &cuda_shape(&c), causal, c.scale)
                })?;
                Ok((cuda_tensor(out, &c.out_shape), cuda_tensor(lse, &c.out_shape[..3])))
            }
        }
    }

    /// Gradients `(dq, dk, dv)` of attention with these queries, from the
    /// forward's output `out`, its log-sum-exp `lse` and the output gradient
    /// `grad`; `scale` is the value the forward used. Blockwise, like the forward.
    #[allow(clippy::too_many_arguments)]
    pub fn scaled_dot_product_attention_backward(
        &self,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
        scale: f64,
        out: &Tensor,
        lse: &Tensor,
        grad: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "scaled_dot_product_attention_backward";
        let c = check(self, k, v, mask, Some(scale))?;
        if out.shape() != c.out_shape || grad.shape() != c.out_shape || lse.shape() != &c.out_shape[..3] {
            return Err(Error::bad_shape(
                op,
                format!("output {:?}, gradient {:?} and lse {:?} do not match {:?}", out.shape(), grad.shape(), lse.shape(), c.out_shape),
            ));
        }
        let AttentionDims { lk, d, .. } = c.dims;
        let [b, h, lq, dv] = c.out_shape;
        match self.device() {
            Device::Cpu => dispatch_float!(self.dtype(), op, |T| {
                let (dq, dk, dvv) = with_contiguous::<T, _>(out, |o| {
                    with_contiguous::<T, _>(grad, |g| {
                        with_contiguous::<T, _>(lse, |l| {
                            with_operands::<T, _>(self, k, v, mask, causal, &c, |sc, vop| {
                                cpu::attention::attention_bwd(sc, AttentionGradInputs { v: vop, out: o, grad: g, lse: l })
                            })
                        })
                    })
                })????;
                Ok((
                    Tensor::from_cpu_vec(dq, &[b, h, lq, d]),
                    Tensor::from_cpu_vec(dk, &[b, h, lk, d]),
                    Tensor::from_cpu_vec(dvv, &[b, h, lk, dv]),
                ))
            }),
            Device::Cuda(_) => {
                let mask_layout = mask.map(|m| m.layout().broadcast_to(&c.score_shape)).transpose()?;
                let (dq, dk, dvv) = with_cuda(op, &[Some(self), Some(k), Some(v), mask, Some(out), Some(lse), Some(grad)], |o| {
                    let &[Some(q), Some(k), Some(v), m, Some(out), Some(lse), Some(grad)] = o else { return Err(unsupported(op, self)) };
                    let m = m.zip(mask_layout.as_ref()).map(|(m, l)| cuda::Operand::new(m.storage, l));
                    cuda::attention_backward(q, k, v, m, &cuda_shape(&c), causal, scale, out, lse, grad)
                })?;
                Ok((cuda_tensor(dq, &[b, h, lq, d]), cuda_tensor(dk, &[b, h, lk, d]), cuda_tensor(dvv, &[b, h, lk, dv])))
            }
        }
    }
}
