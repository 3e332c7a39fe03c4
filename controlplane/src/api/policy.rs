//! /v1/policy/snapshot (what a data plane loads at start) and /v1/audit.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Reader;
use super::AppState;
use crate::db::{audit as audit_db, snapshot as snapshot_db};
use crate::problem::ApiError;

pub async fn snapshot(state: web::Data<AppState>, _: Reader) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let doc = snapshot_db::load(&mut client).await?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Policy-Revision", doc.revision.to_string()))
        .json(doc))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<i64>,
    /// Entries with an id below this one (the `next` of the previous page).
    before: Option<i64>,
}

pub async fn audit(
    state: web::Data<AppState>,
    _: Reader,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=super::users::MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let client = state.pool.get().await?;
    let items = audit_db::list(&**client, q.before, limit).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.id))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next": next })))
}
