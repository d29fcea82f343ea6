//! The product's rules, free of I/O: parsed inputs, the reconciliation rules of §3,
//! the linking rules of identifier kinds (§9, `linking.rs`, not wired yet) and the
//! identity view of §4. Nothing here knows about PostgreSQL, Kafka or HTTP.

pub mod identifiers;
pub mod identity;
pub(crate) mod input;
mod kind;
// Not called yet: reconciliation takes identifier kinds when §9 is wired
// (docs/design/identifier-kinds.md); until then only its tests use it.
#[allow(dead_code)]
pub(crate) mod linking;
pub(crate) mod mask;
mod normalize;
pub(crate) mod quality;
pub(crate) mod reconcile;
pub(crate) mod split;
pub mod vocabulary;

pub(crate) use identity::{ContactBody, IdentityResponse};
pub use identity::{Identity, Origin};
pub(crate) use input::json_u64;
pub use input::{
    parse_json_object, strip_invisible, ContactInput, Email, InputError, InputRules, Normalization,
    Phone,
};
pub use quality::Blocklist;
pub(crate) use quality::Limits;
pub use reconcile::Request;
pub(crate) use reconcile::{identity_of, Decisions, KeepApart, Plan, StoredContact};
