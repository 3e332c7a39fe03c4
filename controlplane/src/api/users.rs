//! /v1/users

use actix_web::{web, HttpResponse};
use policy::event::Change;
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::auth::{Admin, Reader};
use super::body::Body;
use super::AppState;
use crate::db::{change, users};
use crate::problem::{ApiError, FieldError};

pub const MAX_PAGE: i64 = 500;

/// User names appear in URLs and in SOCKS5 (at most 255 bytes there): keep them plain.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn check_password(p: &str, errors: &mut Vec<FieldError>) {
    // SOCKS5 carries at most 255 bytes of password.
    if p.is_empty() || p.len() > 255 {
        errors.push(FieldError {
            field: "password".into(),
            message: "must be 1 to 255 bytes".into(),
        });
    }
}

fn check_limit(v: Option<u32>, errors: &mut Vec<FieldError>) {
    if v.is_some_and(|v| v == 0 || v > i32::MAX as u32) {
        errors.push(FieldError {
            field: "max_tunnels".into(),
            message: "must be at least 1".into(),
        });
    }
}

fn finish(errors: Vec<FieldError>) -> Result<(), ApiError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

async fn hash_password(password: String) -> Result<String, ApiError> {
    web::block(move || policy::password::hash(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    password: String,
    #[serde(default = "yes")]
    enabled: bool,
    max_tunnels: Option<u32>,
}

fn yes() -> bool {
    true
}

pub async fn create(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    body: Body<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    if !valid_name(&body.name) {
        errors.push(FieldError {
            field: "name".into(),
            message: "1-64 characters of A-Z a-z 0-9 . _ - @".into(),
        });
    }
    check_password(&body.password, &mut errors);
    check_limit(body.max_tunnels, &mut errors);
    finish(errors)?;
    let hash = hash_password(body.password).await?;
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = users::insert(&*tx, &body.name, &hash, body.enabled, body.max_tunnels).await?;
    let user = users::policy_user(&*tx, &row).await?;
    let details = json!({"enabled": body.enabled, "max_tunnels": body.max_tunnels});
    let revision = change::commit(
        &tx,
        &caller.actor(),
        "user.create",
        &body.name,
        Change::UserUpserted { user },
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::CREATED)
        .json(row.view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    /// Resume after this name (the `next` of the previous page).
    after: Option<String>,
    prefix: Option<String>,
    enabled: Option<bool>,
}

pub async fn list(
    state: web::Data<AppState>,
    _: Reader,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let client = state.pool.get().await?;
    let filter = users::Filter {
        after: q.after.as_deref(),
        prefix: q.prefix.as_deref(),
        enabled: q.enabled,
        limit,
    };
    let items = users::list(&**client, &filter).await?;
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|u| u.name.clone()))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next": next })))
}

pub async fn get(
    state: web::Data<AppState>,
    _: Reader,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let client = state.pool.get().await?;
    let row = users::get(&**client, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {:?}", name.as_str())))?;
    Ok(HttpResponse::Ok().json(row.view))
}

/// Absent: None; null: an error (only `max_tunnels` may be null).
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    Option::<u32>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, deserialize_with = "not_null")]
    password: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    enabled: Option<bool>,
    /// Absent: unchanged; null: no limit.
    #[serde(default, deserialize_with = "present")]
    max_tunnels: Option<Option<u32>>,
}

pub async fn update(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    name: web::Path<String>,
    body: Body<UserPatch>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    if let Some(p) = &body.password {
        check_password(p, &mut errors);
    }
    check_limit(body.max_tunnels.flatten(), &mut errors);
    finish(errors)?;
    let hash = match body.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = users::get_for_update(&*tx, &name).await?;
    let row = users::update(
        &*tx,
        row.id,
        hash.as_deref(),
        body.enabled,
        body.max_tunnels,
    )
    .await?;
    let user = users::policy_user(&*tx, &row).await?;
    let details = json!({
        "password_changed": hash.is_some(),
        "enabled": body.enabled,
        "max_tunnels": body.max_tunnels,
    });
    let revision = change::commit(
        &tx,
        &caller.actor(),
        "user.update",
        &name,
        Change::UserUpserted { user },
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::OK)
        .json(row.view))
}

pub async fn delete(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await?;
    let tx = client.transaction().await?;
    let row = users::get_for_update(&*tx, &name).await?;
    users::delete(&*tx, row.id).await?;
    let change = Change::UserDeleted {
        name: name.to_string(),
    };
    let revision = change::commit(
        &tx,
        &caller.actor(),
        "user.delete",
        &name,
        change,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(state
        .changed(revision, actix_web::http::StatusCode::NO_CONTENT)
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("alice") && valid_name("a.b-c_d@example.com"));
        for bad in ["", "a b", "a/b", "ü", "a:b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
