//! `Body<T>`: a JSON request body that must be an object. serde's derived structs would also
//! accept a JSON array of field values (`[null, null]`), which no client means to send.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::problem::{ApiError, FieldError};

pub struct Body<T>(pub T);

impl<T> Body<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            if !value.is_object() {
                return Err(ApiError::field("", "the body must be a JSON object").into());
            }
            serde_json::from_value(value).map(Body).map_err(|e| {
                ApiError::Validation(vec![FieldError {
                    field: String::new(),
                    message: e.to_string(),
                }])
                .into()
            })
        })
    }
}
