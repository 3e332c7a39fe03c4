//! Schema migrations, embedded in the binary and applied in order under an advisory lock so
//! that several replicas starting at once apply each exactly once.

use deadpool_postgres::Pool;

const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/0001_init.sql"))];
const LOCK_KEY: i64 = 0x7a63_7072_6f78;

pub async fn run(pool: &Pool) -> Result<Vec<i32>, String> {
    let mut client = pool.get().await.map_err(|e| format!("database: {e}"))?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| e.to_string())?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| e.to_string())?;
    let mut applied = Vec::new();
    let result = async {
        for (version, sql) in MIGRATIONS {
            let tx = client.transaction().await.map_err(|e| e.to_string())?;
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(|e| e.to_string())?
                .is_some();
            if !done {
                tx.batch_execute(sql)
                    .await
                    .map_err(|e| format!("migration {version}: {e}"))?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(|e| e.to_string())?;
                applied.push(*version);
            }
            tx.commit().await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result.map(|()| applied)
}
