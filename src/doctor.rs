//! `privdistill doctor`: what this machine offers the runtime — version, CPU,
//! threads, SIMD features, and CUDA (driver, devices, how kernels are
//! embedded) or exactly why CUDA is off. Never fails: a probe that cannot
//! answer says so in the report.

use crate::backend::cuda::{self, kernels, DeviceInfo};

/// One line of the CUDA part: a device, or why it could not be read.
#[derive(Clone, Debug)]
pub struct CudaDeviceLine {
    pub ordinal: usize,
    pub info: Result<DeviceInfo, String>,
}

/// The CUDA part of the report.
#[derive(Clone, Debug)]
pub struct CudaReport {
    /// Driver CUDA version ("12.8") and device count, or why CUDA is off.
    pub driver: Result<(String, usize), String>,
    pub devices: Vec<CudaDeviceLine>,
    /// How the kernels were built into this binary.
    pub embedding: kernels::KernelEmbedding,
    /// NVRTC version, or why it is unavailable.
    pub nvrtc: Result<(i32, i32), String>,
    /// Set when no device could run any kernel: the reason.
    pub kernels_unusable: Option<String>,
}

/// Everything `doctor` prints.
#[derive(Clone, Debug)]
pub struct Report {
    pub version: &'static str,
    pub cpu_model: String,
    pub logical_threads: usize,
    pub rayon_threads: usize,
    /// (feature, detected) for the SIMD features the CPU kernels care about.
    pub simd: Vec<(&'static str, bool)>,
    pub cuda: CudaReport,
}

/// The CPU model name from /proc/cpuinfo ("unknown" elsewhere).
fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("Hardware"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<(&'static str, bool)> {
    vec![
        ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
        ("avx", std::arch::is_x86_feature_detected!("avx")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("f16c", std::arch::is_x86_feature_detected!("f16c")),
    ]
}

#[cfg(target_arch = "aarch64")]
fn simd_features() -> Vec<(&'static str, bool)> {
    vec![("neon", std::arch::is_aarch64_feature_detected!("neon")), ("fp16", std::arch::is_aarch64_feature_detected!("fp16"))]
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn simd_features() -> Vec<(&'static str, bool)> {
    Vec::new()
}

fn cuda_report() -> CudaReport {
    let embedding = kernels::embedding();
    let nvrtc = kernels::nvrtc_version();
    let driver = cuda::driver().map(|d| (d.version_string(), d.device_count)).map_err(|s| s.to_string());
    let count = driver.as_ref().map(|d| d.1).unwrap_or(0);
    let devices: Vec<CudaDeviceLine> = (0..count).map(|ordinal| CudaDeviceLine { ordinal, info: cuda::device_info(ordinal) }).collect();
    // Kernels run when the device has embedded PTX at or below its architecture, or NVRTC can compile for it.
    let archs = match &embedding {
        kernels::KernelEmbedding::Ptx { archs, .. } => archs.clone(),
        kernels::KernelEmbedding::Sources => Vec::new(),
    };
    let kernels_unusable = if nvrtc.is_ok() || count == 0 {
        None
    } else {
        let covered = devices.iter().any(|d| match &d.info {
            Ok(info) => archs.iter().any(|&a| a <= (info.compute_capability.0 * 10 + info.compute_capability.1) as u32),
            Err(_) => false,
        });
        (!covered).then(|| "NVRTC is missing and no embedded PTX fits these devices: GPU kernels cannot be loaded".to_string())
    };
    CudaReport { driver, devices, embedding, nvrtc, kernels_unusable }
}

impl Report {
    /// Probe the machine.
    pub fn gather() -> Report {
        Report {
            version: env!("CARGO_PKG_VERSION"),
            cpu_model: cpu_model(),
            logical_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            rayon_threads: rayon::current_num_threads(),
            simd: simd_features(),
            cuda: cuda_report(),
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "privdistill {}", self.version)?;
        writeln!(f, "CPU:      {}", self.cpu_model)?;
        writeln!(f, "threads:  {} logical, {} in the rayon pool", self.logical_threads, self.rayon_threads)?;
        let simd: Vec<String> = self.simd.iter().map(|(name, on)| format!("{name}{}", if *on { "" } else { " (no)" })).collect();
        writeln!(f, "SIMD:     {}", if simd.is_empty() { "none detected on this architecture".to_string() } else { simd.join(", ") })?;
        let c = &self.cuda;
        match &c.driver {
            Ok((version, count)) => {
                writeln!(f, "CUDA:     on — driver supports CUDA {version}, {count} device(s)")?;
                for d in &c.devices {
                    match &d.info {
                        Ok(i) => writeln!(
                            f,
                            "  cuda:{}  {}, compute capability {}.{}, {:.1} GiB, {} SMs",
                            d.ordinal,
                            i.name,
                            i.compute_capability.0,
                            i.compute_capability.1,
                            i.total_memory_bytes as f64 / (1u64 << 30) as f64,
                            i.multiprocessors
                        )?,
                        Err(e) => writeln!(f, "  cuda:{}  cannot be queried: {e}", d.ordinal)?,
                    }
                }
            }
            Err(why) => writeln!(f, "CUDA:     off — {why}")?,
        }
        writeln!(f, "kernels:  {}", c.embedding)?;
        match &c.nvrtc {
            Ok((major, minor)) => writeln!(f, "NVRTC:    {major}.{minor}")?,
            Err(why) => writeln!(f, "NVRTC:    unavailable ({why})")?,
        }
        if let Some(why) = &c.kernels_unusable {
            writeln!(f, "warning:  {why}")?;
        }
        Ok(())
    }
}

/// The doctor report as text.
pub fn report() -> String {
    Report::gather().to_string()
}
