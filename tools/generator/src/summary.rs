//! Results of a `load` or `replay` run: counts, rates and request latency percentiles.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Distinct error messages kept in a summary; later new ones are counted under "other".
const MAX_ERROR_KINDS: usize = 20;

/// The `p`-th percentile (0–100) of sorted values by the nearest-rank method.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Request latency, in milliseconds, over every HTTP attempt including retries.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub requests: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Latency {
    /// Sorts `samples_ms` in place and summarises them.
    pub fn from_samples(samples_ms: &mut [f64]) -> Self {
        samples_ms.sort_by(f64::total_cmp);
        Self {
            requests: samples_ms.len() as u64,
            p50: percentile(samples_ms, 50.0),
            p95: percentile(samples_ms, 95.0),
            p99: percentile(samples_ms, 99.0),
            max: samples_ms.last().copied(),
        }
    }

    fn text(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
        format!("p50 {}  p95 {}  p99 {}  max {}", ms(self.p50), ms(self.p95), ms(self.p99), ms(self.max))
    }
}

/// Counts of error messages, bounded in the number of distinct keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ErrorCounts(pub BTreeMap<String, u64>);

impl ErrorCounts {
    pub fn add(&mut self, message: &str, n: u64) {
        if n == 0 {
            return;
        }
        let key = if self.0.contains_key(message) || self.0.len() < MAX_ERROR_KINDS {
            message.to_owned()
        } else {
            "other".to_owned()
        };
        *self.0.entry(key).or_default() += n;
    }
}

/// What the API answered to `PUT /reference/users`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReferenceUpload {
    /// The table's generation as the API numbers it (kept as given: a number or a string).
    pub generation: serde_json::Value,
    /// Users the API says the table holds.
    pub users: u64,
}

impl ReferenceUpload {
    /// Reads `{"generation": …, "users": N}` from a 200 answer.
    pub fn from_answer(body: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the 200 answer is not JSON: {e}"))?;
        let generation = match value.get("generation") {
            Some(g @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => g.clone(),
            _ => return Err("the 200 answer has no \"generation\" number or string".into()),
        };
        let users =
            value.get("users").and_then(serde_json::Value::as_u64).ok_or("the 200 answer has no \"users\" count")?;
        Ok(Self { generation, users })
    }

    /// The generation as plain text, without the quotes of a JSON string.
    pub fn generation_text(&self) -> String {
        match &self.generation {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// The outcome of a load run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The API's answer to the reference table sent before the events, if one was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceUpload>,
    /// Events put in a request at least once.
    pub sent: u64,
    /// Events the API accepted (202, or "accepted" in a 207).
    pub accepted: u64,
    /// Events the API refused as invalid (400/413, "rejected" in a 207, or listed in the
    /// `refused` of a `/v1/batch` answer).
    pub rejected: u64,
    /// Events that could not be delivered: "failed" in a 207, 503 after every retry, other
    /// statuses, connection errors and timeouts.
    pub failed: u64,
    /// Whether accepted events were looked up afterwards.
    pub verification: bool,
    /// Accepted events found in the table.
    pub verified: u64,
    /// Accepted events still not found when the verification timeout passed.
    pub unverified: u64,
    /// Accepted events that could not be looked up because neither the request nor the
    /// response named their id and source.
    pub unverifiable: u64,
    /// Batches sent again after a 503 or 429 (or any 5xx from `/v1/batch`).
    pub retries: u64,
    /// Wall time from the first request to the last response.
    pub send_seconds: f64,
    /// `sent / send_seconds`.
    pub events_per_second: f64,
    /// `verified / sent` when verifying, `accepted / sent` otherwise.
    pub success_rate: f64,
    pub latency_ms: Latency,
    pub verify_seconds: f64,
    /// Why events were rejected or failed, with counts.
    pub errors: ErrorCounts,
    /// The body of `GET {url}/metrics` after the run, when it answered with JSON.
    pub metrics: Option<serde_json::Value>,
}

impl Summary {
    /// True when no accepted event went missing.
    pub fn all_verified(&self) -> bool {
        self.unverified == 0
    }

    /// True when events were sent but every one failed (unreachable API, wrong URL, …), as
    /// opposed to being answered as accepted or rejected.
    pub fn nothing_delivered(&self) -> bool {
        self.sent > 0 && self.failed == self.sent
    }

    /// Fills the derived figures from the counts.
    pub fn finish_rates(&mut self) {
        self.events_per_second = if self.send_seconds > 0.0 { self.sent as f64 / self.send_seconds } else { 0.0 };
        let good = if self.verification { self.verified } else { self.accepted };
        self.success_rate = if self.sent > 0 { good as f64 / self.sent as f64 } else { 0.0 };
    }

    pub fn to_json(&self) -> String {
        // Serialising plain numbers, strings and maps cannot fail.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(reference) = &self.reference {
            let _ = writeln!(s, "reference   generation {}, {} users", reference.generation_text(), reference.users);
        }
        let _ = writeln!(
            s,
            "sent        {} events in {:.2} s ({:.1} events/s)",
            self.sent, self.send_seconds, self.events_per_second
        );
        let _ = writeln!(s, "accepted    {}", self.accepted);
        let _ = writeln!(s, "rejected    {}", self.rejected);
        let _ = writeln!(s, "failed      {}", self.failed);
        if self.verification {
            let _ = writeln!(
                s,
                "verified    {} of {} accepted ({:.2} s)",
                self.verified, self.accepted, self.verify_seconds
            );
            let _ = writeln!(s, "not found   {}", self.unverified);
            if self.unverifiable > 0 {
                let _ = writeln!(s, "no id       {} (accepted, could not be looked up)", self.unverifiable);
            }
        } else {
            let _ = writeln!(s, "verified    skipped");
        }
        let basis = if self.verification { "verified" } else { "accepted" };
        let _ = writeln!(s, "success     {:.2} % ({basis} / sent)", self.success_rate * 100.0);
        let _ = writeln!(
            s,
            "latency     {}  ({} requests, {} retries)",
            self.latency_ms.text(),
            self.latency_ms.requests,
            self.retries
        );
        for (message, n) in &self.errors.0 {
            let _ = writeln!(s, "error       {n} × {message}");
        }
        if let Some(metrics) = &self.metrics {
            let _ = writeln!(s, "metrics     {metrics}");
        }
        s.trim_end().to_owned()
    }
}

/// The line printed every few seconds while sending.
pub fn live_line(elapsed_secs: f64, sent: u64, accepted: u64, rejected: u64, failed: u64, latency: &Latency) -> String {
    let rate = if elapsed_secs > 0.0 { sent as f64 / elapsed_secs } else { 0.0 };
    format!(
        "[{elapsed_secs:6.1}s] sent {sent} accepted {accepted} rejected {rejected} failed {failed} | {rate:.1} events/s | {}",
        latency.text()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(50.0));
        assert_eq!(percentile(&values, 95.0), Some(95.0));
        assert_eq!(percentile(&values, 99.0), Some(99.0));
        assert_eq!(percentile(&values, 100.0), Some(100.0));
        assert_eq!(percentile(&values, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Four samples: p50 is the 2nd, p95 and p99 the 4th.
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 95.0), Some(4.0));
    }

    #[test]
    fn latency_summary_sorts_unsorted_samples() {
        let mut samples = vec![30.0, 10.0, 20.0];
        let latency = Latency::from_samples(&mut samples);
        assert_eq!(latency.requests, 3);
        assert_eq!(latency.p50, Some(20.0));
        assert_eq!(latency.max, Some(30.0));
    }

    #[test]
    fn success_rate_uses_verified_only_when_verifying() {
        let mut summary = Summary {
            sent: 200,
            accepted: 150,
            verified: 100,
            verification: true,
            send_seconds: 4.0,
            ..Summary::default()
        };
        summary.finish_rates();
        assert_eq!(summary.success_rate, 0.5);
        assert_eq!(summary.events_per_second, 50.0);
        summary.verification = false;
        summary.finish_rates();
        assert_eq!(summary.success_rate, 0.75);
    }

    #[test]
    fn error_kinds_are_capped() {
        let mut errors = ErrorCounts::default();
        for i in 0..30 {
            errors.add(&format!("e{i}"), 1);
        }
        errors.add("e0", 2);
        assert_eq!(errors.0.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(errors.0.get("other"), Some(&10));
        assert_eq!(errors.0.get("e0"), Some(&3));
    }

    #[test]
    fn json_summary_has_every_count() {
        let summary = Summary { sent: 3, accepted: 2, rejected: 1, ..Summary::default() };
        let v: serde_json::Value = serde_json::from_str(&summary.to_json()).unwrap_or_default();
        for key in [
            "sent",
            "accepted",
            "rejected",
            "failed",
            "verified",
            "unverified",
            "events_per_second",
            "success_rate",
            "latency_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["rejected"], 1);
    }

    #[test]
    fn text_summary_reports_missing_events() {
        let summary =
            Summary { sent: 10, accepted: 10, verified: 8, unverified: 2, verification: true, ..Summary::default() };
        let text = summary.to_text();
        assert!(text.contains("verified    8 of 10 accepted"), "{text}");
        assert!(text.contains("not found   2"), "{text}");
        assert!(!summary.all_verified());
        assert!(!summary.nothing_delivered());
    }

    #[test]
    fn reference_answer_needs_generation_and_users() {
        let upload = ReferenceUpload::from_answer(br#"{"generation":7,"users":5000}"#);
        assert_eq!(upload.as_ref().map(ReferenceUpload::generation_text), Ok("7".to_owned()));
        assert_eq!(upload.map(|u| u.users), Ok(5000));
        let text_generation = ReferenceUpload::from_answer(br#"{"generation":"g-2","users":1}"#);
        assert_eq!(text_generation.map(|u| u.generation_text()), Ok("g-2".to_owned()));
        assert!(ReferenceUpload::from_answer(br#"{"users":1}"#).is_err());
        assert!(ReferenceUpload::from_answer(br#"{"generation":1}"#).is_err());
        assert!(ReferenceUpload::from_answer(b"ok").is_err());
    }

    #[test]
    fn reference_shows_in_both_summaries_only_when_sent() {
        let plain = Summary::default();
        assert!(!plain.to_json().contains("reference"));
        assert!(!plain.to_text().contains("reference"));
        let upload = ReferenceUpload { generation: serde_json::json!(3), users: 10 };
        let sent = Summary { reference: Some(upload), ..Summary::default() };
        assert!(sent.to_text().starts_with("reference   generation 3, 10 users\n"), "{}", sent.to_text());
        let v: serde_json::Value = serde_json::from_str(&sent.to_json()).unwrap_or_default();
        assert_eq!(v["reference"], serde_json::json!({"generation": 3, "users": 10}));
    }

    #[test]
    fn a_run_where_every_event_failed_delivered_nothing() {
        let summary = Summary { sent: 5, failed: 5, ..Summary::default() };
        assert!(summary.all_verified());
        assert!(summary.nothing_delivered());
        assert!(!Summary::default().nothing_delivered());
    }
}
