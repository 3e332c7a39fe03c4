//! `Authorization: Bearer <key>` extractors. `Reader` admits any valid key, `Admin` only the
//! admin role: 401 without a valid key, 403 with a key of the wrong role.

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::AppState;
use crate::db::keys::{self, Caller, Role};
use crate::problem::ApiError;

pub struct Reader(pub Caller);
pub struct Admin(pub Caller);

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn caller(req: &HttpRequest) -> LocalBoxFuture<'static, Result<Caller, ApiError>> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let token = bearer(req);
    Box::pin(async move {
        let state = state.ok_or_else(|| ApiError::Internal("no app state".into()))?;
        let token = token
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or(ApiError::Unauthorized)?;
        let client = state.pool.get().await?;
        keys::authenticate(&**client, &token)
            .await?
            .ok_or(ApiError::Unauthorized)
    })
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fut = caller(req);
        Box::pin(async move { fut.await.map(Reader) })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let fut = caller(req);
        Box::pin(async move {
            let c = fut.await?;
            if c.role == Role::Admin {
                Ok(Admin(c))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}
