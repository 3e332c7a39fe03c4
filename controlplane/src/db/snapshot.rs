//! The full policy document at one revision, read in one consistent snapshot.

use deadpool_postgres::Client;
use policy::{Action, PolicyDoc};
use tokio_postgres::types::Json;
use tokio_postgres::IsolationLevel;

use super::{rules, users};
use crate::problem::ApiError;

pub async fn load(client: &mut Client) -> Result<PolicyDoc, ApiError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let state = tx
        .query_one(
            "SELECT revision, default_action, anonymous_clients FROM policy_state WHERE id = 1",
            &[],
        )
        .await?;
    let revision: i64 = state.get(0);
    let default_action = if state.get::<_, &str>(1) == "deny" {
        Action::Deny
    } else {
        Action::Allow
    };
    let anonymous: Option<Json<Vec<ipnet::IpNet>>> = state.get(2);
    let mut doc = PolicyDoc {
        revision: revision as u64,
        default_action,
        anonymous_clients: anonymous.map(|Json(v)| v),
        users: vec![],
        rules: rules::list(&*tx, None)
            .await?
            .into_iter()
            .map(|r| r.rule)
            .collect(),
    };
    let ids: Vec<String> = tx
        .query("SELECT name FROM users ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in ids {
        if let Some(row) = users::get(&*tx, &name).await? {
            doc.users.push(users::policy_user(&*tx, &row).await?);
        }
    }
    tx.commit().await?;
    Ok(doc)
}
