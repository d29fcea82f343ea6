//! The name of an identifier kind (`customerId`). A leaf: the input errors name a
//! kind and the catalogue defines kinds, and both import it (neither imports the
//! other for it).

use std::fmt;

/// Longest kind name: it becomes a JSON member, a column value and a metric label.
pub const MAX_KIND_NAME_LEN: usize = 64;

/// The JSON members email and phone already have: no kind may take their names.
const RESERVED: [&str; 2] = ["email", "phoneNumber"];

/// The name of a kind, as inputs name it: ASCII letters and digits, starting with a
/// letter (so it is a JSON member, an environment variable's part and a metric
/// label as it is), not `email` or `phoneNumber` in any case.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindName(String);

/// Why a text is no kind name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameFault {
    /// Not letters and digits starting with a letter, or longer than the maximum.
    Shape,
    /// `email` or `phoneNumber`, whatever the case.
    Reserved,
}

impl KindName {
    pub fn parse(name: &str) -> Result<KindName, NameFault> {
        let mut chars = name.chars();
        let shaped = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric())
            && name.len() <= MAX_KIND_NAME_LEN;
        if !shaped {
            return Err(NameFault::Shape);
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(NameFault::Reserved);
        }
        Ok(KindName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for KindName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
