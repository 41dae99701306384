//! Arbitrary bytes as an ingest-stream record through `StreamRecord::decode`.
//!
//! Properties: decoding never panics; a decoded record re-encodes to a record that decodes
//! to the same value (and the encoding is then stable); the processed event's JSON is a JSON
//! object with unique keys. With the `aws` feature (the default), also: the processed event
//! survives a DynamoDB item round trip, and the item-size estimate behind `fits_in_an_item`
//! bounds the size of the item actually stored.

#![no_main]

use eventline_model::json::check_unique_keys;
use eventline_model::{Position, ProcessedEvent, StreamRecord};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::macros::datetime;

/// A fixed clock, so a run is reproducible.
const PROCESSED_AT: OffsetDateTime = datetime!(2026-11-23 12:00:00.125 UTC);

fn position() -> Position {
    Position::of_record("shardId-000000000001", "49590338271490256608559692538361571095921575989136588898")
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(record) = StreamRecord::decode(bytes) else { return };

    let encoded = record.encode();
    let decoded = StreamRecord::decode(&encoded).unwrap_or_else(|e| {
        panic!("a decoded record's own encoding does not decode: {e}\nencoded: {}", String::from_utf8_lossy(&encoded))
    });
    assert_eq!(decoded, record, "record changed in an encode/decode round trip");
    assert_eq!(decoded.encode(), encoded, "encoding a decoded encoding is not stable");

    let processed = ProcessedEvent::from_record(record.clone(), position(), PROCESSED_AT);
    let json = processed.to_json();
    let text = std::str::from_utf8(&json).expect("processed JSON is UTF-8");
    // Borrowed raw JSON checks the syntax without reading numbers as f64, so `data` may hold
    // numbers of any size, as the client sent them.
    let raw = serde_json::from_str::<&RawValue>(text)
        .unwrap_or_else(|e| panic!("processed event is not valid JSON: {e}\n{text}"));
    assert!(raw.get().starts_with('{'), "processed event is not a JSON object: {text}");
    if let Err(e) = check_unique_keys(raw, "processed") {
        panic!("processed event JSON repeats a key: {e}\n{text}");
    }

    #[cfg(feature = "aws")]
    item::check(&record, &processed);
});

#[cfg(feature = "aws")]
mod item {
    use eventline_aws::item::{fits_in_an_item, from_item, item_size, largest_stored_size, to_item};
    use eventline_model::{ProcessedEvent, StreamRecord};

    pub fn check(record: &StreamRecord, processed: &ProcessedEvent) {
        let item = to_item(processed);
        let back = from_item(&item).unwrap_or_else(|e| panic!("stored item does not read back: {e}\nitem: {item:?}"));
        assert_eq!(&back, processed, "processed event changed in an item round trip");

        let stored = item_size(&item);
        let estimate = largest_stored_size(record);
        assert!(stored <= estimate, "stored item is {stored} bytes but the estimate is {estimate}");
        if let Err(size) = fits_in_an_item(record) {
            assert_eq!(size, estimate, "fits_in_an_item reports another size than the estimate");
        }
    }
}
