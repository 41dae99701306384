//! What a shard's transform counts of the records it takes, by outcome: the transform adds a
//! commit's counts to its shard's counter item, and the query function reads them back as
//! that shard's totals.

use crate::latency::Histogram;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes {
    /// Records that did not come through ingest (another producer wrote them to the
    /// stream), so nothing counted them received: they are counted here, once, with their
    /// outcome, and the queue depth still drains to 0.
    pub received_direct: u64,
    pub processed: u64,
    pub duplicate: u64,
    pub conflict: u64,
    pub failed: u64,
    pub latency_sum_ms: u64,
    pub latency: Histogram,
}
