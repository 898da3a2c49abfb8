//! The identity tables and the events that record their changes, written together. Each change
//! is one Postgres transaction that checks the rules of `aurora_domain::identity` against rows it
//! has locked, writes the rows and appends the `user.*` / `org.*` events, so the log and the tables
//! cannot disagree and a change is seen by the very next request. Lookups that cross
//! organisations (login by email, a credential by its digest) live here and nowhere else.

use aurora_commands::postgres::append_in_transaction;
use aurora_commands::{AppendRequest, ExpectedVersion, NewEvent};
use aurora_domain::identity::{decide_acceptance, decide_removal, decide_role_change, IdentityError, InvitationState};
use aurora_domain::DomainError;
use aurora_events::identity::{
    ApiTokenCreated, ApiTokenRevoked, InvitationRevoked, LoggedIn, LoggedOut, MemberInvited, MemberJoined, MemberRemoved,
    MemberRoleChanged, OrgCreated, OrgEvent, PasswordChanged, Role, UserEvent, UserRegistered,
};
use aurora_events::{Actor, EventPayload, OrgId, StreamId};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::auth::secret::Secret;
use crate::auth::tickets::{TicketCredential, TicketHolder};
use crate::problem::ApiError;

const UNIQUE_VIOLATION: &str = "23505";

/// How a request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A browser session; state-changing requests must also carry its CSRF token.
    Session {
        session_hash: Vec<u8>,
        csrf_hash: Vec<u8>,
    },
    ApiToken {
        token_id: Uuid,
    },
    /// A single-use ticket, issued on that credential (a change stream opened with `?ticket=`).
    Ticket(TicketCredential),
}

impl Credential {
    /// The credential as a ticket names it: what must still be live for whatever it opened.
    pub fn ticket(&self) -> TicketCredential {
        match self {
            Credential::Session { session_hash, .. } => TicketCredential::Session { session_hash: session_hash.clone() },
            Credential::ApiToken { token_id } => TicketCredential::ApiToken { token_id: *token_id },
            Credential::Ticket(credential) => credential.clone(),
        }
    }
}

/// An authenticated member of an organisation, with the role in force right now.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Uuid,
    pub org_id: OrgId,
    pub role: Role,
    pub credential: Credential,
}

impl Identity {
    /// Who this is, as a ticket or a long-lived response keeps it: their role now and their credential.
    pub fn holder(&self) -> TicketHolder {
        TicketHolder { user_id: self.user_id, org_id: self.org_id, role: self.role, credential: self.credential.ticket() }
    }
}

/// A session just opened: the two secrets go to the browser, only their digests are stored.
pub struct OpenedSession {
    pub user_id: Uuid,
    pub org_id: OrgId,
    pub role: Role,
    pub session: Secret,
    pub csrf: Secret,
    pub expires_at: DateTime<Utc>,
}

/// Who registers and how they join.
pub struct Registration {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub joins: Joining,
}

pub enum Joining {
    NewOrganisation { name: String },
    Invitation { token: String },
}

fn parse_role(text: &str) -> Result<Role, ApiError> {
    text.parse().map_err(|error| ApiError::Unexpected(anyhow::Error::new(error).context("stored role")))
}

/// Appends `events` to `stream` inside `transaction`, attributed to `actor`.
async fn record<E: EventPayload>(
    transaction: &mut PgConnection,
    stream: StreamId,
    org_id: OrgId,
    actor: &Actor,
    correlation_id: Uuid,
    events: &[E],
) -> Result<(), ApiError> {
    append_in_transaction(
        transaction,
        AppendRequest {
            stream,
            // The rows locked by the transaction decide; the stream only records.
            expected: ExpectedVersion::Any,
            command_id: None,
            org_id,
            actor: actor.clone(),
            correlation_id,
            causation_id: None,
            traceparent: None,
            occurred_at: Utc::now(),
            events: events.iter().map(NewEvent::from_payload).collect(),
        },
    )
    .await?;
    Ok(())
}

fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    matches!(error, sqlx::Error::Database(database_error)
        if database_error.code().as_deref() == Some(UNIQUE_VIOLATION) && database_error.constraint() == Some(constraint))
}

fn email_taken() -> ApiError {
    ApiError::Conflict { detail: "an account with this email already exists".into(), current_version: None }
}

#[derive(Clone)]
pub struct IdentityStore {
    pool: PgPool,
}

impl IdentityStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A transaction that will append to `streams`, holding each stream's lock from its first
    /// statement. Identity transactions append with "any version" after writing rows, so without
    /// this two of them on one stream (twenty logins at once) would both take the same next
    /// version and one fail, or take their transaction ids in one order and their versions in the
    /// other, and the relay, which publishes in transaction order, would put a stream's versions
    /// on Kafka out of order. Taken before any write, the lock orders both the same way.
    async fn begin(&self, streams: &[&StreamId]) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ApiError> {
        let mut transaction = self.pool.begin().await?;
        let mut names: Vec<String> = streams.iter().map(|stream| stream.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('aurora-stream:' || name)) FROM unnest($1::text[]) AS name ORDER BY name")
            .bind(&names)
            .execute(&mut *transaction)
            .await?;
        Ok(transaction)
    }

    /// Creates the account, and either a new organisation it administers or its membership by
    /// invitation. Returns the new account's user id, organisation and role.
    pub async fn register(&self, registration: Registration) -> Result<(Uuid, OrgId, Role), ApiError> {
        let user_id = Uuid::now_v7();
        let actor = Actor::user(user_id);
        let correlation_id = Uuid::now_v7();
        // The organisation's stream is locked before the invitation row is: a new one needs no lock.
        let (joined_org, new_org) = match &registration.joins {
            Joining::NewOrganisation { .. } => (None, OrgId(Uuid::now_v7())),
            Joining::Invitation { token } => {
                let org: Option<Uuid> = sqlx::query_scalar("SELECT org_id FROM invitations WHERE token_hash = $1")
                    .bind(crate::auth::secret::digest(token))
                    .fetch_optional(&self.pool)
                    .await?;
                let org = org.ok_or_else(|| ApiError::NotFound("invitation".into()))?;
                (Some(OrgId(org)), OrgId(org))
            }
        };
        let mut transaction = match joined_org {
            Some(org_id) => self.begin(&[&OrgEvent::stream_of(org_id.0)]).await?,
            None => self.pool.begin().await?,
        };
        let (org_id, role, invitation_id) = match &registration.joins {
            Joining::NewOrganisation { name } => {
                let org_id = new_org;
                sqlx::query("INSERT INTO organisations (org_id, name) VALUES ($1, $2)")
                    .bind(org_id.0)
                    .bind(name)
                    .execute(&mut *transaction)
                    .await?;
                record(
                    &mut transaction,
                    OrgEvent::stream_of(org_id.0),
                    org_id,
                    &actor,
                    correlation_id,
                    &[OrgEvent::Created(OrgCreated { org_id: org_id.0, name: name.clone() })],
                )
                .await?;
                (org_id, Role::Admin, None)
            }
            Joining::Invitation { token } => {
                let row = sqlx::query(
                    "SELECT invitation_id, org_id, email, role, expires_at, accepted_at IS NOT NULL AS accepted, \
                     revoked_at IS NOT NULL AS revoked FROM invitations WHERE token_hash = $1 FOR UPDATE",
                )
                .bind(crate::auth::secret::digest(token))
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| ApiError::NotFound("invitation".into()))?;
                let invitation = InvitationState {
                    email: row.try_get("email")?,
                    expires_at: row.try_get("expires_at")?,
                    accepted: row.try_get("accepted")?,
                    revoked: row.try_get("revoked")?,
                };
                decide_acceptance(&invitation, &registration.email, Utc::now())?;
                let invitation_id: Uuid = row.try_get("invitation_id")?;
                sqlx::query("UPDATE invitations SET accepted_at = now(), accepted_by = $2 WHERE invitation_id = $1")
                    .bind(invitation_id)
                    .bind(user_id)
                    .execute(&mut *transaction)
                    .await?;
                let role = parse_role(row.try_get("role")?)?;
                let org_id = OrgId(row.try_get("org_id")?);
                if org_id != new_org {
                    return Err(ApiError::NotFound("invitation".into()));
                }
                (org_id, role, Some(invitation_id))
            }
        };
        let inserted =
            sqlx::query("INSERT INTO accounts (user_id, org_id, email, display_name, role, password_hash) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(user_id)
                .bind(org_id.0)
                .bind(&registration.email)
                .bind(&registration.display_name)
                .bind(role.as_str())
                .bind(&registration.password_hash)
                .execute(&mut *transaction)
                .await;
        match inserted {
            Err(error) if is_unique_violation(&error, "accounts_email_live") => return Err(email_taken()),
            other => other?,
        };
        let joined = OrgEvent::MemberJoined(MemberJoined { user_id, email: registration.email.clone(), role, invitation_id });
        record(&mut transaction, OrgEvent::stream_of(org_id.0), org_id, &actor, correlation_id, &[joined]).await?;
        let registered =
            UserEvent::Registered(UserRegistered { user_id, email: registration.email, display_name: registration.display_name });
        record(&mut transaction, UserEvent::stream_of(user_id), org_id, &actor, correlation_id, &[registered]).await?;
        transaction.commit().await?;
        Ok((user_id, org_id, role))
    }

    /// The live account with this email: its user id, organisation and password hash.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<(Uuid, OrgId, String)>, ApiError> {
        let row = sqlx::query("SELECT user_id, org_id, password_hash FROM accounts WHERE email = $1 AND removed_at IS NULL")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| -> Result<_, ApiError> {
            Ok((row.try_get("user_id")?, OrgId(row.try_get("org_id")?), row.try_get("password_hash")?))
        })
        .transpose()
    }

    /// Opens a session for an account whose password was just verified.
    pub async fn open_session(&self, user_id: Uuid, org_id: OrgId, ttl: std::time::Duration) -> Result<OpenedSession, ApiError> {
        let session = Secret::generate("aus_");
        let csrf = Secret::generate("auc_");
        let expires_at = Utc::now() + chrono::Duration::from_std(ttl).map_err(anyhow::Error::from)?;
        let mut transaction = self.begin(&[&UserEvent::stream_of(user_id)]).await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM accounts WHERE user_id = $1 AND removed_at IS NULL FOR SHARE")
            .bind(user_id)
            .fetch_optional(&mut *transaction)
            .await?;
        let role = parse_role(&role.ok_or_else(|| ApiError::Unauthenticated("email or password is not right".into()))?)?;
        // Sessions that ran out are of no use to anyone; clear this account's on each login.
        sqlx::query("DELETE FROM auth_sessions WHERE user_id = $1 AND expires_at < now()").bind(user_id).execute(&mut *transaction).await?;
        sqlx::query("INSERT INTO auth_sessions (session_hash, user_id, org_id, csrf_hash, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(session.digest())
            .bind(user_id)
            .bind(org_id.0)
            .bind(csrf.digest())
            .bind(expires_at)
            .execute(&mut *transaction)
            .await?;
        let actor = Actor::user(user_id);
        record(
            &mut transaction,
            UserEvent::stream_of(user_id),
            org_id,
            &actor,
            Uuid::now_v7(),
            &[UserEvent::LoggedIn(LoggedIn { expires_at })],
        )
        .await?;
        transaction.commit().await?;
        Ok(OpenedSession { user_id, org_id, role, session, csrf, expires_at })
    }

    /// The identity behind a session cookie, if the session is live and its account a member.
    pub async fn by_session(&self, session_value: &str) -> Result<Option<Identity>, ApiError> {
        let session_hash = crate::auth::secret::digest(session_value);
        let row = sqlx::query(
            "SELECT a.user_id, a.org_id, a.role, s.csrf_hash FROM auth_sessions s JOIN accounts a USING (user_id) \
             WHERE s.session_hash = $1 AND s.expires_at > now() AND a.removed_at IS NULL",
        )
        .bind(&session_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Identity {
            user_id: row.try_get("user_id")?,
            org_id: OrgId(row.try_get("org_id")?),
            role: parse_role(row.try_get("role")?)?,
            credential: Credential::Session { session_hash, csrf_hash: row.try_get("csrf_hash")? },
        }))
    }

    /// The identity behind an API token, if it is live; its role is the lower of the token's
    /// and the account's current one, so a demotion binds the owner's tokens at once.
    pub async fn by_api_token(&self, token: &str) -> Result<Option<Identity>, ApiError> {
        let row = sqlx::query(
            "SELECT t.token_id, a.user_id, a.org_id, a.role AS account_role, t.role AS token_role, \
                    t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute' AS stale \
             FROM api_tokens t JOIN accounts a USING (user_id) \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) \
               AND a.removed_at IS NULL",
        )
        .bind(crate::auth::secret::digest(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let token_id: Uuid = row.try_get("token_id")?;
        let account_role = parse_role(row.try_get("account_role")?)?;
        let token_role = parse_role(row.try_get("token_role")?)?;
        // Last use is shown to the owner; a minute's precision keeps it from being a write per request.
        if row.try_get::<bool, _>("stale")? {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let updated =
                    sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE token_id = $1").bind(token_id).execute(&pool).await;
                if let Err(error) = updated {
                    tracing::debug!(%error, %token_id, "could not record a token's last use");
                }
            });
        }
        Ok(Some(Identity {
            user_id: row.try_get("user_id")?,
            org_id: OrgId(row.try_get("org_id")?),
            role: account_role.min(token_role),
            credential: Credential::ApiToken { token_id },
        }))
    }

    /// The role `holder` has now (a WebSocket opened with their ticket, a change stream): the lowest of the ticket's,
    /// the credential's (a token's own role) and the account's, or `None` once the account left
    /// the organisation or the credential ended (logged out, revoked, expired).
    pub async fn ticket_role(&self, holder: &TicketHolder) -> Result<Option<Role>, ApiError> {
        let roles: Option<(String, Option<String>)> = match &holder.credential {
            TicketCredential::Session { session_hash } => {
                sqlx::query_as(
                    "SELECT a.role, NULL::text FROM auth_sessions s JOIN accounts a USING (user_id) \
                 WHERE s.session_hash = $1 AND s.expires_at > now() AND a.user_id = $2 AND a.org_id = $3 AND a.removed_at IS NULL",
                )
                .bind(session_hash)
                .bind(holder.user_id)
                .bind(holder.org_id.0)
                .fetch_optional(&self.pool)
                .await?
            }
            TicketCredential::ApiToken { token_id } => {
                sqlx::query_as(
                    "SELECT a.role, t.role FROM api_tokens t JOIN accounts a USING (user_id) \
                 WHERE t.token_id = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) \
                   AND a.user_id = $2 AND a.org_id = $3 AND a.removed_at IS NULL",
                )
                .bind(token_id)
                .bind(holder.user_id)
                .bind(holder.org_id.0)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        let Some((account_role, token_role)) = roles else { return Ok(None) };
        let mut role = parse_role(&account_role)?.min(holder.role);
        if let Some(token_role) = token_role {
            role = role.min(parse_role(&token_role)?);
        }
        Ok(Some(role))
    }

    /// When the credential of `identity` ends, if it is an API token with an expiry.
    pub async fn credential_expiry(&self, identity: &Identity) -> Result<Option<DateTime<Utc>>, ApiError> {
        let Credential::ApiToken { token_id } = &identity.credential else { return Ok(None) };
        let expiry: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT expires_at FROM api_tokens WHERE token_id = $1")
            .bind(token_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten();
        Ok(expiry)
    }

    pub async fn end_session(&self, identity: &Identity, session_hash: &[u8]) -> Result<(), ApiError> {
        let mut transaction = self.begin(&[&UserEvent::stream_of(identity.user_id)]).await?;
        let ended = sqlx::query("DELETE FROM auth_sessions WHERE session_hash = $1").bind(session_hash).execute(&mut *transaction).await?;
        if ended.rows_affected() > 0 {
            let actor = Actor::user(identity.user_id);
            record(
                &mut transaction,
                UserEvent::stream_of(identity.user_id),
                identity.org_id,
                &actor,
                Uuid::now_v7(),
                &[UserEvent::LoggedOut(LoggedOut {})],
            )
            .await?;
        }
        transaction.commit().await?;
        Ok(())
    }

    /// The account's password hash, to check the current password before a change.
    pub async fn password_hash(&self, user_id: Uuid) -> Result<String, ApiError> {
        sqlx::query_scalar("SELECT password_hash FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .map_err(ApiError::from)
    }

    /// Replaces the password and ends every other session of the account.
    pub async fn change_password(&self, identity: &Identity, new_hash: String) -> Result<(), ApiError> {
        let keep = match identity.credential.ticket() {
            TicketCredential::Session { session_hash } => Some(session_hash),
            TicketCredential::ApiToken { .. } => None,
        };
        let mut transaction = self.begin(&[&UserEvent::stream_of(identity.user_id)]).await?;
        sqlx::query("UPDATE accounts SET password_hash = $2, password_changed_at = now() WHERE user_id = $1")
            .bind(identity.user_id)
            .bind(new_hash)
            .execute(&mut *transaction)
            .await?;
        let ended = sqlx::query("DELETE FROM auth_sessions WHERE user_id = $1 AND session_hash IS DISTINCT FROM $2")
            .bind(identity.user_id)
            .bind(keep)
            .execute(&mut *transaction)
            .await?;
        let actor = Actor::user(identity.user_id);
        let changed = UserEvent::PasswordChanged(PasswordChanged { sessions_ended: ended.rows_affected() as u32 });
        record(&mut transaction, UserEvent::stream_of(identity.user_id), identity.org_id, &actor, Uuid::now_v7(), &[changed]).await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn create_api_token(
        &self,
        identity: &Identity,
        name: String,
        role: Role,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(Uuid, Secret), ApiError> {
        let token_id = Uuid::now_v7();
        let token = Secret::generate("aur_");
        let mut transaction = self.begin(&[&UserEvent::stream_of(identity.user_id)]).await?;
        sqlx::query(
            "INSERT INTO api_tokens (token_id, org_id, user_id, name, role, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_id)
        .bind(identity.org_id.0)
        .bind(identity.user_id)
        .bind(&name)
        .bind(role.as_str())
        .bind(token.digest())
        .bind(expires_at)
        .execute(&mut *transaction)
        .await?;
        let actor = Actor::user(identity.user_id);
        let created = UserEvent::ApiTokenCreated(ApiTokenCreated { token_id, name, role, expires_at });
        record(&mut transaction, UserEvent::stream_of(identity.user_id), identity.org_id, &actor, Uuid::now_v7(), &[created]).await?;
        transaction.commit().await?;
        Ok((token_id, token))
    }

    /// Revokes one of the caller's own tokens; anybody else's reads as not found.
    pub async fn revoke_api_token(&self, identity: &Identity, token_id: Uuid) -> Result<(), ApiError> {
        let mut transaction = self.begin(&[&UserEvent::stream_of(identity.user_id)]).await?;
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = now() WHERE token_id = $1 AND user_id = $2 AND org_id = $3 AND revoked_at IS NULL",
        )
        .bind(token_id)
        .bind(identity.user_id)
        .bind(identity.org_id.0)
        .execute(&mut *transaction)
        .await?;
        if revoked.rows_affected() == 0 {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE token_id = $1 AND user_id = $2)")
                .bind(token_id)
                .bind(identity.user_id)
                .fetch_one(&mut *transaction)
                .await?;
            // Revoking twice is a no-op; someone else's token does not exist for this caller.
            return if exists { Ok(()) } else { Err(ApiError::NotFound("API token".into())) };
        }
        let actor = Actor::user(identity.user_id);
        record(
            &mut transaction,
            UserEvent::stream_of(identity.user_id),
            identity.org_id,
            &actor,
            Uuid::now_v7(),
            &[UserEvent::ApiTokenRevoked(ApiTokenRevoked { token_id })],
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Invites `email` into the caller's organisation; returns the invitation and its token.
    pub async fn invite(
        &self,
        identity: &Identity,
        email: String,
        role: Role,
        expires_at: DateTime<Utc>,
    ) -> Result<(Uuid, Secret), ApiError> {
        let invitation_id = Uuid::now_v7();
        let token = Secret::generate("aui_");
        let mut transaction = self.begin(&[&OrgEvent::stream_of(identity.org_id.0)]).await?;
        let has_account: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE email = $1 AND removed_at IS NULL)")
            .bind(&email)
            .fetch_one(&mut *transaction)
            .await?;
        if has_account {
            return Err(email_taken());
        }
        sqlx::query(
            "INSERT INTO invitations (invitation_id, org_id, email, role, token_hash, invited_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(invitation_id)
        .bind(identity.org_id.0)
        .bind(&email)
        .bind(role.as_str())
        .bind(token.digest())
        .bind(identity.user_id)
        .bind(expires_at)
        .execute(&mut *transaction)
        .await?;
        let actor = Actor::user(identity.user_id);
        let invited = OrgEvent::MemberInvited(MemberInvited { invitation_id, email, role, expires_at });
        record(&mut transaction, OrgEvent::stream_of(identity.org_id.0), identity.org_id, &actor, Uuid::now_v7(), &[invited]).await?;
        transaction.commit().await?;
        Ok((invitation_id, token))
    }

    pub async fn revoke_invitation(&self, identity: &Identity, invitation_id: Uuid) -> Result<(), ApiError> {
        let mut transaction = self.begin(&[&OrgEvent::stream_of(identity.org_id.0)]).await?;
        let row = sqlx::query(
            "SELECT accepted_at IS NOT NULL AS accepted, revoked_at IS NOT NULL AS revoked FROM invitations \
             WHERE invitation_id = $1 AND org_id = $2 FOR UPDATE",
        )
        .bind(invitation_id)
        .bind(identity.org_id.0)
        .fetch_optional(&mut *transaction)
        .await?
        .ok_or_else(|| ApiError::NotFound("invitation".into()))?;
        if row.try_get::<bool, _>("accepted")? {
            return Err(DomainError::from(IdentityError::InvitationUsed).into());
        }
        if row.try_get::<bool, _>("revoked")? {
            return Ok(());
        }
        sqlx::query("UPDATE invitations SET revoked_at = now() WHERE invitation_id = $1")
            .bind(invitation_id)
            .execute(&mut *transaction)
            .await?;
        let actor = Actor::user(identity.user_id);
        let revoked = OrgEvent::InvitationRevoked(InvitationRevoked { invitation_id });
        record(&mut transaction, OrgEvent::stream_of(identity.org_id.0), identity.org_id, &actor, Uuid::now_v7(), &[revoked]).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Locks the organisation's live members and returns the target's role and the admin count.
    async fn lock_members(transaction: &mut PgConnection, org_id: OrgId, user_id: Uuid) -> Result<(Role, i64), ApiError> {
        let rows = sqlx::query("SELECT user_id, role FROM accounts WHERE org_id = $1 AND removed_at IS NULL FOR UPDATE")
            .bind(org_id.0)
            .fetch_all(&mut *transaction)
            .await?;
        let mut target = None;
        let mut admins = 0;
        for row in rows {
            let role = parse_role(row.try_get("role")?)?;
            admins += i64::from(role == Role::Admin);
            if row.try_get::<Uuid, _>("user_id")? == user_id {
                target = Some(role);
            }
        }
        let target = target.ok_or_else(|| ApiError::NotFound("member".into()))?;
        Ok((target, admins))
    }

    /// Changes a member's role; returns the role now in force.
    pub async fn change_role(&self, identity: &Identity, user_id: Uuid, requested: Role) -> Result<Role, ApiError> {
        let mut transaction = self.begin(&[&OrgEvent::stream_of(identity.org_id.0)]).await?;
        let (current, admins) = Self::lock_members(&mut transaction, identity.org_id, user_id).await?;
        let Some(role) = decide_role_change(current, requested, admins)? else { return Ok(current) };
        sqlx::query("UPDATE accounts SET role = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(role.as_str())
            .execute(&mut *transaction)
            .await?;
        let actor = Actor::user(identity.user_id);
        let changed = OrgEvent::MemberRoleChanged(MemberRoleChanged { user_id, previous_role: current, role });
        record(&mut transaction, OrgEvent::stream_of(identity.org_id.0), identity.org_id, &actor, Uuid::now_v7(), &[changed]).await?;
        transaction.commit().await?;
        Ok(role)
    }

    /// Removes a member: the account stops working, with every session and token it held.
    pub async fn remove_member(&self, identity: &Identity, user_id: Uuid) -> Result<(), ApiError> {
        let mut transaction = self.begin(&[&OrgEvent::stream_of(identity.org_id.0)]).await?;
        let (role, admins) = Self::lock_members(&mut transaction, identity.org_id, user_id).await?;
        decide_removal(role, admins)?;
        sqlx::query("UPDATE accounts SET removed_at = now() WHERE user_id = $1").bind(user_id).execute(&mut *transaction).await?;
        sqlx::query("DELETE FROM auth_sessions WHERE user_id = $1").bind(user_id).execute(&mut *transaction).await?;
        sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .execute(&mut *transaction)
            .await?;
        let actor = Actor::user(identity.user_id);
        record(
            &mut transaction,
            OrgEvent::stream_of(identity.org_id.0),
            identity.org_id,
            &actor,
            Uuid::now_v7(),
            &[OrgEvent::MemberRemoved(MemberRemoved { user_id })],
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }
}
