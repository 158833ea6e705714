//! Secret-scanner rules for the token formats in use (SPEC 4.6): a gitleaks configuration and a
//! TruffleHog custom-detector file with one rule per (prefix, bytes, encoding).
//!
//! A rule is the exact prefix followed by exactly as many characters of the encoding's alphabet
//! as the random part and the checksum take, with a word boundary on each side. Every token
//! character is a regex word character (`[A-Za-z0-9_]`), so the boundaries make a longer run of
//! the alphabet, or the same characters behind a longer prefix, no match at all rather than a
//! match of its first characters. A scanner cannot compute the CRC-32, so a token with a mistyped
//! checksum matches too; the verifier is what tells a live token from a lookalike.
//!
//! The documents carry formats only: never a token, a hash or an id.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::api::{Encoding, TokenSlot};
use crate::token::{MAX_BYTES, MIN_BYTES, checksum_len, encoded_len, is_valid_prefix};

/// One token format: a prefix, a number of random bytes and their encoding.
///
/// The prefix is checked against the prefix alphabet `[A-Za-z0-9_]`, none of whose characters
/// means anything in a regex, so it goes into the rules as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenFormat {
    prefix: String,
    bytes: u32,
    encoding: Encoding,
}

/// Why no rule can be written for a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The prefix is outside the CRD's pattern (only possible for a format not read from an ApiKey).
    #[error("prefix {0:?} is not at most 32 characters of A-Z, a-z, 0-9 and _")]
    InvalidPrefix(String),
    /// The byte count is outside 16..=64.
    #[error("bytes must be between 16 and 64, not {0}")]
    InvalidBytes(u32),
    /// Without a prefix a token is any run of its alphabet of the right length.
    #[error(
        "the prefix is empty, so its tokens look like any other run of letters and digits of \
         their length; give the slot a prefix (such as ks_) for scanners to find its tokens"
    )]
    EmptyPrefix,
}

impl TokenFormat {
    /// The format of tokens minted with `prefix`, `bytes` random bytes and `encoding`.
    pub fn new(prefix: &str, bytes: u32, encoding: Encoding) -> Result<TokenFormat, FormatError> {
        if prefix.is_empty() {
            return Err(FormatError::EmptyPrefix);
        }
        if !is_valid_prefix(prefix) {
            return Err(FormatError::InvalidPrefix(prefix.to_owned()));
        }
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
            return Err(FormatError::InvalidBytes(bytes));
        }
        Ok(TokenFormat {
            prefix: prefix.to_owned(),
            bytes,
            encoding,
        })
    }

    /// The format a slot mints, defaults applied.
    pub fn of_slot(slot: &TokenSlot) -> Result<TokenFormat, FormatError> {
        TokenFormat::new(slot.prefix(), slot.bytes(), slot.encoding())
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Random bytes per token.
    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// How the random bytes and the checksum are written.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Characters after the prefix: the random part and the checksum.
    pub fn tail_len(&self) -> usize {
        encoded_len(self.bytes as usize, self.encoding) + checksum_len(self.encoding)
    }

    /// The rule's name in both documents, e.g. `keysmith-ks_-base62-32`.
    pub fn rule_id(&self) -> String {
        format!(
            "keysmith-{}-{}-{}",
            self.prefix,
            encoding_name(self.encoding),
            self.bytes
        )
    }

    /// The regex of the rule, in the syntax Go's RE2 (gitleaks, TruffleHog) and GitHub's custom
    /// patterns share: `\b` is an ASCII word boundary there.
    pub fn regex(&self) -> String {
        let class = match self.encoding {
            Encoding::Base62 => "0-9A-Za-z",
            Encoding::Hex => "0-9a-f",
        };
        format!(r"\b{}[{class}]{{{}}}\b", self.prefix, self.tail_len())
    }

    fn description(&self) -> String {
        format!(
            "Keysmith API key: prefix {}, {} random bytes in {} and a CRC-32 checksum",
            self.prefix,
            self.bytes,
            encoding_name(self.encoding)
        )
    }
}

fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Base62 => "base62",
        Encoding::Hex => "hex",
    }
}

/// Where TruffleHog posts each candidate to have it verified, and the headers it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    endpoint: String,
    headers: Vec<String>,
}

/// Why a verification webhook cannot go into the TruffleHog file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// TruffleHog posts to HTTP(S) endpoints only.
    #[error("the verify URL must start with https:// (or http:// for a test endpoint)")]
    NotHttp,
    /// TruffleHog splits a header at its first colon.
    #[error("a verify header must be `Name: value`, with a name before the colon")]
    Header,
}

impl Webhook {
    /// A webhook at `endpoint` sending `headers` (`Name: value`, e.g. an `Authorization` line).
    pub fn new(endpoint: &str, headers: Vec<String>) -> Result<Webhook, WebhookError> {
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(WebhookError::NotHttp);
        }
        if headers.iter().any(|h| {
            h.split_once(':')
                .is_none_or(|(name, _)| name.trim().is_empty())
        }) {
            return Err(WebhookError::Header);
        }
        Ok(Webhook {
            endpoint: endpoint.to_owned(),
            headers,
        })
    }
}

/// The rules for a set of formats, each format once, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanRules {
    formats: BTreeSet<TokenFormat>,
}

impl FromIterator<TokenFormat> for ScanRules {
    fn from_iter<I: IntoIterator<Item = TokenFormat>>(formats: I) -> ScanRules {
        ScanRules {
            formats: formats.into_iter().collect(),
        }
    }
}

#[derive(Serialize)]
struct GitleaksConfig {
    title: &'static str,
    extend: GitleaksExtend,
    rules: Vec<GitleaksRule>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GitleaksExtend {
    use_default: bool,
}

#[derive(Serialize)]
struct GitleaksRule {
    id: String,
    description: String,
    regex: String,
    keywords: [String; 1],
    tags: [&'static str; 1],
}

#[derive(Serialize)]
struct TruffleHogConfig {
    detectors: Vec<TruffleHogDetector>,
}

#[derive(Serialize)]
struct TruffleHogDetector {
    name: String,
    description: String,
    keywords: [String; 1],
    regex: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<[TruffleHogVerify; 1]>,
}

#[derive(Serialize)]
struct TruffleHogVerify {
    endpoint: String,
    #[serde(rename = "unsafe")]
    plain_http: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<String>,
}

impl ScanRules {
    /// The formats covered, each once.
    pub fn formats(&self) -> impl Iterator<Item = &TokenFormat> {
        self.formats.iter()
    }

    /// A gitleaks configuration: its default rules (`[extend] useDefault`) plus one rule per
    /// format, whose keyword is the prefix so gitleaks runs the regex only where the prefix is.
    pub fn gitleaks_toml(&self) -> String {
        let config = GitleaksConfig {
            title: "Keysmith API keys, with gitleaks' default rules",
            extend: GitleaksExtend { use_default: true },
            rules: self
                .formats
                .iter()
                .map(|f| GitleaksRule {
                    id: f.rule_id(),
                    description: f.description(),
                    regex: f.regex(),
                    keywords: [f.prefix.clone()],
                    tags: ["keysmith"],
                })
                .collect(),
        };
        let body = toml::to_string(&config).expect("strings and tables always serialize to TOML");
        format!("# gitleaks configuration written by `keysmith scan-rules`.\n{body}")
    }

    /// A TruffleHog custom-detector file: one detector per format, with the regex named `token`,
    /// and `verify` posting each candidate to `webhook` when one is given.
    pub fn trufflehog_yaml(&self, webhook: Option<&Webhook>) -> String {
        let config = TruffleHogConfig {
            detectors: self
                .formats
                .iter()
                .map(|f| TruffleHogDetector {
                    name: f.rule_id(),
                    description: f.description(),
                    keywords: [f.prefix.clone()],
                    regex: BTreeMap::from([("token", f.regex())]),
                    verify: webhook.map(|w| {
                        [TruffleHogVerify {
                            endpoint: w.endpoint.clone(),
                            // TruffleHog refuses a plain-HTTP endpoint unless told it is meant.
                            plain_http: w.endpoint.starts_with("http://"),
                            headers: w.headers.clone(),
                        }]
                    }),
                })
                .collect(),
        };
        let body = serde_saphyr::to_string(&config).expect("strings and maps always serialize");
        format!("# TruffleHog custom detectors written by `keysmith scan-rules`.\n{body}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;
    use proptest::prelude::*;
    use regex::{Regex, RegexBuilder};

    /// The rules of the gitleaks document, by id, compiled as RE2 would (ASCII `\b`).
    fn gitleaks_rules(toml_text: &str) -> BTreeMap<String, Regex> {
        let doc: toml::Table = toml::from_str(toml_text).unwrap();
        assert_eq!(doc["extend"]["useDefault"].as_bool(), Some(true));
        doc["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| {
                let id = rule["id"].as_str().unwrap().to_owned();
                let keywords = rule["keywords"].as_array().unwrap();
                assert_eq!(keywords.len(), 1);
                let regex = rule["regex"].as_str().unwrap();
                assert!(regex.contains(keywords[0].as_str().unwrap()));
                (id, compile(regex))
            })
            .collect()
    }

    fn compile(regex: &str) -> Regex {
        RegexBuilder::new(regex).unicode(false).build().unwrap()
    }

    /// Whether `s` has the layout of `format`: what its rule must match, found by hand.
    fn has_layout(format: &TokenFormat, s: &str) -> bool {
        let in_alphabet = |b: u8| match format.encoding {
            Encoding::Base62 => b.is_ascii_alphanumeric(),
            Encoding::Hex => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        };
        s.strip_prefix(format.prefix.as_str())
            .is_some_and(|tail| tail.len() == format.tail_len() && tail.bytes().all(in_alphabet))
    }

    /// The strings a rule finds in `text`.
    fn found(rule: &Regex, text: &str) -> Vec<String> {
        rule.find_iter(text)
            .map(|m| m.as_str().to_owned())
            .collect()
    }

    #[test]
    fn known_format_gives_a_tight_regex_and_id() {
        let f = TokenFormat::new("ks_", 32, Encoding::Base62).unwrap();
        assert_eq!(f.regex(), r"\bks_[0-9A-Za-z]{49}\b");
        assert_eq!(f.rule_id(), "keysmith-ks_-base62-32");
        let h = TokenFormat::new("acme_live_", 16, Encoding::Hex).unwrap();
        assert_eq!(h.regex(), r"\bacme_live_[0-9a-f]{40}\b");
    }

    #[test]
    fn formats_without_a_rule_are_refused_with_the_reason() {
        assert_eq!(
            TokenFormat::new("", 32, Encoding::Base62),
            Err(FormatError::EmptyPrefix)
        );
        assert_eq!(
            TokenFormat::new("a.b_", 32, Encoding::Hex),
            Err(FormatError::InvalidPrefix("a.b_".into()))
        );
        assert_eq!(
            TokenFormat::new("ks_", 8, Encoding::Hex),
            Err(FormatError::InvalidBytes(8))
        );
        assert!(
            FormatError::EmptyPrefix
                .to_string()
                .contains("give the slot a prefix")
        );
    }

    #[test]
    fn a_slot_without_settings_has_the_default_format() {
        let slot = TokenSlot {
            name: "a".into(),
            ..TokenSlot::default()
        };
        assert_eq!(
            TokenFormat::of_slot(&slot).unwrap(),
            TokenFormat::new("ks_", 32, Encoding::Base62).unwrap()
        );
    }

    #[test]
    fn the_same_format_twice_is_one_rule() {
        let f = || TokenFormat::new("ks_", 32, Encoding::Base62).unwrap();
        let rules: ScanRules = [f(), f()].into_iter().collect();
        assert_eq!(gitleaks_rules(&rules.gitleaks_toml()).len(), 1);
        assert_eq!(rules.formats().count(), 1);
    }

    #[test]
    fn trufflehog_file_has_the_documented_shape() {
        let rules: ScanRules = [
            TokenFormat::new("ks_", 32, Encoding::Base62).unwrap(),
            TokenFormat::new("ks_", 32, Encoding::Hex).unwrap(),
        ]
        .into_iter()
        .collect();
        let without: serde_json::Value =
            serde_saphyr::from_str(&rules.trufflehog_yaml(None)).unwrap();
        let detectors = without["detectors"].as_array().unwrap();
        assert_eq!(detectors.len(), 2);
        assert_eq!(detectors[0]["name"], "keysmith-ks_-base62-32");
        assert_eq!(detectors[0]["keywords"], serde_json::json!(["ks_"]));
        assert_eq!(detectors[0]["regex"]["token"], r"\bks_[0-9A-Za-z]{49}\b");
        assert!(detectors[0].get("verify").is_none());

        let webhook = Webhook::new(
            "http://127.0.0.1:8080/hook",
            vec!["Authorization: Bearer x".into()],
        )
        .unwrap();
        let with: serde_json::Value =
            serde_saphyr::from_str(&rules.trufflehog_yaml(Some(&webhook))).unwrap();
        assert_eq!(
            with["detectors"][1]["verify"],
            serde_json::json!([{"endpoint": "http://127.0.0.1:8080/hook", "unsafe": true,
                "headers": ["Authorization: Bearer x"]}])
        );
        let https = Webhook::new("https://verifier.example/hook", vec![]).unwrap();
        let with: serde_json::Value =
            serde_saphyr::from_str(&rules.trufflehog_yaml(Some(&https))).unwrap();
        assert_eq!(
            with["detectors"][0]["verify"],
            serde_json::json!([{"endpoint": "https://verifier.example/hook", "unsafe": false}])
        );
    }

    #[test]
    fn webhooks_must_be_http_with_named_headers() {
        assert_eq!(Webhook::new("ftp://x", vec![]), Err(WebhookError::NotHttp));
        for header in ["no colon", ": value"] {
            assert_eq!(
                Webhook::new("https://x", vec![header.into()]),
                Err(WebhookError::Header)
            );
        }
    }

    fn format() -> impl Strategy<Value = TokenFormat> {
        // Prefixes as the CRD documents them, ending with `_`.
        ("[A-Za-z0-9_]{0,31}_", MIN_BYTES..=MAX_BYTES, any::<bool>()).prop_map(|(p, b, hex)| {
            let encoding = if hex { Encoding::Hex } else { Encoding::Base62 };
            TokenFormat::new(&p, b, encoding).unwrap()
        })
    }

    /// A run of `format`'s alphabet `len` characters long, from `seed`.
    fn run_of(format: &TokenFormat, seed: &[u8], len: usize) -> String {
        let alphabet: &[u8] = match format.encoding {
            Encoding::Base62 => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            Encoding::Hex => b"0123456789abcdef",
        };
        (0..len)
            .map(|i| char::from(alphabet[usize::from(seed[i % seed.len()]) % alphabet.len()]))
            .collect()
    }

    proptest! {
        #[test]
        fn every_rule_finds_exactly_the_strings_of_its_format(
            formats in prop::collection::vec(format(), 1..6),
            seed in prop::collection::vec(any::<u8>(), 1..64),
            separator in prop::sample::select(vec![" ", "\n", "=", "\"", ":", "-", "/"]),
        ) {
            let rules: ScanRules = formats.iter().cloned().collect();
            let compiled = gitleaks_rules(&rules.gitleaks_toml());
            prop_assert_eq!(compiled.len(), rules.formats().count());

            let mut candidates = Vec::new();
            for f in rules.formats() {
                let token = Token::generate(&f.prefix, f.bytes, f.encoding).unwrap();
                let token = token.expose_secret().to_owned();
                // The same alphabet and length with no prefix, or the prefix's length of it.
                candidates.push(run_of(f, &seed, f.tail_len()));
                candidates.push(run_of(f, &seed, f.prefix.len() + f.tail_len()));
                // Longer runs: more of the alphabet after it, a word character before it.
                candidates.push(format!("{token}{}", run_of(f, &seed, 1)));
                candidates.push(format!("x{token}"));
                // A prefix the rules do not know.
                candidates.push(format!("zz{}_{}", f.prefix, &token[f.prefix.len()..]));
                candidates.push(token);
            }
            let text = candidates.join(separator);
            for f in rules.formats() {
                let expected: Vec<&String> =
                    candidates.iter().filter(|c| has_layout(f, c)).collect();
                let found = found(&compiled[&f.rule_id()], &text);
                prop_assert_eq!(found.iter().collect::<Vec<_>>(), expected, "rule {}", f.rule_id());
            }
        }

        #[test]
        fn a_minted_token_matches_its_own_rule_and_no_other_of_another_length(
            formats in prop::collection::vec(format(), 1..6),
        ) {
            let rules: ScanRules = formats.iter().cloned().collect();
            let compiled = gitleaks_rules(&rules.gitleaks_toml());
            for f in rules.formats() {
                let token = Token::generate(&f.prefix, f.bytes, f.encoding).unwrap();
                let token = token.expose_secret();
                let text = format!("key = \"{token}\"\n");
                prop_assert_eq!(found(&compiled[&f.rule_id()], &text), vec![token.to_owned()]);
                for other in rules.formats().filter(|o| *o != f) {
                    // Only the same prefix and length can overlap: a hex token is also a run of
                    // base62 (docs/leaks.md says so).
                    let overlap = other.prefix == f.prefix
                        && other.tail_len() == f.tail_len()
                        && other.encoding == Encoding::Base62;
                    let hits = found(&compiled[&other.rule_id()], &text);
                    prop_assert_eq!(!hits.is_empty(), overlap, "{} in {}", other.rule_id(), f.rule_id());
                }
            }
        }

        #[test]
        fn only_word_character_prefixes_are_accepted_and_need_no_escaping(
            prefix in prop_oneof!["[A-Za-z0-9_]{0,33}", "\\PC{0,40}"],
        ) {
            // The rules put the prefix in unescaped and rely on `\b` around word characters: a
            // wider prefix alphabet must fail here before it makes a rule wrong.
            let word = prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let accepted = TokenFormat::new(&prefix, 32, Encoding::Base62).is_ok();
            prop_assert_eq!(accepted, word && (1..=32).contains(&prefix.len()));
            if accepted {
                prop_assert_eq!(regex::escape(&prefix), prefix);
            }
        }

        #[test]
        fn both_documents_carry_the_same_regexes(formats in prop::collection::vec(format(), 0..6)) {
            let rules: ScanRules = formats.into_iter().collect();
            let gitleaks = gitleaks_rules(&rules.gitleaks_toml());
            let trufflehog: serde_json::Value =
                serde_saphyr::from_str(&rules.trufflehog_yaml(None)).unwrap();
            let detectors = trufflehog["detectors"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(detectors.len(), gitleaks.len());
            for d in detectors {
                let name = d["name"].as_str().unwrap();
                prop_assert_eq!(d["regex"]["token"].as_str().unwrap(), gitleaks[name].as_str());
                prop_assert_eq!(&d["keywords"], &serde_json::json!([name.split('-').nth(1).unwrap()]));
            }
        }
    }
}
