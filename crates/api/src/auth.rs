//! Bearer-token authentication: the platform admin (`IF_ADMIN_TOKEN`) or a
//! tenant token (role admin/developer/viewer).

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use imagefactory_domain::Role;
use imagefactory_store::tokens;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })
}

/// The platform administrator.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts)?;
        match &state.admin_token {
            Some(expected)
                if tokens::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) =>
            {
                Ok(AdminAuth)
            }
            Some(_) => Err(ApiError::Unauthorized("invalid admin token".into())),
            None => Err(ApiError::Unauthorized(
                "the admin API is disabled: the server has no IF_ADMIN_TOKEN".into(),
            )),
        }
    }
}

/// A tenant token's identity. Every tenant query is scoped by `tenant_id`.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub tenant_id: Uuid,
    pub token_id: Uuid,
    pub role: Role,
}

impl TenantAuth {
    /// Refuse with 403 unless the token's role covers `needed`.
    pub fn require(&self, needed: Role) -> Result<(), ApiError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this action needs a token with role {needed} or higher; this token has role {}",
                self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts)?;
        let identity = tokens::authenticate(&state.pool, presented)
            .await?
            .ok_or_else(|| {
                ApiError::Unauthorized("invalid, revoked or expired tenant token".into())
            })?;
        let role = identity
            .role
            .parse()
            .map_err(|e| ApiError::Internal(format!("stored token role: {e}")))?;
        Ok(TenantAuth {
            tenant_id: identity.tenant_id,
            token_id: identity.token_id,
            role,
        })
    }
}
