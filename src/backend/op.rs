//! The op vocabulary shared by both backends: what to compute, not how.

use crate::tensor::Float;

/// Elementwise unary functions (with their scalar parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Square,
    Recip,
    Sin,
    Cos,
    Sigmoid,
    Tanh,
    Relu,
    Silu,
    /// GELU with the exact erf form.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// x * sigmoid(1.702 x), as in CLIP.
    QuickGelu,
    /// x * mul + add.
    Affine {
        mul: f64,
        add: f64,
    },
    /// x ^ p.
    Powf(f64),
    Clamp {
        min: f64,
        max: f64,
    },
    LeakyRelu(f64),
}

impl UnaryOp {
    /// One instance of every variant (with representative parameters), for
    /// tests that must cover them all on every backend.
    pub const ALL: &'static [UnaryOp] = &[
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Abs,
        UnaryOp::Square,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
        UnaryOp::Relu,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::QuickGelu,
        UnaryOp::Affine { mul: 1.5, add: -0.25 },
        UnaryOp::Powf(2.5),
        UnaryOp::Clamp { min: -0.3, max: 0.4 },
        UnaryOp::LeakyRelu(0.2),
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Square => "square",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Relu => "relu",
            UnaryOp::Silu => "silu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::QuickGelu => "quick_gelu",
            UnaryOp::Affine { .. } => "affine",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp { .. } => "clamp",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
        }
    }

    /// f(x).
    #[inline(always)]
    pub fn apply<T: Float>(self, x: T) -> T {
        let c = |v: f64| T::from_f64(v);
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => x.sqrt().recip(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Square => x * x,
            UnaryOp::Recip => x.recip(),
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Relu => x.max(T::zero()),
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Gelu => c(0.5) * x * (T::one() + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf()),
            UnaryOp::GeluTanh => c(0.5) * x * (T::one() + (gelu_tanh_inner(x)).tanh()),
            UnaryOp::QuickGelu => x * sigmoid(c(1.702) * x),
            UnaryOp::Affine { mul, add } => x * c(mul) + c(add),
            UnaryOp::Powf(p) => x.powf(c(p)),
            UnaryOp::Clamp { min, max } => x.max(c(min)).min(c(max)),
            UnaryOp::LeakyRelu(s) => {
                if x > T::zero() {
                    x
                } else {
                    x * c(s)
                }
            }
        }
    }

    /// df/dx at x, given y = f(x) (some derivatives are cheaper from y).
    #[inline(always)]
    pub fn derivative<T: Float>(self, x: T, y: T) -> T {
        let c = |v: f64| T::from_f64(v);
        let one = T::one();
        match self {
            UnaryOp::Neg => -one,
            UnaryOp::Exp => y,
            UnaryOp::Log => x.recip(),
            UnaryOp::Sqrt => c(0.5) / y,
            UnaryOp::Rsqrt => c(-0.5) * y * y * y,
            UnaryOp::Abs => {
                if x > T::zero() {
                    one
                } else if x < T::zero() {
                    -one
                } else {
                    T::zero()
                }
            }
            UnaryOp::Square => c(2.0) * x,
            UnaryOp::Recip => -y * y,
            UnaryOp::Sin => x.cos(),
            UnaryOp::Cos => -x.sin(),
            UnaryOp::Sigmoid => y * (one - y),
            UnaryOp::Tanh => one - y * y,
            UnaryOp::Relu => {
                if x > T::zero() {
                    one
                } else {
                    T::zero()
                }
            }
            UnaryOp::Silu => {
                let s = sigmoid(x);
                s * (one + x * (one - s))
            }
            UnaryOp::Gelu => {
                let cdf = c(0.5) * (one + (x * c(std::f64::consts::FRAC_1_SQRT_2)).erf());
                let pdf = (-c(0.5) * x * x).exp() * c(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
                cdf + x * pdf
            }
            UnaryOp::GeluTanh => {
                let k = c((2.0 / std::f64::consts::PI).sqrt());
                let t = gelu_tanh_inner(x).tanh();
                let dinner = k * (one + c(3.0 * 0.044715) * x * x);
                c(0.5) * (one + t) + c(0.5) * x * (one - t * t) * dinner
            }
            UnaryOp::QuickGelu => {
                let s = sigmoid(c(1.702) * x);
                s + x * c(1.702) * s * (one - s)
            }
            UnaryOp::Affine { mul, .. } => c(mul),
            UnaryOp::Powf(p) => c(p) * x.powf(c(p - 1.0)),
            UnaryOp::Clamp { min, max } => {
                if x >= c(min) && x <= c(max) {
                    one
                } else {
                    T::zero()
                }
            }
            UnaryOp::LeakyRelu(s) => {
                if x > T::zero() {
                    one
                } else {
                    c(s)
                }
            }
        }
    }
}

#[inline(always)]
pub fn sigmoid<T: Float>(x: T) -> T {
    // Split by sign so exp never overflows.
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

#[inline(always)]
fn gelu_tanh_inner<T: Float>(x: T) -> T {
    T::from_f64((2.0 / std::f64::consts::PI).sqrt()) * (x + T::from_f64(0.044715) * x * x * x)
}

/// Elementwise binary functions, with broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
    #[inline(always)]
    pub fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::Maximum => {
                if a >= b {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Minimum => {
                if a <= b {
                    a
                } else {
                    b
                }
            }
        }
    }
}

/// Elementwise comparisons; the result is a u8 mask (1 = true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    #[inline(always)]
    pub fn apply<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
        }
    }
}

/// Reductions over a set of dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}
