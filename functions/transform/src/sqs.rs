//! Dead letters in SQS, with records too large for a message stored whole in the failure
//! bucket (S3) first.

use std::sync::{Arc, LazyLock};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use eventline_aws::{SDK_OPERATION_TIMEOUT, error_chain};
use eventline_model::batch;
use eventline_model::retry::Backoff;

use crate::dead_letter::{DataObject, DeadLetterError, DeadLetters, MAX_MESSAGE_BYTES, PoisonMessage};

/// SendMessageBatch's limit on messages per call.
const MAX_MESSAGES_PER_BATCH: usize = 10;

/// Error codes of a 4xx answer that mean "later", not "never".
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestTimeTooSkewed",
    "ExpiredToken",
];

/// A failed call, as refused (a 4xx answer other than throttling) or unavailable.
fn call_error<E>(error: SdkError<E, HttpResponse>) -> DeadLetterError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &error {
        let status = service.raw().status().as_u16();
        let code = service.err().code().unwrap_or_default();
        if (400..500).contains(&status) && status != 408 && status != 429 && !TRANSIENT_CODES.contains(&code) {
            return DeadLetterError::Refused {
                code: if code.is_empty() { status.to_string() } else { code.to_owned() },
                message: service.err().message().unwrap_or_default().to_owned(),
            };
        }
    }
    DeadLetterError::unavailable(error)
}

/// How a client comes to be: given, or built when the first poison record needs it.
type Lazy<C> = LazyLock<C, Box<dyn FnOnce() -> C + Send>>;

#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    sqs: Arc<Lazy<aws_sdk_sqs::Client>>,
    s3: Arc<Lazy<aws_sdk_s3::Client>>,
    queue_url: String,
    bucket: String,
    backoff: Backoff,
}

/// An S3 client for `sdk`; an emulator at one address cannot serve each bucket under a host
/// name of its own, so with an endpoint set it addresses buckets by path.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let mut config = aws_sdk_s3::config::Builder::from(sdk);
    if sdk.endpoint_url().is_some() {
        config = config.force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}

impl SqsDeadLetters {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        s3: aws_sdk_s3::Client,
        queue_url: impl Into<String>,
        bucket: impl Into<String>,
        backoff: Backoff,
    ) -> Self {
        Self::with_clients_built_by(Box::new(move || sqs), Box::new(move || s3), queue_url, bucket, backoff)
    }

    /// Builds the clients from `sdk` when a message first needs them, not at start-up: the
    /// SQS client for the first poison record, the S3 client for the first one too large for
    /// its message. Most environments never see a poison record, and building an SDK client
    /// is about a third of what a function adds to the runtime's own cold start (docs/figures.md,
    /// "Cold start").
    pub fn built_on_first_use(
        sdk: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
        bucket: impl Into<String>,
        backoff: Backoff,
    ) -> Self {
        let (for_sqs, for_s3) = (sdk.clone(), sdk.clone());
        Self::with_clients_built_by(
            Box::new(move || aws_sdk_sqs::Client::new(&for_sqs)),
            Box::new(move || s3_client(&for_s3)),
            queue_url,
            bucket,
            backoff,
        )
    }

    fn with_clients_built_by(
        sqs: Box<dyn FnOnce() -> aws_sdk_sqs::Client + Send>,
        s3: Box<dyn FnOnce() -> aws_sdk_s3::Client + Send>,
        queue_url: impl Into<String>,
        bucket: impl Into<String>,
        backoff: Backoff,
    ) -> Self {
        Self {
            sqs: Arc::new(LazyLock::new(sqs)),
            s3: Arc::new(LazyLock::new(s3)),
            queue_url: queue_url.into(),
            bucket: bucket.into(),
            backoff,
        }
    }

    /// Stores a record's data whole under its stream position.
    async fn store(&self, message: &PoisonMessage) -> Result<DataObject, DeadLetterError> {
        let key = message.object_key();
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(message.data.clone()))
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(error = %error_chain(&error), %key, "PutObject failed");
                call_error(error)
            })?;
        Ok(DataObject { bucket: self.bucket.clone(), key })
    }

    /// One try for the `pending` messages: the data of large records stored (once per
    /// send), then the messages sent. Sets the outcome of each.
    async fn attempt(
        &self,
        messages: &[PoisonMessage],
        pending: &[usize],
        stored: &mut [Option<DataObject>],
        outcome: &mut [Result<(), DeadLetterError>],
    ) {
        let mut ready = Vec::with_capacity(pending.len());
        for &i in pending {
            outcome[i] = Err(DeadLetterError::unavailable("no answer within the retry budget"));
            if messages[i].fits_in_message() || stored[i].is_some() {
                ready.push(i);
                continue;
            }
            match self.store(&messages[i]).await {
                Ok(object) => {
                    stored[i] = Some(object);
                    ready.push(i);
                }
                Err(error) => outcome[i] = Err(error),
            }
        }
        let bodies: Vec<String> = ready.iter().map(|&i| messages[i].body(stored[i].as_ref())).collect();
        for group in batches(&bodies) {
            let indexes: Vec<usize> = group.clone().map(|n| ready[n]).collect();
            self.send_batch(&bodies[group], &indexes, outcome).await;
        }
    }

    /// One SendMessageBatch call; the ids are message indexes.
    async fn send_batch(&self, bodies: &[String], indexes: &[usize], outcome: &mut [Result<(), DeadLetterError>]) {
        let entries: Result<Vec<_>, _> = bodies
            .iter()
            .zip(indexes)
            .map(|(body, i)| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(body).build())
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                let error = DeadLetterError::unavailable(error);
                indexes.iter().for_each(|&i| outcome[i] = Err(error.clone()));
                return;
            }
        };
        match self.sqs.send_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await {
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "SendMessageBatch failed");
                let error = call_error(error);
                indexes.iter().for_each(|&i| outcome[i] = Err(error.clone()));
            }
            Ok(output) => {
                indexes.iter().for_each(|&i| outcome[i] = Ok(()));
                for failed in output.failed() {
                    if let Ok(i) = failed.id().parse::<usize>()
                        && i < outcome.len()
                    {
                        let (code, message) = (failed.code().to_owned(), failed.message().unwrap_or_default());
                        outcome[i] = Err(if failed.sender_fault() {
                            DeadLetterError::Refused { code, message: message.to_owned() }
                        } else {
                            DeadLetterError::unavailable(format!("{code}: {message}"))
                        });
                    }
                }
            }
        }
    }
}

impl DeadLetters for SqsDeadLetters {
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    async fn send(&self, messages: &[PoisonMessage]) -> Vec<Result<(), DeadLetterError>> {
        let mut outcome: Vec<Result<(), DeadLetterError>> =
            vec![Err(DeadLetterError::unavailable("not sent")); messages.len()];
        let mut stored: Vec<Option<DataObject>> = vec![None; messages.len()];
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut retries = self.backoff.start();
        loop {
            // A try that starts within the budget ends at most one SDK call's time after it,
            // however many records it stores and batches it sends.
            let time = retries.remaining().max(SDK_OPERATION_TIMEOUT);
            let attempt = self.attempt(messages, &pending, &mut stored, &mut outcome);
            if tokio::time::timeout(time, attempt).await.is_err() {
                tracing::warn!(?time, "dead-lettering took longer than its budget");
            }
            // What was refused for what it is would be refused again.
            pending.retain(|&i| outcome[i].as_ref().is_err_and(DeadLetterError::is_transient));
            if pending.is_empty() {
                break;
            }
            tracing::warn!(failed = pending.len(), retries = retries.count(), "dead-letter messages not sent");
            if !retries.wait().await {
                break;
            }
        }
        outcome
    }
}

/// Groups of at most 10 messages and 256 KiB, as SendMessageBatch takes them: ranges of
/// `bodies`.
fn batches(bodies: &[String]) -> Vec<std::ops::Range<usize>> {
    batch::split(bodies, MAX_MESSAGES_PER_BATCH, MAX_MESSAGE_BYTES, String::len)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use serde_json::Value;

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    use crate::dead_letter::MAX_INLINE_BYTES;

    const BUCKET: &str = "failures";

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap()
    }

    fn message(data: &[u8]) -> PoisonMessage {
        PoisonMessage::new("bad".into(), "shardId-0", "1", "pk", None, data)
    }

    #[test]
    fn batches_respect_count_and_size() {
        let small: Vec<String> = (0..25).map(|_| message(b"x").body(None)).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<String> = (0..4).map(|_| message(&vec![1u8; MAX_INLINE_BYTES]).body(None)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|r| r.len()).collect();
        assert_eq!(sizes, [1, 1, 1, 1]);
    }

    /// A stand-in for S3 and SQS on one HTTP client: each PutObject answers with the next
    /// of `s3_answers` (then 200), each SendMessageBatch takes every entry. It keeps what it
    /// was sent.
    #[derive(Debug, Default)]
    struct Services {
        s3_answers: Mutex<Vec<(u16, &'static str)>>,
        /// (path, body) of each PutObject.
        puts: Mutex<Vec<(String, Vec<u8>)>>,
        /// The message bodies of each SendMessageBatch.
        sent: Mutex<Vec<Vec<String>>>,
    }

    #[derive(Debug, Clone)]
    struct Fake(Arc<Services>);

    impl HttpConnector for Fake {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body = request.body().bytes().unwrap_or_default().to_vec();
            let (status, answer) = if request.uri().starts_with("http://s3.test/") {
                let path = request.uri().trim_start_matches("http://s3.test").split('?').next().unwrap_or_default();
                self.0.puts.lock().unwrap().push((path.to_owned(), body));
                let mut answers = self.0.s3_answers.lock().unwrap();
                match answers.is_empty() {
                    true => (200, String::new()),
                    false => {
                        let (status, code) = answers.remove(0);
                        (status, format!("<Error><Code>{code}</Code><Message>no</Message></Error>"))
                    }
                }
            } else {
                let request: Value = serde_json::from_slice(&body).unwrap();
                let entries = request["Entries"].as_array().unwrap();
                let bodies = entries.iter().map(|e| e["MessageBody"].as_str().unwrap().to_owned()).collect();
                self.0.sent.lock().unwrap().push(bodies);
                let ok: Vec<Value> = entries
                    .iter()
                    .map(|e| serde_json::json!({"Id": e["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}))
                    .collect();
                (200, serde_json::json!({"Successful": ok, "Failed": []}).to_string())
            };
            HttpConnectorFuture::ready(Ok(HttpResponse::new(status.try_into().unwrap(), SdkBody::from(answer))))
        }
    }

    impl HttpClient for Fake {
        fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    fn config(endpoint: &str, http: Option<Fake>) -> aws_config::SdkConfig {
        let mut config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "test"),
            ))
            .endpoint_url(endpoint)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled());
        if let Some(http) = http {
            config = config.http_client(http);
        }
        config.build()
    }

    fn dead_letters(services: &Arc<Services>, budget: Duration) -> SqsDeadLetters {
        let fake = Fake(Arc::clone(services));
        SqsDeadLetters::new(
            aws_sdk_sqs::Client::new(&config("http://sqs.test", Some(fake.clone()))),
            s3_client(&config("http://s3.test", Some(fake))),
            "http://sqs.test/000000000000/dead-letters",
            BUCKET,
            Backoff::default().with_budget(budget),
        )
    }

    #[tokio::test]
    async fn a_large_record_is_stored_whole_under_its_position_and_its_message_names_the_object() {
        let services = Arc::new(Services::default());
        let data: Vec<u8> = (0..200 * 1024).map(|n| (n % 251) as u8).collect();
        let large = PoisonMessage::new("bad".into(), "shardId-000000000000", "4959", "u-1", None, &data);
        let outcome = dead_letters(&services, Duration::ZERO).send(&[message(b"small"), large]).await;
        assert!(outcome.iter().all(Result::is_ok), "{outcome:?}");

        let puts = services.puts.lock().unwrap();
        assert_eq!(puts.len(), 1, "only the record too large for its message is stored");
        assert_eq!(puts[0].0, "/failures/dead-letters/shardId-000000000000/4959");
        assert_eq!(puts[0].1, data, "byte for byte");
        let sent: Vec<Value> = services.sent.lock().unwrap().concat().iter().map(|b| json(b)).collect();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0]["data_base64"], STANDARD.encode(b"small"));
        assert_eq!(sent[1]["data_object"]["key"], "dead-letters/shardId-000000000000/4959");
        assert_eq!(sent[1]["data_object"]["bucket"], BUCKET);
        assert_eq!(sent[1]["data_bytes"], data.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_bucket_is_tried_again_and_the_message_waits_for_the_object() {
        let services = Arc::new(Services::default());
        services.s3_answers.lock().unwrap().push((503, "SlowDown"));
        let large = message(&vec![b'x'; MAX_INLINE_BYTES + 1]);
        let outcome = dead_letters(&services, Duration::from_secs(5)).send(&[large]).await;
        assert!(outcome[0].is_ok(), "{outcome:?}");
        assert_eq!(services.puts.lock().unwrap().len(), 2);
        assert_eq!(services.sent.lock().unwrap().concat().len(), 1, "sent once, after the object was stored");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_object_is_not_tried_again_and_no_message_points_at_nothing() {
        let services = Arc::new(Services::default());
        services.s3_answers.lock().unwrap().push((403, "AccessDenied"));
        let large = message(&vec![b'x'; MAX_INLINE_BYTES + 1]);
        let outcome = dead_letters(&services, Duration::from_secs(5)).send(&[large, message(b"small")]).await;
        assert!(
            matches!(&outcome[0], Err(DeadLetterError::Refused { code, .. }) if code == "AccessDenied"),
            "{outcome:?}"
        );
        assert!(outcome[1].is_ok(), "the other record is dead-lettered all the same");
        assert_eq!(services.puts.lock().unwrap().len(), 1, "a refusal is final");
        let sent = services.sent.lock().unwrap().concat();
        assert_eq!(sent.len(), 1);
        assert!(json(&sent[0]).get("data_object").is_none());
    }

    #[tokio::test]
    async fn each_client_is_built_once_when_a_record_first_needs_it_not_at_start_up() {
        let built = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
        let counted = |n: usize| {
            let built = Arc::clone(&built);
            move || built[n].fetch_add(1, Ordering::SeqCst)
        };
        // Nothing listens on port 1: each call fails at once, on loopback.
        let (count_sqs, count_s3) = (counted(0), counted(1));
        let dead_letters = SqsDeadLetters::with_clients_built_by(
            Box::new(move || {
                count_sqs();
                aws_sdk_sqs::Client::new(&config("http://127.0.0.1:1", None))
            }),
            Box::new(move || {
                count_s3();
                s3_client(&config("http://127.0.0.1:1", None))
            }),
            "http://127.0.0.1:1/000000000000/dead-letters",
            BUCKET,
            Backoff::default().with_budget(Duration::ZERO),
        );
        let clone = dead_letters.clone();
        let counts = || [built[0].load(Ordering::SeqCst), built[1].load(Ordering::SeqCst)];
        assert_eq!(counts(), [0, 0], "built before they were needed");

        let outcome = dead_letters.send(&[message(b"x"), message(b"y")]).await;
        assert!(outcome.iter().all(Result::is_err), "{outcome:?}");
        assert_eq!(counts(), [1, 0], "small records need no bucket");
        clone.send(&[message(&vec![0; MAX_INLINE_BYTES + 1])]).await;
        assert_eq!(counts(), [1, 1]);
        dead_letters.send(&[message(&vec![0; MAX_INLINE_BYTES + 1]), message(b"z")]).await;
        assert_eq!(counts(), [1, 1], "a clone shares the clients");
    }
}
