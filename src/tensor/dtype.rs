//! Element types and devices.

use half::{bf16, f16};

/// Element type of a tensor. f32 is the compute type; f64 serves gradient
/// checks on the CPU; f16/bf16 are storage types (compute on the GPU);
/// integers hold indices, token ids and pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }
    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
    /// The lower-case name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "f32" | "float32" => DType::F32,
            "f64" | "float64" => DType::F64,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "i64" | "int64" => DType::I64,
            "i32" | "int32" => DType::I32,
            "u8" | "uint8" => DType::U8,
            other => return Err(crate::Error::msg(format!("unknown dtype `{other}` (expected f32, f64, f16, bf16, i64, i32 or u8)"))),
        })
    }
}

/// Where a tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(Device::Cuda(n)),
                None => Err(crate::Error::msg(format!("unknown device `{s}` (expected cpu, cuda or cuda:N)"))),
            },
        }
    }
}

/// A Rust type that can be a tensor element.
pub trait Element: bytemuck::Pod + Copy + Send + Sync + std::fmt::Debug + Default + PartialOrd + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline]
            fn to_f64(self) -> f64 {
                ($to)(self)
            }
            #[inline]
            fn from_f64(v: f64) -> Self {
                ($from)(v)
            }
        }
    };
}
element!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
element!(f64, F64, |x: f64| x, |v: f64| v);
element!(f16, F16, |x: f16| x.to_f64(), f16::from_f64);
element!(bf16, BF16, |x: bf16| x.to_f64(), bf16::from_f64);
element!(i64, I64, |x: i64| x as f64, |v: f64| v as i64);
element!(i32, I32, |x: i32| x as f64, |v: f64| v as i32);
element!(u8, U8, |x: u8| x as f64, |v: f64| v as u8);

/// A floating-point compute type of the CPU backend (f32 and f64).
pub trait Float:
    Element
    + num_traits::Float
    + num_traits::FloatConst
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + std::ops::DivAssign
    + std::iter::Sum
{
    /// Error function, used by the exact GELU.
    fn erf(self) -> Self;
}

impl Float for f32 {
    #[inline]
    fn erf(self) -> Self {
        erf_f64(self as f64) as f32
    }
}
impl Float for f64 {
    #[inline]
    fn erf(self) -> Self {
        erf_f64(self)
    }
}

/// erf to ~1e-15 relative: a Taylor series near 0 and a continued fraction for
/// the complementary function in the tails (W. J. Cody's split points).
pub fn erf_f64(x: f64) -> f64 {
    let ax = x.abs();
    if ax < 2.0 {
        // Maclaurin series: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            // `<=`: at x = 0 every term is 0, and `<` would never end the loop.
            if add.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        let r = sum * std::f64::consts::FRAC_2_SQRT_PI;
        return if x < 0.0 { -r } else { r };
    }
    if ax > 6.0 {
        return x.signum();
    }
    // erfc x = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))) (Lentz)
    let mut f = ax;
    let tiny = 1e-300;
    let mut c = f;
    let mut d = 0.0;
    for i in 1..200 {
        let a = i as f64 / 2.0;
        d = ax + a * d;
        d = if d.abs() < tiny { tiny } else { d };
        c = ax + a / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    let erfc = (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt());
    let r = 1.0 - erfc;
    if x < 0.0 {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_of_zero_returns() {
        assert_eq!(super::erf_f64(0.0), 0.0);
        assert_eq!(super::erf_f64(-0.0), 0.0);
        assert!((super::erf_f64(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
    }
}
