//! Users table.

use policy::{Rule, User};
use serde::Serialize;
use tokio_postgres::{GenericClient, Row};

use super::{rules, ts};
use crate::problem::ApiError;

#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub name: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tunnels: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
}

pub struct UserRow {
    pub id: i64,
    pub view: UserView,
    pub password_hash: String,
}

fn select() -> String {
    format!(
        "SELECT id, name, enabled, max_tunnels, {}, {}, password_hash FROM users",
        ts("created_at"),
        ts("updated_at")
    )
}

fn from_row(r: &Row) -> UserRow {
    UserRow {
        id: r.get(0),
        view: UserView {
            name: r.get(1),
            enabled: r.get(2),
            max_tunnels: r.get::<_, Option<i32>>(3).map(|v| v as u32),
            created_at: r.get(4),
            updated_at: r.get(5),
        },
        password_hash: r.get(6),
    }
}

pub async fn get<C: GenericClient>(db: &C, name: &str) -> Result<Option<UserRow>, ApiError> {
    let row = db
        .query_opt(&format!("{} WHERE name = $1", select()), &[&name])
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Locks the user's row for the rest of the transaction (rule edits serialise per user).
pub async fn get_for_update<C: GenericClient>(db: &C, name: &str) -> Result<UserRow, ApiError> {
    let row = db
        .query_opt(
            &format!("{} WHERE name = $1 FOR UPDATE", select()),
            &[&name],
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name:?}")))?;
    Ok(from_row(&row))
}

pub struct Filter<'a> {
    pub after: Option<&'a str>,
    pub prefix: Option<&'a str>,
    pub enabled: Option<bool>,
    pub limit: i64,
}

pub async fn list<C: GenericClient>(db: &C, f: &Filter<'_>) -> Result<Vec<UserView>, ApiError> {
    let prefix_pattern = f.prefix.map(|p| {
        format!(
            "{}%",
            p.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let rows = db
        .query(
            &format!(
                "{} WHERE ($1::text IS NULL OR name > $1) AND ($2::text IS NULL OR name LIKE $2) \
                 AND ($3::bool IS NULL OR enabled = $3) ORDER BY name LIMIT $4",
                select()
            ),
            &[&f.after, &prefix_pattern, &f.enabled, &f.limit],
        )
        .await?;
    Ok(rows.iter().map(|r| from_row(r).view).collect())
}

pub async fn insert<C: GenericClient>(
    db: &C,
    name: &str,
    password_hash: &str,
    enabled: bool,
    max_tunnels: Option<u32>,
) -> Result<UserRow, ApiError> {
    let row = db
        .query_one(
            &format!(
                "WITH u AS (INSERT INTO users (name, password_hash, enabled, max_tunnels) VALUES ($1, $2, $3, $4) RETURNING *) \
                 {}",
                select().replace("FROM users", "FROM u")
            ),
            &[&name, &password_hash, &enabled, &max_tunnels.map(|v| v as i32)],
        )
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict(_) => ApiError::Conflict(format!("user {name:?} already exists")),
            other => other,
        })?;
    Ok(from_row(&row))
}

pub async fn update<C: GenericClient>(
    db: &C,
    id: i64,
    password_hash: Option<&str>,
    enabled: Option<bool>,
    max_tunnels: Option<Option<u32>>,
) -> Result<UserRow, ApiError> {
    let set_limit = max_tunnels.is_some();
    let limit = max_tunnels.flatten().map(|v| v as i32);
    let row = db
        .query_one(
            &format!(
                "WITH u AS (UPDATE users SET password_hash = COALESCE($2, password_hash), enabled = COALESCE($3, enabled), \
                 max_tunnels = CASE WHEN $4 THEN $5 ELSE max_tunnels END, updated_at = now() WHERE id = $1 RETURNING *) {}",
                select().replace("FROM users", "FROM u")
            ),
            &[&id, &password_hash, &enabled, &set_limit, &limit],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn delete<C: GenericClient>(db: &C, id: i64) -> Result<(), ApiError> {
    db.execute("DELETE FROM users WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// The user as the data plane sees it (for events and snapshots).
pub async fn policy_user<C: GenericClient>(db: &C, row: &UserRow) -> Result<User, ApiError> {
    let rules: Vec<Rule> = rules::list(db, Some(row.id))
        .await?
        .into_iter()
        .map(|r| r.rule)
        .collect();
    Ok(User {
        name: row.view.name.clone(),
        password_hash: row.password_hash.clone(),
        enabled: row.view.enabled,
        max_tunnels: row.view.max_tunnels,
        rules,
    })
}
