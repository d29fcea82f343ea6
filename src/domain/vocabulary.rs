//! The words that reach the database and the wire: where a journal entry or an input
//! came from, what kind of journal entry it is, why a link is in the review queue and
//! what became of it, who kept two contacts apart.
//!
//! Each is one enum from the row to the JSON: the store decodes the column into it
//! (an unknown word is an error, not a string passed on), the views serialise it, and
//! the OpenAPI document takes its schema from it, so the served document and the
//! answers cannot disagree. The database's `CHECK` constraints allow exactly these
//! words (`tests/http_vocabulary.rs` compares them).

use super::identity::Origin;
use super::quality::Cap;
use super::reconcile::Refused;
use serde::Serialize;
use std::fmt;
use utoipa::ToSchema;

/// A word that is not one of its vocabulary's (a column holding a value the code
/// does not know).
#[derive(Debug, thiserror::Error)]
#[error("{word:?} is not a {vocabulary}")]
pub struct UnknownWord {
    pub(crate) vocabulary: &'static str,
    pub(crate) word: String,
}

/// An enum of words: serialised and documented as the word, `ALL` the words in
/// order, `as_str` and `TryFrom<&str>` between the enum and the word. Each word is
/// its variant's name in snake_case, which is how serde and the schema spell it (a
/// test checks that they agree with `as_str`).
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub(crate) enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UnknownWord;

            fn try_from(word: &str) -> Result<$name, UnknownWord> {
                match word {
                    $($word => Ok($name::$variant),)+
                    _ => Err(UnknownWord {
                        vocabulary: stringify!($name),
                        word: word.to_owned(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// Where an input came from: an order-contact event or `POST /identify`. The
    /// source of a contact (explain) and of a refused link (review queue).
    pub(crate) enum InputSource {
        Event = "event",
        Http = "http",
    }
}

vocabulary! {
    /// What made a journal entry: an input (`event`, `http`), an operator's approval
    /// of a review entry (`admin`), or the split of a quarantined identifier's links
    /// (`quarantine`; history shows such an entry as a split, without a source).
    pub(crate) enum Source {
        Event = "event",
        Http = "http",
        Admin = "admin",
        Quarantine = "quarantine",
    }
}

vocabulary! {
    /// A journal entry: two identities merged, a bridge between contacts of one
    /// identity (kept for undo, never shown), or a split of what a quarantined
    /// identifier had linked.
    pub(crate) enum JournalKind {
        Merge = "merge",
        Bridge = "bridge",
        Split = "split",
    }
}

vocabulary! {
    /// Why a link is in the review queue: a cap (`max_emails`, `max_phones`,
    /// `max_contacts`), an operator's keep-apart decision, or a quarantined
    /// identifier.
    pub(crate) enum ReviewReason {
        MaxEmails = "max_emails",
        MaxPhones = "max_phones",
        MaxContacts = "max_contacts",
        KeepApart = "keep_apart",
        Quarantine = "quarantine",
    }
}

vocabulary! {
    /// A review entry waiting for an operator, or decided.
    pub(crate) enum ReviewStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
    }
}

vocabulary! {
    /// Who kept two contacts apart: an undone merge or a rejected review.
    pub(crate) enum DecisionSource {
        Unmerge = "unmerge",
        Review = "review",
    }
}

impl From<InputSource> for Source {
    fn from(source: InputSource) -> Source {
        match source {
            InputSource::Event => Source::Event,
            InputSource::Http => Source::Http,
        }
    }
}

impl InputSource {
    /// The source of a reconciled input. An operator's action never goes through
    /// reconciliation; were it to, it would count as the HTTP request it came by.
    pub(crate) fn of(origin: &Origin) -> InputSource {
        match origin {
            Origin::Event { .. } => InputSource::Event,
            Origin::Http { .. } | Origin::Admin { .. } => InputSource::Http,
        }
    }
}

impl From<Cap> for ReviewReason {
    fn from(cap: Cap) -> ReviewReason {
        match cap {
            Cap::Emails => ReviewReason::MaxEmails,
            Cap::Phones => ReviewReason::MaxPhones,
            Cap::Contacts => ReviewReason::MaxContacts,
        }
    }
}

impl From<Refused> for ReviewReason {
    fn from(refused: Refused) -> ReviewReason {
        match refused {
            Refused::Cap(cap) => cap.into(),
            Refused::KeepApart { .. } => ReviewReason::KeepApart,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reads_back_as_itself() {
        fn round_trip<T>(all: &[T], word: fn(T) -> &'static str)
        where
            T: Copy + PartialEq + fmt::Debug + Serialize,
            T: for<'a> TryFrom<&'a str, Error = UnknownWord>,
        {
            for &value in all {
                assert_eq!(T::try_from(word(value)).unwrap(), value);
                assert_eq!(
                    serde_json::to_value(value).unwrap(),
                    serde_json::Value::from(word(value))
                );
            }
        }
        round_trip(InputSource::ALL, InputSource::as_str);
        round_trip(Source::ALL, Source::as_str);
        round_trip(JournalKind::ALL, JournalKind::as_str);
        round_trip(ReviewReason::ALL, ReviewReason::as_str);
        round_trip(ReviewStatus::ALL, ReviewStatus::as_str);
        round_trip(DecisionSource::ALL, DecisionSource::as_str);
        assert!(Source::try_from("review").is_err());
    }

    #[test]
    fn a_refusal_is_queued_under_the_code_it_is_counted_under() {
        for refused in [
            Refused::Cap(Cap::Emails),
            Refused::Cap(Cap::Phones),
            Refused::Cap(Cap::Contacts),
            Refused::KeepApart { queue: true },
        ] {
            assert_eq!(ReviewReason::from(refused).as_str(), refused.code());
        }
    }
}
