//! The received counter in memory, for tests and benches that need no AWS (the stream's is
//! `eventline_model::memory::MemoryStream`).

use std::collections::HashSet;
use std::sync::Mutex;

use eventline_model::IngestId;

use crate::counter::{CounterError, ReceivedCounter};

/// Counts every call, and keeps the distinct request tokens it was called with.
#[derive(Debug, Default)]
pub struct MemoryCounter {
    total: Mutex<u64>,
    requests: Mutex<HashSet<IngestId>>,
}

impl MemoryCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events counted received.
    pub fn total(&self) -> u64 {
        *self.total.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Distinct request tokens counted.
    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

impl ReceivedCounter for MemoryCounter {
    async fn add(&self, request: &IngestId, accepted: u64) -> Result<(), CounterError> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(request.clone());
        *self.total.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += accepted;
        Ok(())
    }
}
