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

fn digit_run_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Groups of digits joined by single spaces or dashes: a card number as
    // typed, perhaps with other digit groups next to it.
    RE.get_or_init(|| {
        Regex::new(r"[0-9]+(?:[ -][0-9]+)*")
            .unwrap_or_else(|_| Regex::new("$^").unwrap_or_else(|_| unreachable!()))
    })
}

/// Card numbers inside one run of digit groups: at each group, the longest
/// sequence of whole groups holding 12–19 digits that passes Luhn, then on
/// after it. A number never starts or ends inside a group, so a longer
/// digit string (an id, a timestamp) is never cut into a "card".
fn cards_in_run(run: &str, offset: usize) -> Vec<(usize, String)> {
    let groups: Vec<(usize, &str)> = run
        .split([' ', '-'])
        .scan(0usize, |at, group| {
            let start = *at;
            *at += group.len() + 1;
            Some((start, group))
        })
        .collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut best = None;
        let mut digits = String::new();
        for (j, (_, group)) in groups.iter().enumerate().skip(i) {
            digits.push_str(group);
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 12 && luhn_valid(&digits) {
                best = Some((j, digits.clone()));
            }
        }
        match best {
            Some((j, number)) => {
                found.push((offset + groups[i].0, number));
                i = j + 1;
            }
            None => i += 1,
        }
    }
    found
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
        for run in digit_run_pattern().find_iter(line) {
            for (start, digits) in cards_in_run(run.as_str(), run.start()) {
                findings.push(Finding {
                    line: index + 1,
                    column: start + 1,
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
        // Next to other digits, or several on one line.
        for (text, last4s) in [
            ("card 4242424242424242 123", vec!["4242"]),
            ("4242 4242 4242 4242 12/30", vec!["4242"]),
            ("4242424242424242,4000000000000002", vec!["4242", "0002"]),
            ("exp 12 2030 card 5555-5555-5555-4444 cvc 123", vec!["4444"]),
            ("4242424242424242 5555555555554444", vec!["4242", "4444"]),
        ] {
            let found: Vec<String> = scan_text(text)
                .into_iter()
                .map(|f| match f.kind {
                    FindingKind::CardNumber { last4 } => last4,
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(found, last4s, "{text}");
        }
        let found = scan_text("x 4242424242424242 123");
        assert_eq!(found[0].column, 3, "the column of the number's first digit");
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
