//! The pipeline against the AWS API emulator through the real SDK clients, with the
//! resources of template.yaml: ingest → stream → transform → table → metrics.

use eventline_stack_tests as common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record};
use aws_smithy_types::config_bag::ConfigBag;
use common::{eventually, http, read_stream, stack, until};
use eventline_aws::KinesisSink;
use eventline_local::LocalStack;
use eventline_local::poller::kinesis_event;
use eventline_model::Rules;
use eventline_model::retry::Backoff;
use eventline_model::sink::{OutRecord, PutFailure, RecordSink};
use eventline_transform::dynamo::DynamoEventStore;
use eventline_transform::handler::Transform;
use eventline_transform::sqs::SqsDeadLetters;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn output(stack: &LocalStack, key: &str) -> String {
    stack.manifest.outputs[key].clone()
}

async fn metrics(stack: &LocalStack) -> Value {
    let request = http::Request::builder().uri("/metrics").body(lambda_http::Body::Empty).unwrap();
    let response = stack.functions.query.handle(eventline_query::routes::routed(request)).await;
    serde_json::from_slice(response.body()).unwrap()
}

async fn stored(stack: &LocalStack, source: &str, id: &str) -> Option<Value> {
    let request =
        http::Request::builder().uri(format!("/events/{source}/{id}")).body(lambda_http::Body::Empty).unwrap();
    let response = stack.functions.query.handle(eventline_query::routes::routed(request)).await;
    (response.status() == 200).then(|| serde_json::from_slice(response.body()).unwrap())
}

fn ids_of(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(r.data().as_ref()).unwrap()["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_events(stack: &LocalStack, events: Value) -> Value {
    let request = http::Request::builder()
        .method("POST")
        .uri("/events")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(events.to_string()))
        .unwrap();
    let response = stack.functions.ingest.handle(eventline_ingest::routes::routed(request)).await;
    assert!(response.status().is_success(), "{:?}", response.body());
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_http_to_table_and_metrics_with_exact_counts() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let addr = running.addr;

    let single = http(
        addr,
        "POST",
        "/events",
        Some(&json!({"id": "e-1", "source": "web", "payload": "straße", "user_id": "u-1"})),
    )
    .await;
    assert_eq!(single.status, 202);
    assert_eq!(single.body, json!({"id": "e-1", "source": "web", "status": "accepted"}));

    // An array with a duplicate inside it and one invalid item.
    let array = json!([
        {"id": "e-2", "source": "web", "payload": "two"},
        {"id": "e-2", "source": "web", "payload": "two"},
        {"id": "e-3", "source": "mobile"},
        {"id": "not valid!", "source": "web"}
    ]);
    let response = http(addr, "POST", "/events", Some(&array)).await;
    assert_eq!(response.status, 207);
    assert_eq!(response.body["accepted"], 3);
    assert_eq!(response.body["results"][3]["status"], "rejected");

    let batch = json!({"events": [{"id": "e-4", "source": "iot", "timestamp": 1_700_000_000}]});
    assert_eq!(http(addr, "POST", "/events/batch", Some(&batch)).await.status, 202);

    let event = loop_get(addr, "/events/web/e-1").await;
    assert_eq!(event["payload"], "STRASSE");
    assert_eq!(event["user_id"], "u-1");
    assert!(event["sequence_number"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(event["latency_ms"].is_u64());
    assert_eq!(loop_get(addr, "/events/iot/e-4").await["timestamp"], "2023-11-14T22:13:20Z");
    let two = loop_get(addr, "/events/web/e-2").await;
    assert_eq!(two["payload"], "TWO", "the first of two records with one identity is kept");

    // The same identity again with other content, in a later request: stored once, and
    // counted as a conflict rather than a duplicate.
    let again = http(addr, "POST", "/events", Some(&json!({"id": "e-1", "source": "web", "payload": "later"}))).await;
    assert_eq!(again.status, 202);
    let totals = until(WAIT, "all received events accounted for", || async move {
        let totals = http(addr, "GET", "/metrics", None).await.body;
        (totals["current_queue_depth"] == 0 && totals["events_received"] == 6).then_some(totals)
    })
    .await;
    assert_eq!(totals["events_received"], 6);
    assert_eq!(totals["events_processed"], 4);
    assert_eq!(totals["events_duplicate"], 1);
    assert_eq!(totals["events_conflict"], 1);
    assert_eq!(totals["events_failed"], 0);
    assert_eq!(totals["active_workers"], 1);
    assert!(totals["p99_processing_latency_ms"].is_u64());
    assert_eq!(loop_get(addr, "/events/web/e-1").await["payload"], "STRASSE");

    let health = http(addr, "GET", "/health", None).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    assert_eq!(http(addr, "GET", "/healthz", None).await.status, 200);
    assert_eq!(http(addr, "GET", "/events/web/never", None).await.status, 404);
    assert_eq!(http(addr, "GET", "/unknown", None).await.status, 404);

    // Output stream: each stored event published (at least once), duplicates not.
    let published = ids_of(&read_stream(&stack, &output(&stack, "OutputStreamName")).await);
    let mut unique = published.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique, ["e-1", "e-2", "e-3", "e-4"]);

    running.stop(WAIT).await.unwrap();
}

async fn loop_get(addr: SocketAddr, path: &str) -> Value {
    until(WAIT, path, || async move {
        let response = http(addr, "GET", path, None).await;
        (response.status == 200).then_some(response.body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_queue_and_the_rest_of_the_batch_is_stored() {
    let stack = stack(&[]).await;
    let kinesis = aws_sdk_kinesis::Client::new(&stack.sdk);
    let good = |id: &str| {
        json!({"id": id, "source": "web", "type": "t", "timestamp": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z"})
            .to_string()
            .into_bytes()
    };
    let entries: Vec<PutRecordsRequestEntry> = [good("p-1"), b"\xff\xfe".to_vec(), b"{\"id\": 1".to_vec(), good("p-2")]
        .into_iter()
        .map(|data| PutRecordsRequestEntry::builder().partition_key("k").data(Blob::new(data)).build().unwrap())
        .collect();
    kinesis
        .put_records()
        .stream_name(output(&stack, "IngestStreamName"))
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();

    let running = stack.spawn(any_port()).await.unwrap();
    eventually(WAIT, "both good records stored", || async {
        stored(&stack, "web", "p-1").await.is_some() && stored(&stack, "web", "p-2").await.is_some()
    })
    .await;
    let stats = running.stop(WAIT).await.unwrap();
    assert_eq!(stats.retries, 0, "poison records do not block the shard");

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let received = sqs
        .receive_message()
        .queue_url(output(&stack, "DeadLetterQueueUrl"))
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let mut bodies: Vec<Value> =
        received.messages().iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect();
    bodies.sort_by_key(|b| b["sequence_number"].as_str().unwrap().to_owned());
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0]["reason"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(bodies[0]["data_base64"], "//4=");
    assert!(bodies[1]["reason"].as_str().unwrap().contains("not a valid event"));
    assert_eq!(bodies[1]["shard_id"], "shardId-000000000000");

    let totals = metrics(&stack).await;
    assert_eq!((totals["events_processed"].as_u64(), totals["events_failed"].as_u64()), (Some(2), Some(2)));
}

/// Fails, once, the first transaction after one went through: a batch's first commit group
/// is stored, the next is not (the failure is one the store does not retry).
#[derive(Debug, Default)]
struct FailingSecondTransaction {
    went_through: AtomicBool,
    failed: AtomicBool,
}

impl Intercept for FailingSecondTransaction {
    fn name(&self) -> &'static str {
        "FailingSecondTransaction"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let transaction = context.input().downcast_ref::<TransactWriteItemsInput>().is_some();
        if transaction && self.went_through.load(Ordering::SeqCst) && !self.failed.swap(true, Ordering::SeqCst) {
            return Err("injected failure".into());
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if context.output_or_error().is_ok_and(|output| output.downcast_ref::<TransactWriteItemsOutput>().is_some()) {
            self.went_through.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Refuses every record on its first call, as a stream that is briefly unavailable.
struct FailingFirstPut<S> {
    inner: S,
    calls: AtomicUsize,
}

impl<S: RecordSink> RecordSink for FailingFirstPut<S> {
    async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PutFailure { code: "ServiceUnavailable".into(), message: "injected".into() });
        }
        self.inner.put_once(records).await
    }
}

fn reference_store(stack: &LocalStack, table: &str) -> eventline_aws::reference::ReferenceStore {
    eventline_aws::reference::ReferenceStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), table, Backoff::default())
}

fn no_retries() -> Backoff {
    Backoff { base: Duration::from_millis(1), max: Duration::from_millis(1), budget: Duration::ZERO }
}

/// 150 events through the real ingest handler, then the ingest stream read back.
async fn ingest_150(stack: &LocalStack) -> Vec<Record> {
    for chunk in 0..2 {
        let events: Vec<Value> =
            (0..75).map(|i| json!({"id": format!("m-{}", chunk * 75 + i), "source": "web"})).collect();
        assert_eq!(post_events(stack, Value::Array(events)).await["accepted"], 75);
    }
    let records = read_stream(stack, &output(stack, "IngestStreamName")).await;
    assert_eq!(records.len(), 150);
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_failing_mid_batch_and_redelivered_stores_and_counts_every_event_once() {
    let stack = stack(&[]).await;
    let records = ingest_150(&stack).await;
    let env = &stack.manifest.functions["transform"].environment;
    let stream_arn = stack.manifest.event_sources[0].stream_arn.clone();
    let failing_second = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&stack.sdk).interceptor(FailingSecondTransaction::default()).build(),
    );
    let store = DynamoEventStore::new(failing_second, &env["EVENTS_TABLE"], Backoff::default());
    let output = KinesisSink::new(aws_sdk_kinesis::Client::new(&stack.sdk), &env["OUTPUT_STREAM"]);
    let flaky = transform_with(&stack, store, output, Backoff::default());
    let event = kinesis_event(&records, "shardId-000000000000", &stream_arn, "us-east-1").unwrap();

    // The first commit group goes through; the second fails.
    let response = flaky.handle(event.clone()).await;
    let retry_from: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap()).collect();
    let first_group = metrics(&stack).await["events_processed"].as_u64().unwrap() as usize;
    assert!((1..150).contains(&first_group), "{first_group} stored by the first commit");
    assert_eq!(retry_from, [records[first_group].sequence_number().to_owned()]);

    // Lambda re-delivers from that record, then (say, after a timeout) the whole batch again.
    let redelivery = kinesis_event(&records[first_group..], "shardId-000000000000", &stream_arn, "us-east-1").unwrap();
    assert!(stack.functions.transform.handle(redelivery).await.batch_item_failures.is_empty());
    assert!(stack.functions.transform.handle(event).await.batch_item_failures.is_empty());

    let totals = metrics(&stack).await;
    assert_eq!(totals["events_processed"], 150);
    assert_eq!(totals["events_duplicate"], 0, "a redelivery is not a duplicate");
    assert_eq!(totals["events_received"], 150);
    assert_eq!(totals["current_queue_depth"], 0);
    for i in [0, 97, 98, 149] {
        assert!(stored(&stack, "web", &format!("m-{i}")).await.is_some(), "m-{i}");
    }
    let mut published = ids_of(&read_stream(&stack, &env["OUTPUT_STREAM"]).await);
    published.sort();
    published.dedup();
    assert_eq!(published.len(), 150, "every stored event is published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_but_not_published_are_published_on_redelivery() {
    let stack = stack(&[]).await;
    post_events(&stack, json!([{"id": "o-1", "source": "web"}, {"id": "o-2", "source": "web"}])).await;
    let records = read_stream(&stack, &output(&stack, "IngestStreamName")).await;
    let env = &stack.manifest.functions["transform"].environment;
    let output_sink = KinesisSink::new(aws_sdk_kinesis::Client::new(&stack.sdk), &env["OUTPUT_STREAM"]);
    let store =
        DynamoEventStore::new(aws_sdk_dynamodb::Client::new(&stack.sdk), &env["EVENTS_TABLE"], Backoff::default());
    let output = FailingFirstPut { inner: output_sink, calls: AtomicUsize::new(0) };
    let flaky = transform_with(&stack, store, output, no_retries());
    let event =
        kinesis_event(&records, "shardId-000000000000", &stack.manifest.event_sources[0].stream_arn, "us-east-1")
            .unwrap();
    let response = flaky.handle(event.clone()).await;
    assert_eq!(response.batch_item_failures.len(), 1, "unpublished events are not finished");
    assert!(read_stream(&stack, &env["OUTPUT_STREAM"]).await.is_empty());
    assert_eq!(metrics(&stack).await["events_processed"], 2, "stored and counted already");

    assert!(flaky.handle(event).await.batch_item_failures.is_empty());
    assert_eq!(ids_of(&read_stream(&stack, &env["OUTPUT_STREAM"]).await), ["o-1", "o-2"]);
    assert_eq!(metrics(&stack).await["events_processed"], 2, "not counted twice");
}

/// Reports every other entry as throttled on its first call, writing only the rest,
/// the way PutRecords fails part of a batch.
struct PartialFailure<S> {
    inner: S,
    first: AtomicUsize,
}

impl<S: RecordSink> RecordSink for PartialFailure<S> {
    async fn put_once(&self, records: &[OutRecord]) -> Result<Vec<Result<(), PutFailure>>, PutFailure> {
        if self.first.fetch_add(1, Ordering::SeqCst) > 0 {
            return self.inner.put_once(records).await;
        }
        let keep: Vec<OutRecord> = records.iter().step_by(2).cloned().collect();
        let mut written = self.inner.put_once(&keep).await?.into_iter();
        Ok((0..records.len())
            .map(|i| {
                if i % 2 == 0 {
                    written.next().unwrap_or(Ok(()))
                } else {
                    Err(PutFailure {
                        code: "ProvisionedThroughputExceededException".into(),
                        message: "rate exceeded".into(),
                    })
                }
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_records_partial_failure_is_retried_and_every_event_lands_once() {
    let stack = stack(&[]).await;
    let env: HashMap<String, String> = stack.manifest.functions["ingest"].environment.clone();
    let config = eventline_ingest::config::Config::from_lookup(&env).unwrap();
    let ingest = eventline_ingest::handler::Ingest {
        sink: PartialFailure {
            inner: KinesisSink::new(aws_sdk_kinesis::Client::new(&stack.sdk), &config.stream_name),
            first: AtomicUsize::new(0),
        },
        counter: eventline_ingest::counter::DynamoReceivedCounter::new(
            aws_sdk_dynamodb::Client::new(&stack.sdk),
            &config.table_name,
            Backoff::default(),
        ),
        rules: config.rules,
        user_claim: config.user_claim,
        write_keys: eventline_ingest::write_keys::WriteKeyGate::in_memory(),
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
            budget: Duration::from_secs(2),
        },
    };
    let events: Vec<Value> = (0..10).map(|i| json!({"id": format!("r-{i}"), "source": "web"})).collect();
    let request = http::Request::builder()
        .method("POST")
        .uri("/events")
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(Value::Array(events).to_string()))
        .unwrap();
    let response = ingest.handle(eventline_ingest::routes::routed(request)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(ingest.sink.first.load(Ordering::SeqCst), 2, "one retry, of the failed half only");
    let mut ids = ids_of(&read_stream(&stack, &config.stream_name).await);
    ids.sort();
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..10).map(|i| format!("r-{i}")).collect();
        e.sort();
        e
    };
    assert_eq!(ids, expected, "each event on the stream exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_batch_size_is_honoured_by_the_local_event_source() {
    let stack = stack(&[("TransformBatchSize", "7")]).await;
    assert_eq!(stack.manifest.event_sources[0].batch_size, 7);
    let events: Vec<Value> = (0..20).map(|i| json!({"id": format!("b-{i}"), "source": "web"})).collect();
    post_events(&stack, Value::Array(events)).await;
    let running = stack.spawn(any_port()).await.unwrap();
    eventually(WAIT, "all 20 processed", || async { metrics(&stack).await["events_processed"] == 20 }).await;
    let stats = running.stop(WAIT).await.unwrap();
    assert_eq!(stats.records, 20);
    assert!(stats.batches >= 3, "{stats:?}");
    assert!(stats.largest_batch <= 7, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_drains_everything_accepted_before_returning() {
    let stack = stack(&[]).await;
    let running = stack.spawn(any_port()).await.unwrap();
    let events: Vec<Value> = (0..100).map(|i| json!({"id": format!("d-{i}"), "source": "web"})).collect();
    let response = http(running.addr, "POST", "/events", Some(&Value::Array(events))).await;
    assert_eq!(response.status, 202);
    running.stop(WAIT).await.unwrap();
    assert_eq!(metrics(&stack).await["events_processed"], 100, "nothing accepted is left unprocessed");
}

/// The transform as deployed, but for its store, its output stream and its publish budget.
fn transform_with<St, Si>(
    stack: &LocalStack,
    store: St,
    output: Si,
    backoff: Backoff,
) -> Transform<St, Si, SqsDeadLetters, eventline_transform::enrich::CachedReference> {
    let env = &stack.manifest.functions["transform"].environment;
    Transform {
        store,
        output,
        dead_letters: SqsDeadLetters::built_on_first_use(
            &stack.sdk,
            &env["DEAD_LETTER_QUEUE_URL"],
            &env["DEAD_LETTER_BUCKET"],
            Backoff::default(),
        ),
        reference: eventline_transform::enrich::CachedReference::new(reference_store(stack, &env["EVENTS_TABLE"])),
        backoff,
        rules: Rules::default(),
    }
}
