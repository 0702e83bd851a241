//! Errors of the HTTP/JSON API: `{"code": "...", "message": "..."}` with the HTTP status that
//! matches the gRPC code (the mapping of Google's API design guide), so a caller sees what a
//! gRPC client would.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use percy_proto::code_name;
use serde::Serialize;
use tonic::{Code, Status};
use utoipa::ToSchema;

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The gRPC code in upper snake case, e.g. `NOT_FOUND`, `FAILED_PRECONDITION`.
    pub code: String,
    pub message: String,
}

/// A failed call: the gRPC status its handler answered (or one made here for bad JSON).
#[derive(Debug)]
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        Self(status)
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self(Status::invalid_argument(message.into()))
    }
}

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: code_name(self.0.code()).to_owned(),
            message: self.0.message().to_owned(),
        };
        (http_status(self.0.code()), Json(body)).into_response()
    }
}

/// A JSON body axum could not read (not JSON, wrong field types): INVALID_ARGUMENT in the same
/// shape as every other error, not axum's plain-text rejection.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::invalid(format!("bad JSON body: {}", rejection.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid(format!("bad query: {}", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_their_http_statuses() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(code_name(Code::AlreadyExists), "ALREADY_EXISTS");
    }
}
