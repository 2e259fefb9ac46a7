//! Text columns decoded straight into domain types. A row struct declares
//! `#[sqlx(try_from = "Text<T>")]` on a field of type `T` (or
//! `Text<Option<T>>` on an `Option<T>` of a nullable column); the text is
//! parsed with the type's `TryFrom<String>` while the row is decoded, and a
//! value that does not parse is a decode error naming the column (sqlx adds
//! it) and the value, never a default. The domain stays free of sqlx: this
//! wrapper is the only place the two meet.

use imagefactory_domain::{
    BuildMethod, BuildStatus, ExecutorKind, GitRef, GitUrl, ImageRef, InfrastructureType,
    InvalidValue, ProviderStatus, ProviderType, Role,
};
use sqlx::decode::Decode;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef, Postgres};
use sqlx::{Type, ValueRef};

/// A text column parsed into `T` (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<T>(pub T);

/// A type a text column decodes into: a domain value, or an optional one
/// for a nullable column.
pub trait FromText: Sized {
    fn from_text(text: Option<String>) -> Result<Self, BoxDynError>;
}

impl<T: FromText> FromText for Option<T> {
    fn from_text(text: Option<String>) -> Result<Self, BoxDynError> {
        text.map(|t| T::from_text(Some(t))).transpose()
    }
}

impl<T> Type<Postgres> for Text<T> {
    fn type_info() -> PgTypeInfo {
        <String as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as Type<Postgres>>::compatible(ty)
    }
}

impl<'r, T: FromText> Decode<'r, Postgres> for Text<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = if value.is_null() {
            None
        } else {
            Some(<String as Decode<Postgres>>::decode(value)?)
        };
        T::from_text(text).map(Text)
    }
}

/// `FromText` and the `From<Text<_>>` conversions sqlx's `try_from` needs, per
/// domain type (a blanket `impl<T> From<Text<T>> for T` is not allowed).
macro_rules! text_columns {
    ($($ty:ty),* $(,)?) => {$(
        impl FromText for $ty {
            fn from_text(text: Option<String>) -> Result<Self, BoxDynError> {
                let text = text.ok_or_else(|| {
                    format!("NULL is not a valid {}", stringify!($ty))
                })?;
                <$ty>::try_from(text).map_err(|e: InvalidValue| Box::new(e) as BoxDynError)
            }
        }

        impl From<Text<$ty>> for $ty {
            fn from(text: Text<$ty>) -> Self {
                text.0
            }
        }

        impl From<Text<Option<$ty>>> for Option<$ty> {
            fn from(text: Text<Option<$ty>>) -> Self {
                text.0
            }
        }
    )*};
}

text_columns!(
    ImageRef,
    GitUrl,
    GitRef,
    BuildMethod,
    BuildStatus,
    InfrastructureType,
    ExecutorKind,
    ProviderType,
    ProviderStatus,
    Role,
);
