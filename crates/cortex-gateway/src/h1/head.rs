//! An answer's head: status, headers, and how its body is framed.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use super::chunked::ChunkedDecoder;
use super::H1Error;

/// Most answer headers accepted.
const MAX_HEADERS: usize = 64;

/// An answer's head, parsed.
#[derive(Debug)]
pub(super) struct Head {
    /// Bytes of the head, blank line included.
    pub(super) len: usize,
    pub(super) status: StatusCode,
    /// The first `Content-Type`.
    pub(super) content_type: Option<HeaderValue>,
    /// The others, framing, `Date` and `Server` left out.
    pub(super) headers: HeaderMap,
    pub(super) keep_alive: bool,
    pub(super) content_length: Option<u64>,
    pub(super) chunked: bool,
}

impl Head {
    pub(super) fn framing(&self, method: &Method) -> Framing {
        let no_body = *method == Method::HEAD
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        if no_body {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(n) = self.content_length {
            Framing::Length(n)
        } else {
            Framing::ToClose
        }
    }
}

/// Parse an answer head from the start of `buf`; `None` while incomplete.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Invalid(e.to_string())),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| H1Error::Invalid("bad status code".into()))?;
    if status.is_informational() {
        return Err(H1Error::Invalid(format!("unexpected {status}")));
    }
    let mut keep_alive = r.version == Some(1);
    let mut content_length = None;
    let mut chunked = false;
    let mut content_type = None;
    // Allocated at its first header: usually there is none.
    let mut headers = HeaderMap::new();
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Invalid(format!("bad header name {:?}", h.name)))?;
        // The framing headers are read here and not passed on (they describe
        // this connection, not the answer): one copy less per header.
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| H1Error::Invalid("bad content-length".into()))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(H1Error::Invalid("conflicting content-length".into()));
            }
            content_length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            // Only the last coding frames the body; anything but chunked
            // there means "read to the close".
            chunked = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                keep_alive = false;
            }
        } else if name == http::header::CONNECTION {
            let v = std::str::from_utf8(h.value).unwrap_or_default();
            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
        } else if name == http::header::DATE || name == http::header::SERVER {
            // About the neuron's HTTP server, not the answer; never passed on.
        } else {
            let value = value_of(h.value)
                .map_err(|_| H1Error::Invalid(format!("bad value for header {name}")))?;
            if name == http::header::CONTENT_TYPE && content_type.is_none() {
                content_type = Some(value);
            } else {
                headers.append(name, value);
            }
        }
    }
    Ok(Some(Head {
        len,
        status,
        content_type,
        headers,
        keep_alive,
        content_length,
        chunked,
    }))
}

/// A header's value. The content types of the neurons' answers are static
/// values, as passing them on is what every request does: no copy.
fn value_of(v: &[u8]) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const EVENTS: HeaderValue = HeaderValue::from_static("text/event-stream");
    match v {
        b"application/json" => Ok(JSON),
        b"text/event-stream" => Ok(EVENTS),
        _ => HeaderValue::from_bytes(v),
    }
}

/// How the body's end is known.
#[derive(Debug)]
pub(super) enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    ToClose,
    Done,
}
