//! The guard every request passes before its handler: path normalisation
//! (paths with `..`, `.`, `//`, encoded slashes, dots or backslashes are
//! refused, so no trick reaches a protected handler), API-key
//! authentication of every route when keys are configured (keys compared
//! in constant time, never logged or echoed), and the body limit for a
//! declared length (413 on any route, read or not). Refusals come in the
//! caller's dialect.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use super::in_dialect;
use crate::error::GatewayError;
use crate::state::AppState;

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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request presents: `Authorization: Bearer K` or `x-api-key: K`.
fn presented(h: &HeaderMap) -> Option<&[u8]> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .or_else(|| h.get("x-api-key").map(|v| v.as_bytes()))
}

/// Why the guard refuses a request to `path` with `headers`, if it does:
/// a path trick, a missing or wrong API key (when keys are configured), or
/// a declared body over the limit, in that order.
pub fn refusal(state: &AppState, path: &str, headers: &HeaderMap) -> Option<GatewayError> {
    if !path_is_clean(path) {
        return Some(GatewayError::RouteNotFound);
    }
    if !state.api_keys.is_empty() {
        let ok = presented(headers).is_some_and(|k| {
            state
                .api_keys
                .iter()
                .any(|key| constant_time_eq(k, key.as_bytes()))
        });
        if !ok {
            return Some(GatewayError::Unauthorized);
        }
    }
    // Refused unread on any route, whether or not its handler reads the
    // body; a body without a length is bounded as it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.limits.max_body.bytes()) {
        return Some(GatewayError::PayloadTooLarge);
    }
    None
}

/// Runs before every handler: [`refusal`], answered in the caller's
/// dialect.
pub async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match refusal(&state, req.uri().path(), req.headers()) {
        None => next.run(req).await,
        Some(e) => in_dialect(req.uri().path(), req.headers(), e),
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
