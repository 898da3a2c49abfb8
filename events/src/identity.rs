//! Events of accounts (`user-<user id>`) and organisations (`org-<org id>`). They record that an
//! account, a credential, a membership or an invitation changed, and who changed it. They never
//! carry a password, a hash, a session id or a token: those live in the identity tables only.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// What a member of an organisation may do. Ordered: every role may do what the roles below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything in the organisation.
    Viewer,
    /// Also chats, runs tools, uploads and triggers investigations.
    Editor,
    /// Also manages members, connections and policies, and confirms destructive actions for others.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a role; roles are viewer, editor and admin")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

/// `user.registered`: an account was created, in a new organisation or by accepting an invitation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
}

/// `user.password_changed`: the account's password was replaced (the hash is not recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordChanged {
    /// How many of the account's other sessions were ended by the change.
    pub sessions_ended: u32,
}

/// `user.logged_in`: a session was opened with the account's password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoggedIn {
    /// When the session expires unless ended before.
    pub expires_at: DateTime<Utc>,
}

/// `user.logged_out`: a session was ended by its holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoggedOut {}

/// `user.api_token_created`: the account created an API token (its value is shown once and not recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiTokenCreated {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `user.api_token_revoked`: an API token stopped working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiTokenRevoked {
    pub token_id: Uuid,
}

event_family! {
    /// Everything that happens to one account.
    pub enum UserEvent in "user", named by UserEventType {
        Registered(UserRegistered) = ("user.registered", 1),
        PasswordChanged(PasswordChanged) = ("user.password_changed", 1),
        LoggedIn(LoggedIn) = ("user.logged_in", 1),
        LoggedOut(LoggedOut) = ("user.logged_out", 1),
        ApiTokenCreated(ApiTokenCreated) = ("user.api_token_created", 1),
        ApiTokenRevoked(ApiTokenRevoked) = ("user.api_token_revoked", 1),
    }
}

/// `org.created`: a new organisation, created by its first member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrgCreated {
    pub org_id: Uuid,
    pub name: String,
}

/// `org.member_joined`: an account became a member with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberJoined {
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
    /// The invitation accepted, when the member was invited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<Uuid>,
}

/// `org.member_invited`: an admin invited an email address to join with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberInvited {
    pub invitation_id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// `org.invitation_revoked`: an admin withdrew an invitation before it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InvitationRevoked {
    pub invitation_id: Uuid,
}

/// `org.member_role_changed`: an admin changed a member's role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRoleChanged {
    pub user_id: Uuid,
    pub previous_role: Role,
    pub role: Role,
}

/// `org.member_removed`: an admin removed a member; their sessions and tokens ended with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRemoved {
    pub user_id: Uuid,
}

event_family! {
    /// Everything that happens to one organisation's membership.
    pub enum OrgEvent in "org", named by OrgEventType {
        Created(OrgCreated) = ("org.created", 1),
        MemberJoined(MemberJoined) = ("org.member_joined", 1),
        MemberInvited(MemberInvited) = ("org.member_invited", 1),
        InvitationRevoked(InvitationRevoked) = ("org.invitation_revoked", 1),
        MemberRoleChanged(MemberRoleChanged) = ("org.member_role_changed", 1),
        MemberRemoved(MemberRemoved) = ("org.member_removed", 1),
    }
}

/// Registers this feature's event families.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<UserEvent>();
    families.add::<OrgEvent>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_read_from_their_names() {
        assert!(Role::Viewer < Role::Editor && Role::Editor < Role::Admin);
        assert_eq!("editor".parse::<Role>(), Ok(Role::Editor));
        assert!("owner".parse::<Role>().is_err());
        assert_eq!(serde_json::to_value(Role::Admin).unwrap(), serde_json::json!("admin"));
    }
}
