//! HTTP API: routes, shared state, request-body limits and error shapes.

pub mod auth;
pub mod health;
pub mod keys;
pub mod openapi;
pub mod policy;
pub mod rules;
pub mod settings;
pub mod users;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpResponse, HttpResponseBuilder};
use deadpool_postgres::Pool;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::problem::{ApiError, FieldError};

pub mod body;

/// Largest JSON body accepted.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    pub pool: Pool,
    /// Wakes the outbox publisher after a commit (it also polls).
    pub publisher: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The answer to a committed policy change: wakes the outbox publisher and names the
    /// revision the change produced (`X-Policy-Revision`).
    pub fn changed(&self, revision: u64, status: StatusCode) -> HttpResponseBuilder {
        self.publisher.notify_one();
        let mut response = HttpResponse::build(status);
        response.insert_header(("X-Policy-Revision", revision.to_string()));
        response
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

/// A path whose other methods answer 405 with `Allow` rather than 404.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// Mounts every route on `cfg`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use web::{delete, get, patch, post, put};
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
    .service(resource("/healthz", "GET").route(get().to(health::healthz)))
    .service(resource("/readyz", "GET").route(get().to(health::readyz)))
    .service(resource("/metrics", "GET").route(get().to(health::metrics)))
    .service(resource("/openapi.json", "GET").route(get().to(openapi::document)))
    .service(
        web::scope("/v1")
            .service(
                resource("/users", "GET, POST")
                    .route(get().to(users::list))
                    .route(post().to(users::create)),
            )
            .service(
                resource("/users/{name}", "GET, PATCH, DELETE")
                    .route(get().to(users::get))
                    .route(patch().to(users::update))
                    .route(delete().to(users::delete)),
            )
            .service(
                resource("/users/{name}/rules", "GET, POST")
                    .route(get().to(rules::list_user))
                    .route(post().to(rules::create_user)),
            )
            .service(
                resource("/users/{name}/rules/order", "PUT").route(put().to(rules::reorder_user)),
            )
            .service(
                resource("/users/{name}/rules/{id}", "GET, PUT, DELETE")
                    .route(get().to(rules::get_user))
                    .route(put().to(rules::replace_user))
                    .route(delete().to(rules::delete_user)),
            )
            .service(
                resource("/rules", "GET, POST")
                    .route(get().to(rules::list_global))
                    .route(post().to(rules::create_global)),
            )
            .service(resource("/rules/order", "PUT").route(put().to(rules::reorder_global)))
            .service(
                resource("/rules/{id}", "GET, PUT, DELETE")
                    .route(get().to(rules::get_global))
                    .route(put().to(rules::replace_global))
                    .route(delete().to(rules::delete_global)),
            )
            .service(
                resource("/api-keys", "GET, POST")
                    .route(get().to(keys::list))
                    .route(post().to(keys::create)),
            )
            .service(resource("/api-keys/{id}", "DELETE").route(delete().to(keys::revoke)))
            .service(
                resource("/settings", "GET, PUT")
                    .route(get().to(settings::get))
                    .route(put().to(settings::put)),
            )
            .service(resource("/policy/snapshot", "GET").route(get().to(policy::snapshot)))
            .service(resource("/audit", "GET").route(get().to(policy::audit))),
    )
    .default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::NotFound("route".into()))
    }));
}
