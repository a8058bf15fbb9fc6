//! 2-d convolution over NCHW tensors with PyTorch's `F.conv2d` semantics,
//! and the backward kernels its rule calls (also usable on their own).

use super::{cuda_tensor, same_device, same_dtype, unsupported, with_contiguous, with_cuda};
use crate::autograd::rules::conv::Conv2dBackward;
use crate::backend::cpu::conv::Conv2dGeometry;
use crate::backend::{cpu, cuda};
use crate::tensor::Tensor;
use crate::{dispatch_float, Device, Error, Result};
use std::sync::Arc;

/// Stride, padding, dilation (each as [height, width]) and groups of a 2-d
/// convolution, as in `torch.nn.Conv2d`. The default is stride 1, no
/// padding, no dilation, one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

impl Conv2dParams {
    /// The same stride and padding on both axes, no dilation, one group
    /// (`nn.Conv2d(..., stride=stride, padding=padding)`).
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams { stride: [stride; 2], padding: [padding; 2], ..Default::default() }
    }
    /// These parameters with `dilation` on both axes.
    pub fn with_dilation(self, dilation: usize) -> Self {
        Conv2dParams { dilation: [dilation; 2], ..self }
    }
    /// These parameters with `groups` groups (`groups == channels` is depthwise).
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dParams { groups, ..self }
    }
}

/// Check `input` `[N, C_in, H, W]` against `weight` `[C_out, C_in/groups, kh, kw]`
/// and `params`, and work out the output size.
fn conv2d_geometry(op: &'static str, input: &[usize], weight: &[usize], params: Conv2dParams) -> Result<Conv2dGeometry> {
    let Conv2dParams { stride, padding, dilation, groups } = params;
    if input.len() != 4 || weight.len() != 4 {
        return Err(Error::bad_shape(
            op,
            format!("input must be [N, C_in, H, W] and weight [C_out, C_in/groups, kh, kw], got input {input:?} and weight {weight:?}"),
        ));
    }
    if groups == 0 || stride.contains(&0) || dilation.contains(&0) {
        return Err(Error::bad_shape(op, format!("groups, stride and dilation must be positive, got {params:?}")));
    }
    if input[1] % groups != 0 || weight[0] % groups != 0 {
        return Err(Error::bad_shape(
            op,
            format!(
                "groups = {groups} must divide both the input channels ({}, input {input:?}) and the output channels ({}, weight {weight:?})",
                input[1], weight[0]
            ),
        ));
    }
    if weight[1] * groups != input[1] {
        return Err(Error::bad_shape(
            op,
            format!(
                "input {input:?} has {} channels but weight {weight:?} expects {} ({} per group × {groups} groups)",
                input[1],
                weight[1] * groups,
                weight[1]
            ),
        ));
    }
    if weight[2] == 0 || weight[3] == 0 {
        return Err(Error::bad_shape(op, format!("weight {weight:?} has an empty kernel")));
    }
    let out_len = |axis: usize| Conv2dGeometry::output_len(input[2 + axis], weight[2 + axis], stride[axis], padding[axis], dilation[axis]);
    let (Some(out_h), Some(out_w)) = (out_len(0), out_len(1)) else {
        return Err(Error::bad_shape(
            op,
            format!(
                "kernel {:?} (dilation {dilation:?}) is larger than the padded input: input {input:?} with padding {padding:?}, weight {weight:?}",
                [weight[2], weight[3]]
            ),
        ));
    };
    Ok(Conv2dGeometry {
        batch: input[0],
        in_channels: input[1],
        in_size: [input[2], input[3]],
        out_channels: weight[0],
        kernel: [weight[2], weight[3]],
        out_size: [out_h, out_w],
        stride,
        padding,
        dilation,
        groups,
    })
}

/// `grad_output` must have the output shape of the convolution `geometry`.
fn check_grad_output(op: &'static str, grad_output: &Tensor, g: &Conv2dGeometry) -> Result<()> {
    let want = [g.batch, g.out_channels, g.out_size[0], g.out_size[1]];
    if grad_output.shape() != want {
        return Err(Error::ShapeMismatch { op, lhs: grad_output.shape().to_vec(), rhs: want.to_vec() });
    }
    Ok(())
}

impl Tensor {
    /// 2-d convolution (cross-correlation, as `torch.nn.functional.conv2d`):
    /// `self` `[N, C_in, H, W]` ⊛ `weight` `[C_out, C_in/groups, kh, kw]`
    /// (+ `bias` `[C_out]`) → `[N, C_out, H_out, W_out]` with
    /// `H_out = (H + 2·pad − dil·(kh−1) − 1) / stride + 1`. Any input layout
    /// is accepted; differentiable in all three operands.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, params: Conv2dParams) -> Result<Tensor> {
        let device = same_device("conv2d", self, weight)?;
        same_dtype("conv2d", self, weight)?;
        let g = conv2d_geometry("conv2d", self.shape(), weight.shape(), params)?;
        if let Some(b) = bias {
            same_device("conv2d", self, b)?;
            same_dtype("conv2d", self, b)?;
            if b.shape() != [g.out_channels] {
                return Err(Error::bad_shape(
                    "conv2d",
                    format!("bias {:?} must be [{}] for weight {:?}", b.shape(), g.out_channels, weight.shape()),
                ));
            }
        }
        let out_shape = [g.batch, g.out_channels, g.out_size[0], g.out_size[1]];
        let out = match device {
            Device::Cpu => dispatch_float!(self.dtype(), "conv2d", |T| {
                let bias = bias.map(|b| b.cpu_vec::<T>()).transpose()?;
                let y = with_contiguous::<T, _>(self, |x| {
                    with_contiguous::<T, _>(weight, |w| cpu::conv::conv2d_fwd(x, w, bias.as_deref(), &g))
                })??;
                Tensor::from_cpu_vec(y, &out_shape)
            }),
            Device::Cuda(_) => {
                let y = with_cuda("conv2d", &[Some(self), Some(weight), bias], |o| {
                    let (Some(x), Some(w)) = (o[0], o[1]) else { return Err(unsupported("conv2d", self)) };
                    cuda::conv2d(x, w, o[2], &g)
                })?;
                cuda_tensor(y, &out_shape)
            }
        };
        let inputs: Vec<&Tensor> = [Some(self), Some(weight), bias].into_iter().flatten().collect();
        Ok(out.recorded(&inputs, || Arc::new(Conv2dBackward { input: self.clone(), weight: weight.clone(), bias: bias.cloned(), params })))
    }
}

/// What [`Tensor::conv2d_fused`] does to the convolution's output, per output
/// channel `c`: `relu?(conv·scale[c] + shift[c] + residual)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Conv2dEpilogue<'a> {
    /// `[C_out]`: an eval-mode BatchNorm's `weight / √(running_var + eps)`.
    pub scale: Option<&'a Tensor>,
    /// `[C_out]`: a bias, or an eval-mode BatchNorm's `bias − running_mean·scale`.
    pub shift: Option<&'a Tensor>,
    /// Shaped like the output: a skip connection added before the activation.
    pub residual: Option<&'a Tensor>,
    /// Apply ReLU last.
    pub relu: bool,
}

impl Tensor {
    /// [`Tensor::conv2d`] (without bias) followed by `epilogue`, in one pass
    /// over the output on the CPU when nothing needs gradients: the
    /// inference form of conv → BatchNorm (eval) → (+ skip) → ReLU.
    /// With gradients on (or on CUDA) the same function is computed by the
    /// separate differentiable ops, so results and gradients are those of the
    /// composition.
    pub fn conv2d_fused(&self, weight: &Tensor, epilogue: Conv2dEpilogue<'_>, params: Conv2dParams) -> Result<Tensor> {
        let op = "conv2d_fused";
        let g = conv2d_geometry(op, self.shape(), weight.shape(), params)?;
        let out_shape = [g.batch, g.out_channels, g.out_size[0], g.out_size[1]];
        let channel_params = [("scale", epilogue.scale), ("shift", epilogue.shift)];
        for (name, t) in channel_params.iter().filter_map(|(n, t)| t.map(|t| (n, t))) {
            same_device(op, self, t)?;
            same_dtype(op, self, t)?;
            if t.shape() != [g.out_channels] {
                return Err(Error::bad_shape(
                    op,
                    format!("{name} {:?} must be [{}] for weight {:?}", t.shape(), g.out_channels, weight.shape()),
                ));
            }
        }
        if let Some(r) = epilogue.residual {
            same_device(op, self, r)?;
            same_dtype(op, self, r)?;
            if r.shape() != out_shape {
                return Err(Error::ShapeMismatch { op, lhs: r.shape().to_vec(), rhs: out_shape.to_vec() });
            }
        }
        let operands: Vec<&Tensor> =
            [Some(self), Some(weight), epilogue.scale, epilogue.shift, epilogue.residual].into_iter().flatten().collect();
        let needs_grad = Tensor::would_record(&operands);
        if needs_grad || self.device() != Device::Cpu {
            let per_channel = [1, g.out_channels, 1, 1];
            let mut y = self.conv2d(weight, None, params)?;
            if let Some(scale) = epilogue.scale {
                y = y.mul(&scale.reshape(&per_channel)?)?;
            }
            if let Some(shift) = epilogue.shift {
                y = y.add(&shift.reshape(&per_channel)?)?;
            }
            if let Some(r) = epilogue.residual {
                y = y.add(r)?;
            }
            return if epilogue.relu { y.relu() } else { Ok(y) };
        }
        dispatch_float!(self.dtype(), op, |T| {
            let scale = epilogue.scale.map(|t| t.cpu_vec::<T>()).transpose()?;
            let shift = epilogue.shift.map(|t| t.cpu_vec::<T>()).transpose()?;
            let run = |residual: Option<&[T]>| -> Result<Vec<T>> {
                let fused = cpu::conv::ConvEpilogue { scale: scale.as_deref(), shift: shift.as_deref(), residual, relu: epilogue.relu };
                with_contiguous::<T, _>(self, |x| with_contiguous::<T, _>(weight, |w| cpu::conv::conv2d_fwd_fused(x, w, fused, &g)))?
            };
            // The residual is borrowed, not copied, when it is contiguous (as a block's input is).
            let y = match epilogue.residual {
                Some(r) => with_contiguous::<T, _>(r, |r| run(Some(r)))??,
                None => run(None)?,
            };
            Ok(Tensor::from_cpu_vec(y, &out_shape))
        })
    }
}

/// Gradient of `conv2d` with respect to its input (backward-data, the
/// transposed convolution): `grad_output` `[N, C_out, H_out, W_out]` and the
/// `weight` `[C_out, C_in/groups, kh, kw]` give `[N, C_in, H, W]` for the
/// `input_shape` of the forward call. Not recorded on the tape.
pub fn conv2d_backward_input(grad_output: &Tensor, weight: &Tensor, input_shape: &[usize], params: Conv2dParams) -> Result<Tensor> {
    let op = "conv2d_backward_input";
    let device = same_device(op, grad_output, weight)?;
    same_dtype(op, grad_output, weight)?;
    let g = conv2d_geometry(op, input_shape, weight.shape(), params)?;
    check_grad_output(op, grad_output, &g)?;
    match device {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let dx =
                with_contiguous::<T, _>(grad_output, |dy| with_contiguous::<T, _>(weight, |w| cpu::conv::conv2d_bwd_data(dy, w, &g)))??;
            Ok(Tensor::from_cpu_vec(dx, input_shape))
        }),
        Device::Cuda(_) => {
            let dx = with_cuda(op, &[Some(grad_output), Some(weight)], |o| match (o[0], o[1]) {
                (Some(dy), Some(w)) => cuda::conv2d_backward_data(dy, w, &g),
                _ => Err(unsupported(op, grad_output)),
            })?;
            Ok(cuda_tensor(dx, input_shape))
        }
    }
}

/// Gradient of `conv2d` with respect to its weight (backward-weight):
/// `input` `[N, C_in, H, W]` and `grad_output` `[N, C_out, H_out, W_out]` give
/// `weight_shape` `[C_out, C_in/groups, kh, kw]`. Not recorded on the tape.
pub fn conv2d_backward_weight(input: &Tensor, grad_output: &Tensor, weight_shape: &[usize], params: Conv2dParams) -> Result<Tensor> {
    let op = "conv2d_backward_weight";
    let device = same_device(op, input, grad_output)?;
    same_dtype(op, input, grad_output)?;
    let g = conv2d_geometry(op, input.shape(), weight_shape, params)?;
    check_grad_output(op, grad_output, &g)?;
    match device {
        Device::Cpu => dispatch_float!(input.dtype(), op, |T| {
            let dw =
                with_contiguous::<T, _>(input, |x| with_contiguous::<T, _>(grad_output, |dy| cpu::conv::conv2d_bwd_weight(x, dy, &g)))??;
            Ok(Tensor::from_cpu_vec(dw, weight_shape))
        }),
        Device::Cuda(_) => {
            let dw = with_cuda(op, &[Some(input), Some(grad_output)], |o| match (o[0], o[1]) {
                (Some(x), Some(dy)) => cuda::conv2d_backward_weight(x, dy, &g),
                _ => Err(unsupported(op, input)),
            })?;
            Ok(cuda_tensor(dw, weight_shape))
        }
    }
}

/// Gradient of `conv2d` with respect to its bias: `grad_output`
/// `[N, C_out, H_out, W_out]` summed over batch and space, `[C_out]`.
/// Not recorded on the tape.
pub fn conv2d_backward_bias(grad_output: &Tensor) -> Result<Tensor> {
    let op = "conv2d_backward_bias";
    let &[batch, channels, h, w] = grad_output.shape() else {
        return Err(Error::bad_shape(op, format!("grad_output must be [N, C_out, H_out, W_out], got {:?}", grad_output.shape())));
    };
    match grad_output.device() {
        Device::Cpu => dispatch_float!(grad_output.dtype(), op, |T| {
            let db = with_contiguous::<T, _>(grad_output, |dy| cpu::conv::conv2d_bwd_bias(dy, batch, channels, h * w))?;
            Ok(Tensor::from_cpu_vec(db, &[channels]))
        }),
        Device::Cuda(_) => {
            let db = with_cuda(op, &[Some(grad_output)], |o| match o[0] {
                Some(dy) => cuda::conv2d_backward_bias(dy, batch, channels, h * w),
                None => Err(unsupported(op, grad_output)),
            })?;
            Ok(cuda_tensor(db, &[channels]))
        }
    }
}
