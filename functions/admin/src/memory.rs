//! The reference table in memory, for tests that need no AWS.

use std::sync::Mutex;

use eventline_model::reference::ReferenceError;
use eventline_model::reference::{Generation, ReferenceTable};

use crate::reference::ReferenceWriter;

/// Keeps the current generation, refusing tables that are not newer, as the store does.
#[derive(Debug, Default)]
pub struct MemoryReference(Mutex<Option<Generation>>);

impl MemoryReference {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation, `None` before the first table.
    pub fn current(&self) -> Option<Generation> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ReferenceWriter for MemoryReference {
    async fn replace(&self, table: &ReferenceTable) -> Result<Generation, ReferenceError> {
        let mut current = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(current) = current.as_ref().filter(|c| c.ts >= table.ts) {
            return Err(ReferenceError::Stale(current.clone()));
        }
        let next = Generation {
            number: current.as_ref().map_or(1, |c| c.number + 1),
            key: "k".into(),
            ts: table.ts,
            users: table.users.len() as u64,
            buckets: 1,
        };
        *current = Some(next.clone());
        Ok(next)
    }
}
