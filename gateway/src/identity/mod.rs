//! Accounts and tenancy: registration, login and sessions, the organisation's members and
//! invitations, and API tokens.

pub mod auth;
pub mod org;
pub mod tokens;

use aurora_events::identity::Role::{Admin, Viewer};
use utoipa_axum::routes;

use crate::auth::Access::{Member, Public};
use crate::routes::Routes;

/// Registers the identity routes.
pub fn register(routes: &mut Routes) {
    routes.add(Public, routes!(auth::register));
    routes.add(Public, routes!(auth::login));
    routes.add(Member(Viewer), routes!(auth::logout));
    routes.add(Member(Viewer), routes!(auth::change_password));
    routes.add(Member(Viewer), routes!(auth::me));
    routes.add(Member(Viewer), routes!(auth::ws_ticket));
    routes.add(Member(Viewer), routes!(org::list_members));
    routes.add(Member(Admin), routes!(org::change_role));
    routes.add(Member(Admin), routes!(org::remove_member));
    routes.add(Member(Admin), routes!(org::invite));
    routes.add(Member(Admin), routes!(org::list_invitations));
    routes.add(Member(Admin), routes!(org::revoke_invitation));
    routes.add(Member(Viewer), routes!(tokens::create_token));
    routes.add(Member(Viewer), routes!(tokens::list_tokens));
    routes.add(Member(Viewer), routes!(tokens::revoke_token));
}
