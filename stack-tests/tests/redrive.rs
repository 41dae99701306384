//! `eventline-redrive` against the emulator: generated events accepted by ingest (and a few
//! written straight to the stream) reach a transform that crashes, so the event source
//! mapping gives up on them and writes them to the failure bucket; a few valid events sit in
//! the dead-letter queue. Once the transform works again, a redrive stores every event once
//! with exact counts, a second redrive changes nothing but the duplicate count, and a dry
//! run changes nothing at all.

use eventline_stack_tests as common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::streams::KinesisEventResponse;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_sqs::types::QueueAttributeName;
use common::{call, read_stream, stack, until};
use eventline_gen::format::Format;
use eventline_gen::generate::{GenerateOptions, generate_to};
use eventline_local::poller::{Poller, StreamFunction};
use eventline_local::{Functions, LocalStack};
use eventline_model::{EventId, IngestId, format_rfc3339};
use eventline_redrive::{Error, NoProgress, Options, Sources, Summary, Target};
use eventline_transform::dead_letter::PoisonMessage;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const THROUGH_INGEST: usize = 60;
const DIRECT: usize = 6;
const DEAD_LETTERED: usize = 4;
const DISTINCT: usize = THROUGH_INGEST + DIRECT + DEAD_LETTERED;
const GIVEN_UP: usize = THROUGH_INGEST + DIRECT;

/// The real transform, or a crash while `crashing` is set: a deployment that broke, then
/// was fixed.
struct Switch {
    real: Arc<Functions>,
    crashing: Arc<AtomicBool>,
}

impl StreamFunction for Switch {
    async fn invoke(&self, event: KinesisEvent) -> Result<KinesisEventResponse, String> {
        if self.crashing.load(Ordering::SeqCst) {
            return Err("the transform crashed".into());
        }
        self.real.invoke(event).await
    }
}

async fn metrics(stack: &LocalStack) -> Value {
    let (status, body) = call(stack, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn counts(metrics: &Value) -> [u64; 4] {
    ["events_received", "events_processed", "events_duplicate", "events_failed"]
        .map(|name| metrics[name].as_u64().unwrap_or_else(|| panic!("{name} in {metrics}")))
}

fn s3(stack: &LocalStack) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&stack.sdk).force_path_style(true).build())
}

/// Records in the failure bucket's objects, by their batch sizes, and the number of objects.
async fn failure_bucket(stack: &LocalStack) -> (u64, usize) {
    let s3 = s3(stack);
    let bucket = &stack.manifest.outputs["StreamFailureBucketName"];
    let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    let mut records = 0;
    for object in listed.contents() {
        let body = s3.get_object().bucket(bucket).key(object.key().unwrap()).send().await.unwrap().body;
        let report: Value = serde_json::from_slice(&body.collect().await.unwrap().into_bytes()).unwrap();
        records += report["KinesisBatchInfo"]["batchSize"].as_u64().unwrap();
    }
    (records, listed.contents().len())
}

/// (visible, hidden) messages in the dead-letter queue.
async fn queue_depth(stack: &LocalStack) -> (u64, u64) {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&stack.manifest.outputs["DeadLetterQueueUrl"])
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    let get = |name: QueueAttributeName| attributes[&name].parse::<u64>().unwrap();
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

fn target(stack: &LocalStack) -> Target {
    let outputs = &stack.manifest.outputs;
    Target {
        stream: outputs["IngestStreamName"].clone(),
        bucket: Some(outputs["StreamFailureBucketName"].clone()),
        queue_url: Some(outputs["DeadLetterQueueUrl"].clone()),
    }
}

async fn redrive(stack: &LocalStack, options: Options) -> Summary {
    let summary = eventline_redrive::run(&stack.sdk, &target(stack), &options, &NoProgress).await.unwrap();
    println!("{summary}");
    summary
}

/// An event as the stored item shows it.
async fn stored(stack: &LocalStack, source: &str, id: &str) -> Value {
    let (status, body) = call(stack, "GET", &format!("/events/{source}/{id}"), None).await;
    assert_eq!(status, 200, "{source}/{id}: {body}");
    body
}

fn field<'a>(event: &'a Value, name: &str) -> &'a str {
    event[name].as_str().unwrap_or_else(|| panic!("{name} in {event}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_brings_back_every_event_once_with_exact_counts() {
    let stack =
        stack(&[("TransformMaxRetries", "2"), ("TransformBatchSize", "25"), ("TransformBatchWindowSeconds", "0")])
            .await;
    let outputs = stack.manifest.outputs.clone();
    let ingest_stream = &outputs["IngestStreamName"];
    let output_stream = &outputs["OutputStreamName"];
    // For the `async move` blocks of the polling closures.
    let shared = &stack;

    // Resources that are not there are named in the error, before anything is read.
    let mut wrong = target(&stack);
    wrong.bucket = Some("eventline-no-such-bucket".into());
    let options = Options { from: Sources::S3, ..Options::default() };
    let error = eventline_redrive::run(&stack.sdk, &wrong, &options, &NoProgress).await.unwrap_err();
    assert!(matches!(&error, Error::NotFound { what, .. } if what.contains("eventline-no-such-bucket")), "{error}");
    let mut wrong = target(&stack);
    wrong.stream = "eventline-no-such-stream".into();
    let error = eventline_redrive::run(&stack.sdk, &wrong, &Options::default(), &NoProgress).await.unwrap_err();
    assert!(matches!(&error, Error::NotFound { what, .. } if what.contains("eventline-no-such-stream")), "{error}");

    // The event source mapping, driving a transform that crashes for now.
    let crashing = Arc::new(AtomicBool::new(true));
    let source = stack.manifest.event_sources.iter().find(|s| s.function == "transform").unwrap().clone();
    let function = Switch { real: Arc::clone(&stack.functions), crashing: Arc::clone(&crashing) };
    let poller = Arc::new(Poller::new(function, &stack.sdk, source, stack.manifest.region.clone()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let polling = tokio::spawn(Arc::clone(&poller).run(stop_rx));

    let mut generated = Vec::new();
    let mut options = GenerateOptions::new(DISTINCT as u64, 31, Format::Api);
    options.threads = 1;
    generate_to(&options, &mut generated).unwrap();
    let events: Vec<Value> = generated
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .flat_map(|line| serde_json::from_slice::<Vec<Value>>(line).unwrap())
        .collect();
    assert_eq!(events.len(), DISTINCT);

    // Most through ingest, which counts them received.
    let (status, body) =
        call(&stack, "POST", "/events", Some(Value::from(events[..THROUGH_INGEST].to_vec()).to_string())).await;
    assert_eq!(status, 202, "{body}");

    // A few written straight to the stream by another producer, in the API's shape: two
    // without an id (the transform derives one from the position), one without a timestamp
    // (the transform takes the arrival).
    let mut direct: Vec<Value> = events[THROUGH_INGEST..GIVEN_UP].to_vec();
    for event in &mut direct[..2] {
        event.as_object_mut().unwrap().remove("id");
    }
    direct[2].as_object_mut().unwrap().remove("timestamp");
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let entries = direct
        .iter()
        .map(|event| {
            PutRecordsRequestEntry::builder()
                .partition_key(field(event, "user_id"))
                .data(Blob::new(event.to_string()))
                .build()
                .unwrap()
        })
        .collect();
    let put = kinesis.put_records().stream_name(ingest_stream).set_records(Some(entries)).send().await.unwrap();
    assert_eq!(put.failed_record_count(), Some(0));
    let positions: Vec<(String, String)> = put
        .records()
        .iter()
        .map(|r| (r.shard_id().unwrap().to_owned(), r.sequence_number().unwrap().to_owned()))
        .collect();
    let derived = |(shard, sequence): &(String, String)| EventId::derived_from(&format!("{shard}:{sequence}"));

    // The mapping retries, bisects, gives up and writes every batch to the failure bucket.
    until(Duration::from_secs(30), "every record in the failure bucket", || async move {
        (failure_bucket(shared).await.0 == GIVEN_UP as u64).then_some(())
    })
    .await;
    assert_eq!(poller.stats().await.sent_to_on_failure, GIVEN_UP as u64);
    crashing.store(false, Ordering::SeqCst);

    // Valid events in the dead-letter queue, as the transform writes them: three that ingest
    // wrote, one another producer wrote without an id; and one from before records were kept
    // whole, too large to have been kept.
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue_url = &outputs["DeadLetterQueueUrl"];
    let shard = &positions[0].0;
    let letter_positions: Vec<(String, String)> =
        (0..DEAD_LETTERED).map(|n| (shard.clone(), format!("4959{:052}", n + 1))).collect();
    let mut letters: Vec<Value> = events[GIVEN_UP..].to_vec();
    for letter in &mut letters[..3] {
        let members = letter.as_object_mut().unwrap();
        members.insert("received_at".into(), json!(format_rfc3339(OffsetDateTime::now_utc())));
        members.insert("ingest_id".into(), json!(IngestId::generate().to_string()));
    }
    letters[3].as_object_mut().unwrap().remove("id");
    let reason = "the table refused the item: ValidationException";
    let mut bodies: Vec<String> = letters
        .iter()
        .zip(&letter_positions)
        .map(|(letter, (shard, sequence))| {
            let data = letter.to_string();
            PoisonMessage::new(reason.into(), shard, sequence, field(letter, "user_id"), None, data.as_bytes())
                .body(None)
        })
        .collect();
    let too_large = json!({
        "reason": reason, "shard_id": shard, "sequence_number": "4959", "partition_key": "u-big",
        "data_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![b'x'; 98_304]),
        "data_bytes": 98_305, "truncated": true,
    });
    bodies.push(too_large.to_string());
    for body in bodies {
        sqs.send_message().queue_url(queue_url).message_body(body).send().await.unwrap();
    }

    // A dry run reports what it found and changes nothing.
    let (_, objects) = failure_bucket(&stack).await;
    let summary = redrive(&stack, Options { dry_run: true, delete_failure_objects: true, ..Options::default() }).await;
    let bucket = summary.bucket.clone().unwrap();
    assert_eq!((bucket.objects as usize, bucket.objects_read as usize), (objects, objects));
    assert_eq!(bucket.conditions["RetryAttemptsExhausted"], GIVEN_UP as u64);
    assert_eq!((bucket.records.found, bucket.records.to_resubmit), (GIVEN_UP as u64, GIVEN_UP as u64));
    let queue = summary.queue.clone().unwrap();
    assert_eq!((queue.messages, queue.records.to_resubmit, queue.records.skipped), (5, 4, 1));
    assert_eq!(queue.reasons.values().sum::<u64>(), 5);
    assert_eq!((summary.adjusted.ids_added, summary.adjusted.timestamps_added), (3, 1));
    assert_eq!(summary.adjusted.ingest_ids_dropped, 3);
    assert_eq!(summary.total().resubmitted, 0);
    assert_eq!(read_stream(&stack, ingest_stream).await.len(), GIVEN_UP, "nothing was put");
    assert_eq!(failure_bucket(&stack).await, (GIVEN_UP as u64, objects), "nothing was deleted");
    assert_eq!(queue_depth(&stack).await, (5, 0), "every message is visible again at once");
    assert_eq!(counts(&metrics(&stack).await), [THROUGH_INGEST as u64, 0, 0, 0]);

    // The redrive.
    let summary = redrive(&stack, Options::default()).await;
    assert_eq!(summary.total().resubmitted, DISTINCT as u64);
    assert_eq!((summary.total().skipped, summary.total().failed), (1, 0));
    assert_eq!(summary.queue.as_ref().unwrap().deleted, DEAD_LETTERED as u64);
    assert!(summary.problems[0].reason.starts_with("holds only the first 98304 of 98305 bytes"), "{summary}");
    assert!(!summary.has_failures());
    let totals = until(Duration::from_secs(40), "every redriven event processed", || async move {
        let totals = metrics(shared).await;
        (totals["events_processed"] == DISTINCT).then_some(totals)
    })
    .await;
    // Ingest counted its events received; the transform counts the others as it stores them.
    assert_eq!(counts(&totals), [DISTINCT as u64, DISTINCT as u64, 0, 0], "{totals}");
    assert_eq!(totals["current_queue_depth"], 0);

    let kept_ids = events[..THROUGH_INGEST].iter().chain(&direct[2..]).chain(&letters[..3]);
    for event in kept_ids {
        let item = stored(&stack, field(event, "source"), field(event, "id")).await;
        assert_eq!(field(&item, "payload"), field(event, "payload").to_uppercase());
    }
    for (event, position) in direct[..2].iter().zip(&positions).chain([(&letters[3], &letter_positions[3])]) {
        let item = stored(&stack, field(event, "source"), derived(position).as_str()).await;
        assert_eq!(field(&item, "payload"), field(event, "payload").to_uppercase());
    }
    // Sequence numbers are per shard here: the record is found by its bytes as well.
    let first_put = direct[2].to_string();
    let arrival = read_stream(&stack, ingest_stream)
        .await
        .into_iter()
        .find(|r| r.sequence_number() == positions[2].1 && r.data().as_ref() == first_put.as_bytes())
        .and_then(|r| r.approximate_arrival_timestamp().cloned())
        .unwrap();
    let without_timestamp = stored(&stack, field(&direct[2], "source"), field(&direct[2], "id")).await;
    let timestamp = OffsetDateTime::parse(field(&without_timestamp, "timestamp"), &Rfc3339).unwrap();
    let first_arrival = OffsetDateTime::from_unix_timestamp_nanos(arrival.as_nanos()).unwrap();
    assert!((timestamp - first_arrival).abs() < time::Duration::milliseconds(2), "{timestamp} vs {first_arrival}");

    let published = read_stream(&stack, output_stream).await;
    assert_eq!(published.len(), DISTINCT);
    let identities: HashSet<(String, String)> = published
        .iter()
        .map(|r| {
            let event: Value = serde_json::from_slice(r.data().as_ref()).unwrap();
            (field(&event, "source").to_owned(), field(&event, "id").to_owned())
        })
        .collect();
    assert_eq!(identities.len(), DISTINCT, "each event published once");
    assert_eq!(queue_depth(&stack).await, (1, 0), "only the message that cannot be redriven is left");

    // A second redrive re-submits the failure objects again: ingest's records are recognised
    // by their ingest id (republished, not counted), the others count as duplicates.
    let summary =
        redrive(&stack, Options { from: Sources::Both, delete_failure_objects: true, ..Options::default() }).await;
    let bucket = summary.bucket.clone().unwrap();
    assert_eq!((bucket.records.resubmitted, bucket.objects_deleted as usize), (GIVEN_UP as u64, objects));
    assert_eq!(summary.queue.as_ref().unwrap().records.skipped, 1);
    let totals = until(Duration::from_secs(40), "the second redrive processed", || async move {
        let published = read_stream(shared, output_stream).await.len();
        let totals = metrics(shared).await;
        (totals["events_duplicate"] == DIRECT && published == DISTINCT + THROUGH_INGEST).then_some(totals)
    })
    .await;
    assert_eq!(counts(&totals), [(DISTINCT + DIRECT) as u64, DISTINCT as u64, DIRECT as u64, 0], "{totals}");
    assert_eq!(totals["current_queue_depth"], 0);
    assert_eq!(failure_bucket(&stack).await, (0, 0), "redriven objects were deleted");

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), polling).await.unwrap().unwrap().unwrap();
}

/// A record of 200 KiB written straight to the ingest stream, which the transform refuses
/// (its `type` is not a token): too large for a queue message, it is kept whole in the
/// failure bucket under its stream position, the message names the object, and a redrive
/// puts it back on the stream byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_refused_record_is_kept_whole_and_redriven_byte_for_byte() {
    let stack = stack(&[("TransformBatchWindowSeconds", "0")]).await;
    let outputs = stack.manifest.outputs.clone();
    let ingest_stream = &outputs["IngestStreamName"];
    let bucket = &outputs["StreamFailureBucketName"];
    let shared = &stack;

    let head = r#"{"id":"big-1","source":"web","type":"Not A Token","timestamp":"2026-11-30T10:00:00Z","payload":""#;
    let mut data = head.as_bytes().to_vec();
    data.resize(200 * 1024 - 2, b'x');
    data.extend_from_slice(br#""}"#);
    assert_eq!(data.len(), 200 * 1024);
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let put = kinesis
        .put_record()
        .stream_name(ingest_stream)
        .partition_key("u-big")
        .data(Blob::new(data.clone()))
        .send()
        .await
        .unwrap();
    let (shard, sequence) = (put.shard_id().to_owned(), put.sequence_number().to_owned());

    let running = stack.spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    until(Duration::from_secs(30), "the record dead-lettered", || async move {
        (queue_depth(shared).await == (1, 0)).then_some(())
    })
    .await;
    running.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(metrics(&stack).await["events_failed"], 1);

    // The message, left visible: it names the object, which holds the record whole.
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let received =
        sqs.receive_message().queue_url(&outputs["DeadLetterQueueUrl"]).visibility_timeout(0).send().await.unwrap();
    let body: Value = serde_json::from_str(received.messages()[0].body().unwrap()).unwrap();
    assert!(field(&body, "reason").contains("type"), "{body}");
    let key = format!("dead-letters/{shard}/{sequence}");
    assert_eq!(body["data_object"], json!({"bucket": bucket, "key": key}));
    assert_eq!(body["data_bytes"], data.len());
    assert!(body.get("data_base64").is_none(), "{body}");
    let object = s3(&stack).get_object().bucket(bucket).key(&key).send().await.unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes(), data);

    let summary = redrive(&stack, Options { from: Sources::Dlq, ..Options::default() }).await;
    assert_eq!(summary.total().resubmitted, 1, "{summary}");
    assert!(!summary.has_failures());
    assert_eq!(queue_depth(&stack).await, (0, 0), "the message is deleted once its record is back");

    let copies: Vec<String> = read_stream(&stack, ingest_stream)
        .await
        .into_iter()
        .filter(|r| r.data().as_ref() == data.as_slice() && r.partition_key() == Some("u-big"))
        .map(|r| r.sequence_number().to_owned())
        .collect();
    assert_eq!(copies.len(), 2, "the first put and the redriven one, byte for byte");
    assert_eq!(copies[0], sequence);
}
