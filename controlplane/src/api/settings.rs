//! /v1/settings: the policy-wide default action and anonymous client networks. Reading takes
//! any key; a change takes an admin key and is committed like every policy change (revision,
//! outbox event `settings_changed`, audit row).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use policy::event::Change;
use serde_json::json;

use super::auth::{Admin, Reader};
use super::body::Body;
use super::AppState;
use crate::db::{change, settings as settings_db};
use crate::problem::ApiError;

/// Bound on the anonymous network list (each is checked on every anonymous handshake).
const MAX_NETWORKS: usize = 100;

pub async fn get(state: web::Data<AppState>, _: Reader) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    Ok(HttpResponse::Ok().json(settings_db::get(&**client).await?))
}

pub async fn put(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    body: Body<settings_db::Settings>,
) -> Result<HttpResponse, ApiError> {
    let wanted = body.into_inner();
    if wanted.anonymous_clients.len() > MAX_NETWORKS {
        return Err(ApiError::field(
            "anonymous_clients",
            "at most 100 networks (use wider prefixes)",
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let before = settings_db::get(&*tx).await?;
    settings_db::put(&*tx, &wanted).await?;
    let stored = settings_db::get(&*tx).await?;
    let revision = change::commit(
        &tx,
        &caller.actor(),
        "settings.replace",
        "settings",
        Change::SettingsChanged {
            default_action: stored.default_action,
            anonymous_clients: Some(stored.anonymous_clients.clone()),
        },
        json!({"before": before, "after": stored}),
    )
    .await?;
    tx.commit().await?;
    Ok(state.changed(revision, StatusCode::OK).json(stored))
}
