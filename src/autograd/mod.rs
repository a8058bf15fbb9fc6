//! Reverse-mode autograd. Every differentiable op records a [`BackwardRule`]
//! holding its inputs and whatever it saved; [`Tensor::backward`] orders the
//! recorded nodes (the tape) and replays them in reverse, accumulating
//! gradients. Rules are written with tensor ops under `no_grad`, so they run
//! on any backend.

pub mod per_sample;
pub mod rules;

use crate::{Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// The backward rule of one recorded op.
pub trait BackwardRule: Send + Sync {
    /// The op's name, for debugging and error messages.
    fn name(&self) -> &'static str;
    /// The op's tensor inputs, in the order `backward` returns their gradients.
    fn inputs(&self) -> Vec<&Tensor>;
    /// Gradients with respect to each input given the gradient of the output
    /// (`None` for inputs that get none, e.g. integer indices).
    fn backward(&self, output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;

    /// Per-sample backward of a data-side op some of whose inputs depend on
    /// the parameters alone (see [`per_sample`]): for each input marked in
    /// `param_side`, the gradient of each of the `batch` samples,
    /// `[batch, *input.shape()]`; for the other inputs the ordinary (summed)
    /// gradient, as [`BackwardRule::backward`] gives it. `grad_output` is
    /// sample-major (its leading dimension is `batch` × something). `None`:
    /// the op has no per-sample rule.
    fn backward_per_sample(
        &self,
        _output: &Tensor,
        _grad_output: &Tensor,
        _batch: usize,
        _param_side: &[bool],
    ) -> Option<Result<Vec<Option<Tensor>>>> {
        None
    }

    /// Backward of a parameter-side op (a view or cast of a weight) for a
    /// stack of gradients at once: `grad_output` is `[batch, *output.shape()]`
    /// and each input's gradient `[batch, *input.shape()]`. `None`: the
    /// per-sample engine applies [`BackwardRule::backward`] to each slice.
    fn backward_batched(&self, _output: &Tensor, _grad_output: &Tensor) -> Option<Result<Vec<Option<Tensor>>>> {
        None
    }

    /// Whether the op couples the samples of a batch (batch norm on batch
    /// statistics), which makes per-sample gradients meaningless.
    fn mixes_samples(&self) -> bool {
        false
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record themselves on the tape on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    previous: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Turn recording off until the guard is dropped (inference, optimizer steps).
pub fn no_grad_guard() -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    GradModeGuard { previous }
}

/// Run `f` on a worker of the CPU thread pool, with this thread's grad mode.
///
/// Every CPU op with a parallel region hands it to the rayon pool. From a
/// thread outside the pool (a program's main thread) each hand-off puts the
/// caller to sleep until the region ends and wakes it again: a pair of
/// context switches per op, which cost a fifth of a demo-UNet forward at
/// batch 8 on two cores. From a worker, the worker joins the region itself
/// and the others steal from it. Model entry points (forward passes,
/// `backward`, optimizer steps) run through here; inside the pool it is a
/// plain call.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let grad_enabled = is_grad_enabled();
    rayon::scope(|_| {
        // Grad mode is per thread: the worker takes the caller's for the call.
        let _restore = GradModeGuard { previous: GRAD_ENABLED.with(|g| g.replace(grad_enabled)) };
        f()
    })
}

/// Run `f` with recording off.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = no_grad_guard();
    f()
}

/// Gradients of the leaves (variables) a backward pass reached, by tensor id.
#[derive(Default, Clone)]
pub struct Gradients {
    map: HashMap<TensorId, Tensor>,
}

impl Gradients {
    /// The gradient of `t`, if it received one.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }
    /// Take the gradient of `t` out of the store.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }
    /// Set the gradient of `t`.
    pub fn insert(&mut self, t: &Tensor, g: Tensor) {
        self.map.insert(t.id(), g);
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Add another pass's gradients into these (gradient accumulation).
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        no_grad(|| {
            for (id, g) in other.map {
                let sum = match self.map.remove(&id) {
                    Some(prev) => prev.add(&g)?,
                    None => g,
                };
                self.map.insert(id, sum);
            }
            Ok(())
        })
    }
    /// Multiply every gradient by `s` (e.g. 1/accumulation steps).
    pub fn scale(&mut self, s: f64) -> Result<()> {
        no_grad(|| {
            for g in self.map.values_mut() {
                *g = g.affine(s, 0.0)?;
            }
            Ok(())
        })
    }
}

/// Nodes reachable from `root` through recorded rules, children before parents.
pub(crate) fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited: HashSet<TensorId> = HashSet::new();
    // Iterative DFS: deep graphs (a UNet's hundreds of ops) must not overflow the stack.
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(rule) = t.grad_fn() {
            for input in rule.inputs() {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

impl Tensor {
    /// Backpropagate from this scalar (or from a tensor with implicit ones as
    /// its gradient) and return the gradients of every variable reached.
    pub fn backward(&self) -> Result<Gradients> {
        let seed = no_grad(|| self.ones_like())?;
        self.backward_with(seed)
    }

    /// Backpropagate with an explicit gradient of this tensor.
    pub fn backward_with(&self, grad: Tensor) -> Result<Gradients> {
        crate::autograd::on_workers(|| {
            let _g = no_grad_guard();
            if grad.shape() != self.shape() {
                return Err(crate::Error::ShapeMismatch { op: "backward", lhs: self.shape().to_vec(), rhs: grad.shape().to_vec() });
            }
            let order = topological_order(self);
            let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
            pending.insert(self.id(), grad);
            let mut leaves = Gradients::default();
            for node in order.iter().rev() {
                let Some(g) = pending.remove(&node.id()) else { continue };
                match node.grad_fn() {
                    None => {
                        if node.requires_grad() {
                            leaves.map.insert(node.id(), g);
                        }
                    }
                    Some(rule) => {
                        let input_grads = rule.backward(node, &g)?;
                        drop(g); // intermediate gradients are freed as soon as they are used
                        for (input, ig) in rule.inputs().into_iter().zip(input_grads) {
                            let Some(ig) = ig else { continue };
                            if !input.requires_grad() {
                                continue;
                            }
                            if ig.shape() != input.shape() {
                                return Err(crate::Error::bad_shape(
                                    "backward",
                                    format!(
                                        "rule {} returned gradient of shape {:?} for input of shape {:?}",
                                        rule.name(),
                                        ig.shape(),
                                        input.shape()
                                    ),
                                ));
                            }
                            let acc = match pending.remove(&input.id()) {
                                Some(prev) => prev.add(&ig)?,
                                None => ig,
                            };
                            pending.insert(input.id(), acc);
                        }
                    }
                }
            }
            Ok(leaves)
        })
    }
}

#[cfg(test)]
mod on_workers_tests {
    use super::*;

    #[test]
    fn runs_on_a_worker_with_the_callers_grad_mode() {
        assert!(rayon::current_thread_index().is_none(), "the test thread is outside the pool");
        assert_eq!(on_workers(|| (rayon::current_thread_index().is_some(), is_grad_enabled())), (true, true));
        assert!(!no_grad(|| on_workers(is_grad_enabled)), "no_grad carries over to the worker");
        // The worker's own mode is restored afterwards, even when the call panics.
        let caught = std::panic::catch_unwind(|| no_grad(|| on_workers(|| panic!("inside"))));
        assert!(caught.is_err());
        let modes: Vec<bool> = rayon::broadcast(|_| is_grad_enabled());
        assert!(modes.iter().all(|&m| m), "every worker is back to recording: {modes:?}");
    }
}
