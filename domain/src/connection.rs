//! The connection aggregate: a provider an organisation connected, whose credentials live in the
//! secret store. It decides which changes are allowed: a connection is made once, refreshed and
//! rotated while it exists, and nothing happens to it after it was removed.

use aurora_events::connection::{
    AuthMethod, ConnectionEstablished, ConnectionEvent, ConnectionFailed, ConnectionRefreshed, ConnectionRemoved, ConnectionRotated,
    FailureStage, InventoryItem, InventoryRecorded, Provider, MAX_INVENTORY_ITEMS,
};
use uuid::Uuid;

use crate::text::{bounded, Lines};
use crate::{Aggregate, DomainError, ErrorKind};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_ACCOUNT_CHARS: usize = 500;
pub const MAX_REASON_CHARS: usize = 1_000;
const MAX_ITEM_CHARS: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionCommand {
    Establish(ConnectionEstablished),
    Refresh(ConnectionRefreshed),
    Rotate(ConnectionRotated),
    Fail(ConnectionFailed),
    RecordInventory { items: Vec<InventoryItem> },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection does not exist")]
    NotFound,
    #[error("connection {0} already exists")]
    AlreadyExists(Uuid),
    #[error("the connection was removed")]
    Removed,
    #[error("only OAuth connections are refreshed")]
    NotOauth,
}

impl ConnectionError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectionError::NotFound | ConnectionError::Removed => ErrorKind::NotFound("connection".into()),
            ConnectionError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            ConnectionError::NotOauth => ErrorKind::InvalidState,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connection {
    pub established: Option<ConnectionEstablished>,
    pub secret_version: u64,
    pub removed: bool,
}

impl Connection {
    pub fn provider(&self) -> Option<Provider> {
        self.established.as_ref().map(|established| established.provider)
    }

    fn live(&self) -> Result<&ConnectionEstablished, DomainError> {
        match (&self.established, self.removed) {
            (None, _) => Err(ConnectionError::NotFound.into()),
            (Some(_), true) => Err(ConnectionError::Removed.into()),
            (Some(established), false) => Ok(established),
        }
    }
}

impl Aggregate for Connection {
    type Command = ConnectionCommand;
    type Event = ConnectionEvent;

    fn decide(&self, command: ConnectionCommand) -> Result<Vec<ConnectionEvent>, DomainError> {
        match command {
            ConnectionCommand::Establish(mut established) => {
                if self.exists() {
                    return Err(ConnectionError::AlreadyExists(established.connection_id).into());
                }
                established.name = bounded("name", &established.name, MAX_NAME_CHARS, Lines::One)?;
                if established.name.is_empty() {
                    established.name = established.provider.title().to_owned();
                }
                established.account = bounded("account", &established.account, MAX_ACCOUNT_CHARS, Lines::One)?;
                Ok(vec![ConnectionEvent::Established(established)])
            }
            ConnectionCommand::Refresh(refreshed) => {
                let established = self.live()?;
                if established.method != AuthMethod::Oauth {
                    return Err(ConnectionError::NotOauth.into());
                }
                if refreshed.secret_version <= self.secret_version {
                    return Ok(Vec::new());
                }
                Ok(vec![ConnectionEvent::Refreshed(refreshed)])
            }
            ConnectionCommand::Rotate(mut rotated) => {
                self.live()?;
                if rotated.secret_version <= self.secret_version {
                    return Ok(Vec::new());
                }
                rotated.account = bounded("account", &rotated.account, MAX_ACCOUNT_CHARS, Lines::One)?;
                Ok(vec![ConnectionEvent::Rotated(rotated)])
            }
            ConnectionCommand::Fail(mut failed) => {
                // A failed OAuth exchange is recorded on the connection that was never made.
                if failed.stage != FailureStage::Exchange || self.exists() {
                    self.live()?;
                }
                failed.reason = bounded("reason", &failed.reason, MAX_REASON_CHARS, Lines::Many)?;
                Ok(vec![ConnectionEvent::Failed(failed)])
            }
            ConnectionCommand::RecordInventory { items } => {
                self.live()?;
                let omitted = items.len().saturating_sub(MAX_INVENTORY_ITEMS) as u64;
                let items = items
                    .into_iter()
                    .take(MAX_INVENTORY_ITEMS)
                    .map(|item| InventoryItem {
                        kind: clip(&item.kind),
                        id: clip(&item.id),
                        name: item.name.map(|name| clip(&name)).filter(|name| !name.is_empty()),
                    })
                    .collect();
                Ok(vec![ConnectionEvent::InventoryRecorded(InventoryRecorded { items, omitted })])
            }
            ConnectionCommand::Remove => {
                if self.removed {
                    return Ok(Vec::new());
                }
                self.live()?;
                Ok(vec![ConnectionEvent::Removed(ConnectionRemoved {})])
            }
        }
    }

    fn evolve(mut self, event: &ConnectionEvent) -> Self {
        match event {
            ConnectionEvent::Established(established) => {
                self.secret_version = established.secret_version;
                self.established = Some(established.clone());
            }
            ConnectionEvent::Refreshed(ConnectionRefreshed { secret_version, .. })
            | ConnectionEvent::Rotated(ConnectionRotated { secret_version, .. }) => self.secret_version = *secret_version,
            ConnectionEvent::Removed(_) => self.removed = true,
            ConnectionEvent::Failed(_) | ConnectionEvent::InventoryRecorded(_) => {}
        }
        self
    }

    fn exists(&self) -> bool {
        self.established.is_some()
    }
}

/// A provider's text, cut to a size an event may hold, with control characters dropped.
fn clip(text: &str) -> String {
    text.chars().filter(|character| !character.is_control()).take(MAX_ITEM_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;

    fn established() -> ConnectionEstablished {
        ConnectionEstablished {
            connection_id: Uuid::nil(),
            provider: Provider::Github,
            method: AuthMethod::Oauth,
            name: "GitHub".into(),
            account: "octocat".into(),
            secret_ref: "vault:kv/data/aurora/orgs/o/connections/c".into(),
            secret_version: 1,
            scopes: vec!["repo".into()],
            expires_at: None,
        }
    }

    #[test]
    fn a_connection_is_made_once_and_refreshed_forward_only() {
        given::<Connection>([]).when(ConnectionCommand::Establish(established())).then([ConnectionEvent::Established(established())]);
        given::<Connection>([ConnectionEvent::Established(established())])
            .when(ConnectionCommand::Establish(established()))
            .then_error(ConnectionError::AlreadyExists(Uuid::nil()).into());
        let refreshed = ConnectionRefreshed { secret_version: 2, expires_at: None };
        given::<Connection>([ConnectionEvent::Established(established())])
            .when(ConnectionCommand::Refresh(refreshed.clone()))
            .then([ConnectionEvent::Refreshed(refreshed.clone())]);
        // A refresh redelivered after a newer version was recorded changes nothing.
        given::<Connection>([ConnectionEvent::Established(established()), ConnectionEvent::Refreshed(refreshed.clone())])
            .when(ConnectionCommand::Refresh(refreshed))
            .then([]);
    }

    #[test]
    fn nothing_happens_to_a_removed_connection() {
        let removed = [ConnectionEvent::Established(established()), ConnectionEvent::Removed(ConnectionRemoved {})];
        given::<Connection>(removed.clone()).when(ConnectionCommand::Remove).then([]);
        given::<Connection>(removed.clone())
            .when(ConnectionCommand::Rotate(ConnectionRotated { secret_version: 2, account: "x".into() }))
            .then_error(ConnectionError::Removed.into());
        given::<Connection>(removed).when(ConnectionCommand::RecordInventory { items: vec![] }).then_error(ConnectionError::Removed.into());
    }

    #[test]
    fn key_connections_are_not_refreshed_and_inventories_are_bounded() {
        let mut key = established();
        key.method = AuthMethod::Key;
        given::<Connection>([ConnectionEvent::Established(key)])
            .when(ConnectionCommand::Refresh(ConnectionRefreshed { secret_version: 2, expires_at: None }))
            .then_error(ConnectionError::NotOauth.into());
        let items: Vec<InventoryItem> = (0..MAX_INVENTORY_ITEMS + 3)
            .map(|index| InventoryItem { kind: "repository".into(), id: format!("o/r{index}\u{7}"), name: None })
            .collect();
        let events =
            given::<Connection>([ConnectionEvent::Established(established())]).state_after(ConnectionCommand::RecordInventory { items });
        let [ConnectionEvent::InventoryRecorded(recorded)] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!((recorded.items.len(), recorded.omitted), (MAX_INVENTORY_ITEMS, 3));
        assert!(!recorded.items[0].id.contains('\u{7}'));
    }
}
