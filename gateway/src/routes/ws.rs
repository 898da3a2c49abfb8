//! The WebSocket. The handshake authenticates with a single-use ticket from
//! `POST /v1/auth/ws-ticket`; the socket then belongs to that user, in that organisation. Frames
//! are JSON objects with a `type`. Chat arrives on this socket with the agent runtime; today it
//! greets the user and answers `ping`.

use aurora_events::identity::Role;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::extract::Query;
use crate::problem::{ApiError, Problem};
use crate::AppState;

/// Largest frame a client may send.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TicketParams {
    /// A ticket from `POST /v1/auth/ws-ticket`, used once.
    pub ticket: String,
}

/// Open the WebSocket.
#[utoipa::path(
    get, path = "/ws", tag = "ws", params(TicketParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol; the first frame is `{\"type\":\"hello\",...}`"),
        (status = 400, body = Problem, description = "Not a WebSocket handshake"),
        (status = 401, body = Problem, description = "The ticket is unknown, used or expired")
    )
)]
pub async fn open(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    Query(params): Query<TicketParams>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| ApiError::BadRequest { detail: rejection.body_text(), field: None })?;
    let refused = || ApiError::Unauthenticated("the WebSocket ticket is unknown, used or expired; ask for a new one".into());
    let holder = state.tickets.redeem(params.ticket.trim()).await?.ok_or_else(refused)?;
    // The account may have been removed since the ticket was issued; its role may have changed.
    let role = state.identities.current_role(holder.user_id, holder.org_id).await?.ok_or_else(refused)?;
    tracing::info!(user_id = %holder.user_id, org_id = %holder.org_id.0, "websocket opened");
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve_socket(socket, holder.user_id, holder.org_id.0, role)))
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Ping,
}

async fn serve_socket(mut socket: WebSocket, user_id: Uuid, org_id: Uuid, role: Role) {
    let hello = json!({ "type": "hello", "user_id": user_id, "org_id": org_id, "role": role });
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => match serde_json::from_str::<ClientFrame>(&text) {
                Ok(ClientFrame::Ping) => json!({ "type": "pong" }),
                Err(error) => json!({ "type": "error", "detail": format!("frame not understood: {error}") }),
            },
            Message::Binary(_) => json!({ "type": "error", "detail": "frames are JSON text, not binary" }),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
            break;
        }
    }
}
