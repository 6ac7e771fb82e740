//! One loaded embedding model on a device worker, and its jobs: each
//! request's inputs run to completion on the worker's thread (the encoder
//! has no KV and no steps to interleave), between the ticks of the chat
//! models of the same device.
//!
//! Faults as for chat: the error chain is classified through the request's
//! [`ModelHealth`]; a device fault poisons the model (it runs nothing more
//! until reloaded); a host-side error fails only the request. A panic in
//! the encoder is caught and fails only that request: the encoder keeps no
//! state between requests that a panic could leave half-written.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::slot::panic_text;
use super::{FaultKind, Injection, ModelKey};
use crate::engine::embed::EmbedModel;
use crate::fault::{ModelHealth, Site};

/// Why an embedding request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedFailure {
    /// The error and its sources.
    pub chain: String,
    /// Whether it was a device fault (the model is now poisoned).
    pub device_fault: bool,
}

/// One embedding request: token ids of each input, in order.
pub struct EmbedRequest {
    pub key: ModelKey,
    pub inputs: Vec<Vec<u32>>,
    pub health: Arc<ModelHealth>,
    /// A test-only fault at `prefill` (the forward pass).
    pub inject: Option<Injection>,
    pub reply: oneshot::Sender<Result<Vec<Vec<f32>>, EmbedFailure>>,
}

/// An embedding model and its state on the worker.
pub(super) struct EncoderSlot {
    pub(super) model: EmbedModel,
    /// Why the model was poisoned; it runs nothing more until unloaded.
    pub(super) poisoned: Option<String>,
}

impl EncoderSlot {
    /// Runs `req` and answers it.
    pub(super) fn run(&mut self, req: EmbedRequest, label: &str) {
        let result = self.embed(&req, label);
        let _ = req.reply.send(result);
    }

    fn embed(&mut self, req: &EmbedRequest, label: &str) -> Result<Vec<Vec<f32>>, EmbedFailure> {
        if let Some(why) = &self.poisoned {
            return Err(EmbedFailure {
                chain: format!("the model is poisoned after an earlier fault: {why}"),
                device_fault: true,
            });
        }
        let inject = req.inject.filter(|i| i.site == Site::Prefill);
        let run = catch_unwind(AssertUnwindSafe(|| {
            match inject.map(|i| i.kind) {
                Some(FaultKind::Panic) => panic!("injected panic at prefill"),
                Some(FaultKind::Device | FaultKind::Host) => {
                    return Err(inject.map(|i| i.message()).unwrap_or_default())
                }
                Some(FaultKind::Hang) | None => {}
            }
            self.model.embed(&req.inputs).map_err(|e| e.chain())
        }));
        match run {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(chain)) => {
                let device_fault = req.health.report(Site::Prefill, false, &chain);
                if device_fault {
                    self.poisoned = Some(chain.clone());
                }
                Err(EmbedFailure {
                    chain,
                    device_fault,
                })
            }
            Err(payload) => {
                let chain = format!("embedding panicked: {}", panic_text(payload.as_ref()));
                tracing::error!(device = %label, key = req.key, error = %chain, "model NOT marked poisoned: a panic in the encoder fails this request only");
                Err(EmbedFailure {
                    chain,
                    device_fault: false,
                })
            }
        }
    }
}
