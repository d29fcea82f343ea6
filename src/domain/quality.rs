//! Guards against junk identifiers and runaway identities.
//!
//! - [`Blocklist`]: placeholder values ("test@test.com", "0000000000") that real
//!   order streams carry. A blocked value is dropped at the boundary: never matched,
//!   never stored.
//! - [`Limits`]: per-identity caps. The planner refuses a merge or a new secondary
//!   that would take an identity past one of them.

use super::normalize::{self, strip_invisible, Normalization};
use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// Values that are treated as absent. Emails are compared case-insensitively, phones
/// as normalised; patterns must match the whole value to block it (anchor them).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "BlocklistSettings")]
pub struct Blocklist {
    emails: Vec<String>,
    email_patterns: Vec<Regex>,
    phones: Vec<String>,
    phone_patterns: Vec<Regex>,
}

/// The blocklist as written in the settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BlocklistSettings {
    #[serde(default)]
    pub(crate) emails: Vec<String>,
    #[serde(default)]
    pub(crate) email_patterns: Vec<String>,
    #[serde(default)]
    pub(crate) phones: Vec<String>,
    #[serde(default)]
    pub(crate) phone_patterns: Vec<String>,
}

impl TryFrom<BlocklistSettings> for Blocklist {
    type Error = String;

    fn try_from(settings: BlocklistSettings) -> Result<Blocklist, String> {
        let compile = |patterns: &[String], case_insensitive: bool| {
            patterns
                .iter()
                .map(|p| {
                    RegexBuilder::new(p)
                        .case_insensitive(case_insensitive)
                        .build()
                        .map_err(|e| format!("invalid blocklist pattern {p:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Blocklist {
            // Entries are normalised as inputs are, so that an entry written with an
            // invisible character or a Unicode domain still matches.
            emails: settings
                .emails
                .iter()
                .map(|e| match normalize::email(e, Normalization::Standard) {
                    Ok(Some(email)) => email,
                    _ => strip_invisible(e).trim().to_lowercase(),
                })
                .collect(),
            email_patterns: compile(&settings.email_patterns, true)?,
            phones: settings
                .phones
                .iter()
                .map(|p| strip_invisible(p).trim().to_owned())
                .collect(),
            phone_patterns: compile(&settings.phone_patterns, false)?,
        })
    }
}

impl Blocklist {
    /// Whether an email, trimmed (and lower-cased when normalisation is on), is blocked.
    pub(crate) fn blocks_email(&self, email: &str) -> bool {
        let folded = email.to_lowercase();
        self.emails.contains(&folded) || self.email_patterns.iter().any(|p| p.is_match(email))
    }

    /// Whether a phone number, as it would be stored, is blocked.
    pub fn blocks_phone(&self, phone: &str) -> bool {
        self.phones.iter().any(|p| p == phone)
            || self.phone_patterns.iter().any(|p| p.is_match(phone))
    }
}

/// Caps on one identity. Defaults are far above what a real customer reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Distinct emails.
    pub max_emails: usize,
    /// Distinct phone numbers.
    pub(crate) max_phones: usize,
    /// Contacts (the primary and its secondaries).
    pub(crate) max_contacts: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_emails: 50,
            max_phones: 50,
            max_contacts: 500,
        }
    }
}

/// Which cap a refused link would have broken. The code appears in the review table
/// and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cap {
    Emails,
    Phones,
    Contacts,
}

impl Cap {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Cap::Emails => "max_emails",
            Cap::Phones => "max_phones",
            Cap::Contacts => "max_contacts",
        }
    }
}

/// The size of an identity, or of what it would become.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub(crate) emails: usize,
    pub(crate) phones: usize,
    pub(crate) contacts: usize,
}

impl Size {
    pub(crate) fn plus(self, other: Size) -> Size {
        Size {
            emails: self.emails + other.emails,
            phones: self.phones + other.phones,
            contacts: self.contacts + other.contacts,
        }
    }
}

impl Limits {
    /// The first cap `size` exceeds, if any.
    pub(crate) fn exceeded_by(&self, size: Size) -> Option<Cap> {
        if size.emails > self.max_emails {
            Some(Cap::Emails)
        } else if size.phones > self.max_phones {
            Some(Cap::Phones)
        } else if size.contacts > self.max_contacts {
            Some(Cap::Contacts)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Blocklist {
        crate::config::Settings::load(None)
            .unwrap()
            .reconcile
            .blocklist
    }

    #[test]
    fn the_default_blocklist_blocks_placeholders_only() {
        let blocklist = defaults();
        for email in [
            "test@test.com",
            "TEST@test.com",
            "noreply@shop.example",
            "no-reply@shop.example",
            "null",
            "none",
            "anonymous",
        ] {
            assert!(blocklist.blocks_email(email), "{email} should be blocked");
        }
        for phone in ["0000000000", "0", "+000000"] {
            assert!(blocklist.blocks_phone(phone), "{phone} should be blocked");
        }
        for email in [
            "a@test.com",
            "lorraine@hillvalley.edu",
            "reply@shop.example",
            "nonenone@x.io",
        ] {
            assert!(!blocklist.blocks_email(email), "{email} should pass");
        }
        for phone in ["123456", "111111", "919191", "+10000000001"] {
            assert!(!blocklist.blocks_phone(phone), "{phone} should pass");
        }
    }

    #[test]
    fn an_invalid_pattern_is_a_settings_error() {
        let settings = BlocklistSettings {
            email_patterns: vec!["(".into()],
            ..BlocklistSettings::default()
        };
        assert!(Blocklist::try_from(settings)
            .unwrap_err()
            .contains("invalid blocklist pattern"));
    }

    #[test]
    fn limits_name_the_first_cap_exceeded() {
        let limits = Limits {
            max_emails: 2,
            max_phones: 2,
            max_contacts: 3,
        };
        let size = |emails, phones, contacts| Size {
            emails,
            phones,
            contacts,
        };
        assert_eq!(limits.exceeded_by(size(2, 2, 3)), None);
        assert_eq!(limits.exceeded_by(size(3, 2, 3)), Some(Cap::Emails));
        assert_eq!(limits.exceeded_by(size(1, 3, 4)), Some(Cap::Phones));
        assert_eq!(limits.exceeded_by(size(1, 1, 4)), Some(Cap::Contacts));
    }
}
