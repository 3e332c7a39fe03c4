//! PostgreSQL access: a deadpool of tokio-postgres connections, migrations, and one module
//! per table family. Every policy write goes through `change::commit`.

pub mod audit;
pub mod change;
pub mod keys;
pub mod migrate;
pub mod rules;
pub mod settings;
pub mod snapshot;
pub mod users;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use crate::problem::ApiError;

pub fn pool(database_url: &str, size: usize) -> Result<Pool, String> {
    let config: tokio_postgres::Config = database_url
        .parse()
        .map_err(|e| format!("database URL: {e}"))?;
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ApiError::Unavailable(format!("database: {e}"))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
                ApiError::Conflict("already exists".into())
            }
            // A NUL or unencodable character in client text: the client's fault.
            Some(c)
                if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
            {
                ApiError::BadRequest("text contains a NUL or unencodable character".into())
            }
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                ApiError::Unavailable("concurrent change, retry".into())
            }
            Some(_) => ApiError::Internal(match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
            // No SQL state: the connection itself failed.
            None => ApiError::Unavailable(format!("database: {e}")),
        }
    }
}

/// Timestamps leave the database as RFC 3339 UTC text.
pub const TS: &str = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";

pub fn ts(column: &str) -> String {
    TS.replace("{}", column)
}
