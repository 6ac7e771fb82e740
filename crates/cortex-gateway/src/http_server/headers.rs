//! A request's headers as they arrived: where each name and value lies in
//! the head's bytes, which the headers share. Nothing is copied, hashed or
//! allocated per header: the proxy's hot path reads at most one or two of
//! them (the API key), so building an `http::HeaderMap` for every request
//! cost more than all its lookups. [`RawHeaders::to_map`] builds one for
//! the handlers that want it (the router).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Where one header's name and value lie in the head (which is at most
/// `MAX_HEAD_BYTES`, so `u32` offsets suffice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Field {
    pub(super) name: (u32, u32),
    pub(super) value: (u32, u32),
}

/// A request's headers, in the order sent. Names and values are what
/// httparse accepted: names are tokens, values visible bytes, spaces and
/// tabs (and obs-text), trimmed — exactly what `http`'s types accept.
#[derive(Debug, Clone, Default)]
pub struct RawHeaders {
    head: Bytes,
    fields: Vec<Field>,
}

impl RawHeaders {
    /// The headers at `fields` of `head`.
    pub(super) fn new(head: Bytes, fields: Vec<Field>) -> Self {
        Self { head, fields }
    }

    fn bytes(&self, (at, len): (u32, u32)) -> &[u8] {
        &self.head[at as usize..(at + len) as usize]
    }

    /// Every header, as (name, value), in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|f| (self.bytes(f.name), self.bytes(f.value)))
    }

    /// The first value of header `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The headers as an `http::HeaderMap` (values share the head's bytes).
    /// A header `http` would not take is left out, though none can be: the
    /// parser accepts only what it takes (a property test checks).
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for f in &self.fields {
            let (at, len) = f.value;
            let value = self.head.slice(at as usize..(at + len) as usize);
            match (
                HeaderName::from_bytes(self.bytes(f.name)),
                HeaderValue::from_maybe_shared(value),
            ) {
                (Ok(name), Ok(value)) => {
                    map.append(name, value);
                }
                _ => tracing::debug!("a request header http does not take was left out"),
            }
        }
        map
    }
}
