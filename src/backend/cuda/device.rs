//! Finding the driver and the devices, lazily and once: the driver library is
//! probed before any cudarc call that would panic without it, each device's
//! context is made the first time a tensor goes there, and kernel modules and
//! function handles are cached per device.

use crate::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{result as drv, sys, CudaContext, CudaFunction, CudaModule, CudaStream, DriverError};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

/// What the driver reported when first asked.
#[derive(Clone, Debug)]
pub struct DriverInfo {
    /// As cuDriverGetVersion returns it: 12080 for CUDA 12.8.
    pub version: i32,
    /// Number of CUDA devices visible to this process.
    pub device_count: usize,
}

impl DriverInfo {
    /// The driver's CUDA version as "12.8".
    pub fn version_string(&self) -> String {
        format!("{}.{}", self.version / 1000, (self.version % 1000) / 10)
    }
}

/// Static facts about one device, read without creating a context.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    /// (major, minor): (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub total_memory_bytes: usize,
    pub multiprocessors: u32,
}

/// A driver error with its name and description ("CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected").
pub(crate) fn describe_driver_error(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name}: {}", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Run a driver call that cudarc might turn into a panic (a symbol missing
/// from an old driver) and make any failure a message.
fn guarded<T>(what: &str, f: impl FnOnce() -> std::result::Result<T, DriverError>) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what} failed: {}", describe_driver_error(&e))),
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("{what} failed: {}", msg.unwrap_or_else(|| "the CUDA driver library could not be used".into())))
        }
    }
}

fn probe_driver() -> std::result::Result<DriverInfo, String> {
    // SAFETY: is_culib_present only dlopen()s libcuda by its usual names and
    // drops the handle; the driver library has no initialisers that could
    // break this process. Wrapped in catch_unwind in case it panics anyway.
    let present = catch_unwind(|| unsafe { sys::is_culib_present() }).unwrap_or(false);
    if !present {
        return Err("libcuda.so not found (no NVIDIA driver is installed, or it is not on the library search path)".into());
    }
    guarded("cuInit", drv::init)?;
    let mut version = 0;
    // SAFETY: the driver is loaded and initialised (above); the pointer is to a live local.
    guarded("cuDriverGetVersion", || unsafe { sys::cuDriverGetVersion(&mut version).result() })?;
    let count = guarded("cuDeviceGetCount", drv::device::get_count)?;
    let info = DriverInfo { version, device_count: count.max(0) as usize };
    if info.device_count == 0 {
        return Err(format!("no CUDA device found (driver {} is installed, but it sees no GPU)", info.version_string()));
    }
    Ok(info)
}

/// The driver, probed on first use; `Err` says why CUDA is off.
pub fn driver() -> std::result::Result<&'static DriverInfo, &'static str> {
    static DRIVER: OnceLock<std::result::Result<DriverInfo, String>> = OnceLock::new();
    DRIVER.get_or_init(probe_driver).as_ref().map_err(|s| s.as_str())
}

/// The static facts of device `ordinal` (no context is created).
pub fn device_info(ordinal: usize) -> std::result::Result<DeviceInfo, String> {
    let info = driver()?;
    if ordinal >= info.device_count {
        return Err(format!("device cuda:{ordinal} does not exist ({} CUDA device(s) visible)", info.device_count));
    }
    let dev = guarded("cuDeviceGet", || drv::device::get(ordinal as i32))?;
    let name = guarded("cuDeviceGetName", || drv::device::get_name(dev))?;
    // SAFETY: `dev` is a valid device handle from cuDeviceGet above.
    let total = guarded("cuDeviceTotalMem", || unsafe { drv::device::total_mem(dev) })?;
    let attribute = |a: sys::CUdevice_attribute| {
        // SAFETY: `dev` is a valid device handle; `a` is a defined attribute.
        guarded("cuDeviceGetAttribute", || unsafe { drv::device::get_attribute(dev, a) })
    };
    let major = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sms = attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    Ok(DeviceInfo { ordinal, name, compute_capability: (major, minor), total_memory_bytes: total, multiprocessors: sms.max(1) as u32 })
}

/// Why CUDA is unusable, as an error naming the request `op`.
pub(crate) fn unavailable(op: &str, why: &str) -> Error {
    Error::Cuda(format!("{op}: CUDA unavailable: {why}"))
}

/// One device: its context, the stream every op runs on (so ops are ordered
/// without events), the cuBLAS handle, and the module/function caches.
pub(crate) struct CudaDevice {
    pub ordinal: usize,
    pub compute_capability: (i32, i32),
    pub multiprocessors: u32,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    blas: OnceLock<std::result::Result<Mutex<CudaBlas>, String>>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Free device blocks by bucket (see allocator.rs).
    pub cache: Mutex<super::allocator::BucketCache<cudarc::driver::CudaSlice<u8>>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, sm_{}{})", self.ordinal, self.compute_capability.0, self.compute_capability.1)
    }
}

impl CudaDevice {
    fn open(ordinal: usize) -> std::result::Result<CudaDevice, String> {
        let info = device_info(ordinal)?;
        let ctx = guarded(&format!("creating a context on cuda:{ordinal}"), || CudaContext::new(ordinal))?;
        // SAFETY: every buffer and kernel of this device lives on the one stream
        // below, so the cross-stream read/write events cudarc would create for
        // each allocation (two per buffer) order nothing that is not already ordered.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        Ok(CudaDevice {
            ordinal,
            compute_capability: info.compute_capability,
            multiprocessors: info.multiprocessors,
            ctx,
            stream,
            blas: OnceLock::new(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            cache: Mutex::new(super::allocator::BucketCache::new()),
        })
    }

    /// Kernel `function` of module `module` (a kernels/ file stem), loading the
    /// module the first time any of its kernels is needed.
    pub fn function(&self, module: &'static str, function: &str) -> Result<CudaFunction> {
        let key = format!("{module}.{function}");
        if let Some(f) = self.functions.lock().expect("function cache poisoned").get(&key) {
            return Ok(f.clone());
        }
        let m = {
            let mut modules = self.modules.lock().expect("module cache poisoned");
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let m = super::kernels::load(self, module)?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = m
            .load_function(function)
            .map_err(|e| Error::Cuda(format!("kernel `{function}` not found in module `{module}`: {}", describe_driver_error(&e))))?;
        self.functions.lock().expect("function cache poisoned").insert(key, f.clone());
        Ok(f)
    }

    /// Run `f` with the device's cuBLAS handle, created on first use.
    pub fn with_blas<R>(&self, f: impl FnOnce(&CudaBlas) -> Result<R>) -> Result<R> {
        let blas = self.blas.get_or_init(|| {
            // SAFETY: only dlopen()s libcublas by its usual names and drops the handle.
            let present = catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false);
            if !present {
                return Err("cuBLAS (libcublas.so) not found: install the CUDA toolkit's cuBLAS to run matmul on the GPU".to_string());
            }
            match catch_unwind(AssertUnwindSafe(|| CudaBlas::new(self.stream.clone()))) {
                Ok(Ok(b)) => Ok(Mutex::new(b)),
                Ok(Err(e)) => Err(format!("cuBLAS handle creation failed: {e:?}")),
                Err(_) => Err("cuBLAS could not be loaded".to_string()),
            }
        });
        match blas {
            Ok(b) => {
                // cuBLAS runs in the calling thread's current context, which may be another device's.
                self.ctx
                    .bind_to_thread()
                    .map_err(|e| Error::Cuda(format!("binding cuda:{}: {}", self.ordinal, describe_driver_error(&e))))?;
                f(&b.lock().expect("cuBLAS handle poisoned"))
            }
            Err(why) => Err(Error::Cuda(why.clone())),
        }
    }
}

/// Device `ordinal`, opened on first use and cached; `Err` says why it cannot be used.
pub(crate) fn open_device(ordinal: usize) -> std::result::Result<Arc<CudaDevice>, String> {
    /// One slot per visible device, filled (with the device or why it failed to open) on first use.
    type Slot = OnceLock<std::result::Result<Arc<CudaDevice>, String>>;
    static DEVICES: OnceLock<Vec<Slot>> = OnceLock::new();
    let info = driver()?;
    let slots = DEVICES.get_or_init(|| (0..info.device_count).map(|_| OnceLock::new()).collect());
    let slot =
        slots.get(ordinal).ok_or_else(|| format!("device cuda:{ordinal} does not exist ({} CUDA device(s) visible)", info.device_count))?;
    slot.get_or_init(|| CudaDevice::open(ordinal).map(Arc::new)).clone()
}

/// Device `ordinal` for a request named `op`, or an error saying why CUDA is off.
pub(crate) fn device(op: &str, ordinal: usize) -> Result<Arc<CudaDevice>> {
    open_device(ordinal).map_err(|why| unavailable(op, &why))
}
