//! `eventline-gen reference`: the shape of the table, its users against the seed's events, and
//! the plan and region mix.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::process::{Command, Output};

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_eventline-gen");

fn run(args: &[&str]) -> Output {
    match Command::new(BIN).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("could not start {BIN}: {e}"),
    }
}

/// The documented body, nothing more: unknown keys are an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    user_metadata: InOrder,
    ts: String,
}

#[derive(Deserialize, PartialEq, Debug)]
#[serde(deny_unknown_fields)]
struct Metadata {
    plan: String,
    region: String,
}

/// A JSON object's entries in file order, duplicates kept.
struct InOrder(Vec<(String, Metadata)>);

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = InOrder;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of users")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InOrder, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(InOrder(entries))
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

fn table(args: &[&str]) -> (Vec<u8>, Table) {
    let output = run(&[&["reference"], args].concat());
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let parsed = serde_json::from_slice::<Table>(&output.stdout);
    let Ok(parsed) = parsed else {
        panic!("{args:?}: not the documented shape: {:?}", parsed.err());
    };
    (output.stdout, parsed)
}

fn user_ids(table: &Table) -> Vec<&str> {
    table.user_metadata.0.iter().map(|(id, _)| id.as_str()).collect()
}

/// The `user_id`s of `generate --format api`, distinct, in order of first appearance.
fn generated_users(seed: u64, count: u64) -> Vec<String> {
    let output = run(&["generate", "--count", &count.to_string(), "--seed", &seed.to_string(), "--format", "api"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let batch: Vec<Value> = serde_json::from_str(line).unwrap_or_default();
        for event in batch {
            let Some(user) = event["user_id"].as_str() else {
                panic!("event without a user_id: {event}");
            };
            if seen.insert(user.to_owned()) {
                users.push(user.to_owned());
            }
        }
    }
    users
}

/// A plan or region the service takes.
fn valid_value(text: &str) -> bool {
    eventline_model::reference::Label::parse(text).is_ok()
}

#[test]
fn table_has_the_documented_shape_and_is_the_same_for_a_seed() {
    let args = ["--users", "3000", "--seed", "7", "--ts", "2025-03-01T12:00:00Z"];
    let (first_bytes, first) = table(&args);
    let (second_bytes, _) = table(&args);
    assert!(first_bytes == second_bytes, "two runs differ");
    assert_eq!(first.ts, "2025-03-01T12:00:00Z");
    let ids = user_ids(&first);
    assert_eq!(ids.len(), 3000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3000, "user ids repeat");
    for (id, metadata) in &first.user_metadata.0 {
        assert!((10..=15).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
        assert!(valid_value(&metadata.plan) && valid_value(&metadata.region), "{id}: {metadata:?}");
        assert!(["free", "pro", "enterprise"].contains(&metadata.plan.as_str()), "{metadata:?}");
        assert!(["eu", "us", "apac"].contains(&metadata.region.as_str()), "{metadata:?}");
    }
    let accepted = eventline_model::reference::ReferenceTable::parse(&String::from_utf8_lossy(&first_bytes));
    assert!(accepted.as_ref().is_ok_and(|t| t.users.len() == 3000), "the service refuses it: {:?}", accepted.err());
    let (other_seed, _) = table(&["--users", "3000", "--seed", "8", "--ts", "2025-03-01T12:00:00Z"]);
    assert!(other_seed != first_bytes);
}

#[test]
fn ts_defaults_to_now_in_utc() {
    let before = eventline_gen::clock::now_micros() / 1_000_000;
    let (_, parsed) = table(&["--users", "1", "--seed", "1"]);
    let after = eventline_gen::clock::now_micros() / 1_000_000;
    // Milliseconds, so that two tables written within one second are still ordered.
    assert!(parsed.ts.ends_with('Z') && parsed.ts.len() == "2025-01-01T00:00:00.000Z".len(), "{}", parsed.ts);
    let ts = eventline_gen::clock::parse_rfc3339(&parsed.ts).map(|us| us / 1_000_000);
    assert!(ts.is_ok_and(|t| (before..=after).contains(&t)), "{} not between {before} and {after}", parsed.ts);
}

#[test]
fn users_are_the_first_distinct_user_ids_of_the_seeds_api_events() {
    // 3000 is a multiple of 20, 1234 is not: either way the table holds the users of exactly
    // the events `generate --count N` (and so `load --count N`) produces.
    for users in [3000u64, 1234] {
        let (_, parsed) = table(&["--users", &users.to_string(), "--seed", "7"]);
        let generated = generated_users(7, users);
        let ids = user_ids(&parsed);
        // When the first N events repeat a user, the table goes on with the events after them.
        assert!(generated.len() as u64 <= users);
        assert_eq!(ids[..generated.len()], generated.iter().map(String::as_str).collect::<Vec<_>>()[..]);
    }
    // A longer run of the same seed starts with the same users, in the same order.
    let (_, parsed) = table(&["--users", "3000", "--seed", "7"]);
    let longer = generated_users(7, 20_000);
    assert_eq!(user_ids(&parsed)[..], longer.iter().take(3000).map(String::as_str).collect::<Vec<_>>()[..]);
}

#[test]
fn first_5000_users_cover_every_event_of_the_first_5000() {
    let (_, parsed) = table(&["--users", "5000", "--seed", "42"]);
    let in_table: HashSet<&str> = user_ids(&parsed).into_iter().collect();
    let generated = generated_users(42, 5000);
    let missing = generated.iter().filter(|u| !in_table.contains(u.as_str())).count();
    assert_eq!(missing, 0, "{missing} of {} users of the first 5000 events are not in the table", generated.len());
}

#[test]
fn plan_and_region_mix_is_within_two_points_of_the_target_over_100000_users() {
    let (_, parsed) = table(&["--users", "100000", "--seed", "42"]);
    let ids = user_ids(&parsed);
    assert_eq!(ids.len(), 100_000);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 100_000);
    let mut plans: HashMap<&str, usize> = HashMap::new();
    let mut regions: HashMap<&str, usize> = HashMap::new();
    for (_, metadata) in &parsed.user_metadata.0 {
        *plans.entry(metadata.plan.as_str()).or_default() += 1;
        *regions.entry(metadata.region.as_str()).or_default() += 1;
    }
    let share = |counts: &HashMap<&str, usize>, key: &str| counts.get(key).copied().unwrap_or(0) as f64 / 1000.0;
    for (counts, targets) in [
        (&plans, [("free", 60.0), ("pro", 30.0), ("enterprise", 10.0)]),
        (&regions, [("eu", 40.0), ("us", 35.0), ("apac", 25.0)]),
    ] {
        assert_eq!(counts.len(), 3, "{counts:?}");
        for (key, target) in targets {
            let got = share(counts, key);
            assert!((got - target).abs() <= 2.0, "{key}: {got:.2} % against {target} %");
        }
    }
}

#[test]
fn out_writes_the_same_bytes_as_standard_output() {
    let dir = std::env::temp_dir().join(format!("eventline-gen-ref-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("ref.json");
    let path_text = path.to_string_lossy().into_owned();
    let args = ["reference", "--users", "50", "--seed", "3", "--ts", "2025-01-01T00:00:00Z"];
    let to_file = run(&[&args[..], &["--out", &path_text]].concat());
    assert!(to_file.status.success(), "{}", String::from_utf8_lossy(&to_file.stderr));
    assert!(to_file.stdout.is_empty());
    assert_eq!(std::fs::read(&path).ok(), Some(run(&args).stdout));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts exit code 2 with one line on stderr mentioning `needle`, and nothing on stdout.
fn assert_argument_error(args: &[&str], needle: &str) {
    let output = run(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr:?} lacks {needle:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(output.stdout.is_empty());
}

#[test]
fn more_than_100000_users_is_an_argument_error() {
    assert_argument_error(&["reference", "--users", "100001", "--seed", "1"], "at most 100000 users");
    assert_argument_error(&["reference", "--users", "0", "--seed", "1"], "--users");
    assert_argument_error(&["reference", "--users", "10"], "--seed");
    assert_argument_error(&["reference", "--users", "10", "--seed", "1", "--ts", "yesterday"], "RFC 3339");
}
