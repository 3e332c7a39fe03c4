//! Ordered ACL rules, global (user_id NULL) or per user.

use policy::Rule;
use serde::Serialize;
use tokio_postgres::types::Json;
use tokio_postgres::GenericClient;

use crate::problem::ApiError;

#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub id: i64,
    pub position: i32,
    #[serde(flatten)]
    pub rule: Rule,
}

pub async fn list<C: GenericClient>(db: &C, user: Option<i64>) -> Result<Vec<RuleView>, ApiError> {
    let rows = db
        .query(
            "SELECT id, position, rule FROM acl_rules WHERE user_id IS NOT DISTINCT FROM $1 ORDER BY position, id",
            &[&user],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let Json(rule): Json<Rule> = r.get(2);
            Ok(RuleView {
                id: r.get(0),
                position: r.get(1),
                rule,
            })
        })
        .collect()
}

pub async fn get<C: GenericClient>(
    db: &C,
    user: Option<i64>,
    id: i64,
) -> Result<RuleView, ApiError> {
    list(db, user)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("rule {id}")))
}

/// Inserts at `position` (0-based; None: at the end) and renumbers the scope.
pub async fn insert<C: GenericClient>(
    db: &C,
    user: Option<i64>,
    position: Option<usize>,
    rule: &Rule,
) -> Result<i64, ApiError> {
    let mut ids: Vec<i64> = list(db, user).await?.into_iter().map(|r| r.id).collect();
    let id: i64 = db
        .query_one(
            "INSERT INTO acl_rules (user_id, position, rule) VALUES ($1, $2, $3) RETURNING id",
            &[&user, &(ids.len() as i32), &Json(rule)],
        )
        .await?
        .get(0);
    let at = position.unwrap_or(ids.len()).min(ids.len());
    ids.insert(at, id);
    renumber(db, &ids).await?;
    Ok(id)
}

pub async fn replace<C: GenericClient>(
    db: &C,
    user: Option<i64>,
    id: i64,
    rule: &Rule,
) -> Result<(), ApiError> {
    let n = db
        .execute(
            "UPDATE acl_rules SET rule = $3 WHERE id = $2 AND user_id IS NOT DISTINCT FROM $1",
            &[&user, &id, &Json(rule)],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("rule {id}")));
    }
    Ok(())
}

pub async fn delete<C: GenericClient>(db: &C, user: Option<i64>, id: i64) -> Result<(), ApiError> {
    let n = db
        .execute(
            "DELETE FROM acl_rules WHERE id = $2 AND user_id IS NOT DISTINCT FROM $1",
            &[&user, &id],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::NotFound(format!("rule {id}")));
    }
    let ids: Vec<i64> = list(db, user).await?.into_iter().map(|r| r.id).collect();
    renumber(db, &ids).await
}

/// Sets the order of a scope; `ids` must be exactly the scope's rules.
pub async fn reorder<C: GenericClient>(
    db: &C,
    user: Option<i64>,
    ids: &[i64],
) -> Result<(), ApiError> {
    let mut current: Vec<i64> = list(db, user).await?.into_iter().map(|r| r.id).collect();
    let mut wanted = ids.to_vec();
    current.sort_unstable();
    wanted.sort_unstable();
    if current != wanted {
        // Well-formed, but it does not match the scope as it is now.
        return Err(ApiError::Conflict(
            "ids must list every rule of this scope exactly once".into(),
        ));
    }
    renumber(db, ids).await
}

async fn renumber<C: GenericClient>(db: &C, ids: &[i64]) -> Result<(), ApiError> {
    for (pos, id) in ids.iter().enumerate() {
        db.execute(
            "UPDATE acl_rules SET position = $2 WHERE id = $1",
            &[id, &(pos as i32)],
        )
        .await?;
    }
    Ok(())
}
