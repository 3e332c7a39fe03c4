//! The outbox publisher: sends committed events to NATS JetStream in revision order, at least
//! once, and marks them sent. A crash or a NATS outage between commit and publish loses
//! nothing: the rows stay unsent until a publisher (this process after a restart, or any
//! replica; an advisory lock keeps one at a time) gets them acknowledged.
//! JetStream de-duplicates re-sends within its window by `Nats-Msg-Id` = revision, and a
//! data plane ignores revisions it already has.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use deadpool_postgres::Pool;
use policy::event::SUBJECT;
use tokio::sync::Notify;

use crate::metrics::Metrics;

pub const STREAM: &str = "ZCPROXY_POLICY";
const LOCK_KEY: i64 = 0x7a63_7075_6273;
const BATCH: i64 = 256;

#[derive(Debug, thiserror::Error)]
enum CycleError {
    #[error("database: {0}")]
    Db(String),
    #[error("nats: {0}")]
    Nats(String),
}

async fn connect(url: &str) -> Result<jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: STREAM.to_string(),
        subjects: vec![SUBJECT.to_string()],
        duplicate_window: Duration::from_secs(120),
        max_messages: 10_000_000,
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(js)
}

/// Publishes one batch; returns how many events went out.
async fn cycle(
    pool: &Pool,
    js: &jetstream::Context,
    metrics: &Metrics,
) -> Result<usize, CycleError> {
    let db = |e: tokio_postgres::Error| CycleError::Db(e.to_string());
    let mut client = pool
        .get()
        .await
        .map_err(|e| CycleError::Db(e.to_string()))?;
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db)?;
    let rows = tx
        .query(
            "SELECT revision, event::text, extract(epoch FROM clock_timestamp() - created_at)::float8 \
             FROM outbox WHERE sent_at IS NULL ORDER BY revision LIMIT $1",
            &[&BATCH],
        )
        .await
        .map_err(db)?;
    for row in &rows {
        let revision: i64 = row.get(0);
        let payload: String = row.get(1);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", revision.to_string().as_str());
        let ack = async {
            js.publish_with_headers(SUBJECT, headers, payload.into_bytes().into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), ack).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(CycleError::Nats(e)),
            Err(_) => return Err(CycleError::Nats("publish not acknowledged in 5 s".into())),
        }
        tx.execute(
            "UPDATE outbox SET sent_at = now() WHERE revision = $1",
            &[&revision],
        )
        .await
        .map_err(db)?;
        metrics.published.inc();
        let age: f64 = row.get(2);
        metrics.publish_latency.observe(age.max(0.0));
    }
    let backlog: i64 = tx
        .query_one("SELECT count(*) FROM outbox WHERE sent_at IS NULL", &[])
        .await
        .map_err(db)?
        .get(0);
    tx.commit().await.map_err(db)?;
    metrics.outbox_backlog.set(backlog);
    Ok(rows.len())
}

/// Keeps the backlog gauge true while nothing can be published.
async fn refresh_backlog(pool: &Pool, metrics: &Metrics) {
    if let Ok(client) = pool.get().await {
        if let Ok(row) = client
            .query_one("SELECT count(*) FROM outbox WHERE sent_at IS NULL", &[])
            .await
        {
            metrics.outbox_backlog.set(row.get(0));
        }
    }
}

/// Runs forever: reconnects to NATS with backoff, publishes whenever woken or every 500 ms.
pub async fn run(pool: Pool, nats_url: String, wake: Arc<Notify>, metrics: Arc<Metrics>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let js = match connect(&nats_url).await {
            Ok(js) => {
                backoff = Duration::from_millis(200);
                js
            }
            Err(e) => {
                metrics.publish_failures.inc();
                refresh_backlog(&pool, &metrics).await;
                tracing::warn!(error = %e, "NATS unavailable; changes stay in the outbox");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(url = %nats_url, "publishing policy events");
        loop {
            match cycle(&pool, &js, &metrics).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
                }
                Err(CycleError::Nats(e)) => {
                    metrics.publish_failures.inc();
                    refresh_backlog(&pool, &metrics).await;
                    tracing::warn!(error = %e, "publish failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
                Err(CycleError::Db(e)) => {
                    tracing::warn!(error = %e, "outbox read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
