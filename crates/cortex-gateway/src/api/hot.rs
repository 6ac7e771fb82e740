//! The API as the HTTP server calls it. The two inference routes, where a
//! proxy spends its time, go straight to their handlers: past the router's
//! per-request boxing, its extensions and the body's re-collection, which
//! cost as much CPU as forwarding the request. So does a body over the size
//! limit, on any route (413 in the route's dialect). Both pass the same
//! guard ([`guard::refusal`]) as routed requests (the inference paths, which
//! matched exactly, only its key check); everything else goes through the
//! router ([`super::app`]).

use std::future::Future;
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Router;
use futures::future::Either;
use http::Method;

use super::error::{Anthropic, GatewayError, OpenAi};
use super::{anthropic, app, guard, openai, AppState, CHAT_COMPLETIONS, MESSAGES};
use crate::http_server::{Handler, Incoming, Reply, RequestBody};

/// Requests answered without the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    ChatCompletions,
    Messages,
    /// A body over the limit, whatever the route.
    TooLarge,
}

impl Direct {
    fn of(req: &Incoming) -> Option<Self> {
        if matches!(req.body, RequestBody::TooLarge) {
            return Some(Direct::TooLarge);
        }
        if req.method != Method::POST {
            return None;
        }
        match req.uri.path() {
            CHAT_COMPLETIONS => Some(Direct::ChatCompletions),
            MESSAGES => Some(Direct::Messages),
            _ => None,
        }
    }
}

/// The gateway's API handler.
#[derive(Clone)]
pub struct Api {
    state: Arc<WorkerState>,
    router: Router,
}

/// The shared state, behind a handle of one worker's own (the allocation
/// is the point): a request clones the outer `Arc`, whose count no other
/// worker writes, where a clone of the shared one would move its cache
/// line between cores on every request.
struct WorkerState(Arc<AppState>);

impl Api {
    pub fn new(state: Arc<AppState>) -> Self {
        Self {
            router: app(state.clone()),
            state: Arc::new(WorkerState(state)),
        }
    }
}

impl Handler for Api {
    fn handle(&mut self, req: Incoming) -> impl Future<Output = Reply> + Send + 'static {
        match Direct::of(&req) {
            Some(direct) => Either::Left(serve_direct(self.state.clone(), direct, req)),
            None => Either::Right(self.router.handle(req)),
        }
    }

    fn for_worker(&self) -> Self {
        Self {
            state: Arc::new(WorkerState(Arc::clone(&self.state.0))),
            router: self.router.clone(),
        }
    }
}

async fn serve_direct(state: Arc<WorkerState>, direct: Direct, req: Incoming) -> Reply {
    let WorkerState(state) = &*state;
    let path = req.uri.path();
    // The two inference paths are clean (they matched exactly); any other
    // (a body too large) is checked in full.
    let refused = match direct {
        Direct::ChatCompletions | Direct::Messages => guard::key_refusal(state, path, &req.headers),
        Direct::TooLarge => guard::refusal(state, path, &req.headers),
    };
    if let Some(refused) = refused {
        return Reply::Response(refused);
    }
    match (direct, req.body) {
        (Direct::ChatCompletions, RequestBody::Whole(b)) => {
            match openai::chat(state, Ok(b)).await {
                Ok(reply) => reply,
                Err(e) => Reply::Response(OpenAi(e).into_response()),
            }
        }
        (Direct::Messages, RequestBody::Whole(b)) => Reply::Response(
            anthropic::handle(state, Ok(b))
                .await
                .map_err(Anthropic)
                .into_response(),
        ),
        _ => Reply::Response(guard::in_dialect_of(path, GatewayError::PayloadTooLarge)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(m: Method, uri: &str, body: RequestBody) -> Option<Direct> {
        Direct::of(&Incoming {
            method: m,
            uri: uri.parse().unwrap(),
            version: http::Version::HTTP_11,
            headers: Default::default(),
            body,
        })
    }

    fn whole() -> RequestBody {
        RequestBody::Whole(bytes::Bytes::new())
    }

    #[test]
    fn only_posts_to_the_two_inference_paths_and_bodies_too_large_are_direct() {
        assert_eq!(
            of(Method::POST, "/v1/chat/completions", whole()),
            Some(Direct::ChatCompletions)
        );
        assert_eq!(
            of(Method::POST, "/v1/chat/completions?x=1", whole()),
            Some(Direct::ChatCompletions)
        );
        assert_eq!(
            of(Method::POST, "/v1/messages", whole()),
            Some(Direct::Messages)
        );
        for (m, uri) in [
            (Method::GET, "/v1/chat/completions"),
            (Method::POST, "/v1/chat/completions/"),
            (Method::POST, "/v1/messages/count_tokens"),
            (Method::POST, "//v1/messages"),
            (Method::POST, "/v1/models"),
        ] {
            assert_eq!(of(m.clone(), uri, whole()), None, "{m} {uri}");
            assert_eq!(
                of(m.clone(), uri, RequestBody::TooLarge),
                Some(Direct::TooLarge),
                "{m} {uri}"
            );
        }
    }
}
