//! Policy change events: what the control plane publishes for every committed change, in
//! revision order, and what a data plane applies to its snapshot. Versioned JSON.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::acl::{Action, Rule};
use crate::model::{PolicyDoc, User};

/// Version of the event format; a consumer refuses versions it does not know.
pub const EVENT_VERSION: u32 = 1;

/// NATS subject every event is published on.
pub const SUBJECT: &str = "zcproxy.policy.events";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyEvent {
    pub version: u32,
    /// The global revision this change produced; revisions have no gaps.
    pub revision: u64,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A user was created or changed (password hash, enabled, limits, rules).
    UserUpserted {
        user: User,
    },
    UserDeleted {
        name: String,
    },
    /// The whole ordered list of global rules after the change.
    GlobalRulesReplaced {
        rules: Vec<Rule>,
    },
    /// Settings of the policy document itself.
    SettingsChanged {
        default_action: Action,
        anonymous_clients: Option<Vec<IpNet>>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("event version {0} is not supported")]
    Version(u32),
    #[error("event revision {got} does not follow snapshot revision {have}")]
    Gap { have: u64, got: u64 },
}

impl PolicyDoc {
    /// Applies one event. Events at or below the current revision are ignored (replays and
    /// duplicates); a gap is an error and calls for a fresh snapshot.
    pub fn apply(&mut self, event: &PolicyEvent) -> Result<bool, ApplyError> {
        if event.version != EVENT_VERSION {
            return Err(ApplyError::Version(event.version));
        }
        if event.revision <= self.revision {
            return Ok(false);
        }
        if event.revision != self.revision + 1 {
            return Err(ApplyError::Gap {
                have: self.revision,
                got: event.revision,
            });
        }
        match &event.change {
            Change::UserUpserted { user } => {
                // Users stay in byte order of name, as the snapshot lists them, so a
                // document built from events equals the snapshot of the same revision.
                match self
                    .users
                    .binary_search_by(|u| u.name.as_str().cmp(&user.name))
                {
                    Ok(i) => self.users[i] = user.clone(),
                    Err(i) => self.users.insert(i, user.clone()),
                }
            }
            Change::UserDeleted { name } => {
                if let Ok(i) = self.users.binary_search_by(|u| u.name.as_str().cmp(name)) {
                    self.users.remove(i);
                }
            }
            Change::GlobalRulesReplaced { rules } => self.rules = rules.clone(),
            Change::SettingsChanged {
                default_action,
                anonymous_clients,
            } => {
                self.default_action = *default_action;
                self.anonymous_clients = anonymous_clients.clone();
            }
        }
        self.revision = event.revision;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
            enabled: true,
            max_tunnels: None,
            rules: vec![],
        }
    }

    #[test]
    fn wire_format_is_stable() {
        let e = PolicyEvent {
            version: 1,
            revision: 7,
            change: Change::UserDeleted { name: "bob".into() },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"revision":7,"kind":"user_deleted","name":"bob"}"#
        );
        assert_eq!(serde_json::from_str::<PolicyEvent>(&json).unwrap(), e);
    }

    #[test]
    fn apply_in_order_ignores_replays_and_refuses_gaps() {
        let mut doc = PolicyDoc::default();
        let ev = |revision, change| PolicyEvent {
            version: 1,
            revision,
            change,
        };
        assert_eq!(
            doc.apply(&ev(1, Change::UserUpserted { user: user("a") })),
            Ok(true)
        );
        assert_eq!(
            doc.apply(&ev(1, Change::UserUpserted { user: user("b") })),
            Ok(false)
        );
        assert_eq!(doc.users.len(), 1);
        let mut changed = user("a");
        changed.enabled = false;
        assert_eq!(
            doc.apply(&ev(2, Change::UserUpserted { user: changed })),
            Ok(true)
        );
        assert!(!doc.users[0].enabled);
        assert_eq!(
            doc.apply(&ev(4, Change::UserDeleted { name: "a".into() })),
            Err(ApplyError::Gap { have: 2, got: 4 })
        );
        assert_eq!(
            doc.apply(&ev(3, Change::UserDeleted { name: "a".into() })),
            Ok(true)
        );
        assert!(doc.users.is_empty());
        let mut wrong = ev(4, Change::GlobalRulesReplaced { rules: vec![] });
        wrong.version = 2;
        assert_eq!(doc.apply(&wrong), Err(ApplyError::Version(2)));
    }
}
