//! The policy document: what an operator writes in a config file and what the control plane
//! serves as a snapshot.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::acl::{Action, Rule};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Monotonic revision; 0 for a local file.
    #[serde(default)]
    pub revision: u64,
    /// What happens to a public destination that no rule matches.
    #[serde(default = "default_action")]
    pub default_action: Action,
    /// Client networks that may use the proxy without credentials. Absent: loopback clients
    /// when no user is defined, nobody otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_clients: Option<Vec<IpNet>>,
    #[serde(default)]
    pub users: Vec<User>,
    /// Global rules, evaluated after the user's own rules; first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

fn default_action() -> Action {
    Action::Allow
}

fn yes() -> bool {
    true
}

impl Default for PolicyDoc {
    fn default() -> Self {
        PolicyDoc {
            revision: 0,
            default_action: Action::Allow,
            anonymous_clients: None,
            users: vec![],
            rules: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Argon2 PHC string (`zcproxy hash-password`).
    pub password_hash: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Most tunnels this user may hold open at once across all cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tunnels: Option<u32>,
    /// The user's own rules, evaluated before the global rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl PolicyDoc {
    pub fn loopback_clients() -> Vec<IpNet> {
        vec![
            "127.0.0.0/8".parse().expect("static CIDR"),
            "::1/128".parse().expect("static CIDR"),
        ]
    }

    /// The anonymous client networks in force, with the default applied.
    pub fn effective_anonymous_clients(&self) -> Vec<IpNet> {
        match &self.anonymous_clients {
            Some(nets) => nets.clone(),
            None if self.users.is_empty() => Self::loopback_clients(),
            None => vec![],
        }
    }
}
