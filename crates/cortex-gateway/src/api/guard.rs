//! The guard every request passes before its handler: path normalisation
//! (paths with `..`, `.`, `//`, encoded slashes, dots or backslashes are
//! refused, so no trick reaches a protected handler), key checks (API keys
//! on every route when configured; admin keys, when configured, on the
//! admin API; keys compared in constant time, never logged or echoed), and
//! the body limit for a
//! declared length (413 on any route, read or not). Refusals come in the
//! caller's dialect.

use std::sync::Arc;

use cortex_core::config::GatewaySection;

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

/// The keys the gateway was configured with.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    api: Vec<String>,
    admin: Vec<String>,
}

/// What a presented key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Admin,
    Api,
    Nobody,
}

impl Keys {
    pub fn new(g: &GatewaySection) -> Self {
        Self {
            api: g.api_keys.clone(),
            admin: g.admin_keys.clone(),
        }
    }

    /// What the start-up log says about the admin API (never a key).
    pub fn admin_policy(&self) -> &'static str {
        match (self.admin.is_empty(), self.api.is_empty()) {
            (false, _) => "the admin API needs one of gateway.admin_keys",
            (true, false) => {
                "gateway.admin_keys is not set: the admin API accepts every API key"
            }
            (true, true) => "no keys are set: the API and the admin API are open to anyone who can reach the port",
        }
    }

    fn holder(&self, h: &HeaderMap) -> Holder {
        // Every key is compared, whichever matches first, so the time taken
        // does not tell which list a key is in.
        let Some(k) = presented(h) else {
            return Holder::Nobody;
        };
        let matches = |list: &[String]| {
            list.iter()
                .fold(false, |hit, key| hit | constant_time_eq(k, key.as_bytes()))
        };
        let (admin, api) = (matches(&self.admin), matches(&self.api));
        if admin {
            Holder::Admin
        } else if api {
            Holder::Api
        } else {
            Holder::Nobody
        }
    }

    /// May a request to `path` with `headers` go on? An admin key opens
    /// every route; with admin keys set, an API key on the admin API is
    /// 403; with none set, the admin API is guarded like the rest.
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<(), GatewayError> {
        // The fleet page is public: it holds no data, asks its user for the
        // admin key and sends it on its /admin/* calls, which are guarded.
        if PUBLIC_PAGES.contains(&path) {
            return Ok(());
        }
        let admin_route = path == "/admin" || path.starts_with("/admin/");
        let holder = self.holder(headers);
        if admin_route && !self.admin.is_empty() {
            return match holder {
                Holder::Admin => Ok(()),
                Holder::Api => Err(GatewayError::Forbidden),
                Holder::Nobody => Err(GatewayError::Unauthorized),
            };
        }
        if self.api.is_empty() || holder != Holder::Nobody {
            Ok(())
        } else {
            Err(GatewayError::Unauthorized)
        }
    }
}

/// Paths open without a key: the fleet page and the redirect to it.
pub const PUBLIC_PAGES: [&str; 2] = ["/", "/ui"];

/// Why the guard refuses a request to `path` with `headers`, if it does:
/// a path trick, a missing, wrong or insufficient key (when keys are
/// configured), or
/// a declared body over the limit, in that order.
pub fn refusal(state: &AppState, path: &str, headers: &HeaderMap) -> Option<GatewayError> {
    if !path_is_clean(path) {
        return Some(GatewayError::RouteNotFound);
    }
    if let Err(e) = state.keys.check(path, headers) {
        return Some(e);
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

    fn keys(api: &[&str], admin: &[&str]) -> Keys {
        let owned = |l: &[&str]| l.iter().map(|k| k.to_string()).collect();
        Keys {
            api: owned(api),
            admin: owned(admin),
        }
    }

    fn bearer(k: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(k) = k {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {k}").parse().unwrap(),
            );
        }
        h
    }

    /// Every configuration × route kind × key kind, and the answer.
    #[test]
    fn keys_by_route_and_holder() {
        const API: &str = "sk-api";
        const ADMIN: &str = "sk-admin";
        let presented = [None, Some("sk-wrong"), Some(API), Some(ADMIN)];
        let admin_routes = [
            "/admin/fleet",
            "/admin/models/m/load",
            "/admin/models/m/unload",
            "/admin/models/m/pin",
            "/admin/models/m/unpin",
        ];
        let api_routes = ["/v1/models", "/v1/chat/completions", "/v1/messages"];
        // (api keys, admin keys, expected per presented key on API routes,
        // on admin routes); 0 = allowed.
        type Row = (
            &'static [&'static str],
            &'static [&'static str],
            [u16; 4],
            [u16; 4],
        );
        let table: [Row; 4] = [
            (&[], &[], [0, 0, 0, 0], [0, 0, 0, 0]),
            (&[API], &[], [401, 401, 0, 401], [401, 401, 0, 401]),
            (&[], &[ADMIN], [0, 0, 0, 0], [401, 401, 401, 0]),
            (&[API], &[ADMIN], [401, 401, 0, 0], [401, 401, 403, 0]),
        ];
        let code = |r: Result<(), GatewayError>| match r {
            Ok(()) => 0,
            Err(GatewayError::Unauthorized) => 401,
            Err(GatewayError::Forbidden) => 403,
            Err(e) => panic!("unexpected {e}"),
        };
        for (api, admin, on_api, on_admin) in table {
            let k = keys(api, admin);
            for (i, key) in presented.iter().enumerate() {
                for r in api_routes {
                    let got = code(k.check(r, &bearer(*key)));
                    assert_eq!(got, on_api[i], "{api:?} {admin:?} {r} {key:?}");
                }
                for r in admin_routes {
                    let got = code(k.check(r, &bearer(*key)));
                    assert_eq!(got, on_admin[i], "{api:?} {admin:?} {r} {key:?}");
                }
            }
        }
    }

    /// Only the page and the redirect to it are open; neighbours and the
    /// API behind the page are not.
    #[test]
    fn only_the_fleet_page_is_open_without_a_key() {
        let k = keys(&["sk-api"], &["sk-admin"]);
        for open in ["/", "/ui"] {
            assert!(k.check(open, &bearer(None)).is_ok(), "{open}");
        }
        for closed in ["/ui/", "/uix", "/ui/x", "/v1/models", "/admin/fleet", "//"] {
            assert!(
                matches!(
                    k.check(closed, &bearer(None)),
                    Err(GatewayError::Unauthorized)
                ),
                "{closed}"
            );
        }
    }

    #[test]
    fn the_admin_policy_line_names_no_key() {
        for k in [
            keys(&[], &[]),
            keys(&["sk-a"], &[]),
            keys(&["sk-a"], &["sk-b"]),
        ] {
            let line = k.admin_policy();
            assert!(!line.contains("sk-"), "{line}");
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
