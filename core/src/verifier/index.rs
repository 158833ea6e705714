//! The in-memory index: SHA-256(token) → the key, slot and validity of that token.
//!
//! Built from ApiKey watch events ([`Index::apply`], [`Index::revoke`]); read on every request
//! ([`Index::verify`]). The verifier never sees a token's plaintext from the cluster: it indexes
//! the hashes the controller wrote to `status.tokens[].sha256` and `previous.sha256`.
//!
//! Concurrency: the map is split into [`SHARDS`] `std::sync::RwLock`ed hash maps chosen by a
//! byte of the hash. A reader holds one shard's read lock for a hash-map probe and an `Arc`
//! clone; a writer replaces one key's entries shard by shard, so a watch event never stalls
//! readers of other shards and never for longer than a few inserts. No extra crate is needed,
//! and because keys are SHA-256 outputs the map hashes them by taking 8 of their bytes instead of
//! running SipHash again.
//!
//! Deleted keys, and leaked tokens the controller replaced, leave tombstones so they answer
//! REVOKED rather than NOT_FOUND for [`TOMBSTONE_TTL`] (at most [`MAX_TOMBSTONES`] of them),
//! which tells an operator chasing a 401 what happened.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::api::{ApiKey, Leak};
use crate::planner::leak_refused;
use crate::token;
use crate::validation::InvalidSpec;

use super::decision::{Code, Validity, VerifyRequest, decide};
use super::key::{GrantInterner, KeyInfo};
use super::usage::UsageMark;

/// Number of independently locked parts of the map.
pub const SHARDS: usize = 64;
/// How long a deleted key's tokens answer REVOKED before they become NOT_FOUND.
pub const TOMBSTONE_TTL: SignedDuration = SignedDuration::from_hours(24);
/// Most tombstones kept; the oldest go first.
pub const MAX_TOMBSTONES: usize = 100_000;

/// SHA-256 of a token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Hash a presented token.
    pub fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Read the lower-case (or upper-case) hex form written in status.
    pub(crate) fn from_hex(hex: &str) -> Option<TokenHash> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |b: u8| (b as char).to_digit(16);
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(TokenHash(out))
    }

    /// The lower-case hex form status holds.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        token::push_hex(&mut out, &self.0);
        out
    }

    fn shard(&self) -> usize {
        self.0[31] as usize % SHARDS
    }
}

impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes a [`TokenHash`]'s bytes through: they are already uniformly distributed, and an
/// attacker cannot choose SHA-256 outputs to collide buckets.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<TokenHash, Entry, BuildHasherDefault<PassThrough>>;

/// One indexed token, a hash-map value beside its 32-byte hash in every shard: kept small
/// because there is one per token.
#[derive(Debug, Clone)]
struct Entry {
    key: Arc<KeyInfo>,
    id: Arc<str>,
    validity: Validity,
    /// Shared across re-indexing of the same token so usage reports stay once a minute.
    usage: Arc<UsageMark>,
    /// Position in `key.slots` (at most `MAX_SLOTS`).
    slot: u16,
    /// Position in `status.tokens`.
    status_position: u32,
    /// See [`Found::replaced`]; `0` for the current token, `n + 1` for `Some(n)`.
    replaced: u8,
    revoked: bool,
    /// Status holds a leak report for it (refused unless the key's `leakResponse` is `report`).
    leaked: bool,
}

/// A token the index knows, as found by [`Index::verify`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Its ApiKey.
    pub key: Arc<KeyInfo>,
    /// Position of its slot in `key.slots`.
    pub slot: usize,
    /// Position of its slot in `status.tokens` (for the usage patch).
    pub status_position: usize,
    /// Which entry of that slot it is: `None` the current token, `Some(0)` `previous`,
    /// `Some(n)` `earlier[n - 1]` (for the usage patch).
    pub replaced: Option<usize>,
    /// Its SHA-256, as status holds it (for the usage patch's guard).
    pub hash: TokenHash,
    /// Its public id (from status).
    pub id: Arc<str>,
    /// When it stops verifying (token or key expiry, whichever is first).
    pub expires_at: Option<Timestamp>,
    /// Its usage reporting state.
    pub usage: Arc<UsageMark>,
    /// Status already holds a leak report for it.
    pub leaked: bool,
}

impl Found {
    /// Its slot's name.
    pub fn slot_name(&self) -> &str {
        self.key.slots.get(self.slot).map_or("", |s| &s.name)
    }
}

/// The outcome of [`Index::verify`], borrowing the presented token's id from the request.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    /// The answer.
    pub code: Code,
    /// The token's index entry, when it had one (every code but MALFORMED and NOT_FOUND).
    pub found: Option<Found>,
    /// Public id of a well-formed token (safe to log), even when not found.
    pub token_id: Option<&'a str>,
}

/// What [`Index::apply`] did.
#[derive(Debug)]
pub struct Applied {
    /// Tokens of this key now indexed.
    pub tokens: usize,
    /// Status entries skipped (unknown slot or a hash that is not 64 hex digits).
    pub skipped: usize,
    /// The spec's validation error when it was indexed fail closed.
    pub invalid: Option<InvalidSpec>,
    /// The key as indexed.
    pub key: Arc<KeyInfo>,
}

/// A token of the key being indexed, before it goes into its shard.
struct Fresh {
    hash: TokenHash,
    slot: u16,
    position: u32,
    replaced: u8,
    id: Arc<str>,
    validity: Validity,
    leaked: bool,
    /// Its leak report makes it answer REVOKED.
    refused: bool,
}

#[derive(Default)]
struct Writer {
    /// The tokens each indexed key has in the shards, found by the key's identity.
    by_key: HashSet<Indexed>,
    tombstones: VecDeque<(TokenHash, Timestamp)>,
}

/// An indexed key and the hashes of its tokens, so that re-indexing or revoking it finds them.
/// Looked up by `<namespace>/<name>` (neither may contain a `/`), so the key's own identity
/// string is the map key and no copy of the name is kept.
struct Indexed {
    key: Arc<KeyInfo>,
    hashes: Box<[TokenHash]>,
}

impl Borrow<str> for Indexed {
    fn borrow(&self) -> &str {
        &self.key.identity
    }
}

impl Hash for Indexed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.identity.as_str().hash(state);
    }
}

impl PartialEq for Indexed {
    fn eq(&self, other: &Self) -> bool {
        self.key.identity == other.key.identity
    }
}

impl Eq for Indexed {}

/// The token index. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Index {
    shards: Box<[RwLock<Shard>]>,
    writer: Mutex<Writer>,
    live: AtomicUsize,
    grants: GrantInterner,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            writer: Mutex::default(),
            live: AtomicUsize::new(0),
            grants: GrantInterner::default(),
        }
    }
}

impl Index {
    /// Index (or re-index) an ApiKey from an Added/Modified event. A key with a
    /// `deletionTimestamp` is revoked: indexed first, so that even a key first seen while being
    /// deleted leaves tombstones and answers REVOKED.
    pub fn apply(&self, apikey: &ApiKey, now: Timestamp) -> Applied {
        let (info, invalid) = KeyInfo::from_apikey(apikey, &self.grants);
        let key = Arc::new(info);
        let mut fresh = Vec::new();
        let mut skipped = 0;
        for (position, status) in apikey.status.iter().flat_map(|s| &s.tokens).enumerate() {
            let Some(slot) = key.slot_index(&status.name) else {
                // A slot removed from the spec no longer authorizes anything, whatever status says.
                skipped += 1;
                continue;
            };
            // Status positions past u32 cannot occur: the API server limits an object's size.
            let (Ok(slot), Ok(position)) = (u16::try_from(slot), u32::try_from(position)) else {
                skipped += 1;
                continue;
            };
            let mut add = |hex: &str, id: &str, validity, replaced: u8, leak: Option<&Leak>| {
                match TokenHash::from_hex(hex) {
                    Some(hash) => fresh.push(Fresh {
                        hash,
                        slot,
                        position,
                        replaced,
                        id: Arc::from(id),
                        validity,
                        leaked: leak.is_some(),
                        refused: leak_refused(leak, key.leak_response),
                    }),
                    None => skipped += 1,
                }
            };
            add(
                &status.sha256,
                &status.id,
                Validity::Current {
                    expires_at: status.expires_at.as_ref().map(|t| t.0),
                },
                0,
                status.leak.as_ref(),
            );
            // The CRD bounds `earlier` (MAX_EARLIER), so the rank fits a u8.
            let replaced = status.previous.iter().chain(&status.earlier);
            for (rank, prev) in (1..=u8::MAX).zip(replaced) {
                let validity = Validity::Previous {
                    valid_until: prev.valid_until.0,
                };
                add(&prev.sha256, &prev.id, validity, rank, prev.leak.as_ref());
            }
        }

        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = writer
            .by_key
            .take(key.identity.as_str())
            .map(|indexed| indexed.hashes)
            .unwrap_or_default();
        let hashes: Box<[TokenHash]> = fresh.iter().map(|f| f.hash).collect();
        for Fresh {
            hash,
            slot,
            position: status_position,
            replaced,
            id,
            validity,
            leaked,
            refused,
        } in fresh
        {
            let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
            let usage = shard
                .get(&hash)
                .filter(|e| !e.revoked && e.key.identity == key.identity)
                .map_or_else(Arc::default, |e| e.usage.clone());
            shard.insert(
                hash,
                Entry {
                    key: key.clone(),
                    slot,
                    status_position,
                    replaced,
                    id,
                    validity,
                    usage,
                    revoked: refused,
                    leaked,
                },
            );
        }
        for gone in old.iter().filter(|h| !hashes.contains(h)) {
            let mut shard = self.shard(gone).write().unwrap_or_else(|e| e.into_inner());
            match shard.get(gone) {
                // A leaked token the controller replaced answers REVOKED, like a deleted key's,
                // rather than NOT_FOUND: whoever still uses it learns why it stopped working.
                Some(e) if e.key.identity == key.identity && e.leaked && e.revoked => {
                    writer.tombstones.push_back((*gone, now + TOMBSTONE_TTL));
                }
                Some(e) if e.key.identity == key.identity => {
                    shard.remove(gone);
                }
                _ => {}
            }
        }
        self.prune(&mut writer, now);
        let tokens = hashes.len();
        self.live.fetch_add(tokens, Ordering::Relaxed);
        self.live.fetch_sub(old.len(), Ordering::Relaxed);
        if !hashes.is_empty() {
            writer.by_key.insert(Indexed {
                key: key.clone(),
                hashes,
            });
        }
        drop(writer);
        let tokens = if apikey.metadata.deletion_timestamp.is_some() {
            self.revoke(&key.namespace, &key.name, now);
            0
        } else {
            tokens
        };
        Applied {
            tokens,
            skipped,
            invalid,
            key,
        }
    }

    /// Stop accepting every token of `namespace/name` (deletionTimestamp set, or deleted): they
    /// answer REVOKED until their tombstone expires.
    pub fn revoke(&self, namespace: &str, name: &str, now: Timestamp) {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(Indexed { hashes, .. }) =
            writer.by_key.take(format!("{namespace}/{name}").as_str())
        else {
            return;
        };
        self.live.fetch_sub(hashes.len(), Ordering::Relaxed);
        for hash in hashes {
            let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = shard.get_mut(&hash) {
                entry.revoked = true;
                writer.tombstones.push_back((hash, now + TOMBSTONE_TTL));
            }
        }
        self.prune(&mut writer, now);
    }

    /// After a relist: revoke every indexed key not in `present` (deleted while the watch was
    /// down, so no Deleted event will come).
    pub fn retain(&self, present: &HashSet<(String, String)>, now: Timestamp) {
        let gone: Vec<(String, String)> = {
            let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            writer
                .by_key
                .iter()
                .map(|indexed| (indexed.key.namespace.clone(), indexed.key.name.clone()))
                .filter(|name| !present.contains(name))
                .collect()
        };
        for (namespace, name) in gone {
            self.revoke(&namespace, &name, now);
        }
    }

    /// Number of tokens that can verify (current and replaced, not revoked).
    pub fn tokens(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Decide a request: MALFORMED before any hashing, then the lookup, then
    /// [`decide`](super::decision::decide).
    pub fn verify<'a>(&self, request: &VerifyRequest<'a>, now: Timestamp) -> Verdict<'a> {
        let token_id = match token::validate(request.token) {
            Ok(parsed) => parsed.id(),
            Err(_) => {
                return Verdict {
                    code: Code::Malformed,
                    found: None,
                    token_id: None,
                };
            }
        };
        let hash = TokenHash::of(request.token);
        let entry = self
            .shard(&hash)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        let Some(entry) = entry else {
            return Verdict {
                code: Code::NotFound,
                found: None,
                token_id: Some(token_id),
            };
        };
        let code = if entry.revoked {
            Code::Revoked
        } else {
            decide(&entry.key, entry.slot.into(), entry.validity, request, now)
        };
        Verdict {
            code,
            token_id: Some(token_id),
            found: Some(Found {
                expires_at: entry.validity.ends_at(&entry.key),
                key: entry.key,
                slot: usize::from(entry.slot),
                status_position: entry.status_position as usize,
                replaced: usize::from(entry.replaced).checked_sub(1),
                hash,
                id: entry.id,
                usage: entry.usage,
                leaked: entry.leaked,
            }),
        }
    }

    fn shard(&self, hash: &TokenHash) -> &RwLock<Shard> {
        &self.shards[hash.shard()]
    }

    fn prune(&self, writer: &mut Writer, now: Timestamp) {
        while let Some(&(hash, until)) = writer.tombstones.front() {
            if until > now && writer.tombstones.len() <= MAX_TOMBSTONES {
                break;
            }
            writer.tombstones.pop_front();
            let mut shard = self.shard(&hash).write().unwrap_or_else(|e| e.into_inner());
            if shard.get(&hash).is_some_and(|e| e.revoked) {
                shard.remove(&hash);
            }
        }
    }
}

#[cfg(test)]
mod tests;
