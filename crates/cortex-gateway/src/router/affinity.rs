//! Rule 2 with a prefix cache: which ready replica gets a chat request
//! when neurons report the conversations they hold KV for.
//!
//! Each candidate carries the prompt tokens its neuron reports cached for
//! the longest prefix of this request's conversation (0 when none, or when
//! that report is older than the affinity TTL). The rule:
//!
//! 1. Only replicas whose in-flight count is within `slack` of the least
//!    loaded one are **eligible**: affinity never piles requests on a node
//!    beyond that margin, so one hot system prompt, cached everywhere,
//!    cannot send everything to one node.
//! 2. Among the eligible, the one with the most cached tokens wins; ties
//!    (including "nobody has anything") go by [`super::ready_order`]: fewest
//!    in flight, least recently used, node name.
//! 3. The decision's [`Reason`]: `cached_prefix` when the winner holds the
//!    longest prefix any candidate holds, `load` when a longer one was on a
//!    node outside the margin, `least_loaded` when no candidate holds any.
//!
//! With `slack = 0` the rule is plain rule 2 among the least loaded, and
//! with equal cached tokens everywhere it is plain rule 2.

use super::ready_order;

/// A ready replica as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node: String,
    pub in_flight: u64,
    pub last_used_ms: u64,
    /// Prompt tokens of this conversation cached there.
    pub cached_tokens: u64,
}

/// Why a replica was chosen (the label of `cortex_routing_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    CachedPrefix,
    Load,
    LeastLoaded,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CachedPrefix => "cached_prefix",
            Reason::Load => "load",
            Reason::LeastLoaded => "least_loaded",
        }
    }
}

/// The index of the chosen candidate and why; `None` when there is none.
pub fn pick_with_affinity(cands: &[Candidate], slack: u64) -> Option<(usize, Reason)> {
    let least = cands.iter().map(|c| c.in_flight).min()?;
    let longest = cands.iter().map(|c| c.cached_tokens).max().unwrap_or(0);
    let (i, chosen) = cands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.in_flight <= least.saturating_add(slack))
        .min_by(|(_, a), (_, b)| {
            b.cached_tokens.cmp(&a.cached_tokens).then_with(|| {
                ready_order(
                    (a.in_flight, a.last_used_ms, &a.node),
                    (b.in_flight, b.last_used_ms, &b.node),
                )
            })
        })?;
    let reason = if longest == 0 {
        Reason::LeastLoaded
    } else if chosen.cached_tokens == longest {
        Reason::CachedPrefix
    } else {
        Reason::Load
    };
    Some((i, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{pick_ready, ReadyReplica};
    use proptest::prelude::*;

    fn c(node: &str, in_flight: u64, cached_tokens: u64) -> Candidate {
        Candidate {
            node: node.into(),
            in_flight,
            last_used_ms: 0,
            cached_tokens,
        }
    }

    #[test]
    fn examples() {
        // The node with the conversation wins while it is not overloaded.
        let r = pick_with_affinity(&[c("a", 0, 0), c("b", 1, 1600)], 2);
        assert_eq!(r, Some((1, Reason::CachedPrefix)));
        // Past the margin, load wins.
        let r = pick_with_affinity(&[c("a", 0, 0), c("b", 3, 1600)], 2);
        assert_eq!(r, Some((0, Reason::Load)));
        // Nobody holds it: least loaded.
        let r = pick_with_affinity(&[c("a", 1, 0), c("b", 0, 0)], 2);
        assert_eq!(r, Some((1, Reason::LeastLoaded)));
        // Everyone holds the same (a shared system prompt): least loaded.
        let r = pick_with_affinity(&[c("a", 1, 512), c("b", 0, 512)], 2);
        assert_eq!(r, Some((1, Reason::CachedPrefix)));
        assert_eq!(pick_with_affinity(&[], 2), None);
    }

    fn cands() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (
                0u64..6,
                0u64..100,
                prop::sample::select(vec![0u64, 16, 512, 1600]),
            ),
            1..6,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (f, l, t))| Candidate {
                    node: format!("n{i}"),
                    in_flight: f,
                    last_used_ms: l,
                    cached_tokens: t,
                })
                .collect()
        })
    }

    proptest! {
        /// Never beyond the margin; never a shorter prefix than an
        /// eligible node holds; plain rule 2 when caches are equal.
        #[test]
        fn the_rule_holds(cs in cands(), slack in 0u64..4) {
            let (i, reason) = pick_with_affinity(&cs, slack).unwrap();
            let least = cs.iter().map(|c| c.in_flight).min().unwrap();
            prop_assert!(cs[i].in_flight <= least + slack);
            for c in &cs {
                if c.in_flight <= least + slack {
                    prop_assert!(c.cached_tokens <= cs[i].cached_tokens);
                }
            }
            let longest = cs.iter().map(|c| c.cached_tokens).max().unwrap();
            prop_assert_eq!(reason == Reason::LeastLoaded, longest == 0);
            if cs.iter().all(|c| c.cached_tokens == cs[0].cached_tokens) {
                let plain: Vec<ReadyReplica> = cs.iter().map(|c| ReadyReplica {
                    node: c.node.clone(), in_flight: c.in_flight, last_used_ms: c.last_used_ms,
                }).collect();
                prop_assert_eq!(Some(i), pick_ready(&plain));
            }
        }
    }
}
