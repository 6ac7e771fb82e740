//! The API as the HTTP server calls it. The two inference routes, where a
//! proxy spends its time, go straight to their handlers: past the router's
//! per-request boxing, its extensions and the body's re-collection, which
//! cost as much CPU as forwarding the request. They pass the same guard
//! ([`guard::refusal`]) and body limit as routed requests; everything else
//! goes through the router ([`super::app`]).

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::future::Either;
use http::{Method, Request};

use super::error::{Anthropic, GatewayError, OpenAi};
use super::{anthropic, app, guard, openai, AppState, CHAT_COMPLETIONS, MESSAGES};
use crate::http_server::{Handler, RequestBody};

/// The routes served without the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    ChatCompletions,
    Messages,
}

impl Hot {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if req.method() != Method::POST {
            return None;
        }
        match req.uri().path() {
            CHAT_COMPLETIONS => Some(Hot::ChatCompletions),
            MESSAGES => Some(Hot::Messages),
            _ => None,
        }
    }
}

/// The gateway's API handler.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
    router: Router,
}

impl Api {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            router: app(state.clone()),
            state,
        }
    }
}

impl Handler for Api {
    fn handle(
        &mut self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        match Hot::of(&req) {
            Some(hot) => Either::Left(serve_hot(self.state.clone(), hot, req)),
            None => Either::Right(self.router.handle(req)),
        }
    }
}

async fn serve_hot(state: Arc<AppState>, hot: Hot, req: Request<RequestBody>) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(refused) = guard::refusal(&state, parts.uri.path(), &parts.headers) {
        return refused;
    }
    let body = match body {
        RequestBody::Whole(b) => Ok(b),
        RequestBody::TooLarge { .. } => Err(GatewayError::PayloadTooLarge),
    };
    match hot {
        Hot::ChatCompletions => openai::chat(&state, body)
            .await
            .map_err(OpenAi)
            .into_response(),
        Hot::Messages => anthropic::handle(&state, body)
            .await
            .map_err(Anthropic)
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_posts_to_the_two_inference_paths_are_hot() {
        let of = |m: Method, uri: &str| {
            Hot::of(&Request::builder().method(m).uri(uri).body(()).unwrap())
        };
        assert_eq!(
            of(Method::POST, "/v1/chat/completions"),
            Some(Hot::ChatCompletions)
        );
        assert_eq!(
            of(Method::POST, "/v1/chat/completions?x=1"),
            Some(Hot::ChatCompletions)
        );
        assert_eq!(of(Method::POST, "/v1/messages"), Some(Hot::Messages));
        for (m, uri) in [
            (Method::GET, "/v1/chat/completions"),
            (Method::POST, "/v1/chat/completions/"),
            (Method::POST, "/v1/messages/count_tokens"),
            (Method::POST, "//v1/messages"),
            (Method::POST, "/v1/models"),
        ] {
            assert_eq!(of(m.clone(), uri), None, "{m} {uri}");
        }
    }
}
