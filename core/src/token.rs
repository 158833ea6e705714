//! The token format of SPEC section 3: `prefix + random + checksum`.
//!
//! - `prefix` is chosen per slot (`[A-Za-z0-9_]{0,32}`). It should end with `_` (or be empty):
//!   a presented token is split after its **last** `_`, so a prefix such as `myorg` or `ab_cd` is
//!   read back as a shorter prefix followed by a longer random part, and its id differs.
//! - `random` is the random bytes from the OS CSPRNG, written fixed-width so a byte count always
//!   gives the same length: base62 (`0-9A-Za-z`) as one big-endian number zero-padded to
//!   `ceil(bytes * 8 / log2(62))` characters (43 for 32 bytes), or lower-case hex (2 per byte).
//! - `checksum` is the CRC-32 (IEEE) of `prefix + random`: 6 base62 characters, or 8 lower-case
//!   hex characters with hex encoding, zero-padded.
//!
//! The public id is the prefix plus the first 6 characters of the random part; status and logs
//! carry the id and the SHA-256, never the token.

use std::fmt;

use rand::TryRng;
use rand::rngs::{SysError, SysRng};
use sha2::{Digest, Sha256};

use crate::api::Encoding;

/// Longest string [`parse`] looks at. The longest token Keysmith mints is 168 characters (a
/// 32-character prefix, 64 bytes in hex and an 8-character checksum).
pub(crate) const MAX_TOKEN_LEN: usize = 256;
/// Longest prefix, as in [`crate::api::PREFIX_PATTERN`].
pub(crate) const MAX_PREFIX_LEN: usize = 32;
/// Fewest random bytes a slot may ask for.
pub const MIN_BYTES: u32 = 16;
/// Most random bytes a slot may ask for.
pub const MAX_BYTES: u32 = 64;
/// Characters of the random part that the public id reveals.
pub const ID_RANDOM_CHARS: usize = 6;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The prefix does not match [`crate::api::PREFIX_PATTERN`].
    #[error("prefix must be at most 32 characters of A-Z, a-z, 0-9 and _")]
    InvalidPrefix,
    /// The byte count is outside 16..=64.
    #[error("bytes must be between 16 and 64, not {0}")]
    InvalidBytes(u32),
    /// The operating system could not provide random bytes.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(#[from] SysError),
}

/// Why a presented string is not a well-formed token. Never contains the string itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing was presented.
    #[error("token is empty")]
    Empty,
    /// Longer than any token Keysmith mints.
    #[error("token is {len} bytes long; the limit is {MAX_TOKEN_LEN}")]
    TooLong {
        /// Length of the presented string in bytes.
        len: usize,
    },
    /// A byte outside `[A-Za-z0-9_]` (whitespace, punctuation, non-ASCII).
    #[error("token has a character other than A-Z, a-z, 0-9 or _ at byte {position}")]
    InvalidCharacter {
        /// Byte offset of the first offending byte.
        position: usize,
    },
    /// Not `prefix + random + checksum` in either encoding.
    #[error(
        "token is not a prefix, a random part and a 6-character base62 or 8-character hex checksum"
    )]
    Layout,
    /// Well-formed, but the checksum does not match: mistyped, truncated or not a Keysmith token.
    #[error("token checksum does not match")]
    ChecksumMismatch,
}

/// A minted token. The secret leaves this type only through [`Token::expose_secret`]; `Debug`
/// and `Display` show the public id, and there is deliberately no `Serialize`.
#[derive(Clone)]
pub struct Token {
    secret: String,
    prefix_len: usize,
    encoding: Encoding,
}

impl Token {
    /// Mint a token with `bytes` random bytes from the OS CSPRNG.
    pub fn generate(prefix: &str, bytes: u32, encoding: Encoding) -> Result<Token, GenerateError> {
        if !is_valid_prefix(prefix) {
            return Err(GenerateError::InvalidPrefix);
        }
        if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
            return Err(GenerateError::InvalidBytes(bytes));
        }
        let mut random = [0u8; MAX_BYTES as usize];
        let random = &mut random[..bytes as usize];
        SysRng.try_fill_bytes(random)?;
        Ok(Token::from_random(prefix, random, encoding))
    }

    /// Assemble a token from given random bytes; [`Token::generate`] supplies them.
    fn from_random(prefix: &str, random: &[u8], encoding: Encoding) -> Token {
        let mut secret =
            String::with_capacity(prefix.len() + encoded_len(random.len(), encoding) + 8);
        secret.push_str(prefix);
        match encoding {
            Encoding::Base62 => push_base62(&mut secret, random),
            Encoding::Hex => push_hex(&mut secret, random),
        }
        let crc = crc32fast::hash(secret.as_bytes());
        push_checksum(&mut secret, crc, encoding);
        Token {
            secret,
            prefix_len: prefix.len(),
            encoding,
        }
    }

    /// The token itself. Only for the few places that must write it (the Secret, `token generate`).
    pub fn expose_secret(&self) -> &str {
        &self.secret
    }

    /// Public identifier: the prefix plus the first 6 characters of the random part.
    pub fn id(&self) -> &str {
        &self.secret[..self.prefix_len + ID_RANDOM_CHARS]
    }

    /// The prefix this token was minted with.
    pub fn prefix(&self) -> &str {
        &self.secret[..self.prefix_len]
    }

    /// How the random part is written.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Hex SHA-256 of the whole token: what status and the verifier's index hold.
    pub fn sha256_hex(&self) -> String {
        sha256_hex(&self.secret)
    }
}

/// Accept an existing token (e.g. read back from a Secret) when its checksum holds.
impl TryFrom<String> for Token {
    type Error = TokenError;

    fn try_from(secret: String) -> Result<Token, TokenError> {
        let parsed = validate(&secret)?;
        let (prefix_len, encoding) = (parsed.prefix().len(), parsed.encoding());
        Ok(Token {
            secret,
            prefix_len,
            encoding,
        })
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.id())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Token")
            .field(&format_args!("{self}"))
            .finish()
    }
}

/// Lower-case hex SHA-256 of `s`; the verifier hashes presented strings with it.
pub fn sha256_hex(s: &str) -> String {
    sha256_hex_bytes(s.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes`, e.g. a required header's value read from a Secret, which
/// need not be UTF-8.
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    push_hex(&mut out, &digest);
    out
}

/// Whether `prefix` matches [`crate::api::PREFIX_PATTERN`] (`^[A-Za-z0-9_]{0,32}$`).
pub fn is_valid_prefix(prefix: &str) -> bool {
    prefix.len() <= MAX_PREFIX_LEN && prefix.bytes().all(is_token_byte)
}

/// Length of the random part for `bytes` random bytes.
pub(crate) fn encoded_len(bytes: usize, encoding: Encoding) -> usize {
    match encoding {
        // The smallest width w with 62^w >= 256^bytes. log2(62) is irrational, so the quotient is
        // never an integer and f64 rounding cannot land on the wrong side of it for these sizes.
        Encoding::Base62 => (bytes as f64 * 8.0 / 62f64.log2()).ceil() as usize,
        Encoding::Hex => bytes * 2,
    }
}

/// A presented string that has the token layout. Borrows the string; holds no copy of it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    token: &'a str,
    prefix_len: usize,
    random_len: usize,
    encoding: Encoding,
    checksum_valid: bool,
}

impl<'a> ParsedToken<'a> {
    /// Everything up to and including the last `_` before the checksum (may be empty).
    pub fn prefix(&self) -> &'a str {
        &self.token[..self.prefix_len]
    }

    /// Public identifier: the prefix plus the first 6 characters of the random part (fewer if
    /// the random part is shorter).
    pub fn id(&self) -> &'a str {
        &self.token[..self.prefix_len + self.random_len.min(ID_RANDOM_CHARS)]
    }

    /// Number of characters in the random part.
    pub fn random_len(&self) -> usize {
        self.random_len
    }

    /// Encoding whose checksum holds; when none holds, the encoding the layout suggests.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Whether the CRC-32 checksum matches `prefix + random`.
    pub fn checksum_valid(&self) -> bool {
        self.checksum_valid
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("id", &self.id())
            .field("random_len", &self.random_len)
            .field("encoding", &self.encoding)
            .field("checksum_valid", &self.checksum_valid)
            .finish()
    }
}

/// Read a presented string as a token without knowing its slot.
///
/// Format errors are `Err`; a well-formed string whose checksum fails is `Ok` with
/// [`ParsedToken::checksum_valid`] false, so `token inspect` can still show its prefix and id.
/// The checksum is tried as base62 (last 6 characters) first, then as hex (last 8). Allocates
/// nothing.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, TokenError> {
    check_characters(token)?;
    let base62 = layout(token, Encoding::Base62);
    // A base62 checksum that holds settles it: the hex layout (another search and CRC-32) is
    // only worked out when it does not, which the verifier would otherwise pay on every request.
    if let Some(parsed) = base62.filter(|t| t.checksum_valid) {
        return Ok(parsed);
    }
    // Hex, whether its checksum holds or not: when neither holds, the layout that fits is
    // reported, preferring hex, because a base62 layout fits almost any string while a hex one
    // is specific.
    layout(token, Encoding::Hex)
        .or(base62)
        .ok_or(TokenError::Layout)
}

/// [`parse`], but a failed checksum is an error too: what the verifier uses before any lookup.
pub fn validate(token: &str) -> Result<ParsedToken<'_>, TokenError> {
    let parsed = parse(token)?;
    if parsed.checksum_valid {
        Ok(parsed)
    } else {
        Err(TokenError::ChecksumMismatch)
    }
}

fn check_characters(token: &str) -> Result<(), TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong { len: token.len() });
    }
    match token.bytes().position(|b| !is_token_byte(b)) {
        Some(position) => Err(TokenError::InvalidCharacter { position }),
        None => Ok(()),
    }
}

/// Split `token` as `encoding` would lay it out, or `None` when it does not fit. The caller has
/// checked that every byte is `[A-Za-z0-9_]`.
fn layout(token: &str, encoding: Encoding) -> Option<ParsedToken<'_>> {
    let checksum_len = checksum_len(encoding);
    let body_len = token.len().checked_sub(checksum_len)?;
    let (body, checksum) = token.split_at(body_len);
    let prefix_len = body.rfind('_').map_or(0, |i| i + 1);
    let random = &body[prefix_len..];
    let in_alphabet = |s: &str| s.bytes().all(|b| digit_value(b, encoding).is_some());
    if random.is_empty() || !in_alphabet(random) || !in_alphabet(checksum) {
        return None;
    }
    let checksum_valid =
        decode_checksum(checksum, encoding) == Some(crc32fast::hash(body.as_bytes()));
    Some(ParsedToken {
        token,
        prefix_len,
        random_len: random.len(),
        encoding,
        checksum_valid,
    })
}

/// Characters of the checksum.
pub(crate) fn checksum_len(encoding: Encoding) -> usize {
    match encoding {
        // 62^6 ≈ 5.7e10 > 2^32: six characters hold any CRC-32.
        Encoding::Base62 => 6,
        Encoding::Hex => 8,
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn radix(encoding: Encoding) -> u64 {
    match encoding {
        Encoding::Base62 => 62,
        Encoding::Hex => 16,
    }
}

/// Value of one digit, `None` outside the alphabet. Arithmetic rather than a table search,
/// because the verifier runs it on every character of every presented token.
fn digit_value(b: u8, encoding: Encoding) -> Option<u8> {
    let base62 = encoding == Encoding::Base62;
    Some(match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'Z' if base62 => b - b'A' + 10,
        b'a'..=b'z' if base62 => b - b'a' + 36,
        b'a'..=b'f' => b - b'a' + 10,
        _ => return None,
    })
}

/// The checksum's value, or `None` if it exceeds 32 bits (then no CRC-32 can match).
fn decode_checksum(digits: &str, encoding: Encoding) -> Option<u32> {
    let value = digits.bytes().try_fold(0u64, |acc, b| {
        Some(acc * radix(encoding) + u64::from(digit_value(b, encoding)?))
    })?;
    u32::try_from(value).ok()
}

fn push_checksum(out: &mut String, crc: u32, encoding: Encoding) {
    let mut digits = [0u8; 8];
    let len = checksum_len(encoding);
    let alphabet: &[u8] = match encoding {
        Encoding::Base62 => BASE62,
        Encoding::Hex => HEX,
    };
    let mut value = u64::from(crc);
    for slot in digits[..len].iter_mut().rev() {
        *slot = alphabet[(value % radix(encoding)) as usize];
        value /= radix(encoding);
    }
    out.extend(digits[..len].iter().map(|&b| char::from(b)));
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
}

/// Write `bytes` as one big-endian number in base62, zero-padded to [`encoded_len`].
///
/// Schoolbook long division by 62 over the byte string: quadratic, but on at most 64 bytes.
fn push_base62(out: &mut String, bytes: &[u8]) {
    let width = encoded_len(bytes.len(), Encoding::Base62);
    let mut number = bytes.to_vec();
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        let mut remainder = 0u32;
        for byte in number.iter_mut() {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        *slot = BASE62[remainder as usize];
    }
    out.extend(digits.iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ENCODINGS: [Encoding; 2] = [Encoding::Base62, Encoding::Hex];

    #[test]
    fn digit_values_follow_the_alphabets() {
        for (i, &b) in BASE62.iter().enumerate() {
            assert_eq!(digit_value(b, Encoding::Base62), Some(i as u8));
        }
        for (i, &b) in HEX.iter().enumerate() {
            assert_eq!(digit_value(b, Encoding::Hex), Some(i as u8));
        }
        for b in [b'g', b'A', b'F', b'_', b' '] {
            assert_eq!(digit_value(b, Encoding::Hex), None);
        }
        assert_eq!(digit_value(b'_', Encoding::Base62), None);
    }

    #[test]
    fn base62_width_is_the_smallest_that_holds_the_bytes() {
        assert_eq!(encoded_len(16, Encoding::Base62), 22);
        assert_eq!(encoded_len(32, Encoding::Base62), 43);
        assert_eq!(encoded_len(64, Encoding::Base62), 86);
        assert_eq!(encoded_len(32, Encoding::Hex), 64);
    }

    #[test]
    fn base62_is_big_endian_and_zero_padded() {
        let mut out = String::new();
        push_base62(&mut out, &[0u8; 16]);
        assert_eq!(out, "0".repeat(22));

        let mut one = [0u8; 16];
        one[15] = 61;
        let mut out = String::new();
        push_base62(&mut out, &one);
        assert_eq!(out, format!("{}z", "0".repeat(21)));

        let mut out = String::new();
        push_base62(&mut out, &[0xff; 16]);
        // 2^128 - 1 in base62.
        assert_eq!(out, "7n42DGM5Tflk9n8mt7Fhc7");
    }

    #[test]
    fn known_token_layout() {
        let token = Token::from_random("myorg_dt_", &[0xab; 16], Encoding::Hex);
        let body = format!("myorg_dt_{}", "ab".repeat(16));
        let crc = crc32fast::hash(body.as_bytes());
        assert_eq!(token.expose_secret(), format!("{body}{crc:08x}"));
        assert_eq!(token.id(), "myorg_dt_ababab");
        assert_eq!(token.prefix(), "myorg_dt_");
        assert_eq!(token.sha256_hex(), sha256_hex(token.expose_secret()));
    }

    #[test]
    fn sha256_hex_matches_a_known_vector() {
        assert_eq!(
            sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn debug_and_display_redact_the_secret() {
        let token = Token::generate("myorg_dt_", 32, Encoding::Base62).unwrap();
        let shown = format!("{token} {token:?}");
        assert!(!shown.contains(token.expose_secret()));
        assert_eq!(format!("{token}"), format!("{}…", token.id()));
        assert_eq!(format!("{token:?}"), format!("Token({}…)", token.id()));
        let parsed = parse(token.expose_secret()).unwrap();
        assert!(!format!("{parsed:?}").contains(token.expose_secret()));
    }

    #[test]
    fn generate_rejects_bad_arguments() {
        assert!(matches!(
            Token::generate("my-org_", 32, Encoding::Base62),
            Err(GenerateError::InvalidPrefix)
        ));
        assert!(matches!(
            Token::generate(&"a".repeat(33), 32, Encoding::Base62),
            Err(GenerateError::InvalidPrefix)
        ));
        assert!(matches!(
            Token::generate("ks_", 15, Encoding::Hex),
            Err(GenerateError::InvalidBytes(15))
        ));
        assert!(matches!(
            Token::generate("ks_", 65, Encoding::Hex),
            Err(GenerateError::InvalidBytes(65))
        ));
    }

    #[test]
    fn parse_rejects_malformed_input_without_echoing_it() {
        assert_eq!(parse(""), Err(TokenError::Empty));
        assert_eq!(
            parse(&"a".repeat(257)),
            Err(TokenError::TooLong { len: 257 })
        );
        assert_eq!(
            parse("ks_abc def123456"),
            Err(TokenError::InvalidCharacter { position: 6 })
        );
        assert_eq!(
            parse("ks_abcdé123456"),
            Err(TokenError::InvalidCharacter { position: 7 })
        );
        // Only a checksum, no random part.
        assert_eq!(parse("ks_123456"), Err(TokenError::Layout));
        assert_eq!(parse("12345"), Err(TokenError::Layout));
        let err = validate("ks_secretvalue123456").unwrap_err();
        assert_eq!(err, TokenError::ChecksumMismatch);
        assert!(!err.to_string().contains("secretvalue"));
    }

    #[test]
    fn a_prefix_without_trailing_underscore_is_read_into_the_random_part() {
        let token = Token::generate("ab_cd", 16, Encoding::Base62).unwrap();
        let parsed = validate(token.expose_secret()).unwrap();
        assert_eq!(parsed.prefix(), "ab_");
        assert_eq!(parsed.random_len(), 2 + 22);
        assert_ne!(parsed.id(), token.id());
    }

    #[test]
    fn empty_prefix_round_trips() {
        for encoding in ENCODINGS {
            let token = Token::generate("", 16, encoding).unwrap();
            let parsed = validate(token.expose_secret()).unwrap();
            assert_eq!(parsed.prefix(), "");
            assert_eq!(parsed.id(), token.id());
            assert_eq!(parsed.encoding(), encoding);
        }
    }

    #[test]
    fn a_checksum_failure_still_reports_prefix_and_id() {
        let token = Token::from_random("myorg_pt_", &[7; 32], Encoding::Hex);
        let mut tampered = token.expose_secret().to_owned();
        tampered.replace_range(20..21, if &tampered[20..21] == "0" { "1" } else { "0" });
        let parsed = parse(&tampered).unwrap();
        assert!(!parsed.checksum_valid());
        assert_eq!(parsed.prefix(), "myorg_pt_");
        assert_eq!(parsed.encoding(), Encoding::Hex);
        assert_eq!(parsed.id(), token.id());
    }

    #[test]
    fn try_from_accepts_only_valid_tokens() {
        let token = Token::generate("ks_", 32, Encoding::Base62).unwrap();
        let back = Token::try_from(token.expose_secret().to_owned()).unwrap();
        assert_eq!(back.id(), token.id());
        assert_eq!(back.encoding(), Encoding::Base62);
        let truncated = token.expose_secret()[..40].to_owned();
        assert!(Token::try_from(truncated).is_err());
    }

    fn prefix() -> impl Strategy<Value = String> {
        // Prefixes as the CRD documents them: empty, or ending with `_`.
        prop_oneof![Just(String::new()), "[A-Za-z0-9_]{0,31}_"]
    }

    fn encoding() -> impl Strategy<Value = Encoding> {
        prop_oneof![Just(Encoding::Base62), Just(Encoding::Hex)]
    }

    fn token() -> impl Strategy<Value = Token> {
        (prefix(), MIN_BYTES..=MAX_BYTES, encoding())
            .prop_map(|(p, b, e)| Token::generate(&p, b, e).unwrap())
    }

    proptest! {
        #[test]
        fn generate_then_parse_round_trips(
            prefix in prefix(), bytes in MIN_BYTES..=MAX_BYTES, encoding in encoding()
        ) {
            let token = Token::generate(&prefix, bytes, encoding).unwrap();
            let parsed = validate(token.expose_secret()).unwrap();
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
            prop_assert_eq!(parsed.encoding(), encoding);
            prop_assert_eq!(parsed.id(), token.id());
            prop_assert_eq!(parsed.random_len(), encoded_len(bytes as usize, encoding));
        }

        #[test]
        fn length_depends_only_on_prefix_bytes_and_encoding(
            prefix in prefix(), bytes in MIN_BYTES..=MAX_BYTES, encoding in encoding()
        ) {
            let a = Token::generate(&prefix, bytes, encoding).unwrap();
            let b = Token::generate(&prefix, bytes, encoding).unwrap();
            let expected = prefix.len() + encoded_len(bytes as usize, encoding) + checksum_len(encoding);
            prop_assert_eq!(a.expose_secret().len(), expected);
            prop_assert_eq!(b.expose_secret().len(), expected);
        }

        #[test]
        fn two_tokens_differ(prefix in prefix(), bytes in MIN_BYTES..=MAX_BYTES, encoding in encoding()) {
            let a = Token::generate(&prefix, bytes, encoding).unwrap();
            let b = Token::generate(&prefix, bytes, encoding).unwrap();
            prop_assert_ne!(a.expose_secret(), b.expose_secret());
        }

        #[test]
        fn id_reveals_at_most_six_random_characters(token in token()) {
            prop_assert_eq!(token.id().len(), token.prefix().len() + ID_RANDOM_CHARS);
            prop_assert!(token.expose_secret().starts_with(token.id()));
            let parsed = parse(token.expose_secret()).unwrap();
            prop_assert!(parsed.id().len() <= parsed.prefix().len() + ID_RANDOM_CHARS);
        }

        #[test]
        fn any_substitution_fails(token in token(), index in any::<prop::sample::Index>(), c in "[A-Za-z0-9_]") {
            let secret = token.expose_secret();
            let at = index.index(secret.len());
            prop_assume!(secret[at..=at] != c);
            let mut tampered = secret.to_owned();
            tampered.replace_range(at..=at, &c);
            prop_assert!(validate(&tampered).is_err());
        }

        #[test]
        fn any_deletion_fails(token in token(), index in any::<prop::sample::Index>()) {
            let mut tampered = token.expose_secret().to_owned();
            tampered.remove(index.index(tampered.len()));
            prop_assert!(validate(&tampered).is_err());
        }

        #[test]
        fn any_truncation_fails(token in token(), index in any::<prop::sample::Index>()) {
            let secret = token.expose_secret();
            let tampered = &secret[..index.index(secret.len())];
            prop_assert!(validate(tampered).is_err());
        }

        /// `parse` only works out the hex layout when the base62 checksum fails; its answer is
        /// still the one trying both gives: the first whose checksum holds, else hex, else base62.
        #[test]
        fn parse_answers_as_if_both_layouts_were_tried(
            s in prop_oneof![token().prop_map(|t| t.expose_secret().to_owned()), "[A-Za-z0-9_]{1,80}"]
        ) {
            let both = [layout(&s, Encoding::Base62), layout(&s, Encoding::Hex)];
            let expected = both.into_iter().flatten().find(|t| t.checksum_valid).or(both[1]).or(both[0]);
            let summary = |t: &ParsedToken<'_>| (t.prefix_len, t.random_len, t.encoding, t.checksum_valid);
            prop_assert_eq!(parse(&s).ok().as_ref().map(summary), expected.as_ref().map(summary));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s);
        }
    }
}
