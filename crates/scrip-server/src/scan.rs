//! Finds Scrip secrets (by prefix and checksum) and Luhn-valid card numbers
//! in text, for `scrip secrets scan` in CI pipelines and log sinks. Findings
//! never repeat what they found: only the kind, the place and a redacted
//! hint.

use std::sync::OnceLock;

use regex::Regex;
use scrip_core::card::luhn_valid;

use crate::secrets::is_scrip_secret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// A well-formed Scrip secret (its checksum matches).
    Secret { prefix: &'static str },
    /// A card number (12–19 digits, Luhn-valid).
    CardNumber { last4: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub column: usize,
    pub kind: FindingKind,
}

impl Finding {
    pub fn describe(&self) -> String {
        match &self.kind {
            FindingKind::Secret { prefix } => format!("Scrip secret {prefix}… (checksum valid)"),
            FindingKind::CardNumber { last4 } => format!("card number ending {last4} (Luhn-valid)"),
        }
    }
}

fn secret_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(sk_admin_|sk_orch_|sk_prov_|scrip_pt_|whsec_)[0-9A-Za-z]{38}")
            .unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

fn card_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Digit runs of 12–19 digits, optionally grouped with spaces or dashes,
    // not glued to other digits.
    RE.get_or_init(|| {
        Regex::new(r"(?:^|[^0-9])((?:[0-9][ -]?){11,18}[0-9])(?:[^0-9]|$)")
            .unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

/// Every secret and card number in `text`, with 1-based line and column.
pub fn scan_text(text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for m in secret_pattern().find_iter(line) {
            if is_scrip_secret(m.as_str()) {
                let prefix = crate::secrets::PREFIXES
                    .iter()
                    .find(|p| m.as_str().starts_with(**p))
                    .copied()
                    .unwrap_or("?");
                findings.push(Finding {
                    line: index + 1,
                    column: m.start() + 1,
                    kind: FindingKind::Secret { prefix },
                });
            }
        }
        for c in card_pattern().captures_iter(line) {
            let Some(m) = c.get(1) else { continue };
            let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
            if (12..=19).contains(&digits.len()) && luhn_valid(&digits) {
                findings.push(Finding {
                    line: index + 1,
                    column: m.start() + 1,
                    kind: FindingKind::CardNumber {
                        last4: digits[digits.len() - 4..].to_owned(),
                    },
                });
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::{Secret, PREFIX_PROVIDER};

    #[test]
    fn finds_secrets_with_valid_checksums_only() {
        let s = Secret::generate(PREFIX_PROVIDER);
        let text = format!("ok\nAuthorization: Bearer {}\n", s.expose());
        let found = scan_text(&text);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, 2);
        assert_eq!(
            found[0].kind,
            FindingKind::Secret {
                prefix: PREFIX_PROVIDER
            }
        );
        assert!(!found[0]
            .describe()
            .contains(&s.expose()[PREFIX_PROVIDER.len()..]));
        // A look-alike without a valid checksum is not reported.
        let fake = format!("{}{}", PREFIX_PROVIDER, "a".repeat(38));
        assert!(scan_text(&fake).is_empty());
    }

    #[test]
    fn finds_luhn_valid_card_numbers_in_any_grouping() {
        for text in [
            "card=4242424242424242",
            "card: 4242 4242 4242 4242.",
            "3782-822463-10005",
            "\"number\":\"5555555555554444\"",
        ] {
            let found = scan_text(text);
            assert_eq!(found.len(), 1, "{text}");
            assert!(matches!(found[0].kind, FindingKind::CardNumber { .. }));
        }
        // Not Luhn-valid, too short, or part of a longer digit run.
        for text in [
            "4242424242424241",
            "42424242424",
            "id 12345678901234567890123",
            "ts=1796323739",
        ] {
            assert!(scan_text(text).is_empty(), "{text}");
        }
    }
}
