//! A record's data through the KPL deaggregation, as the transform reads every record.
//!
//! Properties: deaggregating never panics; data without the magic bytes is an ordinary
//! record, and data with them that cannot be read is an error, never records; whatever an
//! aggregate yields round-trips: those user records aggregated again give an aggregate that
//! yields them again. Each input is read twice: as a record's data, and as the protobuf
//! message of an aggregate, framed with the magic bytes and its right digest, so that the
//! fuzzer gets past the digest into the message.

#![no_main]

use eventline_model::kpl::{self, MAGIC};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

fuzz_target!(|bytes: &[u8]| {
    check(bytes);
    check(&[&MAGIC[..], bytes, &Md5::digest(bytes)[..]].concat());
});

fn check(data: &[u8]) {
    match kpl::deaggregate(data) {
        Ok(None) => assert!(!data.starts_with(&MAGIC), "an aggregate read as an ordinary record"),
        Ok(Some(records)) => {
            let again = kpl::aggregate(&records);
            assert_eq!(kpl::deaggregate(&again), Ok(Some(records)), "user records that do not round-trip");
        }
        Err(_) => assert!(data.starts_with(&MAGIC), "an ordinary record refused as an aggregate"),
    }
}
