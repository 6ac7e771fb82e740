//! Fault classification: is an inference error the device's fault?
//!
//! Only a real device fault marks a model poisoned; every other error fails
//! just the request it happened in. The rule is deliberately one-sided:
//! [`is_device_fault`] answers `false` only for errors known to happen before
//! any kernel runs or on the CPU side, and `true` for everything else, so an
//! unknown driver failure still takes the model out of service.
//!
//! [`ModelHealth`] records the decision for one loaded model and logs it.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;

/// Markers of real device/driver failures. These win over everything else:
/// an error chain that mentions a CUDA driver error is a device fault even if
/// it also mentions, say, a tokenizer.
const DEVICE_MARKERS: &[&str] = &[
    "cuda_error",
    "cublas_status",
    "cudnn_status",
    "curand_status",
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
    "kv cache too small",
    "invalid batch",
];

/// `true` when `err_chain` (an error and its sources, joined) must be treated
/// as a device fault. `false` only for known host-side errors.
pub fn is_device_fault(err_chain: &str) -> bool {
    let lower = err_chain.to_ascii_lowercase();
    if DEVICE_MARKERS.iter().any(|m| lower.contains(m)) {
        return true;
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
            "KV cache too small: the prompt needs 9000 positions, the model's KV pool holds 8736",
            "invalid batch: position 40 has no block",
        ] {
            assert!(!is_device_fault(e), "{e}");
        }
    }

    #[test]
    fn driver_errors_are_device_faults() {
        for e in [
            "DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")",
            "an illegal memory access was encountered",
            "DriverError(CUDA_ERROR_LAUNCH_FAILED, \"unspecified launch failure\")",
            "unspecified launch failure",
            "cublas error: CUBLAS_STATUS_EXECUTION_FAILED",
            "CUDA_ERROR_MISALIGNED_ADDRESS: misaligned address",
            "CUDA_ERROR_ECC_UNCORRECTABLE",
            "device-side assert triggered",
            "CUDA_ERROR_OUT_OF_MEMORY: out of memory",
            // Driver markers win even next to host-side words.
            "tokenize error: CUDA_ERROR_ILLEGAL_ADDRESS",
            // Unknown errors are faults: better a reload than garbage.
            "something nobody has seen before",
            "",
        ] {
            assert!(is_device_fault(e), "{e}");
        }
    }

    #[test]
    fn report_poisons_only_on_device_faults() {
        let c = Counter::default();
        let h = ModelHealth::new("m", "cpu", c.clone());
        assert!(!h.report(Site::Decode, true, "broadcast_add: shape mismatch"));
        assert_eq!(h.poisoned(), None);
        assert!(h.report(Site::Prefill, false, "CUBLAS_STATUS_EXECUTION_FAILED"));
        assert!(h
            .poisoned()
            .unwrap()
            .contains("CUBLAS_STATUS_EXECUTION_FAILED"));
        assert!(h.report(Site::Decode, false, "CUDA_ERROR_LAUNCH_FAILED"));
        assert_eq!(c.get(), 1, "a model is counted poisoned once");
    }
}
