//! /v1/api-keys: the secret is returned once, at creation; only its hash is stored.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::body::Body;
use super::AppState;
use crate::db::change;
use crate::db::keys::{self, Role};
use crate::problem::ApiError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
    role: Role,
}

pub async fn create(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    body: Body<NewKey>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.name.trim().is_empty()
        || body.name.len() > 128
        || body.name.chars().any(char::is_control)
    {
        return Err(ApiError::field("name", "1-128 printable characters"));
    }
    let secret = keys::generate();
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let view = keys::insert(&*tx, &body.name, body.role, &secret).await?;
    change::audit(
        &tx,
        &caller.actor(),
        "api_key.create",
        &format!("api-key:{}", view.id),
        None,
        json!({"role": body.role}),
    )
    .await?;
    tx.commit().await?;
    let mut out = json!(view);
    out["key"] = json!(secret);
    Ok(HttpResponse::Created().json(out))
}

pub async fn list(state: web::Data<AppState>, _: Admin) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(json!({ "items": keys::list(&**client).await? })))
}

pub async fn revoke(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    if !keys::revoke(&*tx, *id).await? {
        return Err(ApiError::NotFound(format!("api key {}", *id)));
    }
    change::audit(
        &tx,
        &caller.actor(),
        "api_key.revoke",
        &format!("api-key:{}", *id),
        None,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
