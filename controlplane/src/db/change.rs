//! The one way a policy change is committed: bump the global revision, write the outbox event
//! and the audit row, all in the caller's transaction. Either everything lands or nothing.

use policy::event::{Change, PolicyEvent, EVENT_VERSION};
use serde_json::Value;
use tokio_postgres::types::Json;
use tokio_postgres::Transaction;

use crate::problem::ApiError;

pub async fn commit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    target: &str,
    change: Change,
    details: Value,
) -> Result<u64, ApiError> {
    // The row lock taken here orders concurrent writers: revisions follow commit order.
    let revision: i64 = tx
        .query_one(
            "UPDATE policy_state SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            &[],
        )
        .await?
        .get(0);
    let event = PolicyEvent {
        version: EVENT_VERSION,
        revision: revision as u64,
        change,
    };
    tx.execute(
        "INSERT INTO outbox (revision, event) VALUES ($1, $2)",
        &[&revision, &Json(&event)],
    )
    .await?;
    audit(tx, actor, action, target, Some(revision), details).await?;
    Ok(revision as u64)
}

/// An audit row for something that changes no policy (API keys).
pub async fn audit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    target: &str,
    revision: Option<i64>,
    details: Value,
) -> Result<(), ApiError> {
    tx.execute(
        "INSERT INTO audit_log (actor, action, target, revision, details) VALUES ($1, $2, $3, $4, $5)",
        &[&actor, &action, &target, &revision, &Json(&details)],
    )
    .await?;
    Ok(())
}
