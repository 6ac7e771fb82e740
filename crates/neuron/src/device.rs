//! Device discovery and memory readings.
//!
//! NVIDIA GPUs are found through NVML; a machine without a driver is normal
//! and falls back to the CPU, which is always present. This module knows
//! what devices exist and how much memory they have; it never runs
//! inference (that is the device worker's job).

use cortex_core::neuron_api::DeviceKind;

/// One device the neuron may place models on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// Index in `/status` (GPUs first, then the CPU).
    pub index: u32,
    pub kind: DeviceKind,
    pub name: String,
    pub memory_total: u64,
    /// What this device may give to models.
    pub memory_budget: u64,
    /// CUDA ordinal, for GPUs.
    pub ordinal: Option<usize>,
}

impl DeviceInfo {
    /// The worker thread name: `cuda-dev-N` or `cpu-dev`.
    pub fn thread_name(&self) -> String {
        match (self.kind, self.ordinal) {
            (DeviceKind::Cuda, Some(n)) => format!("cuda-dev-{n}"),
            _ => "cpu-dev".to_string(),
        }
    }

    /// Short label for logs and metrics: `cuda:0` or `cpu`.
    pub fn label(&self) -> String {
        match (self.kind, self.ordinal) {
            (DeviceKind::Cuda, Some(n)) => format!("cuda:{n}"),
            _ => "cpu".to_string(),
        }
    }
}

/// A GPU as NVML reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// The CUDA ordinal (what `Device::new_cuda` takes). With the `cuda`
    /// feature it is matched to NVML's device by UUID; without it, NVML's
    /// index.
    pub ordinal: usize,
    pub name: String,
    pub memory_total: u64,
    pub memory_free: u64,
}

/// Ask NVML for the GPUs, in CUDA's numbering. `Err` (with NVML's or the
/// driver's message) when there is no driver or library — the normal case on
/// a CPU-only machine.
///
/// NVML numbers every GPU of the host in PCI order; CUDA numbers only the
/// ones `CUDA_VISIBLE_DEVICES` lets it see, fastest first unless
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID`. So the two indices differ on many hosts,
/// and each GPU is matched by its UUID: a reading's `ordinal` is the CUDA
/// ordinal, and GPUs CUDA cannot see are left out.
pub fn nvml_gpus() -> Result<Vec<GpuReading>, String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| e.to_string())?;
    let count = nvml.device_count().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in 0..count {
        let dev = nvml.device_by_index(i).map_err(|e| e.to_string())?;
        let uuid = dev.uuid().map_err(|e| e.to_string())?;
        let Some(ordinal) = cuda_ordinal(i as usize, &uuid)? else {
            continue;
        };
        let name = dev.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let mem = dev.memory_info().map_err(|e| e.to_string())?;
        out.push(GpuReading {
            ordinal,
            name,
            memory_total: mem.total,
            memory_free: mem.free,
        });
    }
    out.sort_by_key(|g| g.ordinal);
    Ok(out)
}

/// The CUDA ordinal of the GPU NVML calls `nvml_index` with `uuid`; `None`
/// when CUDA does not see it. `Err` when the CUDA driver cannot be used.
#[cfg(feature = "cuda")]
fn cuda_ordinal(_nvml_index: usize, uuid: &str) -> Result<Option<usize>, String> {
    Ok(cuda_uuids()?.iter().position(|u| u == uuid))
}

/// Without the `cuda` feature GPUs are only counted (for a warning).
#[cfg(not(feature = "cuda"))]
fn cuda_ordinal(nvml_index: usize, _uuid: &str) -> Result<Option<usize>, String> {
    Ok(Some(nvml_index))
}

/// The UUID of each CUDA device, by ordinal, in NVML's spelling. The CUDA
/// driver fixes its numbering when it initialises, so this is read once.
#[cfg(feature = "cuda")]
fn cuda_uuids() -> Result<&'static [String], String> {
    use candle_core::cuda_backend::cudarc::driver::result;
    static UUIDS: std::sync::OnceLock<Result<Vec<String>, String>> = std::sync::OnceLock::new();
    let read = || -> Result<Vec<String>, result::DriverError> {
        result::init()?;
        (0..result::device::get_count()?)
            .map(|i| {
                let uuid = result::device::get_uuid(result::device::get(i)?)?;
                Ok(nvml_uuid(&uuid.bytes.map(|b| b as u8)))
            })
            .collect()
    };
    UUIDS
        .get_or_init(|| read().map_err(|e| format!("CUDA driver: {e}")))
        .as_deref()
        .map_err(Clone::clone)
}

/// A UUID's 16 bytes as NVML spells them: `GPU-` and 8-4-4-4-12 hex digits.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn nvml_uuid(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Find the devices. `budget` caps what each device gives to models; by
/// default the CPU gives half the RAM and a GPU 90% of its memory.
pub fn discover(budget: Option<u64>) -> Vec<DeviceInfo> {
    let mut devices = Vec::new();
    match nvml_gpus() {
        Ok(gpus) if gpus.is_empty() => tracing::info!("NVML found no NVIDIA GPU; using the CPU"),
        Ok(gpus) => {
            if cfg!(feature = "cuda") {
                for g in gpus {
                    let default_budget = g.memory_total / 10 * 9;
                    devices.push(DeviceInfo {
                        index: devices.len() as u32,
                        kind: DeviceKind::Cuda,
                        name: g.name,
                        memory_total: g.memory_total,
                        memory_budget: budget.unwrap_or(default_budget).min(g.memory_total),
                        ordinal: Some(g.ordinal),
                    });
                }
            } else {
                tracing::warn!(
                    gpus = gpus.len(),
                    "NVIDIA GPUs found, but this neuron was built without the `cuda` feature; using the CPU only"
                );
            }
        }
        Err(e) => tracing::info!(reason = %e, "no NVIDIA driver (NVML unavailable); using the CPU"),
    }
    let ram = memory_total();
    devices.push(DeviceInfo {
        index: devices.len() as u32,
        kind: DeviceKind::Cpu,
        name: cpu_name(),
        memory_total: ram,
        memory_budget: budget.unwrap_or(ram / 2),
        ordinal: None,
    });
    devices
}

/// Free memory of each device right now, in the order given: NVML for GPUs
/// (read once for all of them), available RAM for the CPU.
pub fn memory_free(infos: &[&DeviceInfo]) -> Vec<u64> {
    let gpus = if infos.iter().any(|i| i.kind == DeviceKind::Cuda) {
        nvml_gpus().unwrap_or_default()
    } else {
        Vec::new()
    };
    infos
        .iter()
        .map(|info| match (info.kind, info.ordinal) {
            (DeviceKind::Cuda, Some(n)) => gpus
                .iter()
                .find(|g| g.ordinal == n)
                .map_or(0, |g| g.memory_free),
            _ => meminfo_field("MemAvailable:").unwrap_or(0),
        })
        .collect()
}

/// Physical RAM.
pub fn memory_total() -> u64 {
    meminfo_field("MemTotal:").unwrap_or(0)
}

/// Resident set size of this process, in bytes.
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| field_kib(&s, "VmRSS:"))
        .unwrap_or(0)
}

fn meminfo_field(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kib(&text, key)
}

/// Parse a `Key:   123 kB` line into bytes.
fn field_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| "CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_there_and_budget_applies() {
        let d = discover(Some(350 << 20));
        let cpu = d.last().unwrap();
        assert_eq!(cpu.kind, DeviceKind::Cpu);
        assert_eq!(cpu.memory_budget, 350 << 20);
        assert_eq!(cpu.thread_name(), "cpu-dev");
        assert_eq!(cpu.index as usize, d.len() - 1);
        let d = discover(None);
        let cpu = d.last().unwrap();
        assert!(cpu.memory_total > 0);
        assert_eq!(cpu.memory_budget, cpu.memory_total / 2);
    }

    #[test]
    fn readings() {
        assert!(memory_total() > 0);
        let cpu = discover(None).pop().unwrap();
        let free = memory_free(&[&cpu]);
        assert_eq!(free.len(), 1);
        assert!(free[0] > 0 && free[0] <= cpu.memory_total);
        assert!(process_rss() > 0);
        assert_eq!(
            field_kib("MemTotal:  2048 kB\n", "MemTotal:"),
            Some(2 << 20)
        );
        assert_eq!(field_kib("nothing", "MemTotal:"), None);
    }

    #[test]
    fn uuids_are_spelt_as_nvml_spells_them() {
        let bytes = [
            0x3f, 0x2a, 0x9c, 0x01, 0x7d, 0x4e, 0x11, 0x22, 0x8b, 0x33, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        assert_eq!(
            nvml_uuid(&bytes),
            "GPU-3f2a9c01-7d4e-1122-8b33-aabbccddeeff"
        );
    }

    /// With the `cuda` feature and no usable driver (CI links the stub of
    /// `scripts/cuda-toolkit`), opening a CUDA device fails with the driver's
    /// error, which is host-side: it never poisons a model. On a GPU host the
    /// device opens instead.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_device_open_without_a_driver() {
        match candle_core::Device::new_cuda(0) {
            Ok(dev) => {
                assert!(dev.is_cuda());
                assert!(!nvml_gpus().unwrap_or_default().is_empty());
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("CUDA_ERROR_STUB_LIBRARY")
                        || text.contains("CUDA_ERROR_NO_DEVICE"),
                    "{text}"
                );
                assert!(!crate::fault::is_device_fault(&text), "{text}");
                // The same driver answer keeps discovery on the CPU.
                assert!(cuda_uuids().is_err());
                let d = discover(None);
                assert!(d.iter().all(|i| i.kind == DeviceKind::Cpu), "{d:?}");
            }
        }
    }

    #[test]
    fn gpu_labels() {
        let g = DeviceInfo {
            index: 0,
            kind: DeviceKind::Cuda,
            name: "H100".into(),
            memory_total: 1,
            memory_budget: 1,
            ordinal: Some(3),
        };
        assert_eq!(g.thread_name(), "cuda-dev-3");
        assert_eq!(g.label(), "cuda:3");
    }
}
