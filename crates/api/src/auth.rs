//! Bearer-token authentication: the platform admin (`IF_ADMIN_TOKEN`) or a
//! tenant token (role admin/developer/viewer). An address whose tokens keep
//! failing is throttled (`limits::AuthThrottle`) before any token is checked.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use imagefactory_domain::Role;
use imagefactory_store::tokens;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::limits;

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

/// Refuses an address that failed authentication too often, before its
/// token is looked at (so guessing costs nothing here and tells nothing);
/// otherwise the address to charge if the token turns out wrong.
fn not_throttled(parts: &Parts, state: &AppState) -> Result<Option<IpAddr>, ApiError> {
    let ip = limits::peer_ip(parts);
    if let Some(ip) = ip
        && let Err(retry_after) = state.auth_throttle.check(ip, &state.limits)
    {
        return Err(ApiError::TooManyRequests {
            detail: "too many failed authentication attempts from this address; retry later".into(),
            retry_after,
        });
    }
    Ok(ip)
}

/// A presented token was wrong: count it against the address.
fn failed(state: &AppState, ip: Option<IpAddr>, message: &str) -> ApiError {
    if let Some(ip) = ip {
        state.auth_throttle.failed(ip, &state.limits);
    }
    ApiError::Unauthorized(message.into())
}

/// A Prometheus scraper of `GET /metrics`: with `IF_METRICS_TOKEN` set, it
/// must present that token (failures count against its address like any
/// other); without one the endpoint is open.
pub struct MetricsAuth;

impl FromRequestParts<AppState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.metrics_token else {
            return Ok(MetricsAuth);
        };
        let ip = not_throttled(parts, state)?;
        let presented = bearer(parts)?;
        if tokens::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            Ok(MetricsAuth)
        } else {
            Err(failed(state, ip, "invalid metrics token"))
        }
    }
}

/// The platform administrator.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ip = not_throttled(parts, state)?;
        let presented = bearer(parts)?;
        match &state.admin_token {
            Some(expected)
                if tokens::constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) =>
            {
                Ok(AdminAuth)
            }
            Some(_) => Err(failed(state, ip, "invalid admin token")),
            None => Err(failed(
                state,
                ip,
                "the admin API is disabled: the server has no IF_ADMIN_TOKEN",
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
        let ip = not_throttled(parts, state)?;
        let presented = bearer(parts)?;
        let identity = match state.token_cache.get(presented) {
            Ok(cached) => cached,
            Err(ticket) => {
                let identity = tokens::authenticate(&state.pool, presented)
                    .await?
                    .ok_or_else(|| failed(state, ip, "invalid, revoked or expired tenant token"))?;
                state.token_cache.insert(ticket, identity.clone());
                identity
            }
        };
        Ok(TenantAuth {
            tenant_id: identity.tenant_id,
            token_id: identity.token_id,
            role: identity.role,
        })
    }
}
