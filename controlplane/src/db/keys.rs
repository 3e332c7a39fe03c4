//! API keys. Only a SHA-256 of each key is stored; keys are 256-bit random, so a fast hash
//! is enough (no dictionary to protect), and lookup by hash reveals nothing about the key.

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_postgres::GenericClient;

use super::ts;
use crate::problem::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Reader,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }

    fn parse(s: &str) -> Role {
        if s == "admin" {
            Role::Admin
        } else {
            Role::Reader
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyView {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: i64,
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn actor(&self) -> String {
        format!("api-key:{}:{}", self.key_id, self.name)
    }
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No entropy source is not something to paper over.
        panic!("no operating system random source");
    }
    format!(
        "zcp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn prefix(secret: &str) -> String {
    secret.chars().take(8).collect()
}

pub async fn insert<C: GenericClient>(
    db: &C,
    name: &str,
    role: Role,
    secret: &str,
) -> Result<KeyView, ApiError> {
    let row = db
        .query_one(
            &format!(
                "INSERT INTO api_keys (name, role, key_hash, prefix) VALUES ($1, $2, $3, $4) \
                 RETURNING id, name, role, prefix, {}, {}",
                ts("created_at"),
                ts("revoked_at")
            ),
            &[&name, &role.as_str(), &hash(secret), &prefix(secret)],
        )
        .await?;
    Ok(view(&row))
}

fn view(r: &tokio_postgres::Row) -> KeyView {
    KeyView {
        id: r.get(0),
        name: r.get(1),
        role: Role::parse(r.get(2)),
        prefix: r.get(3),
        created_at: r.get(4),
        revoked_at: r.get(5),
    }
}

pub async fn list<C: GenericClient>(db: &C) -> Result<Vec<KeyView>, ApiError> {
    let rows = db
        .query(
            &format!(
                "SELECT id, name, role, prefix, {}, {} FROM api_keys ORDER BY id",
                ts("created_at"),
                ts("revoked_at")
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(view).collect())
}

/// Revokes a key; `Ok(false)` when it does not exist.
pub async fn revoke<C: GenericClient>(db: &C, id: i64) -> Result<bool, ApiError> {
    let n = db
        .execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(n > 0)
}

/// The caller a bearer key belongs to, if the key is known and not revoked.
pub async fn authenticate<C: GenericClient>(
    db: &C,
    secret: &str,
) -> Result<Option<Caller>, ApiError> {
    let digest = hash(secret);
    let row = db
        .query_opt(
            "SELECT id, name, role, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            &[&digest],
        )
        .await?;
    Ok(row.and_then(|r| {
        let stored: Vec<u8> = r.get(3);
        // Belt and braces: the index found it, compare in constant time anyway.
        bool::from(stored.ct_eq(&digest)).then(|| Caller {
            key_id: r.get(0),
            name: r.get(1),
            role: Role::parse(r.get(2)),
        })
    }))
}

/// Makes sure a bootstrap admin key exists (idempotent across restarts and replicas).
pub async fn ensure_bootstrap<C: GenericClient>(
    db: &C,
    secret: &str,
    role: Role,
) -> Result<(), ApiError> {
    let name = match role {
        Role::Admin => "bootstrap",
        Role::Reader => "bootstrap-reader",
    };
    db.execute(
        "INSERT INTO api_keys (name, role, key_hash, prefix) VALUES ($1, $2, $3, $4) ON CONFLICT (key_hash) DO NOTHING",
        &[&name, &role.as_str(), &hash(secret), &prefix(secret)],
    )
    .await?;
    Ok(())
}
