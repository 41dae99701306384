//! What the write-key routes need besides the stream: the keys (for a key in the body, which
//! no authorizer sees), each key's rate, and the origins the deployment's CORS allows.

use std::time::Duration;

use eventline_model::memory::{MemoryKeys, MemoryRateLedger};
use eventline_model::rate::{RateLedger, RateLimiter};
use eventline_model::write_key::{CachedKeys, KeyStore};

pub struct WriteKeyGate<K, L> {
    pub keys: K,
    pub rate: RateLimiter<L>,
    /// `CorsAllowedOrigins`: the origins any key's browsers may send from, unless the key
    /// names its own.
    pub cors_origins: Vec<String>,
}

impl<K: KeyStore, L: RateLedger> WriteKeyGate<CachedKeys<K>, L> {
    /// Keys read through a cache of `ttl` (the authorizer's cache TTL, so a revoked key stops
    /// working on both paths within the same time).
    pub fn new(keys: K, ledger: L, ttl: Duration, cors_origins: Vec<String>) -> Self {
        Self { keys: CachedKeys::new(keys, ttl), rate: RateLimiter::new(ledger), cors_origins }
    }
}

impl WriteKeyGate<MemoryKeys, MemoryRateLedger> {
    /// No keys, and a ledger in memory: for tests and benches of the other routes.
    pub fn in_memory() -> Self {
        Self {
            keys: MemoryKeys::default(),
            rate: RateLimiter::new(MemoryRateLedger::default()),
            cors_origins: Vec::new(),
        }
    }
}
