//! The admin API behind `cortex status` and friends: `GET /admin/fleet`
//! and `POST /admin/models/{id}/{load,unload,pin,unpin}` with an optional
//! `{"node": NAME}` body for load and unload.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use cortex_core::fleet::AdminTarget;
use cortex_core::model_id::is_valid_model_id;

use super::error::OpenAi;
use super::{body_or_error, parse};
use crate::error::GatewayError;
use crate::state::AppState;

pub async fn fleet(State(s): State<Arc<AppState>>) -> Response {
    match s.fleet.view().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => OpenAi(GatewayError::Fleet(e)).into_response(),
    }
}

pub async fn model_action(
    State(s): State<Arc<AppState>>,
    Path((id, action)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OpenAi> {
    act(&s, &id, &action, body).await.map_err(OpenAi)
}

async fn act(
    s: &AppState,
    id: &str,
    action: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    if !is_valid_model_id(id) {
        return Err(GatewayError::ModelNotFound(id.chars().take(128).collect()));
    }
    let body = body_or_error(body)?;
    let target: AdminTarget = if body.iter().all(u8::is_ascii_whitespace) {
        AdminTarget::default()
    } else {
        parse(&body)?
    };
    if let Some(n) = &target.node {
        if !is_valid_model_id(n) {
            return Err(GatewayError::BadRequest {
                message: format!("`{n}` is not a node name"),
                param: Some("node".into()),
            });
        }
    }
    Ok(match action {
        "load" => Json(s.fleet.admin_load(id, target.node).await?).into_response(),
        "unload" => Json(s.fleet.unload(id, target.node).await?).into_response(),
        "pin" => Json(s.fleet.set_pin(id, true).await?).into_response(),
        "unpin" => Json(s.fleet.set_pin(id, false).await?).into_response(),
        _ => return Err(GatewayError::RouteNotFound),
    })
}
