//! `keysmith verifier`: the verification API of SPEC section 5.
//!
//! Pure core: [`key`] (what one ApiKey means to the verifier), [`decision`] (the decision
//! order), [`index`] (hash → token map with tombstones), [`client_ip`] (trusted proxies),
//! [`throttle`] (slowing repeated failures). Shell: [`http`] (the endpoints), [`headers`]
//! (required header values from Secrets), [`usage`] (`lastUsedAt` write-back), [`audit`] (one
//! line per verification), [`metrics`], and the watcher and servers wired here.

pub mod decision;
pub mod index;
pub mod key;
pub mod usage;
