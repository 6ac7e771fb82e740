//! Stop sequences over streamed text.
//!
//! Owns the hold-back buffer: text that could be the start of a stop string
//! is kept until it is known not to be, so the output never contains a stop
//! string, however the text was split into pieces. It works on text, not
//! token ids, and knows nothing of EOS or max_tokens.
//!
//! "Earliest match" means the stop string that is complete first as the text
//! streams in (the smallest end offset); between two that end at the same
//! offset, the longer one. That makes the result independent of how the text
//! was split.

/// Finds stop strings in streamed text.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet emitted (a possible start of a stop string).
    held: String,
    done: bool,
}

/// The result of one [`StopMatcher::push`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopOutput {
    /// Text safe to emit now.
    pub text: String,
    /// The stop string that ended generation, if one matched.
    pub matched: Option<String>,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        let mut stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        stops.sort();
        stops.dedup();
        Self {
            stops,
            held: String::new(),
            done: false,
        }
    }

    /// Whether a stop string has matched (further pushes return nothing).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Adds streamed text; returns what can be emitted and, when a stop
    /// string completes, that string. After a match, returns empty output.
    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.done {
            return StopOutput::default();
        }
        self.held.push_str(text);
        if let Some((start, stop)) = self.first_match() {
            let stop = stop.to_string();
            let mut emitted = std::mem::take(&mut self.held);
            emitted.truncate(start);
            self.done = true;
            return StopOutput {
                text: emitted,
                matched: Some(stop),
            };
        }
        let keep = self.partial_suffix_len();
        let emit_len = self.held.len() - keep;
        let rest = self.held.split_off(emit_len);
        let text = std::mem::replace(&mut self.held, rest);
        StopOutput {
            text,
            matched: None,
        }
    }

    /// Ends the stream: returns the held-back text (nothing after a match).
    pub fn finish(&mut self) -> String {
        if self.done {
            self.held.clear();
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// The match that completes first: `(start, stop)`.
    fn first_match(&self) -> Option<(usize, &str)> {
        self.stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|i| (i, stop.as_str())))
            // Smallest end, then smallest start (the longer stop).
            .min_by_key(|(start, stop)| (start + stop.len(), *start))
    }

    /// Length of the longest suffix of `held` that is a proper prefix of a
    /// stop string.
    fn partial_suffix_len(&self) -> usize {
        partial_suffix_len(&self.held, self.stops.iter().map(String::as_str))
    }
}

/// Length of the longest suffix of `held` that is a proper prefix of one of
/// `patterns` (text to hold back while it may still become one). Such a
/// suffix always starts on a char boundary: it equals the start of a valid
/// UTF-8 string.
pub fn partial_suffix_len<'a>(held: &str, patterns: impl IntoIterator<Item = &'a str>) -> usize {
    let held = held.as_bytes();
    patterns
        .into_iter()
        .filter_map(|p| {
            let max = (p.len().saturating_sub(1)).min(held.len());
            (1..=max)
                .rev()
                .find(|&n| held[held.len() - n..] == p.as_bytes()[..n])
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Feeds the pieces; returns (emitted text, matched stop).
    fn feed(m: &mut StopMatcher, pieces: &[&str]) -> (String, Option<String>) {
        let mut out = String::new();
        let mut matched = None;
        for p in pieces {
            let o = m.push(p);
            out.push_str(&o.text);
            if o.matched.is_some() {
                assert!(matched.is_none(), "matched twice");
                matched = o.matched;
            }
        }
        out.push_str(&m.finish());
        (out, matched)
    }

    #[test]
    fn no_stops_passes_everything_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc").text, "abc");
        assert_eq!(m.finish(), "");
        let mut m = matcher(&[""]);
        assert_eq!(m.push("abc").text, "abc");
    }

    #[test]
    fn stop_inside_one_piece() {
        let mut m = matcher(&["END"]);
        let o = m.push("hello END world");
        assert_eq!(o.text, "hello ");
        assert_eq!(o.matched.as_deref(), Some("END"));
        assert!(m.is_done());
        assert_eq!(m.push("more"), StopOutput::default());
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_split_across_pieces_is_held_back() {
        let mut m = matcher(&["</answer>"]);
        assert_eq!(m.push("42 </an").text, "42 ");
        assert_eq!(m.push("sw").text, "");
        let o = m.push("er> trailing");
        assert_eq!(o.text, "");
        assert_eq!(o.matched.as_deref(), Some("</answer>"));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("ST").text, "");
        assert_eq!(m.push("ART").text, "START");
        assert_eq!(m.push("S").text, "");
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn overlapping_prefixes() {
        // "aab": after "aa" the suffix "a" could still start "aab".
        assert_eq!(
            feed(&mut matcher(&["aab"]), &["a", "a", "a", "b", "c"]),
            ("a".to_string(), Some("aab".to_string()))
        );
    }

    #[test]
    fn earliest_completion_wins_then_longest() {
        assert_eq!(
            feed(&mut matcher(&["world", "o w"]), &["hello world"]),
            ("hell".to_string(), Some("o w".to_string()))
        );
        // "bc" completes before "abcd" could.
        assert_eq!(
            feed(&mut matcher(&["abcd", "bc"]), &["xabcd"]),
            ("xa".to_string(), Some("bc".to_string()))
        );
        // Same end: the longer one.
        assert_eq!(
            feed(&mut matcher(&["c", "abc"]), &["xab", "c"]),
            ("x".to_string(), Some("abc".to_string()))
        );
    }

    #[test]
    fn multibyte_stops_and_text() {
        let mut m = matcher(&["—终"]);
        assert_eq!(m.push("naïve —").text, "naïve ");
        let o = m.push("终了");
        assert_eq!((o.text.as_str(), o.matched.as_deref()), ("", Some("—终")));
        // A stop that shares a leading byte with the text must not split a char.
        let mut m = matcher(&["é!"]);
        assert_eq!(m.push("café").text, "caf");
        assert_eq!(m.push("e").text, "ée");
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "ab", "é", "终", " ", "🦀"], 0..24)
            .prop_map(|v| v.concat())
    }

    /// Splits `s` at arbitrary char boundaries.
    fn split(s: &str, cuts: &[usize]) -> Vec<String> {
        let bounds: Vec<usize> = (0..=s.len()).filter(|i| s.is_char_boundary(*i)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        points.push(0);
        points.push(s.len());
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| s[w[0]..w[1]].to_string())
            .collect()
    }

    proptest! {
        #[test]
        fn stop_matcher_properties(
            input in text_strategy(),
            stops in proptest::collection::vec(text_strategy(), 0..4),
            cuts in proptest::collection::vec(0usize..1000, 0..8),
        ) {
            let pieces = split(&input, &cuts);
            let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
            let mut m = StopMatcher::new(stops.clone());
            let (out, matched) = feed(&mut m, &refs);
            let real: Vec<&String> = stops.iter().filter(|s| !s.is_empty()).collect();
            for s in &real {
                prop_assert!(!out.contains(s.as_str()), "output {:?} contains {:?}", out, s);
            }
            match &matched {
                Some(stop) => {
                    let expected = format!("{}{}", out, stop);
                    prop_assert!(input.starts_with(&expected));
                }
                None => {
                    prop_assert_eq!(&out, &input);
                    for s in &real {
                        prop_assert!(!input.contains(s.as_str()));
                    }
                }
            }
            // Chunking does not change the result.
            let mut whole = StopMatcher::new(stops);
            prop_assert_eq!((out, matched), feed(&mut whole, &[input.as_str()]));
        }
    }
}
