//! Bounded breakdowns: which keys of a shared counter item keep a counter of their own.
//!
//! A shard's window buckets and day and month aggregates, and each user's days and months,
//! count events by type and source (buckets also by plan and region). Each breakdown of an
//! item keeps at most `limit` distinct keys: the first keys the item sees. Later keys are
//! counted under [`OTHER_KEY`], and the item's `folded` count says that it happened, so no
//! producer can grow an item towards DynamoDB's 400 KB and have everyone's events refused.
//!
//! The writer decides from what it knows of the item and makes the commit conditional on
//! that knowledge (the item's stored key counts, or its absence). Keys are never removed, so
//! a breakdown whose key count is unchanged holds exactly the keys the writer knows: a stale
//! guess fails the condition and costs a re-read, never an unbounded item.

use std::collections::{BTreeMap, HashMap, HashSet};

use eventline_model::aggregate::OTHER_KEY;

/// What the writer knows of one counter item's breakdowns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Known {
    /// Neither read nor written here yet: assumed absent, which the commit checks.
    #[default]
    Unseen,
    /// A condition on it failed: read it before the next update.
    Stale,
    /// As read or last written, by breakdown prefix (`t#`, `s#`, ...).
    Seen(HashMap<&'static str, Keys>),
}

/// One breakdown of an item as known: its keys with counters of their own, and the key count
/// stored with it (`None` while the item stores none: absent, or written before counts were).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    pub keys: HashSet<String>,
    pub count: Option<u64>,
}

impl Keys {
    fn held(&self) -> u64 {
        self.count.unwrap_or(self.keys.len() as u64)
    }
}

/// What the item must still be when the update commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// The item does not exist yet.
    Absent,
    /// Each listed breakdown's stored key count is as given (`None`: it has none).
    Counts(Vec<(&'static str, Option<u64>)>),
}

/// How one update adds to an item's breakdowns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Counts to add per breakdown prefix, folded keys merged into [`OTHER_KEY`].
    pub counts: Vec<(&'static str, BTreeMap<String, u64>)>,
    /// Increments counted under [`OTHER_KEY`] instead of their own key.
    pub folded: u64,
    /// Keys each breakdown gains.
    pub new_keys: Vec<(&'static str, u64)>,
    pub guard: Guard,
    /// What is known of the item once the update has committed.
    pub after: Known,
}

/// Plans adding `breakdowns` (prefix and counts by key) to an item known as `known`.
/// `Known::Stale` must be read first; planned as `Unseen` it is merely checked again.
pub fn plan(known: &Known, breakdowns: &[(&'static str, &BTreeMap<String, u64>)], limit: u32) -> Plan {
    let empty = HashMap::new();
    let (seen, mut guard) = match known {
        Known::Seen(seen) => (seen, Guard::Counts(Vec::new())),
        Known::Unseen | Known::Stale => (&empty, Guard::Absent),
    };
    let mut after = seen.clone();
    let mut counts = Vec::with_capacity(breakdowns.len());
    let (mut folded, mut new_keys) = (0, Vec::new());
    for &(prefix, adds) in breakdowns {
        let stored = seen.get(prefix).cloned().unwrap_or_default();
        let mut held = stored.held();
        let mut planned: BTreeMap<String, u64> = BTreeMap::new();
        let mut added = 0;
        for (key, count) in adds {
            let own = key == OTHER_KEY || stored.keys.contains(key) || held < u64::from(limit);
            if own && key != OTHER_KEY && !stored.keys.contains(key) {
                held += 1;
                added += 1;
                after.entry(prefix).or_default().keys.insert(key.clone());
            }
            if !own {
                folded += count;
            }
            *planned.entry(if own { key.clone() } else { OTHER_KEY.to_owned() }).or_default() += count;
        }
        if let Guard::Counts(counts) = &mut guard
            && adds.keys().any(|key| key != OTHER_KEY)
        {
            counts.push((prefix, stored.count));
        }
        if added > 0 {
            new_keys.push((prefix, added));
            after.entry(prefix).or_default().count = Some(held);
        }
        counts.push((prefix, planned));
    }
    Plan { counts, folded, new_keys, guard, after: Known::Seen(after) }
}

/// What an item read from the table says of its breakdowns, given each breakdown's
/// attribute prefix and the name of its stored key count.
pub fn known_from<'a>(
    attributes: impl IntoIterator<Item = (&'a str, Option<u64>)>,
    breakdowns: &[(&'static str, String)],
) -> Known {
    let mut seen: HashMap<&'static str, Keys> = HashMap::new();
    for (name, number) in attributes {
        for (prefix, count_name) in breakdowns {
            if name == count_name {
                seen.entry(prefix).or_default().count = number;
            } else if let Some(key) = name.strip_prefix(prefix)
                && key != OTHER_KEY
            {
                seen.entry(prefix).or_default().keys.insert(key.to_owned());
            }
        }
    }
    Known::Seen(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adds(keys: &[&str]) -> BTreeMap<String, u64> {
        keys.iter().map(|k| (k.to_string(), 1)).collect()
    }

    fn seen(prefix: &'static str, keys: &[&str], count: Option<u64>) -> Known {
        let keys = Keys { keys: keys.iter().map(|k| k.to_string()).collect(), count };
        Known::Seen(HashMap::from([(prefix, keys)]))
    }

    #[test]
    fn the_first_keys_an_item_sees_keep_their_own_counter_and_later_ones_are_folded() {
        let plan = plan(&Known::Unseen, &[("t#", &adds(&["a", "b", "c", "d"]))], 2);
        assert_eq!(plan.counts, vec![("t#", BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("other".into(), 2)]))]);
        assert_eq!((plan.folded, plan.new_keys.clone(), plan.guard.clone()), (2, vec![("t#", 2)], Guard::Absent));
        assert_eq!(plan.after, seen("t#", &["a", "b"], Some(2)));
    }

    #[test]
    fn a_full_breakdown_still_counts_its_own_keys_and_guards_its_count() {
        let known = seen("t#", &["a", "b"], Some(2));
        let plan = plan(&known, &[("t#", &adds(&["b", "z"]))], 2);
        assert_eq!(plan.counts, vec![("t#", BTreeMap::from([("b".into(), 1), ("other".into(), 1)]))]);
        assert_eq!(plan.folded, 1);
        assert!(plan.new_keys.is_empty());
        assert_eq!(plan.guard, Guard::Counts(vec![("t#", Some(2))]));
        assert_eq!(plan.after, known);
    }

    #[test]
    fn other_is_always_counted_and_never_takes_a_place() {
        let plan = plan(&seen("t#", &["a"], Some(1)), &[("t#", &adds(&["other", "b"]))], 2);
        assert_eq!(plan.counts, vec![("t#", BTreeMap::from([("b".into(), 1), ("other".into(), 1)]))]);
        assert_eq!((plan.folded, plan.new_keys), (0, vec![("t#", 1)]));
        // Only `other`: nothing to guard.
        let only_other = super::plan(&seen("t#", &[], None), &[("t#", &adds(&["other"]))], 2);
        assert_eq!(only_other.guard, Guard::Counts(Vec::new()));
    }

    #[test]
    fn an_item_written_before_key_counts_is_counted_by_its_keys() {
        let known = seen("s#", &["a", "b", "c"], None);
        let plan = plan(&known, &[("s#", &adds(&["d"]))], 3);
        assert_eq!(plan.folded, 1, "three keys already held");
        assert_eq!(plan.guard, Guard::Counts(vec![("s#", None)]));
        let plan = super::plan(&known, &[("s#", &adds(&["d"]))], 4);
        assert_eq!((plan.folded, plan.new_keys), (0, vec![("s#", 1)]));
        assert_eq!(plan.after, seen("s#", &["a", "b", "c", "d"], Some(4)));
    }

    #[test]
    fn a_stale_item_is_planned_as_absent_so_the_commit_checks_it() {
        assert_eq!(plan(&Known::Stale, &[("t#", &adds(&["a"]))], 1).guard, Guard::Absent);
    }

    #[test]
    fn an_item_read_back_gives_its_keys_and_counts() {
        let breakdowns = [("t#", "n#t#".to_owned()), ("s#", "n#s#".to_owned())];
        let attributes =
            [("t#a", Some(3)), ("t#other", Some(9)), ("n#t#", Some(1)), ("s#web", Some(3)), ("events", Some(3))];
        let known = known_from(attributes, &breakdowns);
        let Known::Seen(seen) = known else { panic!("read items are seen") };
        assert_eq!(seen["t#"], Keys { keys: HashSet::from(["a".to_owned()]), count: Some(1) });
        assert_eq!(seen["s#"], Keys { keys: HashSet::from(["web".to_owned()]), count: None });
    }
}
