//! What a redrive found and did, for the report at the end and for tests.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::prepare::Adjustments;

/// At most this many skipped or failed items are listed one by one; the rest are counted.
pub const MAX_LISTED_PROBLEMS: usize = 1000;
/// Problems shown by the text report.
const SHOWN_PROBLEMS: usize = 20;
/// Reasons longer than this are cut when grouped.
const REASON_GROUP_CHARS: usize = 100;

/// Records by what became of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub found: u64,
    /// Passed every check: re-submitted or failed in a run, what would be re-submitted in a dry run.
    pub to_resubmit: u64,
    pub resubmitted: u64,
    /// Cannot or must not be re-submitted; the reason is among the problems.
    pub skipped: u64,
    /// Not taken by the stream within the retry budget.
    pub failed: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.found += other.found;
        self.to_resubmit += other.to_resubmit;
        self.resubmitted += other.resubmitted;
        self.skipped += other.skipped;
        self.failed += other.failed;
    }
}

/// The failure bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BucketSummary {
    /// Objects listed (after `--prefix` and `--since`).
    pub objects: u64,
    pub objects_read: u64,
    /// Objects that hold no records to re-submit (not an invocation record, no payload).
    pub objects_skipped: u64,
    /// Objects that could not be read.
    pub objects_failed: u64,
    pub objects_deleted: u64,
    pub objects_not_deleted: u64,
    /// Records per condition the event source mapping gave up with.
    pub conditions: BTreeMap<String, u64>,
    pub records: Tally,
}

/// The dead-letter queue; each message holds one record.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSummary {
    pub messages: u64,
    /// Messages deleted after their record was re-submitted.
    pub deleted: u64,
    /// Re-submitted, but the delete failed: the next run re-submits them again (harmless).
    pub not_deleted: u64,
    /// Skipped, failed or (in a dry run) all messages, made visible again when the run ended.
    pub left_in_queue: u64,
    /// Messages per reason the transform gave, alike reasons grouped (numbers masked).
    pub reasons: BTreeMap<String, u64>,
    /// Why reading the queue stopped before it was empty, if it did.
    pub stopped: Option<String>,
    pub records: Tally,
}

/// Changes made to records' data so that identities and counts stay exact (see `prepare`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Adjusted {
    pub ids_added: u64,
    pub timestamps_added: u64,
    pub ingest_ids_dropped: u64,
}

impl Adjusted {
    pub fn add(&mut self, adjustments: Adjustments) {
        self.ids_added += u64::from(adjustments.id_added);
        self.timestamps_added += u64::from(adjustments.timestamp_added);
        self.ingest_ids_dropped += u64::from(adjustments.ingest_id_dropped);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Skipped,
    Failed,
}

/// One item that was skipped or failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `object <key>`, `object <key> record <n>` or `message <id>`.
    pub item: String,
    pub kind: ProblemKind,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub dry_run: bool,
    /// `None` when the bucket was not read (`--from dlq`).
    pub bucket: Option<BucketSummary>,
    /// `None` when the queue was not read (`--from s3`).
    pub queue: Option<QueueSummary>,
    pub adjusted: Adjusted,
    pub problems: Vec<Problem>,
    pub problems_not_listed: u64,
}

impl Summary {
    /// Records from both sources.
    pub fn total(&self) -> Tally {
        let mut total = Tally::default();
        if let Some(bucket) = &self.bucket {
            total.add(&bucket.records);
        }
        if let Some(queue) = &self.queue {
            total.add(&queue.records);
        }
        total
    }

    /// Whether anything failed: a record not re-submitted, an object not read or not
    /// deleted, a message not deleted, or the queue not read to its end. Skipped items are
    /// not failures: they are input that cannot be re-submitted.
    pub fn has_failures(&self) -> bool {
        let bucket = self.bucket.as_ref().is_some_and(|b| b.objects_failed > 0 || b.objects_not_deleted > 0);
        let queue = self.queue.as_ref().is_some_and(|q| q.not_deleted > 0 || q.stopped.is_some());
        self.total().failed > 0 || bucket || queue
    }

    pub(crate) fn problem(&mut self, item: String, kind: ProblemKind, reason: impl Into<String>) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem { item, kind, reason: reason.into() });
        } else {
            self.problems_not_listed += 1;
        }
    }
}

/// A reason with its numbers masked and its length bounded, so that reasons differing only
/// in a byte offset or a value's length count together.
pub fn reason_group(reason: &str) -> String {
    let mut group = String::new();
    let mut in_number = false;
    for c in reason.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                group.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            group.push(c);
        }
        if group.chars().count() >= REASON_GROUP_CHARS {
            group.push('…');
            break;
        }
    }
    group
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: nothing was re-submitted, deleted or changed")?;
        }
        if let Some(bucket) = &self.bucket {
            writeln!(
                f,
                "failure bucket: {} objects ({} read, {} skipped, {} failed), {} records",
                bucket.objects,
                bucket.objects_read,
                bucket.objects_skipped,
                bucket.objects_failed,
                bucket.records.found
            )?;
            for (condition, records) in &bucket.conditions {
                writeln!(f, "  {condition}: {records} records")?;
            }
            if bucket.objects_deleted > 0 || bucket.objects_not_deleted > 0 {
                writeln!(
                    f,
                    "  {} objects deleted, {} not deleted",
                    bucket.objects_deleted, bucket.objects_not_deleted
                )?;
            }
        }
        if let Some(queue) = &self.queue {
            writeln!(
                f,
                "dead-letter queue: {} messages ({} deleted, {} left in the queue)",
                queue.messages, queue.deleted, queue.left_in_queue
            )?;
            let mut reasons: Vec<(&String, &u64)> = queue.reasons.iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            for (reason, count) in reasons {
                writeln!(f, "  {count} × {reason}")?;
            }
            if queue.not_deleted > 0 {
                writeln!(
                    f,
                    "  {} re-submitted but not deleted: the next run re-submits them again",
                    queue.not_deleted
                )?;
            }
            if let Some(why) = &queue.stopped {
                writeln!(f, "  stopped before the queue was empty: {why}")?;
            }
        }
        let adjusted = &self.adjusted;
        if *adjusted != Adjusted::default() {
            writeln!(
                f,
                "adjusted: {} ids and {} timestamps added from the first arrival, {} ingest ids dropped from dead-lettered records",
                adjusted.ids_added, adjusted.timestamps_added, adjusted.ingest_ids_dropped
            )?;
        }
        let resubmitted = if self.dry_run { "to re-submit" } else { "re-submitted" };
        writeln!(f, "{:<8}{:>10}{:>14}{:>10}{:>10}", "records", "found", resubmitted, "skipped", "failed")?;
        let mut row = |name: &str, t: &Tally| {
            let done = if self.dry_run { t.to_resubmit } else { t.resubmitted };
            writeln!(f, "{name:<8}{:>10}{done:>14}{:>10}{:>10}", t.found, t.skipped, t.failed)
        };
        if let Some(bucket) = &self.bucket {
            row("s3", &bucket.records)?;
        }
        if let Some(queue) = &self.queue {
            row("dlq", &queue.records)?;
        }
        row("total", &self.total())?;
        if !self.problems.is_empty() {
            writeln!(f, "skipped and failed:")?;
            for problem in self.problems.iter().take(SHOWN_PROBLEMS) {
                let kind = match problem.kind {
                    ProblemKind::Skipped => "skipped",
                    ProblemKind::Failed => "failed",
                };
                writeln!(f, "  {}: {kind}: {}", problem.item, problem.reason)?;
            }
            let more = (self.problems.len().saturating_sub(SHOWN_PROBLEMS)) as u64 + self.problems_not_listed;
            if more > 0 {
                writeln!(f, "  ... and {more} more (--json lists up to {MAX_LISTED_PROBLEMS})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_that_differ_only_in_numbers_group_together() {
        assert_eq!(reason_group("record data is not valid UTF-8 (byte 28)"), "record data is not valid UTF-N (byte N)");
        assert_eq!(
            reason_group("the stored item could be 512000 bytes"),
            reason_group("the stored item could be 411 bytes")
        );
        assert_eq!(reason_group(&"x".repeat(500)).chars().count(), REASON_GROUP_CHARS + 1);
    }

    #[test]
    fn failures_but_not_skips_make_a_run_fail() {
        let mut summary = Summary { queue: Some(QueueSummary::default()), ..Summary::default() };
        summary.queue.as_mut().unwrap().records.skipped = 3;
        assert!(!summary.has_failures());
        summary.queue.as_mut().unwrap().not_deleted = 1;
        assert!(summary.has_failures());
        let bucket = BucketSummary { records: Tally { failed: 1, ..Tally::default() }, ..BucketSummary::default() };
        assert!(Summary { bucket: Some(bucket), ..Summary::default() }.has_failures());
    }

    #[test]
    fn the_problem_list_is_bounded() {
        let mut summary = Summary::default();
        for n in 0..MAX_LISTED_PROBLEMS + 5 {
            summary.problem(format!("message {n}"), ProblemKind::Skipped, "truncated");
        }
        assert_eq!(summary.problems.len(), MAX_LISTED_PROBLEMS);
        assert_eq!(summary.problems_not_listed, 5);
        assert!(summary.to_string().contains("... and 985 more"), "{summary}");
    }
}
