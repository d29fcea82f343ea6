//! The product's rules, free of I/O: parsed inputs, the reconciliation rules of §3 and
//! the identity view of §4. Nothing here knows about PostgreSQL, Kafka or HTTP.

pub mod identity;
pub mod input;
pub mod mask;
mod normalize;
pub mod quality;
pub mod reconcile;
pub mod split;
pub mod vocabulary;

pub use identity::{ContactBody, Identity, IdentityResponse, Origin};
pub use input::{
    json_u64, parse_json_object, strip_invisible, Blocked, ContactInput, Email, InputError,
    InputRules, Normalization, Phone,
};
pub use quality::{Blocklist, Cap, Limits};
pub use reconcile::{
    identity_of, plan, ContactRef, Decisions, KeepApart, Plan, Publish, Refused, Request,
    StoredContact,
};
