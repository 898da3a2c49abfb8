//! Who is calling. Until accounts and sessions arrive (issue 3), the caller names its organisation
//! and user in the `X-Aurora-Org` and `X-Aurora-User` headers; every route already takes a
//! [`Caller`] and scopes by its organisation, so authentication will replace only this extractor.

use aurora_events::{Actor, OrgId};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::problem::ApiError;

pub const ORG_HEADER: &str = "x-aurora-org";
pub const USER_HEADER: &str = "x-aurora-user";

#[derive(Debug, Clone)]
pub struct Caller {
    pub org_id: OrgId,
    pub actor: Actor,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
        let org_id = header(ORG_HEADER)
            .ok_or_else(|| ApiError::Unauthenticated(format!("the {ORG_HEADER} header is required")))?
            .parse::<OrgId>()
            .map_err(|_| ApiError::Unauthenticated(format!("the {ORG_HEADER} header must be a UUID")))?;
        let user = header(USER_HEADER)
            .filter(|user| !user.is_empty() && user.len() <= 200)
            .ok_or_else(|| ApiError::Unauthenticated(format!("the {USER_HEADER} header is required")))?;
        Ok(Caller { org_id, actor: Actor::user(user) })
    }
}
