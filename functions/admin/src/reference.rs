//! `PUT /reference/users`: replace the user reference table as a whole.

use std::future::Future;

use eventline_aws::reference::ReferenceStore;
use eventline_model::reference::ReferenceError;
use eventline_model::reference::{Generation, ReferenceTable};

/// Largest table body: Lambda takes at most 6 MB per synchronous request.
pub const MAX_REFERENCE_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Where reference tables are stored.
pub trait ReferenceWriter: Send + Sync {
    /// Makes `table` the current generation unless the current one is as new or newer.
    fn replace(&self, table: &ReferenceTable) -> impl Future<Output = Result<Generation, ReferenceError>> + Send;
}

impl ReferenceWriter for ReferenceStore {
    async fn replace(&self, table: &ReferenceTable) -> Result<Generation, ReferenceError> {
        ReferenceStore::replace(self, table).await
    }
}
