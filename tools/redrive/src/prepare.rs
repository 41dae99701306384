//! What a record's data needs before it goes back on the ingest stream, so the transform
//! sees the same event, under the same identity, and counts it exactly.
//!
//! - Records ingest wrote (they carry `received_at`) go back byte for byte: their `ingest_id`
//!   lets the transform recognise a copy of a record it already stored, and ingest counted
//!   them received when it accepted them.
//! - Dead-lettered records were counted received and failed when they were dead-lettered; the
//!   transform counts a record received only when it has no `ingest_id`, so the redrive drops
//!   that member and the record's new outcome comes with a new received count. Without it,
//!   one record would count as failed and processed against one receipt.
//! - Records another producer wrote in the API's shape get the identity the transform gave
//!   them from their stream position (`id`) and their arrival as the default `timestamp`,
//!   because both would otherwise change with the new position and arrival.
//!
//! Members are rewritten from their raw text: every value stays byte for byte.

use eventline_model::json::Members;
use eventline_model::{Position, format_rfc3339};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// Where a record comes back from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A batch the event source mapping gave up on: never judged by the transform.
    GivenUp,
    /// The dead-letter queue: judged poison, and counted received and failed.
    DeadLettered,
}

/// What was changed in a record's data.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adjustments {
    pub id_added: bool,
    pub timestamp_added: bool,
    pub ingest_id_dropped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub data: Vec<u8>,
    pub adjustments: Adjustments,
}

/// The data to re-submit, or why the record must not be re-submitted.
pub fn prepare(
    data: &[u8],
    origin: Origin,
    position: Option<&Position>,
    arrival: Option<OffsetDateTime>,
) -> Result<Prepared, String> {
    let unchanged = || Prepared { data: data.to_vec(), adjustments: Adjustments::default() };
    let raw = std::str::from_utf8(data).ok().and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    let members = match (raw.map(Members::parse), origin) {
        (Some(Ok(members)), _) => members,
        // The transform has not judged these: it stores them or dead-letters them, once.
        (_, Origin::GivenUp) => return Ok(unchanged()),
        (None, Origin::DeadLettered) => {
            return Err("the data is not JSON text, so the transform would dead-letter it again".to_owned());
        }
        (Some(Err(error)), Origin::DeadLettered) => {
            return Err(format!("the data cannot be an event ({error}), so the transform would dead-letter it again"));
        }
    };

    let mut adjustments = Adjustments::default();
    let mut added: Vec<(&str, String)> = Vec::new();
    let mut dropped = None;
    let written_by_ingest = members.get("received_at").is_some();
    if written_by_ingest {
        if origin == Origin::DeadLettered && members.get("ingest_id").is_some() {
            dropped = Some("ingest_id");
            adjustments.ingest_id_dropped = true;
        }
    } else {
        if members.get("id").is_none() {
            let Some(position) = position else {
                return Err("names no id, and without its stream position the id the transform gives it cannot be \
                            rebuilt"
                    .to_owned());
            };
            // The id the transform derives for an event without one (`Arrival` in the model).
            let id = position.derived_event_id();
            added.push(("id", Value::from(id.as_str()).to_string()));
            adjustments.id_added = true;
        }
        if members.get("timestamp").is_none()
            && let Some(arrival) = arrival
        {
            added.push(("timestamp", Value::from(format_rfc3339(arrival)).to_string()));
            adjustments.timestamp_added = true;
        }
    }
    if adjustments == Adjustments::default() {
        return Ok(unchanged());
    }
    Ok(Prepared { data: rebuild(&members, &added, dropped), adjustments })
}

/// The object with `added` members first, then the original members but `dropped`, each
/// value as it was written.
fn rebuild(members: &Members<'_>, added: &[(&str, String)], dropped: Option<&str>) -> Vec<u8> {
    let new = added.iter().map(|(key, value)| (*key, value.as_str()));
    let kept = members.0.iter().filter(|(key, _)| Some(key.as_ref()) != dropped).map(|(k, v)| (k.as_ref(), v.get()));
    let mut out = String::from("{");
    for (index, (key, value)) in new.chain(kept).enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Value::from(key).to_string());
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventline_model::validation::Rules;
    use eventline_model::{Arrival, StreamRecord};
    use time::macros::datetime;

    const INGEST_SHAPED: &str = r#"{"id":"e-1","source":"web","type":"t","timestamp":"2026-11-30T10:00:00Z","data":{"n":1.50,"big":123456789012345678901234567890,"s":"\u00e9"},"received_at":"2026-11-30T10:00:01Z","ingest_id":"4f1c"}"#;

    fn position(sequence_number: &str) -> Position {
        Position::of_record("shardId-000000000000", sequence_number)
    }

    fn prepared(data: &str, origin: Origin) -> Prepared {
        prepare(data.as_bytes(), origin, Some(&position("7")), Some(datetime!(2026-11-30 10:00:00.5 UTC))).unwrap()
    }

    #[test]
    fn records_ingest_wrote_go_back_byte_for_byte() {
        let prepared = prepared(INGEST_SHAPED, Origin::GivenUp);
        assert_eq!(prepared.data, INGEST_SHAPED.as_bytes());
        assert_eq!(prepared.adjustments, Adjustments::default());
    }

    #[test]
    fn dead_lettered_records_lose_only_their_ingest_id() {
        let prepared = prepared(INGEST_SHAPED, Origin::DeadLettered);
        assert!(prepared.adjustments.ingest_id_dropped);
        let text = String::from_utf8(prepared.data).unwrap();
        assert_eq!(text, INGEST_SHAPED.replace(r#","ingest_id":"4f1c""#, ""), "every other member as written");
        let record = StreamRecord::decode(text.as_bytes()).unwrap();
        assert_eq!((record.event.id.as_str(), record.ingest_id), ("e-1", None));
    }

    #[test]
    fn dead_lettered_records_keep_their_sender_and_digest_so_a_stored_copy_judges_them() {
        let written = INGEST_SHAPED.replace(
            r#","ingest_id":"4f1c"}"#,
            r#","ingest_id":"4f1c","sender":"arn:aws:iam::1:user/a","digest":"0123456789abcdef0123456789abcdef"}"#,
        );
        let original = StreamRecord::decode(written.as_bytes()).unwrap();
        let prepared = prepared(&written, Origin::DeadLettered);
        let again = StreamRecord::decode(&prepared.data).unwrap();
        assert_eq!(again.ingest_id, None);
        assert!(again.provenance.is_some());
        assert_eq!(again.provenance, original.provenance, "judged a duplicate or a conflict as the first delivery was");
    }

    #[test]
    fn an_api_shaped_record_keeps_the_identity_and_time_its_first_arrival_gave_it() {
        let data = r#"{"source":"sam","payload":"hi"}"#;
        let first = position("7");
        let arrived = datetime!(2026-11-30 10:00:00.5 UTC);
        let rules = Rules::default();
        let original = StreamRecord::decode_arrived(
            data.as_bytes(),
            &Arrival { at: Some(arrived), position: &first, rules: &rules },
        )
        .unwrap();

        let prepared = prepare(data.as_bytes(), Origin::GivenUp, Some(&first), Some(arrived)).unwrap();
        assert_eq!(
            prepared.adjustments,
            Adjustments { id_added: true, timestamp_added: true, ingest_id_dropped: false }
        );
        // Back on the stream it sits elsewhere and arrives later.
        let later = position("9000");
        let again = StreamRecord::decode_arrived(
            &prepared.data,
            &Arrival { at: Some(datetime!(2026-12-01 08:00:00 UTC)), position: &later, rules: &rules },
        )
        .unwrap();
        assert_eq!(again.event.id, original.event.id);
        assert_eq!(again.event.timestamp, original.event.timestamp);
        assert_eq!(again.event.payload.as_deref(), Some("hi"));
        assert_eq!(again.ingest_id, None);
    }

    #[test]
    fn a_user_record_of_an_aggregate_keeps_the_id_its_index_there_gave_it() {
        let data = br#"{"source":"kpl"}"#;
        let user = Position { sub_sequence_number: Some(2), ..position("7") };
        let rules = Rules::default();
        let arrived = datetime!(2026-11-30 10:00:00.5 UTC);
        let original =
            StreamRecord::decode_arrived(data, &Arrival { at: Some(arrived), position: &user, rules: &rules }).unwrap();
        let prepared = prepare(data, Origin::DeadLettered, Some(&user), None).unwrap();
        let again = StreamRecord::decode_arrived(
            &prepared.data,
            &Arrival { at: Some(arrived), position: &position("9000"), rules: &rules },
        )
        .unwrap();
        assert_eq!(again.event.id, original.event.id);
        assert_ne!(
            again.event.id,
            prepare(data, Origin::DeadLettered, Some(&position("7")), None)
                .map(|p| {
                    StreamRecord::decode_arrived(
                        &p.data,
                        &Arrival { at: Some(arrived), position: &position("1"), rules: &rules },
                    )
                    .unwrap()
                    .event
                    .id
                })
                .unwrap(),
            "its siblings' and the aggregate's own differ"
        );
    }

    #[test]
    fn an_api_shaped_record_with_id_and_timestamp_is_unchanged() {
        let data = r#"{"id":"k-1", "timestamp":"2026-11-30T10:00:00Z"}"#;
        assert_eq!(prepared(data, Origin::DeadLettered).data, data.as_bytes());
    }

    #[test]
    fn without_a_position_a_missing_id_cannot_be_rebuilt() {
        let error = prepare(br#"{"source":"sam"}"#, Origin::GivenUp, None, None).unwrap_err();
        assert!(error.starts_with("names no id"), "{error}");
        let kept = prepare(br#"{"id":"k","source":"sam"}"#, Origin::GivenUp, None, None).unwrap();
        assert_eq!(kept.adjustments, Adjustments::default(), "no arrival: the timestamp is left to the transform");
    }

    #[test]
    fn data_that_cannot_be_an_event_goes_back_only_if_the_transform_never_judged_it() {
        for data in [&b"\xff\xfe"[..], b"not json", b"[1,2]", br#"{"id":"a","id":"b"}"#] {
            let given_up = prepare(data, Origin::GivenUp, Some(&position("1")), None).unwrap();
            assert_eq!(given_up.data, data);
            let error = prepare(data, Origin::DeadLettered, Some(&position("1")), None).unwrap_err();
            assert!(error.ends_with("so the transform would dead-letter it again"), "{error}");
        }
    }
}
