//! One client event as raw JSON through `parse_event`, with the default rules.
//!
//! Properties: parsing never panics; an accepted event is within the size limit, becomes a
//! stream record that decodes back to itself, keeps `data` byte for byte as the client sent
//! it, and has a timestamp whose RFC 3339 text reads back as the same instant.

#![no_main]

use eventline_model::event::MAX_EVENT_BYTES;
use eventline_model::validation::MAX_ECHOED_NAME_CHARS;
use eventline_model::{IngestId, Rules, StreamRecord, format_rfc3339, parse_event};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;

/// A fixed clock, so a run is reproducible.
const NOW: OffsetDateTime = datetime!(2026-11-23 12:00:00 UTC);

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else { return };

    let event = match parse_event(raw, &Rules::default(), NOW) {
        Ok(event) => event,
        Err(errors) => {
            assert!(!errors.is_empty(), "a rejection names at least one problem");
            for error in &errors {
                // Echoed names are cut to the limit plus an ellipsis.
                let echoed = error.field.chars().count();
                assert!(echoed <= MAX_ECHOED_NAME_CHARS + 1, "echoed field name is {echoed} characters");
            }
            return;
        }
    };

    let size = event.serialized_len();
    assert!(size <= MAX_EVENT_BYTES, "accepted an event of {size} bytes serialized");

    if let Some(data) = &event.data {
        assert!(text.contains(data.get()), "data is not a byte-exact part of the input: {:?}", data.get());
    }

    let formatted = format_rfc3339(event.timestamp);
    let reparsed = OffsetDateTime::parse(&formatted, &Rfc3339).unwrap_or_else(|e| {
        panic!("timestamp {:?} formats as {formatted:?}, which is not RFC 3339: {e}", event.timestamp)
    });
    assert_eq!(reparsed, event.timestamp, "timestamp text {formatted:?} reads back as another instant");

    let record = StreamRecord { event, received_at: NOW, ingest_id: Some(IngestId::generate()), provenance: None };
    let encoded = record.encode();
    let decoded = StreamRecord::decode(&encoded).unwrap_or_else(|e| {
        panic!("an accepted event's stream record does not decode: {e}\nrecord: {}", String::from_utf8_lossy(&encoded))
    });
    assert_eq!(decoded, record, "stream record changed in an encode/decode round trip");
});
