//! GitHub's side of a secret scanning partner report: a P-256 signing key generated per test,
//! the public-keys document GitHub would publish for it, and the signature headers.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;

/// The identifier the test key is published under.
pub const KEY_ID: &str = "test-key-1";

/// The DER header of a P-256 SubjectPublicKeyInfo, before the point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A signing key, as GitHub holds one.
pub struct Github {
    pair: EcdsaKeyPair,
}

impl Github {
    pub fn new() -> Github {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Github { pair }
    }

    /// The public-keys JSON naming this key [`KEY_ID`].
    pub fn public_keys(&self) -> String {
        let spki = [&P256_SPKI_PREFIX[..], self.pair.public_key().as_ref()].concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(spki)
        );
        json!({"public_keys": [{"key_identifier": KEY_ID, "key": pem, "is_current": true}]})
            .to_string()
    }

    /// The base64 ASN.1 signature of `body`.
    pub fn sign(&self, body: &str) -> String {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), body.as_bytes())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    }

    /// The headers GitHub sends with `body`: the key id and the signature.
    pub fn headers(&self, body: &str) -> [(&'static str, String); 2] {
        [
            ("Github-Public-Key-Identifier", KEY_ID.to_owned()),
            ("Github-Public-Key-Signature", self.sign(body)),
        ]
    }
}
