//! The domain's vocabularies (`crate::domain::vocabulary`) as PostgreSQL text: a
//! column decodes into its enum, and a word the enum does not know fails the decode
//! instead of travelling on as a string.

use crate::domain::vocabulary::{
    DecisionSource, InputSource, JournalKind, ReviewReason, ReviewStatus, Source,
};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

macro_rules! text_column {
    ($($name:ident),+) => {$(
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<$name, BoxDynError> {
                let word = <&str as Decode<Postgres>>::decode(value)?;
                Ok($name::try_from(word)?)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    )+};
}

text_column!(
    InputSource,
    Source,
    JournalKind,
    ReviewReason,
    ReviewStatus,
    DecisionSource
);
