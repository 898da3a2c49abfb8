//! The rules of accounts, memberships, invitations and API tokens, as pure functions. The gateway's
//! identity store applies them inside the transaction that writes the identity tables and appends
//! the events, so that the state they decide on cannot change underneath them.

use aurora_events::identity::Role;
use chrono::{DateTime, Utc};

use crate::DomainError;

/// Why an identity rule refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("an organisation keeps at least one admin; promote another member first")]
    LastAdmin,
    #[error("this invitation has already been used")]
    InvitationUsed,
    #[error("this invitation was withdrawn")]
    InvitationWithdrawn,
    #[error("this invitation has expired; ask an admin for a new one")]
    InvitationExpired,
}

pub const MIN_PASSWORD_CHARS: usize = 12;
/// Argon2 takes any length, but hashing megabytes per login attempt is a denial of service.
pub const MAX_PASSWORD_CHARS: usize = 256;
pub const MAX_EMAIL_CHARS: usize = 254;
pub const MAX_NAME_CHARS: usize = 100;

/// The email as stored and compared: trimmed and lowercased, with one `@`, a local part and a
/// domain with a dot in it.
pub fn normalise_email(email: &str) -> Result<String, DomainError> {
    let email = email.trim().to_lowercase();
    let invalid = |reason: &str| DomainError::InvalidInput { field: "email", reason: reason.into() };
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid("must be at most 254 characters"));
    }
    let Some((local, domain)) = email.split_once('@') else { return Err(invalid("must be an email address")) };
    let well_formed = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace);
    if !well_formed {
        return Err(invalid("must be an email address"));
    }
    Ok(email)
}

/// Refuses passwords that are too short to resist guessing or too long to hash cheaply.
pub fn check_password(field: &'static str, password: &str) -> Result<(), DomainError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(DomainError::InvalidInput { field, reason: format!("must be at least {MIN_PASSWORD_CHARS} characters") });
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(DomainError::InvalidInput { field, reason: format!("must be at most {MAX_PASSWORD_CHARS} characters") });
    }
    Ok(())
}

/// A display name, organisation name or token name: trimmed, 1 to 100 characters, no control characters.
pub fn valid_name(field: &'static str, name: &str) -> Result<String, DomainError> {
    let name = crate::text::bounded(field, name, MAX_NAME_CHARS, crate::text::Lines::One)?;
    if name.is_empty() {
        return Err(DomainError::InvalidInput { field, reason: "must not be empty".into() });
    }
    Ok(name)
}

/// Whether changing a member from `current` to `requested` is allowed, given how many admins the
/// organisation has now. `None` means the member already has that role.
pub fn decide_role_change(current: Role, requested: Role, admin_count: i64) -> Result<Option<Role>, DomainError> {
    if current == requested {
        return Ok(None);
    }
    if current == Role::Admin && admin_count <= 1 {
        return Err(IdentityError::LastAdmin.into());
    }
    Ok(Some(requested))
}

/// Whether a member with `role` may be removed, given how many admins the organisation has now.
pub fn decide_removal(role: Role, admin_count: i64) -> Result<(), DomainError> {
    if role == Role::Admin && admin_count <= 1 {
        return Err(IdentityError::LastAdmin.into());
    }
    Ok(())
}

/// The role of a new API token: what was asked for (by default the creator's own), never more.
pub fn token_role(requested: Option<Role>, creator: Role) -> Result<Role, DomainError> {
    let role = requested.unwrap_or(creator);
    if role > creator {
        return Err(DomainError::InvalidInput { field: "role", reason: format!("must not be higher than your own role ({creator})") });
    }
    Ok(role)
}

/// An invitation as the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationState {
    pub email: String,
    pub expires_at: DateTime<Utc>,
    pub accepted: bool,
    pub revoked: bool,
}

/// Whether `email` may join with this invitation at `now`.
pub fn decide_acceptance(invitation: &InvitationState, email: &str, now: DateTime<Utc>) -> Result<(), DomainError> {
    if invitation.accepted {
        return Err(IdentityError::InvitationUsed.into());
    }
    if invitation.revoked {
        return Err(IdentityError::InvitationWithdrawn.into());
    }
    if invitation.expires_at <= now {
        return Err(IdentityError::InvitationExpired.into());
    }
    if invitation.email != email {
        return Err(DomainError::InvalidInput { field: "email", reason: "must be the address the invitation was sent to".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn emails_are_normalised_and_nonsense_refused() {
        assert_eq!(normalise_email("  Ana@Example.COM ").unwrap(), "ana@example.com");
        for bad in ["", "ana", "ana@", "@example.com", "ana@example", "ana@@example.com", "a na@example.com", "ana@.com"] {
            assert!(normalise_email(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn passwords_have_a_floor_and_a_ceiling() {
        assert!(check_password("password", "short").is_err());
        assert!(check_password("password", &"x".repeat(MAX_PASSWORD_CHARS + 1)).is_err());
        assert!(check_password("password", "correct horse battery").is_ok());
    }

    #[test]
    fn the_last_admin_can_be_neither_demoted_nor_removed() {
        assert!(decide_role_change(Role::Admin, Role::Viewer, 1).is_err());
        assert_eq!(decide_role_change(Role::Admin, Role::Viewer, 2).unwrap(), Some(Role::Viewer));
        assert_eq!(decide_role_change(Role::Editor, Role::Editor, 1).unwrap(), None);
        assert!(decide_removal(Role::Admin, 1).is_err());
        assert!(decide_removal(Role::Viewer, 1).is_ok());
    }

    #[test]
    fn a_token_never_has_more_power_than_its_creator() {
        assert_eq!(token_role(None, Role::Editor).unwrap(), Role::Editor);
        assert_eq!(token_role(Some(Role::Viewer), Role::Editor).unwrap(), Role::Viewer);
        assert!(token_role(Some(Role::Admin), Role::Editor).is_err());
    }

    #[test]
    fn invitations_are_single_use_expire_and_name_one_address() {
        let now = Utc::now();
        let open =
            InvitationState { email: "bo@example.com".into(), expires_at: now + Duration::hours(1), accepted: false, revoked: false };
        assert!(decide_acceptance(&open, "bo@example.com", now).is_ok());
        assert!(decide_acceptance(&open, "eve@example.com", now).is_err());
        let used = InvitationState { accepted: true, ..open.clone() };
        assert_eq!(decide_acceptance(&used, "bo@example.com", now), Err(IdentityError::InvitationUsed.into()));
        let expired = InvitationState { expires_at: now - Duration::seconds(1), ..open };
        assert!(matches!(decide_acceptance(&expired, "bo@example.com", now), Err(DomainError::Identity(IdentityError::InvitationExpired))));
    }
}
