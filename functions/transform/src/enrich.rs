//! Enrichment: each event gets its user's plan and region from the reference generation
//! current when its batch is processed. Per batch: one read of the generation pointer, and
//! one batched read of the buckets holding users not already cached for that generation.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use eventline_aws::reference::ReferenceStore;
use eventline_model::UserId;
use eventline_model::reference::ReferenceError;
use eventline_model::reference::{Generation, UserMeta, bucket_of};

/// The generation a batch is enriched from (0 before the first table), with the entries of
/// the batch's users that it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lookup {
    pub generation: u64,
    pub users: HashMap<UserId, UserMeta>,
}

pub trait Enricher: Send + Sync {
    fn lookup(&self, users: &[&UserId]) -> impl Future<Output = Result<Lookup, ReferenceError>> + Send;
}

/// The reference table in DynamoDB with the buckets already read, kept for as long as their
/// generation is current (a warm container reads each bucket once per generation).
pub struct CachedReference {
    store: ReferenceStore,
    cache: Mutex<Cache>,
}

/// Buckets by index, shared between the cache and the batches using them.
type Buckets = HashMap<u32, Arc<HashMap<UserId, UserMeta>>>;

#[derive(Default)]
struct Cache {
    generation_key: Option<String>,
    buckets: Buckets,
}

impl CachedReference {
    pub fn new(store: ReferenceStore) -> Self {
        Self { store, cache: Mutex::new(Cache::default()) }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves only a cache behind: use it anyway.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The buckets of `users` already cached for `generation` (the cache is reset when the
    /// generation changed), and the indexes of those that are not.
    fn cached(&self, generation: &Generation, users: &[&UserId]) -> (Buckets, Vec<u32>) {
        let mut cache = self.cache();
        if cache.generation_key.as_deref() != Some(&generation.key) {
            *cache = Cache { generation_key: Some(generation.key.clone()), buckets: HashMap::new() };
        }
        let needed: HashSet<u32> = users.iter().map(|u| bucket_of(u.as_str(), generation.buckets)).collect();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for index in needed {
            match cache.buckets.get(&index) {
                Some(bucket) => {
                    found.insert(index, bucket.clone());
                }
                None => missing.push(index),
            }
        }
        missing.sort_unstable();
        (found, missing)
    }
}

impl Enricher for CachedReference {
    #[tracing::instrument(skip_all, fields(users = users.len()))]
    async fn lookup(&self, users: &[&UserId]) -> Result<Lookup, ReferenceError> {
        let Some(generation) = self.store.current().await? else {
            return Ok(Lookup::default());
        };
        // Everything this batch uses is gathered here, for this generation only: another
        // batch (another shard, locally) may reset the shared cache to another generation.
        let (mut buckets, missing) = self.cached(&generation, users);
        if !missing.is_empty() {
            let read: Buckets = self
                .store
                .buckets(&generation, &missing)
                .await?
                .into_iter()
                .map(|(i, e)| (i, Arc::new(e.into_iter().collect())))
                .collect();
            let mut cache = self.cache();
            if cache.generation_key.as_deref() == Some(&generation.key) {
                cache.buckets.extend(read.iter().map(|(i, b)| (*i, Arc::clone(b))));
            }
            buckets.extend(read);
        }
        let mut found = HashMap::new();
        for user in users {
            let bucket = buckets.get(&bucket_of(user.as_str(), generation.buckets));
            if let Some(meta) = bucket.and_then(|b| b.get(*user)) {
                found.insert((*user).clone(), meta.clone());
            }
        }
        Ok(Lookup { generation: generation.number, users: found })
    }
}
