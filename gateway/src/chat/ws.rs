//! The WebSocket, where engineers chat with the agent. The handshake authenticates with a
//! single-use ticket from `POST /v1/auth/ws-ticket`; the socket then belongs to that user, in that
//! organisation. Frames are JSON objects with a `type`. The client sends `query`, `subscribe`,
//! `confirm`, `cancel` and `ping`; the server answers each (`accepted`, `subscribed`,
//! `confirmation_answered`, `cancel_requested`, `pong`, or `error` with a `code`) and pushes what
//! happens in the sessions the socket follows: `delta` frames as the answer streams, `tool_output`
//! frames as a long tool (a deploy) prints, and every
//! chat event (`tool_call.requested`, `confirmation.requested`, `chat.assistant_message_completed`,
//! ...) with its payload. A socket that falls too far behind gets `lagged` and subscribes again.

use aurora_adapters::telemetry::{SpanKind, Trace};
use aurora_commands::CommandMeta;
use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_domain::Aggregate;
use aurora_events::chat::ChatMode;
use aurora_events::identity::Role;
use aurora_events::chat::ChatSessionEvent;
use aurora_events::{Actor, EventPayload};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::tickets::TicketHolder;
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
    let (holder, role) = crate::auth::redeem_ticket(&state, &params.ticket).await?;
    tracing::debug!(user_id = %holder.user_id, org_id = %holder.org_id.0, "websocket opened");
    Ok(upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve_socket(state, socket, holder, role)))
}

/// Sessions one socket may follow at once.
pub const MAX_FOLLOWED_SESSIONS: usize = 100;

/// The close code of a socket whose holder left the organisation or whose credential ended.
const CLOSE_CREDENTIAL_ENDED: u16 = 4401;

/// What a client may send. Every frame may carry a `request_id`, echoed in the answer.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Ping {
        #[serde(default)]
        request_id: Option<String>,
    },
    /// Ask something: in a session, or (without `session_id`) in a new one.
    Query {
        #[serde(default)]
        request_id: Option<String>,
        #[serde(default)]
        session_id: Option<Uuid>,
        text: String,
        mode: ChatMode,
        /// The W3C trace context of the client's own trace, to continue it; malformed is ignored.
        #[serde(default)]
        traceparent: Option<String>,
    },
    /// Follow a session: its turn in progress now, and everything after.
    Subscribe {
        #[serde(default)]
        request_id: Option<String>,
        session_id: Uuid,
    },
    /// Answer a confirmation request: the session's owner or an admin.
    Confirm {
        #[serde(default)]
        request_id: Option<String>,
        session_id: Uuid,
        confirmation_id: Uuid,
        approve: bool,
    },
    /// Stop the running turn at its next step.
    Cancel {
        #[serde(default)]
        request_id: Option<String>,
        session_id: Uuid,
        turn_id: Uuid,
    },
}

/// The sessions a socket follows, and where their frames go.
struct Following {
    outbox: mpsc::Sender<Value>,
    sessions: std::collections::HashSet<Uuid>,
}

impl Following {
    /// Follows `session_id`, which the caller has been authorised to see.
    fn follow(&mut self, state: &AppState, session_id: Uuid) -> Result<(), ApiError> {
        if !self.sessions.contains(&session_id) && self.sessions.len() >= MAX_FOLLOWED_SESSIONS {
            return Err(ApiError::Unprocessable(format!("a socket follows at most {MAX_FOLLOWED_SESSIONS} sessions; open another socket")));
        }
        self.sessions.insert(session_id);
        state.chat_hub.subscribe(session_id, self.outbox.clone());
        Ok(())
    }

    fn leave_all(&mut self, state: &AppState) {
        for session_id in self.sessions.drain() {
            state.chat_hub.unsubscribe(session_id, &self.outbox);
        }
    }
}

fn error_frame(request_id: &Option<String>, code: &str, detail: impl Into<String>) -> Value {
    json!({ "type": "error", "request_id": request_id, "code": code, "detail": detail.into() })
}

/// The error frame of a refused command, with the code its HTTP status would have.
fn refused(request_id: &Option<String>, error: ApiError) -> Value {
    let code = match &error {
        ApiError::NotFound(_) => "not_found",
        ApiError::Forbidden(_) => "forbidden",
        ApiError::BadRequest { .. } => "bad_request",
        ApiError::Conflict { .. } | ApiError::Unprocessable(_) => "conflict",
        ApiError::Unavailable(_) => "unavailable",
        _ => "internal",
    };
    let detail = match &error {
        ApiError::Unexpected(cause) => {
            tracing::error!(error = %format!("{cause:#}"), "websocket command failed");
            "the server could not complete the request; it has been logged".to_owned()
        }
        other => other.to_string(),
    };
    error_frame(request_id, code, detail)
}


async fn serve_socket(state: AppState, mut socket: WebSocket, holder: TicketHolder, role: Role) {
    let hello = json!({ "type": "hello", "user_id": holder.user_id, "org_id": holder.org_id.0, "role": role });
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let (outbox, mut inbox) = mpsc::channel::<Value>(crate::chat::hub::SOCKET_BACKLOG);
    let mut following = Following { outbox, sessions: Default::default() };
    let mut recheck = tokio::time::interval(crate::change_stream::RECHECK_EVERY);
    recheck.tick().await;
    loop {
        let reply = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientFrame>(&text) {
                    Ok(frame) => Some(handle_frame(&state, &holder, frame, &mut following).await),
                    Err(error) => Some(error_frame(&None, "bad_frame", format!("frame not understood: {error}"))),
                },
                Some(Ok(Message::Binary(_))) => Some(error_frame(&None, "bad_frame", "frames are JSON text, not binary")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            pushed = inbox.recv() => pushed,
            _ = recheck.tick() => {
                // A removed member or an ended credential stops receiving within RECHECK_EVERY.
                match state.identities.ticket_role(&holder).await {
                    Ok(Some(_)) => None,
                    Ok(None) => {
                        following.leave_all(&state);
                        let reason = "your membership or credential ended";
                        let _ = socket.send(Message::Text(error_frame(&None, "unauthenticated", reason).to_string().into())).await;
                        let close = axum::extract::ws::CloseFrame { code: CLOSE_CREDENTIAL_ENDED, reason: reason.into() };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        tracing::info!(user_id = %holder.user_id, "websocket closed: membership or credential ended");
                        break;
                    }
                    // The database is away for a moment: keep the socket, check again next time.
                    Err(_) => None,
                }
            }
        };
        if let Some(frame) = reply {
            if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                break;
            }
        }
    }
    following.leave_all(&state);
}

async fn handle_frame(state: &AppState, holder: &TicketHolder, frame: ClientFrame, following: &mut Following) -> Value {
    let request_id = match &frame {
        ClientFrame::Ping { request_id }
        | ClientFrame::Query { request_id, .. }
        | ClientFrame::Subscribe { request_id, .. }
        | ClientFrame::Confirm { request_id, .. }
        | ClientFrame::Cancel { request_id, .. } => request_id.clone(),
    };
    match handle(state, holder, frame, following).await {
        Ok(reply) => reply,
        Err(error) => refused(&request_id, error),
    }
}

/// The role the socket acts with now: never more than its ticket's; a role change, a removal
/// or an ended credential holds from the next frame.
async fn current_role(state: &AppState, holder: &TicketHolder) -> Result<Role, ApiError> {
    state
        .identities
        .ticket_role(holder)
        .await?
        .ok_or_else(|| ApiError::Forbidden("your membership of this organisation or your credential has ended".into()))
}

/// The session, when it exists in the holder's organisation and is not deleted.
async fn visible_session(state: &AppState, holder: &TicketHolder, session_id: Uuid) -> Result<(ChatSession, u64), ApiError> {
    let (session, version) = state.commands.load::<ChatSession>(&ChatSessionEvent::stream_of(session_id), holder.org_id).await?;
    if !session.exists() || session.deleted {
        return Err(ApiError::NotFound("chat session".into()));
    }
    Ok((session, version))
}

async fn handle(state: &AppState, holder: &TicketHolder, frame: ClientFrame, following: &mut Following) -> Result<Value, ApiError> {
    let actor = Actor::user(holder.user_id);
    match frame {
        ClientFrame::Ping { request_id } => Ok(json!({ "type": "pong", "request_id": request_id })),
        ClientFrame::Query { request_id, session_id, text, mode, traceparent } => {
            let trace = Trace::start("chat.question", SpanKind::Server, traceparent.as_deref());
            let traceparent = trace.traceparent();
            let meta = || CommandMeta { traceparent: traceparent.clone(), ..CommandMeta::new(holder.org_id, actor.clone()) };
            if current_role(state, holder).await? < Role::Editor {
                return Err(ApiError::Forbidden("asking the agent needs the editor role".into()));
            }
            let session_id = match session_id {
                Some(session_id) => {
                    // Authorised before followed: a session of another organisation is not found.
                    visible_session(state, holder, session_id).await?;
                    session_id
                }
                None => {
                    let session_id = Uuid::now_v7();
                    let title: String = text.trim().chars().take(60).collect();
                    let title = if title.is_empty() { "New chat".to_owned() } else { title };
                    let create = ChatSessionCommand::Create { session_id, title, owner: actor.clone(), context: None };
                    state
                        .commands
                        .handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), create, &meta(), None)
                        .await?;
                    session_id
                }
            };
            // Followed before the question is recorded, so that no frame of the turn is missed.
            following.follow(state, session_id)?;
            let turn_id = Uuid::now_v7();
            let submit = ChatSessionCommand::Submit { turn_id, text, mode, submitted_by: actor.clone(), limits: None };
            state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), submit, &meta(), None).await?;
            wake_relay(state);
            Ok(json!({ "type": "accepted", "request_id": request_id, "session_id": session_id, "turn_id": turn_id, "traceparent": traceparent }))
        }
        ClientFrame::Subscribe { request_id, session_id } => {
            // Any member may follow: the check is that the socket's holder still is one.
            current_role(state, holder).await?;
            let (session, version) = visible_session(state, holder, session_id).await?;
            following.follow(state, session_id)?;
            let turn = session.running_turn().map(|turn| {
                json!({
                    "turn_id": turn.turn_id,
                    "question": turn.question,
                    "mode": turn.mode,
                    "llm_calls": turn.llm_calls.len(),
                    "tool_calls": turn.tool_calls.iter().map(|call| json!({
                        "tool_call_id": call.requested.tool_call_id, "name": call.requested.name,
                        "finished": call.outcome.is_some(),
                    })).collect::<Vec<_>>(),
                    "pending_confirmations": turn.confirmations.iter().filter(|c| c.answer.is_none()).map(|c| json!({
                        "confirmation_id": c.confirmation_id, "tool_call_id": c.tool_call_id, "expires_at": c.expires_at,
                    })).collect::<Vec<_>>(),
                })
            });
            let partial = state
                .chat_hub
                .partial(session_id)
                .filter(|partial| turn.is_some() && Some(partial.turn_id) == session.running_turn().map(|t| t.turn_id));
            Ok(json!({
                "type": "subscribed", "request_id": request_id, "session_id": session_id, "stream_version": version,
                "running_turn": turn,
                "partial": partial.map(|partial| json!({ "turn_id": partial.turn_id, "call_index": partial.call_index, "text": partial.text })),
            }))
        }
        ClientFrame::Confirm { request_id, session_id, confirmation_id, approve } => {
            owner_or_admin(state, holder, session_id, "answer this confirmation").await?;
            let answer =
                ChatSessionCommand::AnswerConfirmation { confirmation_id, approve, answered_at: chrono::Utc::now(), by: actor.clone() };
            state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), answer, &CommandMeta::new(holder.org_id, actor), None).await?;
            wake_relay(state);
            Ok(
                json!({ "type": "confirmation_answered", "request_id": request_id, "confirmation_id": confirmation_id, "approved": approve }),
            )
        }
        ClientFrame::Cancel { request_id, session_id, turn_id } => {
            owner_or_admin(state, holder, session_id, "cancel this turn").await?;
            let cancel = ChatSessionCommand::RequestCancel { turn_id };
            state.commands.handle::<ChatSession>(&ChatSessionEvent::stream_of(session_id), cancel, &CommandMeta::new(holder.org_id, actor), None).await?;
            wake_relay(state);
            Ok(json!({ "type": "cancel_requested", "request_id": request_id, "turn_id": turn_id }))
        }
    }
}

/// A person waits on this event: the relay publishes it now, not at its next poll.
fn wake_relay(state: &AppState) {
    let pool = state.pool.clone();
    tokio::spawn(async move { aurora_commands::relay::wake(&pool).await });
}

/// Confirmations and cancels belong to the session's owner (still an editor) or an admin.
async fn owner_or_admin(state: &AppState, holder: &TicketHolder, session_id: Uuid, what: &str) -> Result<(), ApiError> {
    let (session, _) = visible_session(state, holder, session_id).await?;
    let role = current_role(state, holder).await?;
    let owner = session.owner == Some(Actor::user(holder.user_id));
    if role == Role::Admin || (owner && role >= Role::Editor) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!("only the session's owner or an admin may {what}")))
}
