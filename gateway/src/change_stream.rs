//! What the change streams (server-sent events of a read model) share: waiting until the caller's
//! organisation's read model changes, and ending once the caller may no longer read it.
//!
//! A stream outlives the request that opened it, so the check the guard made at the start is made
//! again every [`RECHECK_EVERY`]: a member removed, a session logged out or a token revoked stops
//! receiving within that time, however the stream was opened (cookie, token or ticket).

use std::time::Duration;

use aurora_adapters::wakeup::Signal;
use aurora_events::identity::Role;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use crate::auth::tickets::TicketHolder;
use crate::auth::Caller;
use crate::AppState;

/// How often a long-lived response (a change stream, the WebSocket) checks that its caller is
/// still a member with a live credential.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a stream waits without a word before it looks again (an announcement it missed).
const LOOK_AGAIN_AFTER: Duration = Duration::from_secs(15);

/// One stream's watch on a read model of its caller's organisation.
pub struct Follow {
    state: AppState,
    holder: TicketHolder,
    required: Role,
    read_model: &'static str,
    signals: broadcast::Receiver<Signal>,
    check_at: Instant,
}

impl Follow {
    /// Follows `read_model` for `caller`, who must keep at least the `required` role. Changes
    /// announced from now on are seen.
    pub fn new(state: &AppState, caller: &Caller, required: Role, read_model: &'static str) -> Self {
        Self {
            state: state.clone(),
            holder: caller.identity.holder(),
            required,
            read_model,
            signals: state.signals.subscribe(),
            check_at: Instant::now() + RECHECK_EVERY,
        }
    }

    /// Waits until the read model may have changed: announced, possibly missed, or
    /// [`LOOK_AGAIN_AFTER`] gone by without a word. `false` when the stream is to end: the gateway
    /// stops, or the caller is no longer a member with a live credential and the role.
    pub async fn changed(&mut self) -> bool {
        let deadline = tokio::time::sleep(LOOK_AGAIN_AFTER);
        tokio::pin!(deadline);
        let org_id = self.holder.org_id.0;
        loop {
            tokio::select! {
                _ = self.state.shutdown.cancelled() => return false,
                _ = &mut deadline => return true,
                _ = tokio::time::sleep_until(self.check_at) => {
                    if !self.still_allowed().await {
                        return false;
                    }
                }
                signal = self.signals.recv() => match signal {
                    Ok(signal) if signal.changed(self.read_model, org_id) => return true,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return true,
                    Err(RecvError::Closed) => return false,
                },
            }
        }
    }

    /// Whether the caller may still read, checked again once [`RECHECK_EVERY`] has gone by since
    /// the last check: a stream that always has something to send checks here.
    pub async fn allowed(&mut self) -> bool {
        Instant::now() < self.check_at || self.still_allowed().await
    }

    /// Whether the caller still has the role; a database away for a moment does not end the stream.
    async fn still_allowed(&mut self) -> bool {
        self.check_at = Instant::now() + RECHECK_EVERY;
        match self.state.identities.ticket_role(&self.holder).await {
            Ok(Some(role)) => role >= self.required,
            Ok(None) => {
                tracing::info!(user_id = %self.holder.user_id, read_model = self.read_model, "change stream ended: membership or credential ended");
                false
            }
            Err(_) => true,
        }
    }
}
