//! The full policy document at one revision, read in one consistent snapshot.

use deadpool_postgres::Client;
use policy::PolicyDoc;
use tokio_postgres::types::Json;
use tokio_postgres::IsolationLevel;

use super::{rules, settings};
use crate::problem::ApiError;

pub async fn load(client: &mut Client) -> Result<PolicyDoc, ApiError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let revision: i64 = tx
        .query_one("SELECT revision FROM policy_state WHERE id = 1", &[])
        .await?
        .get(0);
    let settings = settings::get(&*tx).await?;
    let mut doc = PolicyDoc {
        revision: revision as u64,
        default_action: settings.default_action,
        // Always present: with a control plane, anonymous access comes only from the settings,
        // never from "no users are defined" (deleting the last user must not open the proxy).
        anonymous_clients: Some(settings.anonymous_clients),
        users: vec![],
        rules: rules::list(&*tx, None)
            .await?
            .into_iter()
            .map(|r| r.rule)
            .collect(),
    };
    // Two queries for all users and all their rules, not one pair per user.
    let mut by_user: std::collections::HashMap<i64, Vec<policy::Rule>> =
        std::collections::HashMap::new();
    for r in tx
        .query("SELECT user_id, rule FROM acl_rules WHERE user_id IS NOT NULL ORDER BY user_id, position, id", &[])
        .await?
    {
        let Json(rule): Json<policy::Rule> = r.get(1);
        by_user.entry(r.get(0)).or_default().push(rule);
    }
    for r in tx
        .query(
            "SELECT id, name, password_hash, enabled, max_tunnels FROM users ORDER BY name COLLATE \"C\"",
            &[],
        )
        .await?
    {
        doc.users.push(policy::User {
            name: r.get(1),
            password_hash: r.get(2),
            enabled: r.get(3),
            max_tunnels: r.get::<_, Option<i32>>(4).map(|v| v as u32),
            rules: by_user.remove(&r.get::<_, i64>(0)).unwrap_or_default(),
        });
    }
    tx.commit().await?;
    Ok(doc)
}
