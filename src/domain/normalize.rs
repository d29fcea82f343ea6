//! How an identifier's text is normalised (§7), shared by parsing an input
//! (`input.rs`) and reading the blocklist's entries (`quality.rs`), so that an entry
//! matches exactly what an input normalises to. A leaf: it imports nothing of the
//! crate, and both of those import it (neither imports the other for it).

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest email accepted (RFC 5321 limits a forward path to 254 characters).
pub(crate) const MAX_EMAIL_LEN: usize = 254;

/// What standard normalisation removes from a phone number.
pub(crate) const PHONE_SEPARATORS: [char; 5] = [' ', '-', '.', '(', ')'];

/// How identifiers are normalised before they are matched and stored (§7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Emails trimmed and lower-cased; phones trimmed, with spaces, dashes, dots and
    /// parentheses removed (a leading `+` kept).
    #[default]
    Standard,
    /// Values are only trimmed: `Foo@x.com` and `foo@x.com` are different emails.
    Exact,
}

/// Whether `raw` has more than `max` characters (counting stops past `max`).
pub(super) fn longer_than(raw: &str, max: usize) -> bool {
    raw.len() > max && raw.chars().nth(max).is_some()
}

/// Removes every Unicode format character (general category Cf: zero-width space and
/// joiners, word joiner, byte-order mark, soft hyphen, bidirectional marks and
/// embeddings, tag characters...) and puts what is left in NFC.
///
/// This is the first step for every identifier, under both normalisation modes: the
/// characters are invisible, so `a@x.io` and `a@x.io\u{200b}` look the same to people,
/// and two spellings of `é` (precomposed or `e` + combining accent) are one letter.
/// Without it an invisible variant of a blocked or erased value would be a new value.
pub fn strip_invisible(raw: &str) -> String {
    raw.chars().filter(|&c| !is_invisible(c)).nfc().collect()
}

/// The invisible characters [`strip_invisible`] removes: Unicode format characters.
pub(crate) fn is_invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// Why a raw email has no normalised form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EmailFault {
    /// Longer than [`MAX_EMAIL_LEN`] as sent or once normalised.
    TooLong,
    /// Not local@domain with one `@`, no spaces, and a domain IDNA can convert.
    Invalid,
}

/// A raw email's normalised form; `Ok(None)` when it is empty after trimming.
///
/// Steps: [`strip_invisible`] (format characters out, NFC), trim, lower-case
/// (standard mode), exactly one `@` with a non-empty local part and domain, and a
/// non-ASCII domain in its IDNA ASCII form (`bücher.de` becomes `xn--bcher-kva.de`;
/// UTS 46 folds that domain's case in both modes).
pub(super) fn email(raw: &str, mode: Normalization) -> Result<Option<String>, EmailFault> {
    if longer_than(raw, MAX_EMAIL_LEN) {
        return Err(EmailFault::TooLong);
    }
    let cleaned = strip_invisible(raw);
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let value: String = match mode {
        // Lower-casing can leave text that is not NFC (rarely): normalise again.
        Normalization::Standard => trimmed.to_lowercase().nfc().collect(),
        Normalization::Exact => trimmed.to_owned(),
    };
    let mut parts = value.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(EmailFault::Invalid);
    };
    if local.is_empty()
        || domain.is_empty()
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(EmailFault::Invalid);
    }
    let value = if domain.is_ascii() {
        value
    } else {
        match idna::domain_to_ascii(domain) {
            Ok(ascii) if !ascii.is_empty() => format!("{local}@{ascii}"),
            _ => return Err(EmailFault::Invalid),
        }
    };
    if value.chars().count() > MAX_EMAIL_LEN {
        return Err(EmailFault::TooLong);
    }
    Ok(Some(value))
}
