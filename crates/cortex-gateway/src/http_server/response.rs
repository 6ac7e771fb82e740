//! Writing an answer: its head, and its body framed by `Content-Length`
//! when the length is known, by chunks when it is not (or, for an HTTP/1.0
//! client, by closing the connection).

use crate::ascii::{push_decimal, push_hex};
use axum::body::Body;
use cortex_core::openai::ErrorResponse;
use http::{header, HeaderMap, Response, StatusCode, Version};

/// How the answer's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304); `Content-Length` may
    /// still describe what a GET would get.
    None(Option<u64>),
    Length(u64),
    Chunked,
    /// The body runs to the connection's close (HTTP/1.0, length unknown).
    ToClose,
}

impl Framing {
    /// The framing for an answer with `status` to a request made with
    /// `version` (`head_request` for HEAD), whose body is `exact` bytes
    /// when known.
    pub(super) fn choose(
        status: StatusCode,
        head_request: bool,
        version: Version,
        exact: Option<u64>,
    ) -> Self {
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        match exact {
            _ if bodiless => Framing::None(None),
            n if head_request => Framing::None(n),
            Some(n) => Framing::Length(n),
            None if version == Version::HTTP_10 => Framing::ToClose,
            None => Framing::Chunked,
        }
    }

    /// The connection cannot carry another request after this answer.
    pub(super) fn ends_connection(self) -> bool {
        self == Framing::ToClose
    }
}

/// What the answer says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Persistence {
    /// HTTP/1.1's default: kept, nothing said.
    Kept,
    /// An HTTP/1.0 client that asked to keep it: `connection: keep-alive`,
    /// without which it would close.
    KeptAsAsked,
    /// `connection: close`, and the server closes after the answer.
    Closed,
}

impl Persistence {
    /// For a request made with `version`, when the connection is `kept`.
    pub(super) fn of(version: Version, kept: bool) -> Self {
        match (kept, version) {
            (false, _) => Persistence::Closed,
            (true, Version::HTTP_10) => Persistence::KeptAsAsked,
            (true, _) => Persistence::Kept,
        }
    }
}

/// Headers the connection decides, not the handler.
fn is_framing_header(name: &header::HeaderName) -> bool {
    name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name.as_str() == "keep-alive"
}

/// Append the head of an answer with `headers` to `out`.
pub(super) fn write_head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: impl IntoIterator<Item = (&'a header::HeaderName, &'a header::HeaderValue)>,
    framing: Framing,
    persistence: Persistence,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if is_framing_header(name) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::None(Some(n)) | Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None(None) | Framing::ToClose => {}
    }
    match persistence {
        Persistence::Kept => {}
        Persistence::KeptAsAsked => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Persistence::Closed => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Append body `data` to `out` as `framing` asks.
pub(super) fn write_data(out: &mut Vec<u8>, framing: Framing, data: &[u8]) {
    match framing {
        Framing::None(_) => {}
        Framing::Length(_) | Framing::ToClose => out.extend_from_slice(data),
        Framing::Chunked if data.is_empty() => {}
        Framing::Chunked => {
            push_hex(out, data.len());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Append the end of the body (the last chunk) to `out`.
pub(super) fn write_end(out: &mut Vec<u8>, framing: Framing) {
    if framing == Framing::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// An OpenAI-style error body: the dialect is not known to the server.
fn error_json(message: &str, code: Option<&str>) -> Vec<u8> {
    let error = ErrorResponse::new("invalid_request_error", message, None, code);
    serde_json::to_vec(&error).unwrap_or_default()
}

/// A complete small answer that closes the connection: for requests refused
/// before any handler saw them.
pub(super) fn refusal(status: StatusCode, message: &str) -> Vec<u8> {
    let body = error_json(message, None);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let mut out = Vec::with_capacity(256 + body.len());
    let framing = Framing::Length(body.len() as u64);
    write_head(&mut out, status, &headers, framing, Persistence::Closed);
    write_data(&mut out, framing, &body);
    out
}

/// 413 for a body over the limit, from a handler that has no dialect.
pub(super) fn too_large() -> Response<Body> {
    let body = error_json(
        "request body is larger than the limit",
        Some("request_too_large"),
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn a_known_length_answer() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        headers.insert(header::CONNECTION, "upgrade".parse().unwrap());
        let mut out = Vec::new();
        let f = Framing::choose(StatusCode::OK, false, Version::HTTP_11, Some(2));
        write_head(&mut out, StatusCode::OK, &headers, f, Persistence::Kept);
        write_data(&mut out, f, b"{}");
        write_end(&mut out, f);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn a_stream_is_chunked_for_1_1_and_runs_to_close_for_1_0() {
        let f = Framing::choose(StatusCode::OK, false, Version::HTTP_11, None);
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            f,
            Persistence::Closed,
        );
        write_data(&mut out, f, b"data: 1\n\n");
        write_data(&mut out, f, b"");
        write_end(&mut out, f);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"
        );
        let f = Framing::choose(StatusCode::OK, false, Version::HTTP_10, None);
        assert!(f.ends_connection());
        let mut out = Vec::new();
        write_data(&mut out, f, b"abc");
        write_end(&mut out, f);
        assert_eq!(text(&out), "abc");
    }

    #[test]
    fn bodiless_answers() {
        let f = Framing::choose(StatusCode::OK, true, Version::HTTP_11, Some(7));
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::OK,
            &HeaderMap::new(),
            f,
            Persistence::KeptAsAsked,
        );
        write_data(&mut out, f, b"ignored");
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: keep-alive\r\n\r\n"
        );
        let f = Framing::choose(StatusCode::NO_CONTENT, false, Version::HTTP_11, Some(0));
        let mut out = Vec::new();
        write_head(
            &mut out,
            StatusCode::NO_CONTENT,
            &HeaderMap::new(),
            f,
            Persistence::Kept,
        );
        assert_eq!(text(&out), "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn a_refusal_is_json_and_closes() {
        let out = refusal(StatusCode::BAD_REQUEST, "malformed request head");
        let t = text(&out);
        assert!(t.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{t}");
        assert!(t.contains("connection: close\r\n"), "{t}");
        let body = t.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["message"], "malformed request head");
    }
}
