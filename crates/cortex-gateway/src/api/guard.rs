//! Request guards applied before any handler: path normalisation (paths
//! with `..`, `.`, `//`, encoded slashes, dots or backslashes are refused, so
//! no trick reaches a protected handler) and API-key authentication of
//! every route when keys are configured. Keys are compared in constant
//! time and never logged or echoed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{Anthropic, GatewayError, OpenAi};
use super::AppState;
use crate::http_server::RawHeaders;

/// Is this an Anthropic-dialect path?
pub fn is_anthropic(path: &str) -> bool {
    path.starts_with("/v1/messages")
}

/// `e` in the dialect of the route at `path`.
pub fn in_dialect_of(path: &str, e: GatewayError) -> Response {
    if is_anthropic(path) {
        Anthropic(e).into_response()
    } else {
        OpenAi(e).into_response()
    }
}

/// Is the raw path acceptable as it is?
pub fn path_is_clean(path: &str) -> bool {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return false;
    }
    // Encoded dots, slashes, backslashes and NULs, in either case.
    let encoded = |w: &[u8]| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'e' | b'f') | (b'5', b'c') | (b'0', b'0')
            )
    };
    if path.as_bytes().windows(3).any(encoded) {
        return false;
    }
    !path.split('/').any(|seg| seg == "." || seg == "..")
}

/// A request's headers as the guard reads them: the router's `HeaderMap`,
/// or the server's [`RawHeaders`] on the inference paths.
pub trait Headers {
    /// The first value of header `name` (lowercase).
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

impl Headers for RawHeaders {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.get(name)
    }
}

/// Does this caller speak Anthropic? Anthropic paths, and any request with
/// an `anthropic-version` header.
fn wants_anthropic(path: &str, headers: &impl Headers) -> bool {
    is_anthropic(path) || headers.header("anthropic-version").is_some()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents: `Authorization: Bearer K` or `x-api-key: K`.
fn presented(h: &impl Headers) -> Option<&[u8]> {
    h.header("authorization")
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .or_else(|| h.header("x-api-key"))
}

/// The guard's rules for a request to `path` with `headers`: refuse path
/// tricks, then check the API key when keys are configured. The refusal, if
/// any, is in the caller's dialect.
pub fn refusal(state: &AppState, path: &str, headers: &impl Headers) -> Option<Response> {
    if !path_is_clean(path) {
        return Some(in_dialect_of(path, GatewayError::RouteNotFound));
    }
    key_refusal(state, path, headers)
}

/// The API-key half of [`refusal`], for a path known to be clean.
pub fn key_refusal(state: &AppState, path: &str, headers: &impl Headers) -> Option<Response> {
    if state.api_keys.is_empty() {
        return None;
    }
    let ok = presented(headers).is_some_and(|k| {
        state
            .api_keys
            .iter()
            .any(|key| constant_time_eq(k, key.as_bytes()))
    });
    if ok {
        None
    } else if wants_anthropic(path, headers) {
        Some(Anthropic(GatewayError::Unauthorized).into_response())
    } else {
        Some(OpenAi(GatewayError::Unauthorized).into_response())
    }
}

/// Runs before every routed handler: [`refusal`].
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match refusal(&state, req.uri().path(), req.headers()) {
        None => next.run(req).await,
        Some(refused) => refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn path_tricks_are_refused() {
        for ok in ["/v1/models", "/admin/models/smollm2/load", "/health"] {
            assert!(path_is_clean(ok), "{ok}");
        }
        for bad in [
            "//admin/fleet",
            "/v1/../admin/fleet",
            "/v1/./models",
            "/v1/%2e%2e/admin/fleet",
            "/admin%2Ffleet",
            "/v1\\..\\admin",
            "/v1/models/%00",
            "/v1/%2E%2E/admin",
            "/v1%5Cadmin",
            "/v1%5cadmin",
            "admin",
        ] {
            assert!(!path_is_clean(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn clean_paths_have_no_dot_segments(p in "/[a-zA-Z0-9./%_-]{0,40}") {
            if path_is_clean(&p) {
                prop_assert!(!p.split('/').any(|s| s == ".." || s == "."));
                let lower = p.to_ascii_lowercase();
                for enc in ["%2e", "%2f", "%5c", "%00"] {
                    prop_assert!(!lower.contains(enc), "{p}");
                }
            }
        }
    }
}
