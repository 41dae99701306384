//! The reference table of users sent as `PUT /reference/users`, matched to a seed's events.
//!
//! The table holds the first N distinct `user_id`s (subscribers) of the events a seed
//! generates, in order, each with a plan and a region. Those events are the ones
//! `generate --seed S --count N` writes, followed, only when they repeat a user, by the events
//! that come after them. So `load --seed S --count N` sends no user the table lacks, nor does
//! `load --count C` for C < N a multiple of 20. Another C < N ends in a shorter type block
//! that is shuffled differently (see the crate README), and up to `C mod 20` of its users may
//! be missing; beyond N, events bring new users almost every time.
//!
//! Plans and regions are drawn from a hash of the seed and the user, so a user keeps them
//! whatever N is.

use std::collections::HashSet;
use std::io::{self, Write};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::cdr::GenConfig;
use crate::clock::{self, MICROS_PER_SEC};
use crate::rng::splitmix64;

/// Most users a table may hold (about 4.6 MB of JSON, within the 6 MB a Lambda request takes).
pub const MAX_USERS: usize = 100_000;

/// Plans with their shares in percent.
pub const PLANS: [(&str, u64); 3] = [("free", 60), ("pro", 30), ("enterprise", 10)];

/// Regions with their shares in percent.
pub const REGIONS: [(&str, u64); 3] = [("eu", 40), ("us", 35), ("apac", 25)];

/// Keeps the plan and region draws of a user apart from any other use of the seed.
const METADATA_SALT: u64 = 0x7265_6665_7265_6e63;

/// What the table says about one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct UserMetadata {
    pub plan: &'static str,
    pub region: &'static str,
}

/// The first `n` distinct user ids of the seed's events, in the order they first appear.
pub fn user_ids(seed: u64, n: usize) -> Vec<u64> {
    // The events of a run of exactly `n` (its last type block may be shorter than 20), then
    // those of an endless run after them, in case the first `n` repeat a user.
    let events = GenConfig::new(seed, n as u64).events().chain(GenConfig::new(seed, u64::MAX).events().skip(n));
    let mut seen = HashSet::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    for event in events {
        if users.len() == n {
            break;
        }
        let user = event.subscriber_number();
        if seen.insert(user) {
            users.push(user);
        }
    }
    users
}

/// The plan and region of a user; the same for a seed and user whatever the table's size.
pub fn metadata(seed: u64, user_id: u64) -> UserMetadata {
    let draw = splitmix64(seed ^ splitmix64(user_id ^ METADATA_SALT));
    // Two independent 32-bit halves: one for the plan, one for the region.
    UserMetadata { plan: pick(&PLANS, draw & 0xffff_ffff), region: pick(&REGIONS, draw >> 32) }
}

/// The entry whose share covers `bits` (32 random bits) scaled to 0..100.
fn pick(table: &[(&'static str, u64)], bits: u64) -> &'static str {
    let mut point = (bits * 100) >> 32;
    for (name, share) in table {
        if point < *share {
            return name;
        }
        point -= share;
    }
    // Shares add up to 100, so the loop always returns; the last entry keeps this total.
    table.last().map_or("", |(name, _)| name)
}

/// The default `ts`: now, in UTC, to the millisecond, so that two tables written within one
/// second are still ordered.
pub fn now_ts() -> String {
    String::from_utf8_lossy(&clock::format_millis(clock::now_micros())).into_owned()
}

/// `ts` as RFC 3339 UTC text: whole seconds, or milliseconds when it has a fraction.
pub fn format_ts(micros: i64) -> String {
    let text = if micros.rem_euclid(MICROS_PER_SEC) == 0 {
        clock::format_secs(micros.div_euclid(MICROS_PER_SEC)).to_vec()
    } else {
        clock::format_millis(micros).to_vec()
    };
    String::from_utf8_lossy(&text).into_owned()
}

/// Parses `--ts`: RFC 3339 between 1970 and 9999, as microseconds since the epoch.
pub fn parse_ts(text: &str) -> Result<i64, String> {
    let micros = clock::parse_rfc3339(text)?;
    if !(0..=253_402_300_799 * MICROS_PER_SEC).contains(&micros) {
        return Err(format!("'{text}' is not between 1970 and 9999"));
    }
    Ok(micros)
}

/// The request body of `PUT /reference/users`.
#[derive(Serialize)]
struct Table<'a> {
    user_metadata: Users<'a>,
    ts: &'a str,
}

/// Users as a JSON object keyed by user id, in table order.
struct Users<'a> {
    seed: u64,
    ids: &'a [u64],
}

impl Serialize for Users<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.ids.len()))?;
        for id in self.ids {
            map.serialize_entry(&id.to_string(), &metadata(self.seed, *id))?;
        }
        map.end()
    }
}

/// Writes the table for `users` as one line of JSON:
/// `{"user_metadata":{"<user_id>":{"plan":…,"region":…},…},"ts":"<RFC 3339>"}`.
pub fn write_table(seed: u64, users: &[u64], ts: &str, out: &mut impl Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &Table { user_metadata: Users { seed, ids: users }, ts })?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{CallEvent, EventType};

    /// A plan or region the service takes.
    fn valid_value(text: &str) -> bool {
        eventline_model::reference::Label::parse(text).is_ok()
    }

    #[test]
    fn shares_add_up_to_100_and_values_follow_the_rules() {
        for table in [&PLANS, &REGIONS] {
            assert_eq!(table.iter().map(|(_, s)| s).sum::<u64>(), 100);
            assert!(table.iter().all(|(name, _)| valid_value(name)));
        }
    }

    #[test]
    fn pick_follows_the_shares_at_their_edges() {
        let at = |percent: u64| pick(&PLANS, (percent << 32).div_ceil(100));
        assert_eq!(at(0), "free");
        assert_eq!(at(59), "free");
        assert_eq!(at(60), "pro");
        assert_eq!(at(89), "pro");
        assert_eq!(at(90), "enterprise");
        assert_eq!(pick(&PLANS, 0xffff_ffff), "enterprise");
    }

    #[test]
    fn metadata_depends_on_seed_and_user_only() {
        assert_eq!(metadata(1, 4915_1234_5678), metadata(1, 4915_1234_5678));
        let differs = (0..200u64).any(|u| metadata(1, 4915_0000_0000 + u) != metadata(2, 4915_0000_0000 + u));
        assert!(differs);
    }

    #[test]
    fn users_are_distinct_subscribers_in_event_order() {
        let users = user_ids(3, 500);
        assert_eq!(users.len(), 500);
        assert_eq!(users.iter().collect::<HashSet<_>>().len(), 500);
        let events: Vec<CallEvent> = GenConfig::new(3, 500).events().collect();
        let first: Vec<u64> = events.iter().map(CallEvent::subscriber_number).take(20).collect();
        assert_eq!(users[..20], first[..]);
        // Incoming calls are there with their callee, the subscriber, not the caller.
        let call_in = events.iter().find(|e| e.event_type == EventType::CallIn);
        let Some(call_in) = call_in else {
            panic!("no incoming call in 500 events");
        };
        assert!(users.contains(&call_in.called_number()));
        assert!(!users.contains(&call_in.calling_number()));
    }

    #[test]
    fn a_smaller_table_is_a_prefix_of_a_larger_one_up_to_its_last_type_block() {
        let small = user_ids(8, 1_000);
        let large = user_ids(8, 3_000);
        assert_eq!(small[..], large[..1_000]);
        // 990 is not a multiple of 20: only its last, shorter block may differ.
        let odd = user_ids(8, 990);
        assert_eq!(odd[..980], large[..980]);
    }

    #[test]
    fn ts_keeps_milliseconds_only_when_there_are_some() {
        assert_eq!(format_ts(1_735_689_600 * MICROS_PER_SEC), "2025-01-01T00:00:00Z");
        assert_eq!(format_ts(1_735_689_600 * MICROS_PER_SEC + 250_000), "2025-01-01T00:00:00.250Z");
        assert_eq!(parse_ts("2025-01-01T01:00:00+01:00"), Ok(1_735_689_600 * MICROS_PER_SEC));
        assert!(parse_ts("0000-01-01T00:00:00Z").is_err());
        assert!(parse_ts("soon").is_err());
        assert_eq!(now_ts().len(), "2025-01-01T00:00:00.000Z".len());
    }

    #[test]
    fn table_is_one_line_of_json_with_users_in_order() {
        let mut out = Vec::new();
        let written = write_table(5, &[4917012345, 4915112345678], "2025-01-01T00:00:00Z", &mut out);
        assert!(written.is_ok());
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.starts_with("{\"user_metadata\":{\"4917012345\":{\"plan\":\""), "{text}");
        assert!(text.ends_with(",\"ts\":\"2025-01-01T00:00:00Z\"}\n"), "{text}");
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        let plan = parsed["user_metadata"]["4915112345678"]["plan"].as_str();
        assert_eq!(plan, Some(metadata(5, 4915112345678).plan));
    }
}
