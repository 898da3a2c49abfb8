//! Chat with the agent: sessions over HTTP, the conversation itself over the WebSocket, and the
//! hub that brings each gateway's sockets what the agent says.

pub mod hub;
pub mod sessions;
pub mod ws;

use aurora_events::identity::Role::{Editor, Viewer};
use utoipa_axum::routes;

use crate::auth::Access::{Member, Ticket};
use crate::routes::Routes;

/// Registers the chat routes.
pub fn register(routes: &mut Routes) {
    routes.add(Ticket, routes!(ws::open));
    routes.add(Member(Editor), routes!(sessions::create_session));
    routes.add(Member(Viewer), routes!(sessions::list_sessions));
    routes.add(Member(Viewer), routes!(sessions::get_session));
    routes.add(Member(Editor), routes!(sessions::rename_session));
    routes.add(Member(Editor), routes!(sessions::delete_session));
    routes.add(Member(Editor), routes!(sessions::archive_session));
    routes.add(Member(Viewer), routes!(sessions::list_messages));
    routes.add(Member(Viewer), routes!(sessions::tool_result));
}
