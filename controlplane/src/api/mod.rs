//! HTTP API: routes, shared state, request-body limits and error shapes.

pub mod auth;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod policy;
pub mod rules;
pub mod users;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::web;
use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::problem::{ApiError, FieldError};

/// Largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    pub pool: Pool,
    /// Wakes the outbox publisher after a commit (it also polls).
    pub publisher: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn committed(&self) {
        self.publisher.notify_one();
    }
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::Validation(vec![FieldError {
            field: String::new(),
            message: e.to_string(),
        }]),
        JsonPayloadError::ContentType => {
            ApiError::BadRequest("Content-Type must be application/json".into())
        }
        other => ApiError::BadRequest(other.to_string()),
    }
}

/// Mounts every route on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY)
            .error_handler(|e, _| json_error(e).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e: QueryPayloadError, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e: PathError, _| ApiError::NotFound(e.to_string()).into()),
    )
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/openapi.json", web::get().to(openapi::document))
    .service(
        web::scope("/v1")
            .route("/users", web::get().to(users::list))
            .route("/users", web::post().to(users::create))
            .route("/users/{name}", web::get().to(users::get))
            .route("/users/{name}", web::patch().to(users::update))
            .route("/users/{name}", web::delete().to(users::delete))
            .route("/users/{name}/rules", web::get().to(rules::list_user))
            .route("/users/{name}/rules", web::post().to(rules::create_user))
            .route(
                "/users/{name}/rules/order",
                web::put().to(rules::reorder_user),
            )
            .route("/users/{name}/rules/{id}", web::get().to(rules::get_user))
            .route(
                "/users/{name}/rules/{id}",
                web::put().to(rules::replace_user),
            )
            .route(
                "/users/{name}/rules/{id}",
                web::delete().to(rules::delete_user),
            )
            .route("/rules", web::get().to(rules::list_global))
            .route("/rules", web::post().to(rules::create_global))
            .route("/rules/order", web::put().to(rules::reorder_global))
            .route("/rules/{id}", web::get().to(rules::get_global))
            .route("/rules/{id}", web::put().to(rules::replace_global))
            .route("/rules/{id}", web::delete().to(rules::delete_global))
            .route("/api-keys", web::get().to(keys::list))
            .route("/api-keys", web::post().to(keys::create))
            .route("/api-keys/{id}", web::delete().to(keys::revoke))
            .route("/policy/snapshot", web::get().to(policy::snapshot))
            .route("/audit", web::get().to(policy::audit)),
    )
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NotFound("route".into()))
    }));
}
