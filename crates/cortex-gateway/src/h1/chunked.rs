//! Decoding an HTTP/1.1 `Transfer-Encoding: chunked` body, incrementally:
//! bytes arrive in any fragments, and everything decodable so far comes out
//! at once (a burst of SSE events that the neuron wrote as several chunks is
//! one piece of data, so it goes to the client in one write).
//!
//! Strict where it matters (sizes are hex that fits in a u64, each chunk's
//! data ends with CRLF, lines are bounded), lenient where peers differ (chunk
//! extensions and trailers are skipped; a bare LF ends a size or trailer
//! line).

use bytes::{Buf, BytesMut};

/// Longest size line or trailer line accepted.
const MAX_LINE: usize = 4096;
/// Most trailer bytes accepted in all.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    Size,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("chunk size or trailer line too long")]
    LineTooLong,
    #[error("trailers too long")]
    TrailersTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers {
        seen: usize,
    },
    Done,
}

/// One chunked body's decoding state.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self { state: State::Size }
    }

    /// The whole body (with its trailers) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decode what `buf` holds: the data of every complete or partial chunk
    /// in it is copied to the result; framing is consumed; an incomplete line
    /// stays in `buf` for the next call. Bytes after the body's end stay in
    /// `buf` too.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<BytesMut, ChunkError> {
        let mut out = BytesMut::new();
        loop {
            match self.state {
                State::Done => return Ok(out),
                State::Size => {
                    let Some((len, used)) = line_end(buf)? else {
                        return Ok(out);
                    };
                    let size = parse_size(&buf[..len])?;
                    buf.advance(used);
                    self.state = if size == 0 {
                        State::Trailers { seen: 0 }
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(out);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    // Copied out, so that the connection's read buffer is
                    // never shared and is reused for the next answer.
                    out.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        // A lone CR may be the first half; anything else is wrong.
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(ChunkError::DataEnd);
                        }
                        return Ok(out);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::DataEnd);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers { seen } => {
                    let Some((len, used)) = line_end(buf)? else {
                        return Ok(out);
                    };
                    buf.advance(used);
                    if len == 0 {
                        self.state = State::Done;
                    } else {
                        let seen = seen + used;
                        if seen > MAX_TRAILERS {
                            return Err(ChunkError::TrailersTooLong);
                        }
                        self.state = State::Trailers { seen };
                    }
                }
            }
        }
    }
}

/// The length of the next line of `buf` without its line ending, and the
/// bytes it takes with it; `None` until a whole line is there.
fn line_end(buf: &[u8]) -> Result<Option<(usize, usize)>, ChunkError> {
    match buf.iter().take(MAX_LINE + 2).position(|b| *b == b'\n') {
        Some(i) => {
            let len = if i > 0 && buf[i - 1] == b'\r' {
                i - 1
            } else {
                i
            };
            Ok(Some((len, i + 1)))
        }
        None if buf.len() > MAX_LINE + 1 => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// A size line: hex digits, then optional whitespace and `;extensions`.
fn parse_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::Size);
    }
    let rest = &line[digits..];
    let rest_ok = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .is_none_or(|i| rest[i] == b';');
    if !rest_ok {
        return Err(ChunkError::Size);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::Size)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::Size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(decoder: &mut ChunkedDecoder, parts: &[&[u8]]) -> Result<Vec<u8>, ChunkError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for p in parts {
            buf.extend_from_slice(p);
            out.extend_from_slice(&decoder.decode(&mut buf)?);
        }
        Ok(out)
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let mut d = ChunkedDecoder::new();
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6 \r\nworld!\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut buf = BytesMut::from(&body[..]);
        let out = d.decode(&mut buf).unwrap();
        assert_eq!(&out[..], b"hello world!");
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT", "bytes after the body are left alone");
    }

    #[test]
    fn a_burst_of_chunks_comes_out_as_one_piece() {
        let mut d = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"3\r\nab\n\r\n3\r\ncd\n\r\n"[..]);
        assert_eq!(&d.decode(&mut buf).unwrap()[..], b"ab\ncd\n");
        assert!(!d.is_done());
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_bad_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"5x\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"3\r\nabcX\r\n",
            b"3\r\nabc\n\n",
        ] {
            let mut d = ChunkedDecoder::new();
            let mut buf = BytesMut::from(bad);
            assert!(
                d.decode(&mut buf).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut d = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&vec![b'1'; MAX_LINE + 10][..]);
        assert_eq!(d.decode(&mut buf), Err(ChunkError::LineTooLong));
    }

    #[test]
    fn an_incomplete_body_waits_for_more() {
        let mut d = ChunkedDecoder::new();
        let out = decode_all(&mut d, &[b"5\r\nhel", b"lo\r", b"\n0\r", b"\n"]).unwrap();
        assert_eq!(out, b"hello");
        assert!(!d.is_done(), "the empty line after the trailers is missing");
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        d.decode(&mut buf).unwrap();
        assert!(d.is_done());
    }

    fn encode(pieces: &[Vec<u8>], ext: bool, trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for p in pieces.iter().filter(|p| !p.is_empty()) {
            out.extend_from_slice(format!("{:x}", p.len()).as_bytes());
            if ext {
                out.extend_from_slice(b";name=value");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"X-Check: ok\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        /// Any body, chunked any way and delivered in any fragments,
        /// decodes to itself and ends exactly at its end.
        #[test]
        fn round_trips_in_any_fragments(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in prop::collection::vec(0usize..2000, 0..12),
            ext in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let wire = encode(&pieces, ext, trailer);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.push(0);
            cuts.push(wire.len());
            cuts.sort_unstable();
            let parts: Vec<&[u8]> = cuts.windows(2).map(|w| &wire[w[0]..w[1]]).collect();
            let mut d = ChunkedDecoder::new();
            let out = decode_all(&mut d, &parts).unwrap();
            prop_assert_eq!(out, pieces.concat());
            prop_assert!(d.is_done());
        }

        /// Garbage never panics; it is decoded, waited on, or refused.
        #[test]
        fn garbage_never_panics(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            cut in 0usize..600,
        ) {
            let cut = cut.min(bytes.len());
            let mut d = ChunkedDecoder::new();
            let _ = decode_all(&mut d, &[&bytes[..cut], &bytes[cut..]]);
        }

        /// A body cut short is never reported complete.
        #[test]
        fn a_truncated_body_is_not_done(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..100), 1..5),
            keep in 0usize..1000,
        ) {
            let wire = encode(&pieces, false, false);
            let keep = keep % wire.len();
            let mut d = ChunkedDecoder::new();
            let _ = decode_all(&mut d, &[&wire[..keep]]);
            prop_assert!(!d.is_done());
        }
    }
}
