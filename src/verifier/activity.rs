//! Recent activity per token, in this replica's memory: what `keysmith usage` shows.
//!
//! For every verification of a token the index knows (an unknown token has no owner to show it
//! to), [`Activity::record`] keeps the request in the token's ring of the last [`RING`] requests
//! (time, code, endpoint, client and end-user address, user agent, action, resource; never the
//! token) and counts it by answer code in 5-minute buckets for the last hour and hourly buckets
//! for the last day.
//!
//! Memory is bounded: every field has a fixed size (caller text is cut to [`MAX_USER_AGENT`],
//! [`MAX_ACTION`] and [`MAX_RESOURCE`] bytes and stored inline), a token's record is allocated
//! once, on its first use, and at most `max_tokens` tokens are tracked: beyond that a new token
//! replaces the one used least recently in its shard (one of [`SHARDS`]), or when its shard holds
//! none, in another. [`TOKEN_BYTES`] bounds one tracked token.
//!
//! The hot path allocates nothing once a token is tracked: it hashes the token id, locks one of
//! [`SHARDS`] mutexes for a map probe and a copy into the ring, and returns.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::audit::{Endpoint, Request};
use super::decision::Code;
use super::index::Found;

/// Requests kept per token.
pub const RING: usize = 10;
/// Longest user agent kept, in bytes (cut at a character boundary).
pub const MAX_USER_AGENT: usize = 96;
/// Longest action kept, in bytes.
pub const MAX_ACTION: usize = 48;
/// Longest resource kept, in bytes.
pub const MAX_RESOURCE: usize = 96;
/// Tokens tracked unless `--usage-max-tokens` says otherwise.
pub const DEFAULT_MAX_TOKENS: usize = 10_000;
/// Independently locked parts of the table.
pub const SHARDS: usize = 32;
/// Width of the last hour's buckets, in seconds.
const HOUR_BUCKET: i64 = 5 * 60;
/// Width of the last day's buckets, in seconds.
const DAY_BUCKET: i64 = 60 * 60;
/// Most memory one tracked token holds: its record, the map slot pointing at it and the
/// owner's names (ApiKey namespace and name, slot: at most 253 + 253 + 63 bytes).
pub const TOKEN_BYTES: usize = std::mem::size_of::<Tracked>() + MAP_SLOT + NAMES;
/// A map slot (id pointer and record pointer) with the map's spare capacity (up to 2x).
const MAP_SLOT: usize = 2 * (std::mem::size_of::<(Arc<str>, Box<Tracked>)>() + 1);
/// The longest namespace, ApiKey name and slot name.
const NAMES: usize = 253 + 253 + 63;

/// Text cut to `N` bytes at a character boundary, control characters replaced by `?` (one
/// request stays one line wherever it is printed); stored inline so recording never allocates.
#[derive(Clone, Copy)]
struct Text<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    const EMPTY: Text<N> = Text {
        len: 0,
        bytes: [0; N],
    };

    fn new(value: Option<&str>) -> Text<N> {
        let value = value.unwrap_or("");
        let mut cut = value.len().min(N).min(u8::MAX as usize);
        while !value.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &value.as_bytes()[..cut];
        // C0 controls and DEL are single bytes; C1 controls (U+0080..U+009F) start with 0xC2.
        if head.iter().any(|&b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return Text::replacing_controls(value);
        }
        let mut text = Text::EMPTY;
        text.bytes[..cut].copy_from_slice(head);
        text.len = cut as u8;
        text
    }

    /// [`Text::new`] character by character, for text that holds a control character.
    fn replacing_controls(value: &str) -> Text<N> {
        let mut text = Text::EMPTY;
        let mut len = 0;
        for c in value.chars() {
            let c = if c.is_control() { '?' } else { c };
            if len + c.len_utf8() > N.min(u8::MAX as usize) {
                break;
            }
            len += c.encode_utf8(&mut text.bytes[len..]).len();
        }
        text.len = len as u8;
        text
    }

    fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

/// One recorded request.
#[derive(Clone, Copy)]
struct Seen {
    at: Timestamp,
    code: Code,
    endpoint: Endpoint,
    client: Option<IpAddr>,
    end_user: Option<IpAddr>,
    user_agent: Text<MAX_USER_AGENT>,
    action: Text<MAX_ACTION>,
    resource: Text<MAX_RESOURCE>,
}

/// Counts by code in `N` buckets of `WIDTH` seconds: bucket `i` holds the period `p` with
/// `p % N == i`, and a stale period is cleared when its bucket is reused.
#[derive(Clone, Copy)]
struct Buckets<const N: usize, const WIDTH: i64> {
    period: [i64; N],
    counts: [[u32; Code::ALL.len()]; N],
}

impl<const N: usize, const WIDTH: i64> Buckets<N, WIDTH> {
    const EMPTY: Self = Buckets {
        period: [i64::MIN; N],
        counts: [[0; Code::ALL.len()]; N],
    };

    fn add(&mut self, at: Timestamp, code: Code) {
        let period = at.as_second().div_euclid(WIDTH);
        let i = period.rem_euclid(N as i64) as usize;
        if self.period[i] != period {
            self.period[i] = period;
            self.counts[i] = [0; Code::ALL.len()];
        }
        let count = &mut self.counts[i][code.index()];
        *count = count.saturating_add(1);
    }

    /// Counts by code over the `N` periods up to and including `now`'s.
    fn total(&self, now: Timestamp) -> [u64; Code::ALL.len()] {
        let current = now.as_second().div_euclid(WIDTH);
        let mut total = [0u64; Code::ALL.len()];
        for (period, counts) in self.period.iter().zip(&self.counts) {
            if *period <= current && *period > current - N as i64 {
                for (sum, n) in total.iter_mut().zip(counts) {
                    *sum += u64::from(*n);
                }
            }
        }
        total
    }
}

/// Everything kept about one token.
struct Tracked {
    namespace: Box<str>,
    name: Box<str>,
    slot: Box<str>,
    last_used: Timestamp,
    /// The ring, oldest overwritten first; `next` is where the next request goes.
    recent: [Option<Seen>; RING],
    next: usize,
    hour: Buckets<12, HOUR_BUCKET>,
    day: Buckets<24, DAY_BUCKET>,
}

impl Tracked {
    fn new(found: &Found) -> Box<Tracked> {
        Box::new(Tracked {
            namespace: found.key.namespace.as_str().into(),
            name: found.key.name.as_str().into(),
            slot: found.slot_name().into(),
            last_used: Timestamp::MIN,
            recent: [None; RING],
            next: 0,
            hour: Buckets::EMPTY,
            day: Buckets::EMPTY,
        })
    }

    fn belongs_to(&self, found: &Found) -> bool {
        *self.namespace == found.key.namespace
            && *self.name == found.key.name
            && &*self.slot == found.slot_name()
    }

    fn add(&mut self, seen: Seen) {
        self.last_used = self.last_used.max(seen.at);
        self.hour.add(seen.at, seen.code);
        self.day.add(seen.at, seen.code);
        self.recent[self.next] = Some(seen);
        self.next = (self.next + 1) % RING;
    }
}

type Shard = HashMap<Arc<str>, Box<Tracked>>;

/// Recent activity of every used token, bounded; shared by the endpoints behind `&self`.
pub struct Activity {
    shards: Box<[Mutex<Shard>]>,
    max_tokens: usize,
    /// Tokens tracked, over every shard.
    tracked: AtomicUsize,
    hasher: RandomState,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new(DEFAULT_MAX_TOKENS)
    }
}

impl Activity {
    /// Track at most `max_tokens` tokens; 0 tracks none.
    pub fn new(max_tokens: usize) -> Activity {
        Activity {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_tokens,
            tracked: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, id: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// Note one verification of `found` answered `code` at `now`.
    pub fn record(&self, found: &Found, code: Code, request: &Request<'_>, now: Timestamp) {
        if self.max_tokens == 0 {
            return;
        }
        let seen = Seen {
            at: now,
            code,
            endpoint: request.endpoint,
            client: request.client,
            end_user: request.end_user,
            user_agent: Text::new(request.user_agent),
            action: Text::new(request.action),
            resource: Text::new(request.resource),
        };
        let mut shard = self
            .shard(&found.id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match shard.get_mut(&found.id) {
            // A token id names one token; a record left by another key's token of the same id
            // (a deleted key's name reused) starts over.
            Some(tracked) if tracked.belongs_to(found) => tracked.add(seen),
            Some(tracked) => {
                *tracked = Tracked::new(found);
                tracked.add(seen);
            }
            None => {
                // Counted under the shard's lock, so two shards cannot both take the last place.
                if self.tracked.fetch_add(1, Ordering::Relaxed) >= self.max_tokens {
                    self.tracked.fetch_sub(1, Ordering::Relaxed);
                    if !evict_least_recent(&mut shard) && !self.evict_elsewhere() {
                        return;
                    }
                }
                let mut tracked = Tracked::new(found);
                tracked.add(seen);
                shard.insert(found.id.clone(), tracked);
            }
        }
    }

    /// What this replica saw of the tokens of ApiKey `namespace`/`name`: counts for the hour
    /// and the day up to `now`, and the requests since `since`, newest first.
    pub fn of_key(
        &self,
        namespace: &str,
        name: &str,
        since: Timestamp,
        now: Timestamp,
    ) -> Vec<TokenActivity> {
        let mut tokens = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (id, tracked) in shard.iter() {
                if &*tracked.namespace == namespace && &*tracked.name == name {
                    tokens.push(report(id, tracked, since, now));
                }
            }
        }
        tokens.sort_by(|a, b| (&a.token, &a.id).cmp(&(&b.token, &b.id)));
        tokens
    }

    /// Forget the least recently used token of another shard that is free now (never waiting:
    /// the caller holds a shard's lock).
    fn evict_elsewhere(&self) -> bool {
        self.shards.iter().any(|shard| {
            shard
                .try_lock()
                .is_ok_and(|mut shard| evict_least_recent(&mut shard))
        })
    }

    /// Tokens tracked now.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }
}

/// Forget the least recently used token of `shard`; false when it holds none.
fn evict_least_recent(shard: &mut Shard) -> bool {
    let oldest = shard
        .iter()
        .min_by_key(|(_, tracked)| tracked.last_used)
        .map(|(id, _)| id.clone());
    oldest.is_some_and(|id| shard.remove(&id).is_some())
}

fn report(id: &str, tracked: &Tracked, since: Timestamp, now: Timestamp) -> TokenActivity {
    let mut recent: Vec<RecentRequest> = tracked
        .recent
        .iter()
        .flatten()
        .filter(|seen| seen.at >= since)
        .map(RecentRequest::from)
        .collect();
    recent.sort_by_key(|r| std::cmp::Reverse(r.time));
    TokenActivity {
        token: tracked.slot.to_string(),
        id: id.to_owned(),
        last_used_at: (tracked.last_used != Timestamp::MIN).then_some(tracked.last_used),
        last_hour: by_code(tracked.hour.total(now)),
        last_day: by_code(tracked.day.total(now)),
        recent,
    }
}

fn by_code(counts: [u64; Code::ALL.len()]) -> Counts {
    Code::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(code, n)| (code.as_str().to_owned(), n))
        .collect()
}

/// Verifications by answer code (`VALID`, `FORBIDDEN`, ...); codes never answered are absent.
pub type Counts = std::collections::BTreeMap<String, u64>;

/// What is known of one token: the body of an `ApiKeyUsage`'s `tokens[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenActivity {
    /// Slot name (`spec.tokens[].name`).
    pub token: String,
    /// The token's public id (never the token).
    pub id: String,
    /// Last verification seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Timestamp>,
    /// Verifications in the last hour (to 5 minutes), by code.
    #[serde(default)]
    pub last_hour: Counts,
    /// Verifications in the last day (to an hour), by code.
    #[serde(default)]
    pub last_day: Counts,
    /// Recent requests, newest first.
    #[serde(default)]
    pub recent: Vec<RecentRequest>,
}

/// One recent request as shown to the key's owners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentRequest {
    /// When it was answered.
    pub time: Timestamp,
    /// The answer code.
    pub code: String,
    /// `verify`, `authz` or `tokenreview`.
    pub endpoint: String,
    /// Who sent it (the TCP peer, or the client a trusted proxy names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// The end user's address a `/v1/verify` body named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<IpAddr>,
    /// `User-Agent`, cut to [`MAX_USER_AGENT`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    /// Action asked, cut to [`MAX_ACTION`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// Resource asked, cut to [`MAX_RESOURCE`] bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// The replica that answered it (filled in when replicas' answers are merged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
}

impl From<&Seen> for RecentRequest {
    fn from(seen: &Seen) -> Self {
        RecentRequest {
            time: seen.at,
            code: seen.code.as_str().to_owned(),
            endpoint: seen.endpoint.as_str().to_owned(),
            client: seen.client,
            end_user: seen.end_user,
            user_agent: seen.user_agent.as_str().to_owned(),
            action: seen.action.as_str().to_owned(),
            resource: seen.resource.as_str().to_owned(),
            replica: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::verifier::index::Index;

    /// The `Found` of slot `slot` of ApiKey `ns`/`name`, as the index gives it.
    fn found(ns: &str, name: &str, slot: &str) -> Found {
        let token =
            crate::token::Token::generate("ks_", 32, crate::api::Encoding::Base62).expect("token");
        let apikey: crate::api::ApiKey = serde_json::from_value(serde_json::json!({
            "apiVersion": "keysmith.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"tokens": [{"name": slot, "prefix": "ks_"}]},
            "status": {"tokens": [{"name": slot, "id": token.id(), "sha256": token.sha256_hex(),
                "issuedAt": "2026-11-01T00:00:00Z"}]},
        }))
        .expect("ApiKey");
        let index = Index::default();
        let now: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        index.apply(&apikey, now);
        index
            .verify(
                &crate::verifier::decision::VerifyRequest::token(token.expose_secret()),
                now,
            )
            .found
            .expect("indexed token is found")
    }

    fn request<'a>(user_agent: &'a str, action: &'a str) -> Request<'a> {
        Request {
            endpoint: Endpoint::Authz,
            client: Some("203.0.113.7".parse().unwrap()),
            end_user: None,
            user_agent: Some(user_agent),
            action: Some(action),
            resource: Some("content:pages"),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_without_control_characters() {
        assert_eq!(Text::<8>::new(Some("curl/8")).as_str(), "curl/8");
        assert_eq!(Text::<8>::new(Some("a\nb")).as_str(), "a?b");
        assert_eq!(Text::<8>::new(Some("ééééé")).as_str(), "éééé");
        assert_eq!(Text::<7>::new(Some("ééééé")).as_str(), "ééé");
        assert_eq!(Text::<8>::new(None).as_str(), "");
        assert_eq!(Text::<8>::new(Some("a\u{85}bcdefgh")).as_str(), "a?bcdefg");
        assert_eq!(Text::<8>::new(Some("\u{7f}")).as_str(), "?");
    }

    #[test]
    fn the_ring_keeps_the_last_requests_newest_first() {
        let activity = Activity::new(100);
        let f = found("team", "billing", "primary");
        let t0 = at("2026-11-26T10:00:00Z");
        for i in 0..RING as i64 + 3 {
            let action = format!("a{i}");
            let now = t0 + jiff::SignedDuration::from_secs(i);
            activity.record(&f, Code::Valid, &request("curl/8", &action), now);
        }
        let now = t0 + jiff::SignedDuration::from_mins(1);
        let tokens = activity.of_key("team", "billing", Timestamp::MIN, now);
        assert_eq!(tokens.len(), 1);
        let token = &tokens[0];
        assert_eq!(token.token, "primary");
        assert_eq!(token.id, &*f.id);
        let actions: Vec<&str> = token.recent.iter().map(|r| r.action.as_str()).collect();
        let expected: Vec<String> = (3..RING + 3).rev().map(|i| format!("a{i}")).collect();
        assert_eq!(actions, expected);
        assert_eq!(token.last_hour["VALID"], RING as u64 + 3);
        assert_eq!(token.recent[0].client, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(token.recent[0].endpoint, "authz");
        assert_eq!(
            token.last_used_at,
            Some(t0 + jiff::SignedDuration::from_secs(RING as i64 + 2))
        );
        // `since` filters the requests, not the counts.
        let later = activity.of_key("team", "billing", now, now);
        assert!(later[0].recent.is_empty());
        assert_eq!(later[0].last_hour["VALID"], RING as u64 + 3);
        assert!(
            activity
                .of_key("team", "other", Timestamp::MIN, now)
                .is_empty()
        );
    }

    #[test]
    fn counts_leave_the_hour_and_the_day_as_time_passes() {
        let activity = Activity::new(100);
        let f = found("team", "billing", "primary");
        let t0 = at("2026-11-26T10:00:00Z");
        activity.record(&f, Code::Valid, &request("a", "b"), t0);
        activity.record(&f, Code::Forbidden, &request("a", "b"), t0);
        let counts = |now| {
            let t = &activity.of_key("team", "billing", Timestamp::MIN, now)[0];
            (t.last_hour.clone(), t.last_day.clone())
        };
        let (hour, day) = counts(t0 + jiff::SignedDuration::from_mins(30));
        assert_eq!(
            hour,
            Counts::from([("FORBIDDEN".into(), 1), ("VALID".into(), 1)])
        );
        assert_eq!(day, hour);
        let (hour, day) = counts(t0 + jiff::SignedDuration::from_mins(65));
        assert!(hour.is_empty());
        assert_eq!(day.len(), 2);
        let (hour, day) = counts(t0 + jiff::SignedDuration::from_hours(25));
        assert!(hour.is_empty() && day.is_empty());
        // A bucket reused a day later counts only the new period.
        let t1 = t0 + jiff::SignedDuration::from_hours(24);
        activity.record(&f, Code::Valid, &request("a", "b"), t1);
        let (hour, day) = counts(t1);
        assert_eq!(hour, Counts::from([("VALID".into(), 1)]));
        assert_eq!(day, hour);
    }

    #[test]
    fn beyond_the_cap_the_least_recently_used_token_is_forgotten() {
        let cap = 5;
        let activity = Activity::new(cap);
        let t0 = at("2026-11-26T10:00:00Z");
        let keys: Vec<Found> = (0..SHARDS * 2)
            .map(|i| found("team", &format!("k{i}"), "primary"))
            .collect();
        let now = t0 + jiff::SignedDuration::from_hours(1);
        let listed = |name: &str| activity.of_key("team", name, Timestamp::MIN, now).len();
        for (i, f) in keys.iter().enumerate() {
            let at = t0 + jiff::SignedDuration::from_secs(i as i64);
            activity.record(f, Code::Valid, &request("a", "b"), at);
            assert_eq!(activity.tracked(), cap.min(i + 1));
            // The token just used is always kept.
            assert_eq!(listed(&format!("k{i}")), 1, "k{i}");
        }
        let total: usize = (0..keys.len()).map(|i| listed(&format!("k{i}"))).sum();
        assert_eq!(total, cap);
        let none = Activity::new(0);
        none.record(&keys[0], Code::Valid, &request("a", "b"), t0);
        assert_eq!(none.tracked(), 0);
    }

    #[test]
    fn a_token_id_reused_by_another_key_starts_over() {
        let activity = Activity::new(100);
        let first = found("team", "old", "primary");
        let mut second = found("team", "new", "primary");
        second.id = first.id.clone();
        let t0 = at("2026-11-26T10:00:00Z");
        activity.record(&first, Code::Valid, &request("a", "b"), t0);
        activity.record(&second, Code::Forbidden, &request("a", "b"), t0);
        assert!(
            activity
                .of_key("team", "old", Timestamp::MIN, t0)
                .is_empty()
        );
        let new = &activity.of_key("team", "new", Timestamp::MIN, t0)[0];
        assert_eq!(new.last_hour, Counts::from([("FORBIDDEN".into(), 1)]));
    }

    proptest! {
        #[test]
        fn recorded_text_is_bounded_and_a_prefix_of_the_input(ua in ".{0,300}", action in ".{0,100}") {
            let activity = Activity::new(10);
            let f = found("team", "k", "primary");
            let t0 = at("2026-11-26T10:00:00Z");
            activity.record(&f, Code::Valid, &request(&ua, &action), t0);
            let seen = activity.of_key("team", "k", Timestamp::MIN, t0)[0].recent[0].clone();
            prop_assert!(seen.user_agent.len() <= MAX_USER_AGENT);
            prop_assert!(seen.action.len() <= MAX_ACTION);
            let clean: String = ua.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
            prop_assert!(clean.starts_with(&seen.user_agent));
            // Cut only when the next character would not fit.
            let rest = &clean[seen.user_agent.len()..];
            prop_assert!(rest.chars().next().is_none_or(|c| seen.user_agent.len() + c.len_utf8() > MAX_USER_AGENT));
        }

        #[test]
        fn hour_counts_equal_the_requests_of_the_last_hour_to_the_bucket(
            offsets in proptest::collection::vec(0i64..3 * 3600, 1..60),
        ) {
            let activity = Activity::new(10);
            let f = found("team", "k", "primary");
            let t0 = at("2026-11-26T10:00:00Z");
            let mut sorted = offsets.clone();
            sorted.sort();
            for s in &sorted {
                activity.record(&f, Code::Valid, &request("a", "b"), t0 + jiff::SignedDuration::from_secs(*s));
            }
            let now = t0 + jiff::SignedDuration::from_secs(3 * 3600);
            let got = activity.of_key("team", "k", Timestamp::MIN, now)[0].last_hour.get("VALID").copied().unwrap_or(0);
            // Buckets are 5-minute periods: the hour is the current period and the 11 before it.
            let first = (now.as_second().div_euclid(HOUR_BUCKET) - 11) * HOUR_BUCKET;
            let expected = sorted.iter().filter(|s| (t0.as_second() + **s) >= first).count() as u64;
            prop_assert_eq!(got, expected);
        }
    }
}
