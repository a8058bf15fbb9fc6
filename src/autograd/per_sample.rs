//! Per-sample gradients (the core of DP-SGD): the gradient of every sample's
//! own loss with respect to each parameter, from one backward pass over the
//! whole batch.
//!
//! The recorded graph splits in two. A node is *parameter-side* when it is
//! one of the requested parameters, or when every input of its op is
//! parameter-side (`W.t()`, a cast or reshape of a weight): it carries no
//! data. Every other node is *data-side*. The backward pass runs as usual on
//! the data side — because samples do not interact there, each sample's
//! slice of a data-side gradient is the gradient of that sample's loss alone.
//! Where a data-side op reads a parameter-side input (the GEMM of a linear
//! layer, a convolution, a bias add, a norm's affine weights) its rule's
//! [`BackwardRule::backward_per_sample`] gives that input one gradient per
//! sample, `[batch, *shape]`, computed batched (a batched GEMM, one
//! backward-weight kernel per sample for this op alone — never the whole model
//! per sample). Those stacks then flow back through the parameter-side ops to
//! the parameters.
//!
//! Contract: every data-side tensor at such a boundary is *sample-major* —
//! its leading dimension is `batch` × something, sample `b` owning the `b`-th
//! block of rows (true of `[B·P, in]` and `[B·heads, …]` reshapes). A node
//! that couples samples (batch norm on batch statistics) is an error. A
//! constant combined with a parameter only (not data) counts as data: the
//! sample-major check then usually fails, with an error naming the op.

use super::{no_grad_guard, topological_order, BackwardRule, Gradients};
use crate::{Error, Result, Tensor, TensorId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Rows per sample of a sample-major tensor: its leading dimension over
/// `batch`, or an error naming `op` when it does not divide.
pub fn rows_per_sample(t: &Tensor, batch: usize, op: &str) -> Result<usize> {
    let lead = t.shape().first().copied().unwrap_or(1);
    if t.rank() == 0 || batch == 0 || lead % batch != 0 {
        return Err(Error::msg(format!(
            "per-sample gradients: op {op}: a data tensor of shape {:?} is not sample-major for a batch of {batch} \
             (its leading dimension must be a multiple of the batch)",
            t.shape()
        )));
    }
    Ok(lead / batch)
}

/// Sum a full-shape, sample-major gradient `full` (`[batch·r, …]`, the
/// output shape of a broadcasting op) down to one gradient per sample of a
/// parameter of shape `param` that was broadcast against it: `[batch, *param]`.
pub fn sum_to_param_per_sample(full: &Tensor, batch: usize, param: &[usize], op: &str) -> Result<Tensor> {
    let rows = rows_per_sample(full, batch, op)?;
    let n = full.rank();
    if param.len() > n {
        return Err(Error::msg(format!(
            "per-sample gradients: op {op}: parameter {param:?} has more dims than the output {:?}",
            full.shape()
        )));
    }
    let mut padded = vec![1; n - param.len()];
    padded.extend_from_slice(param);
    if padded[0] != 1 {
        return Err(Error::msg(format!(
            "per-sample gradients: op {op}: the parameter operand {param:?} is not broadcast over the batch dimension of {:?}",
            full.shape()
        )));
    }
    let mut split = vec![batch, rows];
    split.extend_from_slice(&full.shape()[1..]);
    let mut target = vec![batch, 1];
    target.extend_from_slice(&padded[1..]);
    let mut out_shape = vec![batch];
    out_shape.extend_from_slice(param);
    full.reshape(&split)?.sum_to_shape(&target)?.reshape(&out_shape)
}

/// `f(b)` for every sample `b`, stacked along a new leading dimension.
pub fn stack_per_sample(batch: usize, mut f: impl FnMut(usize) -> Result<Tensor>) -> Result<Tensor> {
    let parts = (0..batch).map(&mut f).collect::<Result<Vec<_>>>()?;
    Tensor::stack(&parts, 0)
}

/// The gradient stack `[batch, *shape]` of a parameter-side node pushed
/// through its op one sample at a time (the fallback for ops without
/// [`BackwardRule::backward_batched`]; parameter-side ops carry no data, so
/// this is cheap).
fn backward_each_sample(rule: &Arc<dyn BackwardRule>, node: &Tensor, g: &Tensor, batch: usize) -> Result<Vec<Option<Tensor>>> {
    let inputs = rule.inputs();
    let mut per_input: Vec<Vec<Tensor>> = vec![Vec::with_capacity(batch); inputs.len()];
    for b in 0..batch {
        let gb = g.narrow(0, b, 1)?.reshape(node.shape())?;
        for (i, grad) in rule.backward(node, &gb)?.into_iter().enumerate().take(inputs.len()) {
            let grad = match grad {
                Some(t) => t,
                None => Tensor::zeros(inputs[i].shape(), g.dtype(), g.device())?,
            };
            per_input[i].push(grad);
        }
    }
    per_input.into_iter().map(|parts| Tensor::stack(&parts, 0).map(Some)).collect()
}

/// Add `g` into `pending[id]`.
fn accumulate(pending: &mut HashMap<TensorId, Tensor>, id: TensorId, g: Tensor) -> Result<()> {
    let acc = match pending.remove(&id) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    pending.insert(id, acc);
    Ok(())
}

fn check_shape(rule: &dyn BackwardRule, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(Error::bad_shape(
            "backward_per_sample",
            format!("rule {} returned a gradient of shape {got:?} where {want:?} was expected", rule.name()),
        ));
    }
    Ok(())
}

impl Tensor {
    /// Per-sample gradients of this loss with respect to `params`: for each
    /// parameter reached, a tensor `[batch, *param.shape()]` whose slice `b`
    /// is the gradient of sample `b`'s loss alone. The loss must be the *sum*
    /// of the per-sample losses (or a vector of them); a batch mean gives
    /// gradients scaled by `1/batch`. Parameters the loss does not reach get
    /// no entry. Tensors requiring gradients that are not in `params` (a
    /// frozen encoder) are treated as data and get none.
    ///
    /// The sum of the slices is what [`Tensor::backward`] gives. See the
    /// module documentation for the sample-major contract.
    pub fn backward_per_sample(&self, batch: usize, params: &[Tensor]) -> Result<Gradients> {
        let _g = no_grad_guard();
        if batch == 0 {
            return Err(Error::msg("per-sample gradients: the batch is empty"));
        }
        let order = topological_order(self);
        let wanted: HashSet<TensorId> = params.iter().map(Tensor::id).collect();
        let mut param_side: HashSet<TensorId> = HashSet::new();
        for node in &order {
            let is_param_side = match node.grad_fn() {
                None => wanted.contains(&node.id()),
                Some(rule) => {
                    let inputs = rule.inputs();
                    !inputs.is_empty() && inputs.iter().all(|i| param_side.contains(&i.id()))
                }
            };
            if is_param_side {
                param_side.insert(node.id());
            }
        }
        if param_side.contains(&self.id()) {
            return Err(Error::msg("per-sample gradients: the loss depends on the parameters alone, not on any data"));
        }

        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        let mut pending_per_sample: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), self.ones_like()?);
        let mut leaves = Gradients::default();
        for node in order.iter().rev() {
            if param_side.contains(&node.id()) {
                let Some(g) = pending_per_sample.remove(&node.id()) else { continue };
                let Some(rule) = node.grad_fn() else {
                    leaves.map.insert(node.id(), g.contiguous()?);
                    continue;
                };
                let grads = match rule.backward_batched(node, &g) {
                    Some(r) => r?,
                    None => backward_each_sample(rule, node, &g, batch)?,
                };
                drop(g);
                for (input, ig) in rule.inputs().into_iter().zip(grads) {
                    let Some(ig) = ig else { continue };
                    let mut want = vec![batch];
                    want.extend_from_slice(input.shape());
                    check_shape(rule.as_ref(), ig.shape(), &want)?;
                    accumulate(&mut pending_per_sample, input.id(), ig)?;
                }
                continue;
            }
            let Some(g) = pending.remove(&node.id()) else { continue };
            // A data-side leaf: an input, or a variable not asked for.
            let Some(rule) = node.grad_fn() else { continue };
            if rule.mixes_samples() {
                return Err(Error::msg(format!(
                    "per-sample gradients: op {} couples the samples of the batch (use evaluation mode or a per-sample norm such as group norm)",
                    rule.name()
                )));
            }
            let inputs = rule.inputs();
            let mask: Vec<bool> = inputs.iter().map(|i| param_side.contains(&i.id())).collect();
            let grads = if mask.iter().any(|&m| m) {
                rule.backward_per_sample(node, &g, batch, &mask)
                    .ok_or_else(|| Error::msg(format!("per-sample gradients: op {} has no per-sample rule", rule.name())))??
            } else {
                rule.backward(node, &g)?
            };
            drop(g);
            for ((input, ig), is_param) in inputs.into_iter().zip(grads).zip(mask) {
                let Some(ig) = ig else { continue };
                if is_param {
                    let mut want = vec![batch];
                    want.extend_from_slice(input.shape());
                    check_shape(rule.as_ref(), ig.shape(), &want)?;
                    accumulate(&mut pending_per_sample, input.id(), ig)?;
                } else if input.requires_grad() {
                    check_shape(rule.as_ref(), ig.shape(), input.shape())?;
                    accumulate(&mut pending, input.id(), ig)?;
                }
            }
        }
        Ok(leaves)
    }
}
