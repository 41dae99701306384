//! The received counter in memory, for tests and benches that need no AWS (the stream's is
//! `eventline_model::memory::MemoryStream`).

use std::collections::HashSet;
use std::sync::Mutex;

use eventline_model::IngestId;

use crate::counter::{CounterError, ReceivedCounter};

/// Counts once per request token, as the marker in DynamoDB does.
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

    /// Requests counted, each once.
    pub fn requests(&self) -> usize {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

impl ReceivedCounter for MemoryCounter {
    async fn add(&self, request: &IngestId, accepted: u64) -> Result<(), CounterError> {
        let first = self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(request.clone());
        if first {
            *self.total.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) += accepted;
        }
        Ok(())
    }
}
