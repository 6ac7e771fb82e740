//! The fleet page's routes: `GET /ui` serves [`crate::ui::FLEET_HTML`] and
//! `GET /` redirects to it. Both are open without a key (see
//! [`super::guard::PUBLIC_PAGES`]): the page asks for the admin key and
//! sends it on its own `/admin/*` calls.

use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

/// `GET /ui`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::ui::FLEET_HTML,
    )
        .into_response()
}

/// `GET /` → `/ui`.
pub async fn root() -> Redirect {
    Redirect::temporary("/ui")
}
