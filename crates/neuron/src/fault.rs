//! Fault classification: is an inference error the device's fault?
//!
//! Only a real device fault marks a model poisoned; every other error fails
//! just the request it happened in. The rule is deliberately one-sided:
//! [`is_device_fault`] answers `false` only for errors known to happen before
//! any kernel runs or on the CPU side, and `true` for everything else, so an
//! unknown driver failure still takes the model out of service.
//!
//! Driver and library status codes (`CUDA_ERROR_*`, `CUBLAS_STATUS_*`, ...)
//! are faults except a short list of known host-side ones: an allocation that
//! failed (CUDA's errors are "sticky" — the context is lost and every later
//! call fails — only for faults that happened while a kernel ran; a failed
//! allocation leaves the context usable, so the next request may well fit),
//! and the conditions of opening a device at all (no driver, a stub driver,
//! no device), which never come from a model's kernels.
//!
//! [`ModelHealth`] records the decision for one loaded model and logs it.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

/// Prefixes of driver and library status codes, as cudarc prints them
/// (`DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, "...")`,
/// `CublasError(CUBLAS_STATUS_EXECUTION_FAILED)`), lower-cased. Any such
/// code not in [`HOST_SIDE_CODES`] is a device fault.
const CODE_PREFIXES: &[&str] = &[
    "cuda_error",
    "cublas_status",
    "cudnn_status",
    "curand_status",
];

/// Status codes known to be host-side: no kernel ran, the CUDA context is
/// intact, and the loaded model is not damaged.
const HOST_SIDE_CODES: &[&str] = &[
    // cuMemAlloc failed: not sticky; a later, smaller batch may fit.
    "cuda_error_out_of_memory",
    // cuBLAS could not allocate its workspace: the same, one layer up.
    "cublas_status_alloc_failed",
    // Device open on a host without a usable driver or GPU (a stub, none,
    // a kernel module that does not match the user-space driver).
    "cuda_error_stub_library",
    "cuda_error_no_device",
    "cuda_error_system_driver_mismatch",
];

/// Texts of real device/driver failures. These win over the host-side
/// markers: an error chain that mentions an illegal address is a device
/// fault even if it also mentions, say, a tokenizer.
const DEVICE_MARKERS: &[&str] = &[
    "nccl",
    "illegal memory access",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "device-side assert",
    "ecc error",
    "gpu has fallen off the bus",
    "xid",
];

/// Errors known to be pre-kernel or CPU-side.
const HOST_SIDE_MARKERS: &[&str] = &[
    "shape mismatch",
    "cannot broadcast",
    "nan logits",
    "tokenize error",
    "detokenize error",
    "tokenizer error",
    "missing handle",
    "unknown model handle",
    "decodestream",
    "decode stream",
    "empty prompt",
    "chat template error",
    "context length exceeded",
];

/// `true` when `err_chain` (an error and its sources, joined) must be treated
/// as a device fault. `false` only for known host-side errors.
pub fn is_device_fault(err_chain: &str) -> bool {
    let lower = err_chain.to_ascii_lowercase();
    let mut codes = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|token| CODE_PREFIXES.iter().any(|p| token.starts_with(p)))
        .peekable();
    let has_code = codes.peek().is_some();
    if codes.any(|code| !HOST_SIDE_CODES.contains(&code)) {
        return true;
    }
    if DEVICE_MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
    }
    // Only host-side status codes: known, whatever else the chain says.
    if has_code {
        return false;
    }
    !HOST_SIDE_MARKERS.iter().any(|m| lower.contains(m))
}

/// Where in inference an error happened; logged with every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Rendering and tokenizing the prompt (async handler).
    Tokenize,
    /// The first forward pass over the prompt (device worker).
    Prefill,
    /// A forward pass for one generated token (device worker).
    Decode,
    /// Turning token ids back into text (async handler).
    Detokenize,
}

impl Site {
    pub fn as_str(self) -> &'static str {
        match self {
            Site::Tokenize => "tokenize",
            Site::Prefill => "prefill",
            Site::Decode => "decode",
            Site::Detokenize => "detokenize",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tokenize" => Site::Tokenize,
            "prefill" => Site::Prefill,
            "decode" => Site::Decode,
            "detokenize" => Site::Detokenize,
            _ => return None,
        })
    }
}

/// The health of one loaded model: poisoned or not, and why.
#[derive(Debug)]
pub struct ModelHealth {
    model: String,
    device: String,
    poisoned: Mutex<Option<String>>,
    poisonings: Counter,
}

impl ModelHealth {
    pub fn new(model: impl Into<String>, device: impl Into<String>, poisonings: Counter) -> Self {
        Self {
            model: model.into(),
            device: device.into(),
            poisoned: Mutex::new(None),
            poisonings,
        }
    }

    /// Classify an inference error of this model, log the decision, and mark
    /// the model poisoned when it is a device fault. Returns whether it was.
    pub fn report(&self, site: Site, stream: bool, err_chain: &str) -> bool {
        let fault = is_device_fault(err_chain);
        if fault {
            tracing::error!(
                model = %self.model,
                device = %self.device,
                site = site.as_str(),
                stream,
                error = %err_chain,
                "model marked poisoned: device fault during inference"
            );
            let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
            if p.is_none() {
                self.poisonings.inc();
            }
            *p = Some(format!("{} ({}): {err_chain}", site.as_str(), self.device));
        } else {
            tracing::warn!(
                model = %self.model,
                device = %self.device,
                site = site.as_str(),
                stream,
                error = %err_chain,
                "model NOT marked poisoned: error is not a device fault; failing this request only"
            );
        }
        fault
    }

    /// Why the model is poisoned, when it is.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_side_errors_are_not_device_faults() {
        for e in [
            "candle error: shape mismatch in broadcast_add, lhs: [1, 9, 3, 19], rhs: [3, 8]",
            "broadcast_add: shape mismatch",
            "cannot broadcast [3, 8] to [1, 9, 3, 19]",
            "NaN logits at position 12",
            "tokenize error: invalid utf-8",
            "detokenize error: unknown id 99999",
            "missing handle for model 7",
            "DecodeStream error: invalid prefix",
            "empty prompt",
            "chat template error: roles must alternate",
            "context length exceeded: needs 4097 positions, the model has 4096",
        ] {
            assert!(!is_device_fault(e), "{e}");
        }
    }

    /// Chains as the engine reports them (`EngineError::chain` of candle's
    /// `Error::Cuda` around cudarc's error): cudarc prints a driver error as
    /// `DriverError(<code>, "<cuGetErrorString text>")` and a cuBLAS or cuRAND
    /// one as `CublasError(<status>)`; the texts are the driver's own.
    const ILLEGAL_ADDRESS: &str = "candle error: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")";
    const LAUNCH_FAILED: &str =
        "candle error: DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")";
    const CUBLAS_EXECUTION_FAILED: &str =
        "candle error: CublasError(CUBLAS_STATUS_EXECUTION_FAILED)";
    const OUT_OF_MEMORY: &str =
        "candle error: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")";
    const STUB_LIBRARY: &str = "cannot open CUDA device 0: DriverError(CUDA_ERROR_STUB_LIBRARY, \"CUDA driver is a stub library\")";
    const NO_DEVICE: &str = "cannot open CUDA device 0: DriverError(CUDA_ERROR_NO_DEVICE, \"no CUDA-capable device is detected\")";

    #[test]
    fn driver_errors_are_device_faults() {
        for e in [
            ILLEGAL_ADDRESS,
            LAUNCH_FAILED,
            CUBLAS_EXECUTION_FAILED,
            "candle error: DriverError(CUDA_ERROR_MISALIGNED_ADDRESS, \"misaligned address\")",
            "candle error: DriverError(CUDA_ERROR_ILLEGAL_INSTRUCTION, \"an illegal instruction was encountered\")",
            "candle error: DriverError(CUDA_ERROR_ASSERT, \"device-side assert triggered\")",
            "candle error: DriverError(CUDA_ERROR_ECC_UNCORRECTABLE, \"uncorrectable ECC error encountered\")",
            "candle error: CurandError(CURAND_STATUS_LAUNCH_FAILURE)",
            // cudarc's text when even cuGetErrorString fails: the code decides.
            "candle error: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"<Failure when calling cuGetErrorString()>\")",
            // The PTX is too new for this driver: no kernel of the model can
            // run here, so it leaves service (the gateway routes elsewhere).
            "candle error: DriverError(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, \"the provided PTX was compiled with an unsupported toolchain.\") when loading quantized",
            // A code nobody listed is a fault.
            "candle error: DriverError(CUDA_ERROR_SOMETHING_NEW, \"?\")",
            "an illegal memory access was encountered",
            "unspecified launch failure",
            "device-side assert triggered",
            // Driver markers win even next to host-side words or codes.
            "tokenize error: CUDA_ERROR_ILLEGAL_ADDRESS",
            "broadcast_add: shape mismatch: CublasError(CUBLAS_STATUS_EXECUTION_FAILED)",
            "candle error: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\"): DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")",
            "CUDA_ERROR_OUT_OF_MEMORY after an illegal memory access was encountered",
            // Unknown errors are faults: better a reload than garbage.
            "something nobody has seen before",
            "",
        ] {
            assert!(is_device_fault(e), "{e}");
        }
    }

    #[test]
    fn host_side_driver_errors_are_not_device_faults() {
        for e in [
            OUT_OF_MEMORY,
            "candle error: CublasError(CUBLAS_STATUS_ALLOC_FAILED)",
            STUB_LIBRARY,
            NO_DEVICE,
            "cannot open CUDA device 0: DriverError(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, \"system has unsupported display driver / cuda driver combination\")",
            // Codes are matched whole, whatever the case.
            "cuda_error_out_of_memory",
        ] {
            assert!(!is_device_fault(e), "{e}");
        }
        // A longer code that starts like a host-side one is not host-side.
        assert!(is_device_fault("CUDA_ERROR_NO_DEVICE_FOUND_LATER"));
    }

    #[test]
    fn report_poisons_only_on_device_faults() {
        let c = Counter::default();
        let h = ModelHealth::new("m", "cuda:0", c.clone());
        assert!(!h.report(Site::Decode, true, "broadcast_add: shape mismatch"));
        assert!(!h.report(Site::Prefill, true, OUT_OF_MEMORY));
        assert_eq!(h.poisoned(), None);
        assert!(h.report(Site::Prefill, false, CUBLAS_EXECUTION_FAILED));
        assert!(h
            .poisoned()
            .unwrap()
            .contains("CUBLAS_STATUS_EXECUTION_FAILED"));
        assert!(h.report(Site::Decode, false, ILLEGAL_ADDRESS));
        assert_eq!(c.get(), 1, "a model is counted poisoned once");
        assert!(h.poisoned().unwrap().starts_with("decode (cuda:0): "));
    }

    /// The same decisions on error values cudarc and candle build, printed
    /// by their own `Display` (compiled only with the `cuda` feature). The
    /// texts of driver errors come from `cuGetErrorString`: the real driver
    /// on a GPU host, the link stub of `scripts/cuda-toolkit` in CI.
    #[cfg(feature = "cuda")]
    mod cuda {
        use super::*;
        use crate::engine::EngineError;
        use candle_core::cuda_backend::cudarc::{cublas, curand, driver};
        use candle_core::cuda_backend::CudaError;
        use driver::sys::CUresult;

        /// The chain's first line: with `RUST_BACKTRACE` set, candle appends
        /// a backtrace to its errors (classified along, compared without).
        fn chain(e: CudaError) -> String {
            let chain = EngineError::from(candle_core::Error::from(e)).chain();
            assert!(is_device_fault(&chain) == is_device_fault(first_line(&chain)));
            first_line(&chain).to_string()
        }

        fn first_line(text: &str) -> &str {
            text.lines().next().unwrap_or_default()
        }

        fn driver(code: CUresult) -> String {
            chain(CudaError::Cuda(driver::result::DriverError(code)))
        }

        #[test]
        fn cudarc_texts_are_classified() {
            let illegal = driver(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
            assert!(
                illegal.starts_with("candle error: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, "),
                "{illegal}"
            );
            assert!(is_device_fault(&illegal), "{illegal}");
            for code in [
                CUresult::CUDA_ERROR_LAUNCH_FAILED,
                CUresult::CUDA_ERROR_MISALIGNED_ADDRESS,
                CUresult::CUDA_ERROR_ECC_UNCORRECTABLE,
                CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
            ] {
                let e = driver(code);
                assert!(is_device_fault(&e), "{e}");
            }
            for code in [
                CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                CUresult::CUDA_ERROR_STUB_LIBRARY,
                CUresult::CUDA_ERROR_NO_DEVICE,
                CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH,
            ] {
                let e = driver(code);
                assert!(!is_device_fault(&e), "{e}");
            }

            let blas = |s| chain(CudaError::Cublas(cublas::result::CublasError(s)));
            let failed = blas(cublas::sys::cublasStatus_t::CUBLAS_STATUS_EXECUTION_FAILED);
            assert_eq!(failed, CUBLAS_EXECUTION_FAILED);
            assert!(is_device_fault(&failed));
            let alloc = blas(cublas::sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED);
            assert!(!is_device_fault(&alloc), "{alloc}");

            let rand = chain(CudaError::Curand(curand::result::CurandError(
                curand::sys::curandStatus_t::CURAND_STATUS_LAUNCH_FAILURE,
            )));
            assert_eq!(
                rand,
                "candle error: CurandError(CURAND_STATUS_LAUNCH_FAILURE)"
            );
            assert!(is_device_fault(&rand));
        }

        /// The driver's texts as cudarc prints them: the stub answers
        /// `cuGetErrorString` with the driver's own strings, so these hold on
        /// a GPU host and in CI alike.
        #[test]
        fn cudarc_prints_the_driver_texts() {
            assert_eq!(
                driver(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS),
                ILLEGAL_ADDRESS
            );
            assert_eq!(driver(CUresult::CUDA_ERROR_LAUNCH_FAILED), LAUNCH_FAILED);
            assert_eq!(driver(CUresult::CUDA_ERROR_OUT_OF_MEMORY), OUT_OF_MEMORY);
            let prefix = "cannot open CUDA device 0: ";
            assert_eq!(
                driver(CUresult::CUDA_ERROR_STUB_LIBRARY),
                STUB_LIBRARY.replace(prefix, "candle error: ")
            );
            assert_eq!(
                driver(CUresult::CUDA_ERROR_NO_DEVICE),
                NO_DEVICE.replace(prefix, "candle error: ")
            );
        }
    }
}
