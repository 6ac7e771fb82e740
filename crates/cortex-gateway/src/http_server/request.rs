//! A request's head: parsed from the connection's read buffer without
//! copying (header values and the target are slices of the head's bytes),
//! with the framing of its body decided the way RFC 9112 §6 asks.

use bytes::BytesMut;
use http::{Method, Uri, Version};

use super::headers::{Field, RawHeaders};

/// Most request headers accepted; more is 431, like a head over the size
/// limit.
const MAX_HEADERS: usize = 128;

/// How the request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) method: Method,
    pub(super) uri: Uri,
    pub(super) version: Version,
    pub(super) headers: RawHeaders,
    pub(super) framing: Framing,
    /// The client allows another request on this connection.
    pub(super) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before its
    /// body.
    pub(super) expect_continue: bool,
}

/// Why a head is refused; the connection closes after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// 431: too many or too large headers.
    TooLarge,
    /// 400, with what was wrong.
    Bad(&'static str),
    /// 501: a transfer coding other than `chunked`.
    NotImplemented(&'static str),
}

/// Headers parsed on the stack first; a head with more is parsed again with
/// room for [`MAX_HEADERS`].
const USUAL_HEADERS: usize = 32;

/// Parse the head at the start of `buf`. On success its bytes are taken out
/// of `buf`; `Ok(None)` while it is incomplete (and then `buf` is as it
/// was).
pub(super) fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, Refusal> {
    match parse_with::<USUAL_HEADERS>(buf, max_head) {
        Err(Refusal::TooLarge) if buf.len() <= max_head => parse_with::<MAX_HEADERS>(buf, max_head),
        r => r,
    }
}

/// [`parse`], with room for `N` headers (more is [`Refusal::TooLarge`]).
fn parse_with<const N: usize>(
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<Option<Head>, Refusal> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; N];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Bad("malformed request head")),
    };
    if len > max_head {
        return Err(Refusal::TooLarge);
    }
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::Bad("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = req.path.unwrap_or_default().as_bytes();
    let target = (offset(target), target.len() as u32);
    // Where each header's name and value lie in the head, to slice them
    // once the head is frozen.
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut seen = Seen::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        seen.note(name, h.value);
        fields.push(Field {
            name: (offset(name), name.len() as u32),
            value: (offset(h.value), h.value.len() as u32),
        });
    }
    let head = buf.split_to(len).freeze();
    let (at, n) = target;
    let uri = Uri::from_maybe_shared(head.slice(at as usize..(at + n) as usize))
        .map_err(|_| Refusal::Bad("invalid target"))?;
    let headers = RawHeaders::new(head, fields);
    let framing = seen.framing()?;
    let keep_alive = if version == Version::HTTP_10 {
        seen.keep_alive_token
    } else {
        !seen.close_token
    };
    let expect_continue = version == Version::HTTP_11 && seen.expect_continue == Some(true);
    Ok(Some(Head {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// What the headers that concern this connection say, gathered as the
/// head is read (not looked up again afterwards).
struct Seen {
    /// `Transfer-Encoding` headers, and whether the first was `chunked`.
    transfer_encodings: usize,
    first_is_chunked: bool,
    /// Some `Content-Length` was sent.
    content_length: bool,
    /// What the `Content-Length`s say: the length, or the first problem.
    length: Result<Option<u64>, Refusal>,
    /// `Connection` tokens.
    close_token: bool,
    keep_alive_token: bool,
    /// The first `Expect`: is it `100-continue`?
    expect_continue: Option<bool>,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            transfer_encodings: 0,
            first_is_chunked: false,
            content_length: false,
            length: Ok(None),
            close_token: false,
            keep_alive_token: false,
            expect_continue: None,
        }
    }
}

impl Seen {
    fn note(&mut self, name: &[u8], v: &[u8]) {
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.transfer_encodings == 0 {
                self.first_is_chunked = v.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            self.transfer_encodings += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            self.content_length = true;
            if let Ok(length) = self.length {
                self.length = match crate::ascii::parse_decimal(v) {
                    None => Err(Refusal::Bad("invalid Content-Length")),
                    Some(n) if length.is_some_and(|l| l != n) => {
                        Err(Refusal::Bad("conflicting Content-Length headers"))
                    }
                    Some(n) => Ok(Some(n)),
                };
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in v.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                self.close_token |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") && self.expect_continue.is_none() {
            self.expect_continue = Some(v.eq_ignore_ascii_case(b"100-continue"));
        }
    }

    /// The body's framing. A request with both `Transfer-Encoding` and
    /// `Content-Length`, or with `Content-Length`s that disagree, is
    /// refused: those are how requests are smuggled past proxies.
    fn framing(&self) -> Result<Framing, Refusal> {
        if self.transfer_encodings > 0 {
            if self.content_length {
                return Err(Refusal::Bad(
                    "both Transfer-Encoding and Content-Length are set",
                ));
            }
            if self.transfer_encodings > 1 || !self.first_is_chunked {
                return Err(Refusal::NotImplemented(
                    "only the chunked transfer coding is supported",
                ));
            }
            return Ok(Framing::Chunked);
        }
        Ok(match self.length.clone()? {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(text: &str) -> Result<Option<Head>, Refusal> {
        parse(&mut BytesMut::from(text), 64 * 1024)
    }

    #[test]
    fn a_plain_post_with_its_body_framing() {
        let mut buf = BytesMut::from(
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 12\r\nX-Api-Key: k\r\n\r\n{\"a\":1}",
        );
        let h = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/v1/chat/completions");
        assert_eq!(h.uri.query(), Some("x=1"));
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.headers.get("x-api-key"), Some(&b"k"[..]));
        assert_eq!(h.headers.get("HOST"), Some(&b"gw"[..]));
        assert_eq!(h.headers.len(), 3);
        assert!(h.keep_alive && !h.expect_continue);
        assert_eq!(&buf[..], b"{\"a\":1}", "the body's first bytes stay");
    }

    #[test]
    fn an_incomplete_head_leaves_the_buffer_alone() {
        let mut buf = BytesMut::from("GET /health HTTP/1.1\r\nHost: g");
        assert!(parse(&mut buf, 1024).unwrap().is_none());
        assert_eq!(buf.len(), 29);
    }

    #[test]
    fn heads_over_the_limit_are_431_complete_or_not() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(
            parse(&mut BytesMut::from(&big[..]), 1024).unwrap_err(),
            Refusal::TooLarge
        );
        let partial = &big[..1500];
        assert_eq!(
            parse(&mut BytesMut::from(partial), 1024).unwrap_err(),
            Refusal::TooLarge
        );
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(head(&req).unwrap_err(), Refusal::TooLarge);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f =
            |hs: &str| head(&format!("POST / HTTP/1.1\r\n{hs}\r\n")).map(|h| h.unwrap().framing);
        assert_eq!(f(""), Ok(Framing::Empty));
        assert_eq!(f("Content-Length: 0\r\n"), Ok(Framing::Empty));
        assert_eq!(f("Transfer-Encoding: Chunked\r\n"), Ok(Framing::Chunked));
        assert_eq!(
            f("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Ok(Framing::Length(5))
        );
        for bad in [
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ] {
            assert!(matches!(f(bad), Err(Refusal::Bad(_))), "{bad:?}");
        }
        for unsupported in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert!(
                matches!(f(unsupported), Err(Refusal::NotImplemented(_))),
                "{unsupported:?}"
            );
        }
    }

    #[test]
    fn keep_alive_and_expect() {
        let h = |s: &str| head(s).unwrap().unwrap();
        assert!(!h("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.1\r\nConnection: te, close\r\n\r\n").keep_alive);
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(
            h("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
                .expect_continue
        );
        assert!(
            !h("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn absolute_targets_parse_and_junk_is_400() {
        let h = head("GET http://evil.example/v1/models HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.uri.path(), "/v1/models");
        assert!(matches!(
            head("GET /a b HTTP/1.1\r\n\r\n"),
            Err(Refusal::Bad(_))
        ));
        assert!(matches!(
            head("\x01\x02 / HTTP/1.1\r\n\r\n"),
            Err(Refusal::Bad(_))
        ));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nX\x7f: v\r\n\r\n"),
            Err(Refusal::Bad(_))
        ));
    }

    proptest! {
        /// Any bytes: a head, a wait for more, or a refusal; never a panic,
        /// and a parsed head takes exactly its own bytes.
        #[test]
        fn any_bytes_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            match parse(&mut buf, 256) {
                Ok(Some(_)) => prop_assert!(buf.len() < bytes.len()),
                Ok(None) => prop_assert_eq!(&buf[..], &bytes[..]),
                Err(_) => {}
            }
        }

        /// Whatever header names and values the parser takes, `http` takes
        /// too: a head's headers all go into a `HeaderMap`, as they came.
        #[test]
        fn every_parsed_header_goes_into_a_header_map(
            headers in proptest::collection::vec((
                "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}",
                proptest::collection::vec(
                    prop_oneof![8 => 0x20u8..0x7f, 2 => 0x80u8..=0xff, 1 => Just(b'\t'), 1 => any::<u8>()],
                    0..24,
                ),
            ), 0..10),
        ) {
            let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
            for (name, value) in &headers {
                bytes.extend_from_slice(name.as_bytes());
                bytes.extend_from_slice(b": ");
                bytes.extend_from_slice(value);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"\r\n");
            if let Ok(Some(h)) = parse(&mut BytesMut::from(&bytes[..]), 64 * 1024) {
                let map = h.headers.to_map();
                prop_assert_eq!(map.len(), h.headers.len());
                for (name, value) in h.headers.iter() {
                    let name = std::str::from_utf8(name).unwrap();
                    prop_assert!(map.get_all(name).iter().any(|v| v.as_bytes() == value));
                }
            }
        }

        /// Well-formed requests round-trip, whatever their header values and
        /// however the buffer ends.
        #[test]
        fn generated_heads_round_trip(
            path in "/[a-z0-9/_.-]{0,40}",
            values in proptest::collection::vec("[ -~]{0,30}", 0..8),
            len in proptest::option::of(0u64..1_000_000),
            tail in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut text = format!("POST {path} HTTP/1.1\r\n");
            for (i, v) in values.iter().enumerate() {
                text.push_str(&format!("X-H{i}: {v}\r\n"));
            }
            if let Some(n) = len {
                text.push_str(&format!("Content-Length: {n}\r\n"));
            }
            text.push_str("\r\n");
            let mut buf = BytesMut::from(text.as_bytes());
            buf.extend_from_slice(&tail);
            let h = parse(&mut buf, 64 * 1024).unwrap().unwrap();
            prop_assert_eq!(h.uri.path(), if path.is_empty() { "/" } else { &path });
            for (i, v) in values.iter().enumerate() {
                prop_assert_eq!(h.headers.get(&format!("x-h{i}")), Some(v.trim().as_bytes()));
            }
            let want = match len { None | Some(0) => Framing::Empty, Some(n) => Framing::Length(n) };
            prop_assert_eq!(h.framing, want);
            prop_assert_eq!(&buf[..], &tail[..]);
        }
    }
}
