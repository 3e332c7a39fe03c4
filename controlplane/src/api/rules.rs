//! /v1/rules (global) and /v1/users/{name}/rules: ordered ACL rules, first match wins.
//! Every change publishes the scope's whole rule list (global) or the whole user.

use actix_web::{web, HttpResponse};
use policy::event::Change;
use policy::Rule;
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::Transaction;

use super::auth::{Admin, Reader};
use super::body::Body;
use super::AppState;
use crate::db::keys::Caller;
use crate::db::{change, rules, users};
use crate::problem::ApiError;

/// Most rules in one scope: rules are evaluated linearly per destination address.
const MAX_RULES: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// 0-based place to insert at; default: the end.
    position: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    ids: Vec<i64>,
}

/// Locks the scope a write addresses: the global rules (`None`) or the user's row, which is
/// returned so the event can be built without reading it again.
async fn lock_scope(
    tx: &Transaction<'_>,
    user: Option<&str>,
) -> Result<Option<users::UserRow>, ApiError> {
    match user {
        None => {
            // Serialise global rule edits the way user rows serialise per-user edits.
            tx.execute("SELECT 1 FROM policy_state WHERE id = 1 FOR UPDATE", &[])
                .await?;
            Ok(None)
        }
        Some(name) => Ok(Some(users::get_for_update(tx, name).await?)),
    }
}

async fn publish(
    tx: &Transaction<'_>,
    caller: &Caller,
    action: &str,
    user: Option<&users::UserRow>,
    details: serde_json::Value,
) -> Result<u64, ApiError> {
    let (target, change) = match user {
        None => {
            let rules = rules::list(tx, None)
                .await?
                .into_iter()
                .map(|r| r.rule)
                .collect();
            ("global".to_string(), Change::GlobalRulesReplaced { rules })
        }
        Some(row) => {
            let user = users::policy_user(tx, row).await?;
            (row.view.name.clone(), Change::UserUpserted { user })
        }
    };
    change::commit(tx, &caller.actor(), action, &target, change, details).await
}

/// The scope of a read: `None` for global, the user's id otherwise (404 if unknown).
async fn read_scope(
    client: &tokio_postgres::Client,
    user: Option<&str>,
) -> Result<Option<i64>, ApiError> {
    match user {
        None => Ok(None),
        Some(name) => Ok(Some(
            users::get(client, name)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("user {name:?}")))?
                .id,
        )),
    }
}

async fn list(state: web::Data<AppState>, user: Option<&str>) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let scope = read_scope(&client, user).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": rules::list(&**client, scope).await? })))
}

async fn get(
    state: web::Data<AppState>,
    user: Option<&str>,
    id: i64,
) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let scope = read_scope(&client, user).await?;
    Ok(HttpResponse::Ok().json(rules::get(&**client, scope, id).await?))
}

async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    user: Option<&str>,
    position: Option<usize>,
    rule: Rule,
) -> Result<HttpResponse, ApiError> {
    if position.is_some_and(|p| p > MAX_RULES) {
        return Err(ApiError::field(
            "position",
            format!("must be at most {MAX_RULES}"),
        ));
    }
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = lock_scope(&tx, user).await?;
    let scope = locked.as_ref().map(|u| u.id);
    if rules::list(&*tx, scope).await?.len() >= MAX_RULES {
        return Err(ApiError::Conflict(format!(
            "a scope holds at most {MAX_RULES} rules"
        )));
    }
    let id = rules::insert(&*tx, scope, position, &rule).await?;
    let view = rules::get(&*tx, scope, id).await?;
    let revision = publish(
        &tx,
        &caller,
        "rule.create",
        locked.as_ref(),
        json!({"rule_id": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::CREATED)
        .json(json!(view)))
}

async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    user: Option<&str>,
    id: i64,
    rule: Rule,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = lock_scope(&tx, user).await?;
    let scope = locked.as_ref().map(|u| u.id);
    rules::replace(&*tx, scope, id, &rule).await?;
    let view = rules::get(&*tx, scope, id).await?;
    let revision = publish(
        &tx,
        &caller,
        "rule.replace",
        locked.as_ref(),
        json!({"rule_id": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::OK)
        .json(json!(view)))
}

async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    user: Option<&str>,
    id: i64,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = lock_scope(&tx, user).await?;
    let scope = locked.as_ref().map(|u| u.id);
    rules::delete(&*tx, scope, id).await?;
    let revision = publish(
        &tx,
        &caller,
        "rule.delete",
        locked.as_ref(),
        json!({"rule_id": id}),
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::NO_CONTENT)
        .finish())
}

async fn reorder(
    state: web::Data<AppState>,
    caller: Caller,
    user: Option<&str>,
    ids: Vec<i64>,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let locked = lock_scope(&tx, user).await?;
    let scope = locked.as_ref().map(|u| u.id);
    rules::reorder(&*tx, scope, &ids).await?;
    let items = rules::list(&*tx, scope).await?;
    let revision = publish(
        &tx,
        &caller,
        "rule.reorder",
        locked.as_ref(),
        json!({"ids": ids}),
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::OK)
        .json(json!({ "items": items })))
}

pub async fn list_global(state: web::Data<AppState>, _: Reader) -> Result<HttpResponse, ApiError> {
    list(state, None).await
}
pub async fn list_user(
    state: web::Data<AppState>,
    _: Reader,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    list(state, Some(&name)).await
}
pub async fn get_global(
    state: web::Data<AppState>,
    _: Reader,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    get(state, None, *id).await
}
pub async fn get_user(
    state: web::Data<AppState>,
    _: Reader,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    get(state, Some(&path.0), path.1).await
}
pub async fn create_global(
    state: web::Data<AppState>,
    Admin(c): Admin,
    q: web::Query<Position>,
    rule: Body<Rule>,
) -> Result<HttpResponse, ApiError> {
    create(state, c, None, q.position, rule.into_inner()).await
}
pub async fn create_user(
    state: web::Data<AppState>,
    Admin(c): Admin,
    name: web::Path<String>,
    q: web::Query<Position>,
    rule: Body<Rule>,
) -> Result<HttpResponse, ApiError> {
    create(state, c, Some(&name), q.position, rule.into_inner()).await
}
pub async fn replace_global(
    state: web::Data<AppState>,
    Admin(c): Admin,
    id: web::Path<i64>,
    rule: Body<Rule>,
) -> Result<HttpResponse, ApiError> {
    replace(state, c, None, *id, rule.into_inner()).await
}
pub async fn replace_user(
    state: web::Data<AppState>,
    Admin(c): Admin,
    path: web::Path<(String, i64)>,
    rule: Body<Rule>,
) -> Result<HttpResponse, ApiError> {
    replace(state, c, Some(&path.0), path.1, rule.into_inner()).await
}
pub async fn delete_global(
    state: web::Data<AppState>,
    Admin(c): Admin,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    delete(state, c, None, *id).await
}
pub async fn delete_user(
    state: web::Data<AppState>,
    Admin(c): Admin,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    delete(state, c, Some(&path.0), path.1).await
}
pub async fn reorder_global(
    state: web::Data<AppState>,
    Admin(c): Admin,
    order: Body<Order>,
) -> Result<HttpResponse, ApiError> {
    reorder(state, c, None, order.into_inner().ids).await
}
pub async fn reorder_user(
    state: web::Data<AppState>,
    Admin(c): Admin,
    name: web::Path<String>,
    order: Body<Order>,
) -> Result<HttpResponse, ApiError> {
    reorder(state, c, Some(&name), order.into_inner().ids).await
}
