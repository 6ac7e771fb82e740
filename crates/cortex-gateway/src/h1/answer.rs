//! A neuron's answer: status, headers and a body read as it is polled.

use http::{HeaderMap, HeaderValue, StatusCode};

use super::Body;

/// An answer. Its content type, which every answer has and the proxy passes
/// on, is kept apart from the other headers, so that an answer with no
/// others (the usual case) allocates no header map. The headers that frame
/// the body (`Content-Length`, `Transfer-Encoding`, `Connection`) and those
/// about the neuron's server (`Date`, `Server`) are not kept.
#[derive(Debug)]
pub struct Answer {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<HeaderValue>,
    pub(super) headers: HeaderMap,
    pub(super) body: Body,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first `Content-Type`.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The headers besides the content type.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn into_body(self) -> Body {
        self.body
    }
}
