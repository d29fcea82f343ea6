//! Masked forms of emails and phone numbers, for debug logs that an operator turned
//! on with `log.show_personal_data`: enough to tell two customers apart while
//! debugging (`j***@example.com`, `***1234`), not enough to contact them.
//!
//! Without that setting, nothing here is used: logs carry contact ids, counts and
//! event coordinates only.

use super::{Email, Phone};

/// `jane@example.com` → `j***@example.com`: the first character of the local part,
/// then the domain. Anything without a local part and a domain becomes `***`.
pub(crate) fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => match local.chars().next() {
            Some(first) => format!("{first}***@{domain}"),
            None => "***".to_owned(),
        },
        _ => "***".to_owned(),
    }
}

/// Fewest digits a phone number must have before its last four are shown: shorter
/// numbers would be given away almost whole.
const MIN_DIGITS_TO_SHOW_TAIL: usize = 7;

/// `+44 7123 456-789` → `***6789`: the last four digits. Numbers with fewer than
/// seven digits become `***`.
pub(crate) fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < MIN_DIGITS_TO_SHOW_TAIL {
        return "***".to_owned();
    }
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("***{tail}")
}

impl Email {
    /// The masked form, see [`mask_email`].
    pub(crate) fn masked(&self) -> String {
        mask_email(self.as_str())
    }
}

impl Phone {
    /// The masked form, see [`mask_phone`].
    pub(crate) fn masked(&self) -> String {
        mask_phone(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Normalization;

    #[test]
    fn an_email_keeps_its_first_character_and_its_domain() {
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_email("j@example.com"), "j***@example.com");
        assert_eq!(mask_email("élodie@exemple.fr"), "é***@exemple.fr");
        // The domain is the part after the last `@`, as when parsing.
        assert_eq!(mask_email("a@b@example.com"), "a***@example.com");
    }

    #[test]
    fn what_is_not_an_email_is_masked_whole() {
        for raw in ["", "jane", "@example.com", "jane@"] {
            assert_eq!(mask_email(raw), "***", "{raw:?}");
        }
    }

    #[test]
    fn a_phone_keeps_only_its_last_four_digits() {
        assert_eq!(mask_phone("+447123456789"), "***6789");
        assert_eq!(mask_phone("+44 7123 456-789"), "***6789");
        assert_eq!(mask_phone("1234567"), "***4567");
    }

    #[test]
    fn a_short_phone_is_masked_whole() {
        for raw in ["", "123456", "+1 23-45", "12"] {
            assert_eq!(mask_phone(raw), "***", "{raw:?}");
        }
    }

    #[test]
    fn parsed_values_mask_their_normalised_form() {
        let email = Email::parse(" Jane.Doe@Example.COM ", Normalization::Standard)
            .unwrap()
            .unwrap();
        let phone = Phone::parse("+1 (555) 010-1234", Normalization::Standard)
            .unwrap()
            .unwrap();
        assert_eq!(email.masked(), "j***@example.com");
        assert_eq!(phone.masked(), "***1234");
        assert!(!format!("{email:?} {phone:?}").contains("jane"));
    }
}
