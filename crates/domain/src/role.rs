//! Roles of tenant API tokens.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray, VariantNames};

use crate::build::UnknownVariant;

/// What a tenant token may do. Ordered: each role can do what the ones
/// before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum Role {
    /// Reads everything of its tenant, changes nothing.
    Viewer,
    /// Also submits, cancels and retries builds.
    Developer,
    /// Also manages projects, registry credentials, providers and tokens.
    Admin,
}

impl Role {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Developer));
        assert!(Role::Developer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Developer));
        assert!(!Role::Developer.allows(Role::Admin));
        assert_eq!("developer".parse::<Role>().unwrap(), Role::Developer);
    }
}
