//! Tool-call deltas of an OpenAI chat stream, sorted into what a translated
//! stream does with them; shared by the Anthropic ([`super::stream`]) and
//! Responses ([`super::responses::stream`]) state machines, which both show
//! one call at a time as a block or item that starts with the call's name.
//!
//! The rules: a call starts once its name is known (its id and argument
//! fragments are held until then); a new call, text, or the finish reason
//! starts a pending call with whatever name it has; fragments for the open
//! call pass through; fragments for a call that was started and is no
//! longer open (interleaved parallel calls, which no known server sends)
//! are dropped with a warning rather than reopening it.

use std::collections::HashSet;

use cortex_core::openai::ToolCallDelta;

/// A call whose block or item starts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedCall {
    /// Its index in the upstream stream.
    pub upstream: u32,
    /// Upstream's id, if it sent one.
    pub id: Option<String>,
    pub name: String,
    /// Argument fragments that came before the call started.
    pub arguments: String,
}

/// What to do with a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolStep {
    /// Start a block or item for this call (closing what is open).
    Start(StartedCall),
    /// More arguments for the call that is open.
    Arguments(String),
}

/// Per-stream tool-call state.
#[derive(Debug, Default)]
pub struct ToolDeltas {
    pending: Option<StartedCall>,
    started: HashSet<u32>,
}

impl ToolDeltas {
    /// Sort one delta; `open` is the upstream index of the call whose block
    /// or item is open, if one is.
    pub fn on_delta(&mut self, call: ToolCallDelta, open: Option<u32>) -> Vec<ToolStep> {
        let name = call.function.name.unwrap_or_default();
        let arguments = call.function.arguments;
        if open == Some(call.index) {
            return if arguments.is_empty() {
                Vec::new()
            } else {
                vec![ToolStep::Arguments(arguments)]
            };
        }
        if let Some(pending) = self.pending.as_mut().filter(|p| p.upstream == call.index) {
            pending.id = pending.id.take().or(call.id);
            pending.name.push_str(&name);
            pending.arguments.push_str(&arguments);
            return if pending.name.is_empty() {
                Vec::new()
            } else {
                self.flush().map(ToolStep::Start).into_iter().collect()
            };
        }
        if self.started.contains(&call.index) {
            tracing::warn!(
                upstream_index = call.index,
                "dropping a delta for a tool call that is no longer open"
            );
            return Vec::new();
        }
        let mut steps: Vec<ToolStep> = self.flush().map(ToolStep::Start).into_iter().collect();
        let named = !name.is_empty();
        self.pending = Some(StartedCall {
            upstream: call.index,
            id: call.id,
            name,
            arguments,
        });
        if named {
            steps.extend(self.flush().map(ToolStep::Start));
        }
        steps
    }

    /// Start the pending call now, with whatever name it has (text or the
    /// finish reason came).
    pub fn flush(&mut self) -> Option<StartedCall> {
        let call = self.pending.take()?;
        self.started.insert(call.upstream);
        Some(call)
    }

    /// True once any call started.
    pub fn any_started(&self) -> bool {
        !self.started.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cortex_core::openai::FunctionCallDelta;

    fn delta(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_string),
            kind: None,
            function: FunctionCallDelta {
                name: name.map(str::to_string),
                arguments: args.to_string(),
            },
        }
    }

    fn start(upstream: u32, id: Option<&str>, name: &str, args: &str) -> ToolStep {
        ToolStep::Start(StartedCall {
            upstream,
            id: id.map(str::to_string),
            name: name.to_string(),
            arguments: args.to_string(),
        })
    }

    #[test]
    fn a_call_starts_with_its_name_and_its_arguments_follow() {
        let mut t = ToolDeltas::default();
        assert_eq!(
            t.on_delta(delta(0, Some("c"), Some("f"), ""), None),
            vec![start(0, Some("c"), "f", "")]
        );
        assert_eq!(
            t.on_delta(delta(0, None, None, "{}"), Some(0)),
            vec![ToolStep::Arguments("{}".into())]
        );
        assert!(t.on_delta(delta(0, None, None, ""), Some(0)).is_empty());
        assert!(t.any_started());
    }

    #[test]
    fn a_nameless_call_waits_and_keeps_what_came() {
        let mut t = ToolDeltas::default();
        assert!(t
            .on_delta(delta(0, Some("c"), None, "{\"a\""), None)
            .is_empty());
        assert!(!t.any_started());
        assert_eq!(
            t.on_delta(delta(0, None, Some("late"), ":1}"), None),
            vec![start(0, Some("c"), "late", "{\"a\":1}")]
        );
    }

    #[test]
    fn a_new_call_starts_the_pending_one_first() {
        let mut t = ToolDeltas::default();
        assert!(t.on_delta(delta(0, None, None, "x"), None).is_empty());
        assert_eq!(
            t.on_delta(delta(1, Some("d"), Some("g"), "y"), None),
            vec![start(0, None, "", "x"), start(1, Some("d"), "g", "y")]
        );
        assert_eq!(t.flush(), None);
    }

    #[test]
    fn late_fragments_of_a_closed_call_are_dropped() {
        let mut t = ToolDeltas::default();
        t.on_delta(delta(0, Some("a"), Some("f"), ""), None);
        t.on_delta(delta(1, Some("b"), Some("g"), ""), Some(0));
        assert!(t.on_delta(delta(0, None, None, "late"), Some(1)).is_empty());
    }
}
