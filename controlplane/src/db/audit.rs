//! The append-only audit log (a trigger refuses UPDATE and DELETE).

use serde::Serialize;
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

use super::ts;
use crate::problem::ApiError;

#[derive(Debug, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    pub details: serde_json::Value,
}

/// Newest first, `before` an id for paging.
pub async fn list<C: GenericClient>(
    db: &C,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, ApiError> {
    let rows = db
        .query(
            &format!(
                "SELECT id, {}, actor, action, target, revision, details FROM audit_log \
                 WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                ts("at")
            ),
            &[&before, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let Json(details): Json<serde_json::Value> = r.get(6);
            AuditEntry {
                id: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                target: r.get(4),
                revision: r.get(5),
                details,
            }
        })
        .collect())
}
