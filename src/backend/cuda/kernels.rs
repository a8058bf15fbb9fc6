//! The kernels build.rs embedded, and how a module becomes loadable code for
//! one device: the PTX of the highest embedded architecture not above the
//! device's (the driver JIT-compiles it), else the source through NVRTC.

use super::device::{describe_driver_error, CudaDevice};
use crate::{Error, Result};
use cudarc::driver::CudaModule;
use cudarc::nvrtc::{CompileOptions, Ptx};
use std::sync::Arc;

/// One kernel file of `kernels/`, as build.rs embedded it.
pub(crate) struct EmbeddedModule {
    /// File stem: `elementwise` for kernels/elementwise.cu.
    pub name: &'static str,
    /// The source with `common.cuh` pasted in, ready for NVRTC.
    pub source: &'static str,
    /// (architecture as 80 for sm_80, PTX text), ascending.
    pub ptx: &'static [(u32, &'static str)],
}

include!(concat!(env!("OUT_DIR"), "/cuda_kernels.rs"));

/// How this build carries its kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelEmbedding {
    /// PTX compiled by nvcc at build time, for these architectures (80 = sm_80).
    Ptx { archs: Vec<u32>, nvcc_version: String },
    /// CUDA C sources, compiled with NVRTC when first used.
    Sources,
}

impl std::fmt::Display for KernelEmbedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelEmbedding::Ptx { archs, nvcc_version } => {
                let archs: Vec<String> = archs.iter().map(|a| format!("sm_{a}")).collect();
                write!(f, "PTX for {} (nvcc {nvcc_version}), sources kept for NVRTC as a fallback", archs.join(", "))
            }
            KernelEmbedding::Sources => write!(f, "CUDA C sources, compiled with NVRTC on first use (no nvcc at build time)"),
        }
    }
}

/// How the kernels of this build are embedded.
pub fn embedding() -> KernelEmbedding {
    match NVCC_VERSION {
        Some(v) if !PTX_ARCHS.is_empty() => KernelEmbedding::Ptx { archs: PTX_ARCHS.to_vec(), nvcc_version: v.to_string() },
        _ => KernelEmbedding::Sources,
    }
}

/// Names of the embedded kernel modules (kernel file stems).
pub fn module_names() -> Vec<&'static str> {
    MODULES.iter().map(|m| m.name).collect()
}

/// Whether the NVRTC library can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: only dlopen()s libnvrtc by its usual names and drops the handle;
    // loading it runs no code of ours and it has no unsound initialisers.
    std::panic::catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// NVRTC's version as (major, minor), or why it is unavailable.
pub fn nvrtc_version() -> std::result::Result<(i32, i32), String> {
    if !nvrtc_present() {
        return Err("libnvrtc not found".into());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are to live locals.
    let status = std::panic::catch_unwind(move || unsafe {
        let r = cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor);
        (r, major, minor)
    });
    match status {
        Ok((cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS, major, minor)) => Ok((major, minor)),
        Ok((r, _, _)) => Err(format!("nvrtcVersion failed: {r:?}")),
        Err(_) => Err("libnvrtc could not be loaded".into()),
    }
}

/// Compile a module's embedded source with NVRTC for `compute_{arch}`.
/// Needs no GPU; the tests use it to check the NVRTC path on any machine with libnvrtc.
pub fn compile_with_nvrtc(module: &str, arch: u32) -> Result<String> {
    let m = MODULES.iter().find(|m| m.name == module).ok_or_else(|| Error::Cuda(format!("no kernel module `{module}`")))?;
    Ok(nvrtc_compile(m, arch)?.to_src())
}

fn nvrtc_compile(m: &EmbeddedModule, arch: u32) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(Error::Cuda(format!(
            "kernel module `{}`: no PTX for this GPU was embedded at build time and NVRTC (libnvrtc.so) is not installed; \
             install the CUDA toolkit's NVRTC or rebuild with nvcc (see .ci/nvcc-venv.sh)",
            m.name
        )));
    }
    let opts = CompileOptions {
        options: vec![format!("--gpu-architecture=compute_{arch}"), "-std=c++17".into()],
        name: Some(format!("{}.cu", m.name)),
        ..Default::default()
    };
    let source = m.source;
    // Belt and braces: cudarc panics if the library vanishes between the check and the call.
    match std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(source, opts)) {
        Ok(Ok(ptx)) => Ok(ptx),
        Ok(Err(cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. })) => Err(Error::Cuda(format!(
            "NVRTC failed to compile kernel module `{}` for compute_{arch} ({nvrtc:?}):\n{}",
            m.name,
            log.to_string_lossy()
        ))),
        Ok(Err(e)) => Err(Error::Cuda(format!("NVRTC failed on kernel module `{}`: {e:?}", m.name))),
        Err(_) => Err(Error::Cuda(format!("NVRTC could not be loaded to compile kernel module `{}`", m.name))),
    }
}

/// Load module `name` into the device's context: embedded PTX when one fits
/// the device, else (or when the driver rejects it, e.g. a PTX ISA newer than
/// the driver) the NVRTC-compiled source.
pub(crate) fn load(dev: &CudaDevice, name: &str) -> Result<Arc<CudaModule>> {
    let m = MODULES.iter().find(|m| m.name == name).ok_or_else(|| Error::Cuda(format!("no kernel module `{name}` is embedded")))?;
    let (major, minor) = dev.compute_capability;
    let arch = (major * 10 + minor) as u32;
    let mut ptx_failure = None;
    if let Some((ptx_arch, ptx)) = m.ptx.iter().filter(|(a, _)| *a <= arch).max_by_key(|(a, _)| *a) {
        match dev.ctx.load_module(Ptx::from_src(*ptx)) {
            Ok(module) => return Ok(module),
            Err(e) => ptx_failure = Some(format!("embedded sm_{ptx_arch} PTX was rejected ({})", describe_driver_error(&e))),
        }
    }
    let ptx = nvrtc_compile(m, arch).map_err(|e| match &ptx_failure {
        Some(why) => Error::Cuda(format!("kernel module `{name}`: {why}; NVRTC fallback: {e}")),
        None => e,
    })?;
    dev.ctx.load_module(ptx).map_err(|e| {
        Error::Cuda(format!("kernel module `{name}`: the driver rejected NVRTC's PTX for sm_{arch}: {}", describe_driver_error(&e)))
    })
}
