//! Test-only faults (`--enable-fault-injection`, header
//! `x-neuron-inject-fault: KIND@SITE`): a device fault, a host-side error or
//! a panic at one inference site, with the real error texts so that
//! classification is exercised for real.

use crate::fault::Site;

/// What an injected fault is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A driver error: the batch fails and the model is poisoned.
    Device,
    /// A host-side error: only the request fails.
    Host,
    /// A panic inside the model's tick (prefill or decode only).
    Panic,
    /// A forward pass that never returns (prefill or decode only), as a
    /// hung GPU kernel would: the worker cannot stop, and shutdown must
    /// abandon it.
    Hang,
}

/// A fault injected at one inference site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injection {
    /// Where it fires.
    pub site: Site,
    /// What it is.
    pub kind: FaultKind,
}

impl Injection {
    /// Parses `device@decode`, `host@prefill`, `panic@decode`, …
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, site) = s.trim().split_once('@')?;
        let kind = match kind {
            "device" => FaultKind::Device,
            "host" => FaultKind::Host,
            "panic" => FaultKind::Panic,
            "hang" => FaultKind::Hang,
            _ => return None,
        };
        let site = Site::parse(site)?;
        let in_tick = matches!(kind, FaultKind::Panic | FaultKind::Hang);
        if in_tick && !matches!(site, Site::Prefill | Site::Decode) {
            // Panics are contained per device-worker tick; the async sites
            // have no such boundary to test.
            return None;
        }
        Some(Self { site, kind })
    }

    /// Whether this is a device fault.
    pub fn device_fault(&self) -> bool {
        self.kind == FaultKind::Device
    }

    /// The error text the fault produces: a real driver message or a real
    /// host-side one.
    pub fn message(&self) -> String {
        match self.kind {
            FaultKind::Device => "injected fault: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")".into(),
            FaultKind::Host => "injected fault: broadcast_add: shape mismatch, lhs: [1, 9, 3, 19], rhs: [3, 8]".into(),
            FaultKind::Panic => format!("injected panic at {}", self.site.as_str()),
            FaultKind::Hang => format!("injected hang at {}", self.site.as_str()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn injection_parses() {
        assert_eq!(
            Injection::parse("device@decode"),
            Some(Injection {
                site: Site::Decode,
                kind: FaultKind::Device
            })
        );
        assert_eq!(
            Injection::parse("host@prefill").map(|i| i.device_fault()),
            Some(false)
        );
        assert_eq!(
            Injection::parse(" panic@prefill ").map(|i| i.kind),
            Some(FaultKind::Panic)
        );
        assert_eq!(Injection::parse("panic@tokenize"), None);
        assert_eq!(
            Injection::parse("hang@decode").map(|i| i.kind),
            Some(FaultKind::Hang)
        );
        assert_eq!(Injection::parse("hang@detokenize"), None);
        assert_eq!(Injection::parse("gpu@decode"), None);
        assert_eq!(Injection::parse("device@nowhere"), None);
        assert!(crate::fault::is_device_fault(
            &Injection::parse("device@decode").unwrap().message()
        ));
        assert!(!crate::fault::is_device_fault(
            &Injection::parse("host@decode").unwrap().message()
        ));
    }
}
