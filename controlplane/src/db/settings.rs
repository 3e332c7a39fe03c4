//! The policy-wide settings row: default action and the networks allowed in anonymously.

use ipnet::IpNet;
use policy::Action;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

use crate::problem::ApiError;

/// What `GET`/`PUT /v1/settings` carry. With a control plane, anonymous access comes only from
/// `anonymous_clients` (empty: nobody), never from "no users are defined".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub default_action: Action,
    pub anonymous_clients: Vec<IpNet>,
}

pub async fn get(db: &impl GenericClient) -> Result<Settings, ApiError> {
    let row = db
        .query_one(
            "SELECT default_action, anonymous_clients FROM policy_state WHERE id = 1",
            &[],
        )
        .await?;
    let default_action = if row.get::<_, &str>(0) == "deny" {
        Action::Deny
    } else {
        Action::Allow
    };
    let anonymous: Option<Json<Vec<IpNet>>> = row.get(1);
    Ok(Settings {
        default_action,
        anonymous_clients: anonymous.map(|Json(v)| v).unwrap_or_default(),
    })
}

pub async fn put(db: &impl GenericClient, s: &Settings) -> Result<(), ApiError> {
    let action = match s.default_action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    };
    // Networks stored in canonical form (host bits cleared), as rules are.
    let nets: Vec<IpNet> = s.anonymous_clients.iter().map(IpNet::trunc).collect();
    db.execute(
        "UPDATE policy_state SET default_action = $1, anonymous_clients = $2 WHERE id = 1",
        &[&action, &Json(&nets)],
    )
    .await?;
    Ok(())
}
