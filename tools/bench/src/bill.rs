//! What the pipeline costs, in US dollars per million events.
//!
//! A run counts quantities for a mix of events — requests, bytes, write and read units,
//! invocations with their modelled durations — and [`Usage`] holds them scaled to one
//! million events. This module multiplies them by the dated list prices in `prices.toml`
//! ([`Prices`]) and returns a [`Bill`]: one line per priced quantity, its total, and the
//! prices that dominate it. [`render_markdown`] and [`render_summary`] print bills as tables.
//!
//! Three kinds of cost are kept apart, because they answer different questions:
//! - **flow** ([`flow`]): what events cost as they pass through — requests, compute, writes,
//!   logs, traces — plus the fixed monthly charges (shard-hours, alarms, custom metrics, the
//!   KMS key) spread over the events of a month at a [`Steady`] rate;
//! - **storage** ([`storage`]): what keeping the events costs, which depends on how long they
//!   are kept ([`Retention`]); it is shown beside the flow, never folded into it;
//! - **comparison designs** priced from the same table: [`naive`] (a record and a write per
//!   event) and [`firehose_floor`] (storing each event once, as cheaply as AWS allows).
//!
//! The model's assumptions, which the figures depend on:
//! - no free tier, and the first (dearest) tier of any volume-tiered price;
//! - a month is 730 hours, as AWS bills hourly resources;
//! - a steady rate of events, so fixed monthly charges divide evenly over a month's events;
//! - Lambda duration is modelled by the caller (handler CPU time plus a stated latency per
//!   downstream call) and billed rounded up to the next 1 ms; cold-start init time is left
//!   out, as at a steady rate cold starts are rare;
//! - X-Ray traces are what the sampling rule records (by default the first request each
//!   second, then 5 %; see [`default_sampling_fraction`]);
//! - CloudWatch Logs is charged on the bytes ingested; storing the logs is not modelled;
//! - "KB" is 1,024 bytes and "GB" 2^30 bytes, as AWS meters them.

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write;

use serde::Deserialize;

/// The dated us-east-1 price table the bills use.
pub const PRICES: &str = include_str!("../prices.toml");

/// Bytes in a kilobyte, as AWS counts request and item sizes.
pub const KB: u64 = 1_024;

/// Bytes in a gigabyte, as AWS counts storage and ingested data.
pub const GB: f64 = 1_073_741_824.0;

/// Hours in a billing month: AWS prices monthly charges as 730 hours.
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Events in the unit every bill is expressed in.
pub const MILLION: f64 = 1_000_000.0;

/// Seconds in a day, for retention.
const SECONDS_PER_DAY: f64 = 86_400.0;

/// The largest object Firehose writes to S3: its buffer holds up to 128 MB (MiB) of records.
const FIREHOSE_BUFFER_BYTES: f64 = 128.0 * 1_048_576.0;

// ---------------------------------------------------------------------------------------------
// Prices
// ---------------------------------------------------------------------------------------------

/// Every price the model needs. The table must hold each of them, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PriceName {
    HttpApiRequest,
    LambdaArmGbSecond,
    LambdaRequest,
    KinesisShardHour,
    KinesisPutPayloadUnit,
    DynamodbWriteRequestUnit,
    DynamodbReadRequestUnit,
    DynamodbStorageGbMonth,
    DynamodbPitrGbMonth,
    SqsRequest,
    S3PutRequest,
    S3StorageGbMonth,
    CloudwatchLogsIngestGb,
    CloudwatchCustomMetricMonth,
    CloudwatchAlarmMonth,
    XrayTraceRecorded,
    KmsKeyMonth,
    KmsRequest,
    FirehoseIngestGb,
}

impl PriceName {
    /// All prices, in declaration order.
    pub const ALL: [PriceName; 19] = [
        PriceName::HttpApiRequest,
        PriceName::LambdaArmGbSecond,
        PriceName::LambdaRequest,
        PriceName::KinesisShardHour,
        PriceName::KinesisPutPayloadUnit,
        PriceName::DynamodbWriteRequestUnit,
        PriceName::DynamodbReadRequestUnit,
        PriceName::DynamodbStorageGbMonth,
        PriceName::DynamodbPitrGbMonth,
        PriceName::SqsRequest,
        PriceName::S3PutRequest,
        PriceName::S3StorageGbMonth,
        PriceName::CloudwatchLogsIngestGb,
        PriceName::CloudwatchCustomMetricMonth,
        PriceName::CloudwatchAlarmMonth,
        PriceName::XrayTraceRecorded,
        PriceName::KmsKeyMonth,
        PriceName::KmsRequest,
        PriceName::FirehoseIngestGb,
    ];

    /// The price's key under `[prices]` in the TOML table.
    pub fn key(self) -> &'static str {
        match self {
            PriceName::HttpApiRequest => "http_api_request",
            PriceName::LambdaArmGbSecond => "lambda_arm_gb_second",
            PriceName::LambdaRequest => "lambda_request",
            PriceName::KinesisShardHour => "kinesis_shard_hour",
            PriceName::KinesisPutPayloadUnit => "kinesis_put_payload_unit",
            PriceName::DynamodbWriteRequestUnit => "dynamodb_write_request_unit",
            PriceName::DynamodbReadRequestUnit => "dynamodb_read_request_unit",
            PriceName::DynamodbStorageGbMonth => "dynamodb_storage_gb_month",
            PriceName::DynamodbPitrGbMonth => "dynamodb_pitr_gb_month",
            PriceName::SqsRequest => "sqs_request",
            PriceName::S3PutRequest => "s3_put_request",
            PriceName::S3StorageGbMonth => "s3_storage_gb_month",
            PriceName::CloudwatchLogsIngestGb => "cloudwatch_logs_ingest_gb",
            PriceName::CloudwatchCustomMetricMonth => "cloudwatch_custom_metric_month",
            PriceName::CloudwatchAlarmMonth => "cloudwatch_alarm_month",
            PriceName::XrayTraceRecorded => "xray_trace_recorded",
            PriceName::KmsKeyMonth => "kms_key_month",
            PriceName::KmsRequest => "kms_request",
            PriceName::FirehoseIngestGb => "firehose_ingest_gb",
        }
    }

    /// Where the price sits in [`PriceName::ALL`] (and in [`Prices`]).
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PriceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// One entry of the table: `value` US dollars per `per` of `unit`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars, as the pricing page lists them (e.g. 0.20).
    pub value: f64,
    /// How many units `value` buys (e.g. 1,000,000 requests).
    pub per: u64,
    /// What is counted, as it reads after "per 1,000,000" or "per" (e.g. "requests", "GB-month").
    pub unit: String,
    /// The public AWS pricing page the value was read from.
    pub source: String,
    /// The metering rule that matters when counting, where there is one.
    #[serde(default)]
    pub note: Option<String>,
}

impl Price {
    /// Dollars for a single unit.
    pub fn unit_price(&self) -> f64 {
        self.value / self.per as f64
    }

    /// The price as the pricing page states it, e.g. "$0.20 per 1,000,000 requests".
    pub fn describe(&self) -> String {
        let mut value = format!("{}", self.value);
        match value.find('.') {
            None => value.push_str(".00"),
            Some(dot) if value.len() - dot == 2 => value.push('0'),
            Some(_) => {}
        }
        if self.per == 1 {
            format!("${value} per {}", self.unit)
        } else {
            format!("${value} per {} {}", with_thousands(&self.per.to_string()), self.unit)
        }
    }
}

/// The file as written: a date, a region and the prices by key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    date: String,
    region: String,
    currency: String,
    prices: BTreeMap<String, Price>,
}

/// Why a price table was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum PriceError {
    /// The text is not TOML of the expected shape.
    Syntax(String),
    /// These prices are absent (by key).
    Missing(Vec<&'static str>),
    /// A key that names no price the model uses (a typo, or a price added without code).
    Unknown(String),
    /// A price is present but unusable.
    Invalid { price: String, reason: String },
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceError::Syntax(message) => write!(f, "price table is not valid: {message}"),
            PriceError::Missing(keys) => write!(f, "price table lacks: {}", keys.join(", ")),
            PriceError::Unknown(key) => write!(f, "price table has an unknown price `{key}`"),
            PriceError::Invalid { price, reason } => write!(f, "price `{price}` is unusable: {reason}"),
        }
    }
}

impl std::error::Error for PriceError {}

/// A complete, checked price table.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// The day the prices were read (YYYY-MM-DD).
    pub date: String,
    /// The AWS region they apply to.
    pub region: String,
    /// Always "USD".
    pub currency: String,
    /// One per [`PriceName`], in [`PriceName::ALL`] order.
    prices: Vec<Price>,
}

impl Prices {
    /// The table shipped beside this module ([`PRICES`]).
    pub fn builtin() -> Result<Prices, PriceError> {
        Prices::parse(PRICES)
    }

    /// Parses and checks a table: every price present, none unknown, each value a finite
    /// non-negative number per a positive count, each source an https URL.
    pub fn parse(text: &str) -> Result<Prices, PriceError> {
        let file: PriceFile = toml::from_str(text).map_err(|e| PriceError::Syntax(e.to_string()))?;
        if file.currency != "USD" {
            return Err(PriceError::Syntax(format!("currency is {}, not USD", file.currency)));
        }
        let mut by_key = file.prices;
        let mut prices = Vec::with_capacity(PriceName::ALL.len());
        let mut missing = Vec::new();
        for name in PriceName::ALL {
            match by_key.remove(name.key()) {
                Some(price) => {
                    check(name.key(), &price)?;
                    prices.push(price);
                }
                None => missing.push(name.key()),
            }
        }
        if !missing.is_empty() {
            return Err(PriceError::Missing(missing));
        }
        if let Some(key) = by_key.into_keys().next() {
            return Err(PriceError::Unknown(key));
        }
        Ok(Prices { date: file.date, region: file.region, currency: file.currency, prices })
    }

    /// The entry for one price.
    pub fn get(&self, name: PriceName) -> &Price {
        &self.prices[name.index()]
    }

    /// Dollars for a single unit of one price.
    pub fn unit_price(&self, name: PriceName) -> f64 {
        self.get(name).unit_price()
    }

    /// Where and when the prices apply, for a bill's caption.
    pub fn caption(&self) -> String {
        format!("{} list prices of {}, no free tier", self.region, self.date)
    }
}

fn check(key: &str, price: &Price) -> Result<(), PriceError> {
    let invalid = |reason: &str| PriceError::Invalid { price: key.to_owned(), reason: reason.to_owned() };
    if !price.value.is_finite() || price.value < 0.0 {
        return Err(invalid("value must be a finite number of dollars, not negative"));
    }
    if price.per == 0 {
        return Err(invalid("per must be at least 1"));
    }
    if price.unit.trim().is_empty() {
        return Err(invalid("unit is empty"));
    }
    if !price.source.starts_with("https://") {
        return Err(invalid("source must be an https URL"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Metering rules: how AWS turns a size or a duration into billed units
// ---------------------------------------------------------------------------------------------

/// Whole chunks of `chunk` bytes needed for `bytes`, and never fewer than one: every request,
/// record or item is billed at least one unit, however small.
fn chunks(bytes: u64, chunk: u64) -> u64 {
    bytes.div_ceil(chunk).max(1)
}

/// HTTP API request units for one request: metered in 512 KB increments.
pub fn http_api_units(request_bytes: u64) -> u64 {
    chunks(request_bytes, 512 * KB)
}

/// Kinesis PUT payload units for one record: counted in 25 KB chunks.
pub fn kinesis_put_payload_units(record_bytes: u64) -> u64 {
    chunks(record_bytes, 25 * KB)
}

/// SQS requests billed for one call carrying `payload_bytes`: each 64 KB chunk is a request.
pub fn sqs_request_units(payload_bytes: u64) -> u64 {
    chunks(payload_bytes, 64 * KB)
}

/// DynamoDB write request units for writing one item: 1 KB per unit, twice that for a
/// transactional write. Each global secondary index the write changes costs its own units.
pub fn dynamodb_write_units(item_bytes: u64, transactional: bool) -> u64 {
    let units = chunks(item_bytes, KB);
    if transactional { 2 * units } else { units }
}

/// How a DynamoDB read is made, which sets what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Half a unit per 4 KB.
    Eventual,
    /// One unit per 4 KB.
    Strong,
    /// Two units per 4 KB.
    Transactional,
}

/// DynamoDB read request units for reading one item (or the bytes a query returns).
pub fn dynamodb_read_units(item_bytes: u64, consistency: ReadConsistency) -> f64 {
    let units = chunks(item_bytes, 4 * KB) as f64;
    match consistency {
        ReadConsistency::Eventual => units / 2.0,
        ReadConsistency::Strong => units,
        ReadConsistency::Transactional => 2.0 * units,
    }
}

/// Bytes Firehose bills for one record: rounded up to the next 5 KB.
pub fn firehose_billed_bytes(record_bytes: u64) -> u64 {
    chunks(record_bytes, 5 * KB) * 5 * KB
}

/// Milliseconds Lambda bills for one invocation of `seconds`: rounded up to the next 1 ms,
/// and at least 1 ms.
///
/// A duration given as an exact number of milliseconds (0.031 s) is billed as that number:
/// the product `seconds * 1000` may land a hair above the integer in floating point, so a
/// nanosecond of it is forgiven before rounding up.
pub fn billed_milliseconds(seconds: f64) -> u64 {
    let milliseconds = seconds * 1_000.0 - 1e-6;
    milliseconds.ceil().max(1.0) as u64
}

/// GB-seconds Lambda bills for one invocation: configured memory (MB / 1,024) times the
/// billed duration.
pub fn gb_seconds(memory_mb: u32, seconds: f64) -> f64 {
    f64::from(memory_mb) / 1_024.0 * billed_milliseconds(seconds) as f64 / 1_000.0
}

/// Seconds one Lambda invocation is modelled to take: the handler's CPU time plus a stated
/// latency for each downstream call it waits on (a Kinesis PutRecords, a DynamoDB write).
pub fn modelled_seconds(cpu_seconds: f64, calls: f64, seconds_per_call: f64) -> f64 {
    cpu_seconds + calls * seconds_per_call
}

/// The share of requests X-Ray's default sampling rule records at a steady request rate:
/// the first request each second, then 5 % of the rest.
///
/// The rule's one-a-second reservoir is taken as applying to the whole traced entry point,
/// as documented; if each concurrent environment kept its own, somewhat more would be recorded.
pub fn default_sampling_fraction(requests_per_second: f64) -> f64 {
    if requests_per_second <= 1.0 {
        return 1.0;
    }
    (1.0 + 0.05 * (requests_per_second - 1.0)) / requests_per_second
}

// ---------------------------------------------------------------------------------------------
// What a mix counted, and the steady rate that spreads fixed costs
// ---------------------------------------------------------------------------------------------

/// One Lambda function's share of a mix, per million events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionUsage {
    /// The function, as it should read in the bill (e.g. "ingest").
    pub name: String,
    /// Invocations per million events.
    pub invocations: f64,
    /// Configured memory.
    pub memory_mb: u32,
    /// Modelled duration of one invocation (see [`modelled_seconds`]), before billing rounds it.
    pub seconds_per_invocation: f64,
}

impl FunctionUsage {
    /// Billed GB-seconds per million events.
    pub fn gb_seconds(&self) -> f64 {
        self.invocations * gb_seconds(self.memory_mb, self.seconds_per_invocation)
    }
}

/// What one mix counted, per million events (stored bytes are per event).
///
/// The caller applies the metering rules when counting (see [`http_api_units`],
/// [`kinesis_put_payload_units`], [`dynamodb_write_units`], ...): transactional writes, index
/// writes and 64 KB SQS chunks are already in the units given here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Usage {
    /// The mix's name, for the bill's title.
    pub mix: String,
    /// HTTP API requests, as sent.
    pub api_requests: f64,
    /// HTTP API requests as billed, in 512 KB units (at least `api_requests`).
    pub api_request_units: f64,
    /// Each Lambda function the mix invoked (ingest, transform, query, authorizer, ...).
    pub functions: Vec<FunctionUsage>,
    /// Kinesis PUT payload units, ingest and output streams together.
    pub kinesis_put_payload_units: f64,
    /// DynamoDB write request units on the table itself.
    pub table_write_units: f64,
    /// DynamoDB write request units the global secondary index added.
    pub index_write_units: f64,
    /// DynamoDB read request units.
    pub read_units: f64,
    /// Bytes each event leaves in the table, item overhead included.
    pub table_bytes_per_event: f64,
    /// Bytes each event leaves in the index's copies, item overhead included.
    pub index_bytes_per_event: f64,
    /// SQS requests, in 64 KB units.
    pub sqs_requests: f64,
    /// S3 PUT requests.
    pub s3_puts: f64,
    /// Bytes the functions log: platform start and report lines, EMF lines, application lines.
    pub function_log_bytes: f64,
    /// Bytes of the HTTP API's access log lines.
    pub access_log_bytes: f64,
    /// X-Ray traces recorded (after sampling).
    pub xray_traces: f64,
    /// KMS requests.
    pub kms_requests: f64,
}

/// The steady rate the fixed monthly charges are spread over, and what incurs them.
#[derive(Debug, Clone, PartialEq)]
pub struct Steady {
    /// Events ingested per second, all month.
    pub events_per_second: f64,
    /// Provisioned Kinesis streams (ingest and output: 2).
    pub streams: u32,
    /// Shards in each stream.
    pub shards_per_stream: u32,
    /// Standard CloudWatch alarms.
    pub alarms: u32,
    /// Custom CloudWatch metrics (EMF metrics included).
    pub custom_metrics: u32,
    /// Customer managed KMS keys.
    pub kms_keys: u32,
}

impl Steady {
    /// Events ingested in a 730-hour month.
    pub fn events_per_month(&self) -> f64 {
        self.events_per_second * 3_600.0 * HOURS_PER_MONTH
    }

    /// A monthly quantity (shard-hours, alarm-months, ...) per million events ingested.
    pub fn per_million_events(&self, per_month: f64) -> f64 {
        per_month / (self.events_per_month() / MILLION)
    }

    /// How many times per million events something happens that happens once every
    /// `period_seconds`, e.g. an authorizer call per key every 300 s of cache.
    pub fn occurrences_per_million_events(&self, period_seconds: f64) -> f64 {
        MILLION / (self.events_per_second * period_seconds)
    }

    /// Shard-hours of all streams in a month.
    pub fn shard_hours_per_month(&self) -> f64 {
        f64::from(self.streams) * f64::from(self.shards_per_stream) * HOURS_PER_MONTH
    }
}

/// How long stored events are kept, which sets how many are stored at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Each event is deleted (by TTL) this many days after it arrived.
    Days(u32),
    /// Nothing is ever deleted; priced as the store stands after a year of events.
    KeptForeverAfterOneYear,
}

impl Retention {
    /// Days of events in the store.
    pub fn days_kept(self) -> f64 {
        match self {
            Retention::Days(days) => f64::from(days),
            Retention::KeptForeverAfterOneYear => 365.0,
        }
    }

    /// How the retention reads in a bill.
    pub fn label(self) -> String {
        match self {
            Retention::Days(1) => "at 1 day's retention".to_owned(),
            Retention::Days(days) => format!("at {days} days' retention"),
            Retention::KeptForeverAfterOneYear => "after a year, kept forever".to_owned(),
        }
    }
}

/// GB-months stored per million events ingested, for events of `bytes_per_event` kept as
/// `retention` says at the steady rate: a store of R·86,400·D events, paid for monthly,
/// divided by the R·3,600·730 events that arrive in that month.
pub fn stored_gb_months_per_million_events(bytes_per_event: f64, steady: &Steady, retention: Retention) -> f64 {
    let events_kept = steady.events_per_second * SECONDS_PER_DAY * retention.days_kept();
    steady.per_million_events(events_kept * bytes_per_event / GB)
}

// ---------------------------------------------------------------------------------------------
// Bills
// ---------------------------------------------------------------------------------------------

/// One priced quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The AWS service charging it.
    pub service: &'static str,
    /// What is counted, with its unit.
    pub item: String,
    /// The price applied.
    pub price: PriceName,
    /// Units per million events (requests, GB-seconds, GB-months, shard-hours, ...).
    pub quantity: f64,
    /// Dollars per unit.
    pub unit_price: f64,
    /// The price as the pricing page states it, for display.
    pub price_text: String,
    /// Dollars per million events: `quantity * unit_price`.
    pub dollars: f64,
}

/// Priced lines, all per million events.
#[derive(Debug, Clone, PartialEq)]
pub struct Bill {
    /// Whose cost it is: the mix, or the comparison design.
    pub subject: String,
    /// Which cost: "flow", "storage at 30 days' retention", ...
    pub title: String,
    /// Where and when the prices apply.
    pub caption: String,
    pub lines: Vec<Line>,
}

impl Bill {
    fn new(subject: impl Into<String>, title: impl Into<String>, prices: &Prices) -> Bill {
        Bill { subject: subject.into(), title: title.into(), caption: prices.caption(), lines: Vec::new() }
    }

    fn add(&mut self, prices: &Prices, service: &'static str, item: impl Into<String>, name: PriceName, quantity: f64) {
        let price = prices.get(name);
        let unit_price = price.unit_price();
        self.lines.push(Line {
            service,
            item: item.into(),
            price: name,
            quantity,
            unit_price,
            price_text: price.describe(),
            dollars: quantity * unit_price,
        });
    }

    /// Dollars per million events, all lines together.
    pub fn total(&self) -> f64 {
        self.lines.iter().map(|line| line.dollars).sum()
    }

    /// The prices that dominate the bill: each price's dollars (summed over the lines that
    /// use it), largest first, as many as it takes to cover `share` of the total (0.8 for
    /// 80 %). These are the figures whose change would move the bill the most.
    pub fn dominant_prices(&self, share: f64) -> Vec<(PriceName, f64)> {
        let total = self.total();
        if total <= 0.0 {
            return Vec::new();
        }
        let mut by_price: BTreeMap<PriceName, f64> = BTreeMap::new();
        for line in &self.lines {
            *by_price.entry(line.price).or_insert(0.0) += line.dollars;
        }
        let mut ranked: Vec<(PriceName, f64)> = by_price.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut covered = 0.0;
        let mut dominant = Vec::new();
        for (name, dollars) in ranked {
            if covered >= share * total {
                break;
            }
            covered += dollars;
            dominant.push((name, dollars));
        }
        dominant
    }
}

/// The pipeline's flow cost: everything a mix's events cost on their way through, plus the
/// fixed monthly charges spread over a month of events at the steady rate. Storage is apart
/// (see [`storage`]).
pub fn flow(prices: &Prices, usage: &Usage, steady: &Steady) -> Bill {
    let mut bill = Bill::new(usage.mix.as_str(), "flow", prices);
    bill.add(
        prices,
        "API Gateway",
        "HTTP API requests (512 KB units)",
        PriceName::HttpApiRequest,
        usage.api_request_units,
    );
    for function in &usage.functions {
        let billed_ms = billed_milliseconds(function.seconds_per_invocation);
        bill.add(
            prices,
            "Lambda",
            format!("{} duration, {} MB × {billed_ms} ms (GB-seconds)", function.name, function.memory_mb),
            PriceName::LambdaArmGbSecond,
            function.gb_seconds(),
        );
        bill.add(
            prices,
            "Lambda",
            format!("{} invocations", function.name),
            PriceName::LambdaRequest,
            function.invocations,
        );
    }
    bill.add(
        prices,
        "Kinesis",
        "PUT payload units, both streams",
        PriceName::KinesisPutPayloadUnit,
        usage.kinesis_put_payload_units,
    );
    bill.add(
        prices,
        "Kinesis",
        format!("shard-hours, {} streams × {} shards", steady.streams, steady.shards_per_stream),
        PriceName::KinesisShardHour,
        steady.per_million_events(steady.shard_hours_per_month()),
    );
    bill.add(prices, "DynamoDB", "table writes (WRU)", PriceName::DynamodbWriteRequestUnit, usage.table_write_units);
    bill.add(prices, "DynamoDB", "index writes (WRU)", PriceName::DynamodbWriteRequestUnit, usage.index_write_units);
    bill.add(prices, "DynamoDB", "reads (RRU)", PriceName::DynamodbReadRequestUnit, usage.read_units);
    bill.add(prices, "SQS", "requests (64 KB units)", PriceName::SqsRequest, usage.sqs_requests);
    bill.add(prices, "S3", "PUT requests", PriceName::S3PutRequest, usage.s3_puts);
    bill.add(
        prices,
        "CloudWatch",
        "function logs ingested (GB)",
        PriceName::CloudwatchLogsIngestGb,
        usage.function_log_bytes / GB,
    );
    bill.add(
        prices,
        "CloudWatch",
        "access logs ingested (GB)",
        PriceName::CloudwatchLogsIngestGb,
        usage.access_log_bytes / GB,
    );
    bill.add(
        prices,
        "CloudWatch",
        format!("custom metrics, {} (metric-months)", steady.custom_metrics),
        PriceName::CloudwatchCustomMetricMonth,
        steady.per_million_events(f64::from(steady.custom_metrics)),
    );
    bill.add(
        prices,
        "CloudWatch",
        format!("alarms, {} (alarm-months)", steady.alarms),
        PriceName::CloudwatchAlarmMonth,
        steady.per_million_events(f64::from(steady.alarms)),
    );
    bill.add(prices, "X-Ray", "traces recorded", PriceName::XrayTraceRecorded, usage.xray_traces);
    bill.add(prices, "KMS", "requests", PriceName::KmsRequest, usage.kms_requests);
    bill.add(
        prices,
        "KMS",
        format!("customer managed keys, {} (key-months)", steady.kms_keys),
        PriceName::KmsKeyMonth,
        steady.per_million_events(f64::from(steady.kms_keys)),
    );
    bill
}

/// What keeping a mix's events in DynamoDB costs per million events ingested, under one
/// retention: the table's items, the index's copies, and point-in-time recovery.
///
/// Point-in-time recovery is charged on the table's data (and local secondary indexes), not
/// on global secondary indexes, so it is applied to the table bytes only.
pub fn storage(prices: &Prices, usage: &Usage, steady: &Steady, retention: Retention) -> Bill {
    let mut bill = Bill::new(usage.mix.as_str(), format!("storage {}", retention.label()), prices);
    let table = stored_gb_months_per_million_events(usage.table_bytes_per_event, steady, retention);
    let index = stored_gb_months_per_million_events(usage.index_bytes_per_event, steady, retention);
    bill.add(prices, "DynamoDB", "table items kept (GB-months)", PriceName::DynamodbStorageGbMonth, table);
    bill.add(prices, "DynamoDB", "index copies kept (GB-months)", PriceName::DynamodbStorageGbMonth, index);
    bill.add(
        prices,
        "DynamoDB",
        "point-in-time recovery of the table (GB-months)",
        PriceName::DynamodbPitrGbMonth,
        table,
    );
    bill
}

/// A naive design's write path, for comparison: each event sent as its own Kinesis record
/// (one PutRecord per event, `event_bytes` each) and each of the `items_per_event` items it
/// touches written by its own plain (non-transactional) write.
///
/// Assumes the items are under 1 KB, so each write is one WRU. Only the Kinesis and DynamoDB
/// write lines are priced; compare them with the same lines of the pipeline's [`flow`].
pub fn naive(prices: &Prices, event_bytes: u64, items_per_event: f64) -> Bill {
    let mut bill = Bill::new("naive design", "flow (a record per event, a write per item)", prices);
    bill.add(
        prices,
        "Kinesis",
        "PUT payload units, one record per event",
        PriceName::KinesisPutPayloadUnit,
        MILLION * kinesis_put_payload_units(event_bytes) as f64,
    );
    bill.add(
        prices,
        "DynamoDB",
        "writes, one WRU per item (WRU)",
        PriceName::DynamodbWriteRequestUnit,
        MILLION * items_per_event,
    );
    bill
}

/// The floor for storing each event once: events of `event_bytes` sent to Firehose by Direct
/// PUT and delivered to S3, with nothing else done to them.
///
/// Assumes no format conversion, compression, dynamic partitioning or transformation, and
/// full 128 MB buffers, so each S3 object holds 128 MB of events and the PUTs are a few per
/// million events (priced, though negligible). Firehose rounds each record up to 5 KB, so
/// small events pay for 5 KB each. The S3 storage of the bytes is in [`firehose_floor_storage`].
pub fn firehose_floor(prices: &Prices, event_bytes: u64) -> Bill {
    let mut bill = Bill::new("Firehose floor", "flow (Direct PUT to S3)", prices);
    bill.add(
        prices,
        "Firehose",
        "ingested, each record rounded up to 5 KB (GB)",
        PriceName::FirehoseIngestGb,
        MILLION * firehose_billed_bytes(event_bytes) as f64 / GB,
    );
    bill.add(
        prices,
        "S3",
        "PUT requests, one per 128 MB buffer",
        PriceName::S3PutRequest,
        MILLION * event_bytes as f64 / FIREHOSE_BUFFER_BYTES,
    );
    bill
}

/// What keeping the Firehose floor's events in S3 Standard costs per million events ingested,
/// under one retention (the events' own bytes: S3 does not round them up).
pub fn firehose_floor_storage(prices: &Prices, steady: &Steady, event_bytes: u64, retention: Retention) -> Bill {
    let mut bill = Bill::new("Firehose floor", format!("storage {}", retention.label()), prices);
    bill.add(
        prices,
        "S3",
        "objects kept (GB-months)",
        PriceName::S3StorageGbMonth,
        stored_gb_months_per_million_events(event_bytes as f64, steady, retention),
    );
    bill
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// A bill as a Markdown table (columns: service, what, quantity per million events, price,
/// $ per million events), its total, and the prices covering 80 % of it.
pub fn render_markdown(bill: &Bill) -> String {
    let mut out = format!("### {}: {}\n\n{}.\n\n", bill.subject, bill.title, bill.caption);
    out.push_str("| service | what | quantity per million events | price | $ per million events |\n");
    out.push_str("|---|---|---:|---|---:|\n");
    for line in &bill.lines {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            line.service,
            line.item,
            significant(line.quantity),
            line.price_text,
            dollars(line.dollars)
        );
    }
    let total = bill.total();
    let _ = writeln!(out, "| **total** | | | | **{}** |", dollars(total));
    let dominant = bill.dominant_prices(0.8);
    if !dominant.is_empty() {
        let named: Vec<String> =
            dominant.iter().map(|(name, amount)| format!("{name} ({:.0} %)", 100.0 * amount / total)).collect();
        let _ = writeln!(out, "\n80 % of the total: {}.", named.join(", "));
    }
    out
}

/// Flow cost, then each storage bill and flow + that storage, as a Markdown table.
pub fn render_summary(flow: &Bill, storage: &[Bill]) -> String {
    let mut out = format!("| {} | $ per million events |\n|---|---:|\n", flow.subject);
    let _ = writeln!(out, "| {} | {} |", flow.title, dollars(flow.total()));
    for kept in storage {
        let _ = writeln!(out, "| {} | {} |", kept.title, dollars(kept.total()));
        let _ = writeln!(out, "| {} + {} | {} |", flow.title, kept.title, dollars(flow.total() + kept.total()));
    }
    out
}

/// Dollars to four significant figures, e.g. "$0.008333", "$12.35".
pub fn dollars(amount: f64) -> String {
    format!("${}", significant(amount))
}

/// A number to four significant figures, whole numbers with thousands separators:
/// 2,000,000; 77.50; 0.5556; 0.0003805.
pub fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    with_thousands(&format!("{value:.decimals$}"))
}

/// Inserts thousands separators into the whole part of a formatted number.
fn with_thousands(number: &str) -> String {
    let (sign, unsigned) = match number.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", number),
    };
    let (whole, fraction) = match unsigned.find('.') {
        Some(dot) => unsigned.split_at(dot),
        None => (unsigned, ""),
    };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices::builtin().expect("the shipped price table parses")
    }

    /// The steady rate both mixes use.
    fn steady() -> Steady {
        Steady {
            events_per_second: 1_000.0,
            streams: 2,
            shards_per_stream: 1,
            alarms: 10,
            custom_metrics: 20,
            kms_keys: 1,
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
    }

    fn line<'a>(bill: &'a Bill, item_starts: &str) -> &'a Line {
        bill.lines.iter().find(|line| line.item.starts_with(item_starts)).expect("line present")
    }

    // --- the table ---

    #[test]
    fn the_shipped_table_has_every_price_dated_with_https_sources() {
        let prices = prices();
        assert_eq!(prices.date, "2026-12-07");
        assert_eq!(prices.region, "us-east-1");
        assert_eq!(prices.currency, "USD");
        for name in PriceName::ALL {
            let price = prices.get(name);
            assert!(price.source.starts_with("https://aws.amazon.com/"), "{name}: {}", price.source);
            assert!(price.value > 0.0, "{name}");
            assert!(price.unit_price() > 0.0, "{name}");
        }
    }

    #[test]
    fn names_index_the_table_in_declaration_order() {
        for (i, name) in PriceName::ALL.iter().enumerate() {
            assert_eq!(name.index(), i, "{name}");
        }
    }

    #[test]
    fn a_missing_price_is_an_error_naming_it() {
        let start = PRICES.find("[prices.kms_request]").unwrap();
        let end = start + PRICES[start..].find("\n\n").unwrap();
        let without = format!("{}{}", &PRICES[..start], &PRICES[end..]);
        let error = Prices::parse(&without).unwrap_err();
        assert_eq!(error, PriceError::Missing(vec!["kms_request"]));
        assert!(error.to_string().contains("kms_request"));
    }

    #[test]
    fn an_unknown_price_is_refused() {
        let text = format!(
            "{PRICES}\n[prices.lambda_x86_gb_second]\nvalue = 0.0000166667\nper = 1\nunit = \"GB-second\"\nsource = \"https://aws.amazon.com/lambda/pricing/\"\n"
        );
        assert_eq!(Prices::parse(&text).unwrap_err(), PriceError::Unknown("lambda_x86_gb_second".to_owned()));
    }

    #[test]
    fn a_source_that_is_not_https_is_refused() {
        let text = PRICES.replacen("https://aws.amazon.com/sqs/pricing/", "http://aws.amazon.com/sqs/pricing/", 1);
        let error = Prices::parse(&text).unwrap_err();
        assert!(matches!(&error, PriceError::Invalid { price, .. } if price == "sqs_request"), "{error}");
    }

    #[test]
    fn prices_read_as_the_pricing_pages_state_them() {
        let prices = prices();
        assert_eq!(prices.get(PriceName::LambdaRequest).describe(), "$0.20 per 1,000,000 requests");
        assert_eq!(prices.get(PriceName::HttpApiRequest).describe(), "$1.00 per 1,000,000 requests");
        assert_eq!(prices.get(PriceName::LambdaArmGbSecond).describe(), "$0.0000133334 per GB-second");
        assert_eq!(prices.get(PriceName::S3PutRequest).describe(), "$0.005 per 1,000 PUT requests");
        assert!(close(prices.unit_price(PriceName::KmsRequest), 0.03 / 10_000.0));
    }

    // --- metering rules ---

    #[test]
    fn http_api_requests_are_metered_in_512_kb_units() {
        assert_eq!(http_api_units(0), 1);
        assert_eq!(http_api_units(512 * KB), 1);
        assert_eq!(http_api_units(513 * KB), 2);
        // 1 M requests of 600 KB are 2 M units, $2.00 at $1.00 per million.
        let usage = Usage {
            api_requests: MILLION,
            api_request_units: MILLION * http_api_units(600 * KB) as f64,
            ..Usage::default()
        };
        assert_eq!(usage.api_request_units, 2_000_000.0);
        let bill = flow(&prices(), &usage, &steady());
        assert!(close(line(&bill, "HTTP API requests").dollars, 2.0));
    }

    #[test]
    fn kinesis_and_sqs_count_chunks_of_25_and_64_kb() {
        assert_eq!(kinesis_put_payload_units(5 * KB), 1);
        assert_eq!(kinesis_put_payload_units(25 * KB), 1);
        assert_eq!(kinesis_put_payload_units(25 * KB + 1), 2);
        assert_eq!(kinesis_put_payload_units(45 * KB), 2);
        assert_eq!(sqs_request_units(64 * KB), 1);
        assert_eq!(sqs_request_units(256 * KB), 4);
    }

    #[test]
    fn dynamodb_units_follow_item_size_and_kind() {
        assert_eq!(dynamodb_write_units(300, false), 1);
        assert_eq!(dynamodb_write_units(1_500, false), 2);
        assert_eq!(dynamodb_write_units(1_500, true), 4);
        assert_eq!(dynamodb_read_units(4 * KB, ReadConsistency::Strong), 1.0);
        assert_eq!(dynamodb_read_units(4 * KB, ReadConsistency::Eventual), 0.5);
        assert_eq!(dynamodb_read_units(5 * KB, ReadConsistency::Strong), 2.0);
        assert_eq!(dynamodb_read_units(5 * KB, ReadConsistency::Transactional), 4.0);
    }

    #[test]
    fn lambda_bills_duration_rounded_up_to_the_millisecond() {
        assert_eq!(billed_milliseconds(0.0304), 31);
        assert_eq!(billed_milliseconds(0.031), 31);
        assert_eq!(billed_milliseconds(0.0310001), 32);
        assert_eq!(billed_milliseconds(0.0), 1);
        // 10,000 invocations at 256 MB of 30.4 ms are billed as 31 ms:
        // 10,000 × 0.25 GB × 0.031 s = 77.5 GB-seconds.
        let ingest = FunctionUsage {
            name: "ingest".into(),
            invocations: 10_000.0,
            memory_mb: 256,
            seconds_per_invocation: 0.0304,
        };
        assert!(close(ingest.gb_seconds(), 77.5));
        let usage = Usage { functions: vec![ingest], ..Usage::default() };
        let bill = flow(&prices(), &usage, &steady());
        let duration = line(&bill, "ingest duration");
        assert_eq!(duration.item, "ingest duration, 256 MB × 31 ms (GB-seconds)");
        assert!(close(duration.dollars, 77.5 * 0.0000133334));
        assert!(close(line(&bill, "ingest invocations").dollars, 10_000.0 * 0.20 / MILLION));
    }

    #[test]
    fn modelled_duration_is_cpu_plus_latency_per_call() {
        // 2 ms of CPU and two calls of 12 ms each.
        assert!(close(modelled_seconds(0.002, 2.0, 0.012), 0.026));
        assert_eq!(billed_milliseconds(modelled_seconds(0.002, 2.0, 0.012)), 26);
    }

    #[test]
    fn write_units_cost_0_625_dollars_per_million() {
        let usage = Usage { table_write_units: 1_500_000.0, index_write_units: 1_000_000.0, ..Usage::default() };
        let bill = flow(&prices(), &usage, &steady());
        assert!(close(line(&bill, "table writes").dollars, 1_500_000.0 * 0.625 / MILLION));
        assert!(close(line(&bill, "index writes").dollars, 0.625));
    }

    #[test]
    fn default_sampling_records_one_a_second_then_five_percent() {
        assert_eq!(default_sampling_fraction(0.5), 1.0);
        // At 1,000 requests a second: 1 + 0.05 × 999 = 50.95 traces a second.
        assert!(close(default_sampling_fraction(1_000.0), 0.05095));
    }

    // --- the steady rate ---

    #[test]
    fn fixed_monthly_charges_spread_over_a_month_of_events() {
        let steady = steady();
        // 1,000 events/s × 3,600 s × 730 h = 2.628 billion events a month.
        assert_eq!(steady.events_per_month(), 2_628_000_000.0);
        let bill = flow(&prices(), &Usage::default(), &steady);
        // 2 shards × 730 h = 1,460 shard-hours over 2,628 million events.
        let shards = line(&bill, "shard-hours");
        assert!(close(shards.quantity, 1_460.0 / 2_628.0));
        assert!(close(shards.dollars, 1_460.0 * 0.015 / 2_628.0));
        assert!(close(line(&bill, "customer managed keys").dollars, 1.0 / 2_628.0));
        assert_eq!(line(&bill, "alarms").item, "alarms, 10 (alarm-months)");
        assert!(close(line(&bill, "alarms").dollars, 10.0 * 0.10 / 2_628.0));
        assert!(close(line(&bill, "custom metrics").dollars, 20.0 * 0.30 / 2_628.0));
        // An authorizer call per key every 300 s: 1,000,000 / (1,000 × 300) per key.
        assert!(close(steady.occurrences_per_million_events(300.0), 10.0 / 3.0));
    }

    // --- storage ---

    #[test]
    fn storage_is_the_kept_bytes_paid_monthly_over_a_months_events() {
        let usage =
            Usage { mix: "m".into(), table_bytes_per_event: 1_024.0, index_bytes_per_event: 512.0, ..Usage::default() };
        let bill = storage(&prices(), &usage, &steady(), Retention::Days(30));
        assert_eq!((bill.subject.as_str(), bill.title.as_str()), ("m", "storage at 30 days' retention"));
        // 30 days at 1,000/s keep 2,592,000,000 events of 1 KB: 2,592,000,000 / 1,048,576 GB
        // = 2,471.923828125 GB, paid over the month's 2,628 million events.
        let table_gb_months = 2_471.923_828_125 / 2_628.0;
        let table = line(&bill, "table items");
        assert!(close(table.quantity, table_gb_months));
        assert!(close(table.dollars, table_gb_months * 0.25));
        assert!(close(line(&bill, "index copies").dollars, table_gb_months / 2.0 * 0.25));
        // Point-in-time recovery covers the table's bytes, not the global index's.
        assert!(close(line(&bill, "point-in-time").dollars, table_gb_months * 0.20));
        assert!(close(bill.total(), table_gb_months * (0.25 + 0.125 + 0.20)));
    }

    #[test]
    fn a_year_kept_forever_stores_365_days_whatever_the_rate() {
        let usage = Usage { table_bytes_per_event: 700.0, ..Usage::default() };
        let year = storage(&prices(), &usage, &steady(), Retention::KeptForeverAfterOneYear);
        let day = storage(&prices(), &usage, &steady(), Retention::Days(1));
        assert!(close(year.total(), 365.0 * day.total()));
        assert_eq!(year.title, "storage after a year, kept forever");
        let slower = Steady { events_per_second: 10.0, ..steady() };
        assert!(close(storage(&prices(), &usage, &slower, Retention::Days(1)).total(), day.total()));
    }

    // --- comparison designs ---

    #[test]
    fn naive_pays_a_record_and_a_write_per_item() {
        let bill = naive(&prices(), 300, 3.0);
        assert!(close(line(&bill, "PUT payload units").dollars, 0.014));
        assert!(close(line(&bill, "writes").dollars, 3.0 * 0.625));
        assert!(close(bill.total(), 0.014 + 1.875));
    }

    #[test]
    fn firehose_bills_small_events_as_5_kb() {
        assert_eq!(firehose_billed_bytes(300), 5_120);
        assert_eq!(firehose_billed_bytes(5_121), 10_240);
        let bill = firehose_floor(&prices(), 300);
        // A million 300-byte events are billed as 5,120,000,000 bytes = 4.76837158203125 GB.
        let ingest = line(&bill, "ingested");
        assert!(close(ingest.quantity, 4.768_371_582_031_25));
        assert!(close(ingest.dollars, 4.768_371_582_031_25 * 0.029));
        // 300,000,000 bytes fill 2.2 buffers of 128 MB: a negligible 2.2 PUTs.
        let puts = line(&bill, "PUT requests");
        assert!(close(puts.quantity, 300_000_000.0 / 134_217_728.0));
        assert!(puts.dollars < 0.0001);
        // S3 keeps the events' own 300 bytes, not the 5 KB Firehose billed.
        let kept = firehose_floor_storage(&prices(), &steady(), 300, Retention::Days(30));
        let gb_months = 2_592_000_000.0 * 300.0 / GB / 2_628.0;
        assert!(close(kept.total(), gb_months * 0.023));
    }

    // --- the bill ---

    #[test]
    fn dominant_prices_cover_the_asked_share_largest_first() {
        let prices = prices();
        let mut bill = Bill::new("t", "flow", &prices);
        // $0.60 of Lambda GB-seconds over two lines, $0.30 of writes, $0.10 of logs.
        bill.add(&prices, "Lambda", "a", PriceName::LambdaArmGbSecond, 0.4 / 0.0000133334);
        bill.add(&prices, "Lambda", "b", PriceName::LambdaArmGbSecond, 0.2 / 0.0000133334);
        bill.add(&prices, "DynamoDB", "c", PriceName::DynamodbWriteRequestUnit, 0.3 / 0.000000625);
        bill.add(&prices, "CloudWatch", "d", PriceName::CloudwatchLogsIngestGb, 0.1 / 0.5);
        assert!(close(bill.total(), 1.0));
        let names: Vec<PriceName> = bill.dominant_prices(0.8).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, [PriceName::LambdaArmGbSecond, PriceName::DynamodbWriteRequestUnit]);
        let names: Vec<PriceName> = bill.dominant_prices(0.5).into_iter().map(|(name, _)| name).collect();
        assert_eq!(names, [PriceName::LambdaArmGbSecond]);
        assert!(Bill::new("empty", "flow", &prices).dominant_prices(0.8).is_empty());
    }

    #[test]
    fn the_flow_total_is_the_sum_of_its_lines() {
        let usage = Usage {
            mix: "small events".into(),
            api_requests: MILLION,
            api_request_units: MILLION,
            functions: vec![
                FunctionUsage {
                    name: "ingest".into(),
                    invocations: MILLION,
                    memory_mb: 256,
                    seconds_per_invocation: 0.02,
                },
                FunctionUsage {
                    name: "transform".into(),
                    invocations: 10_000.0,
                    memory_mb: 256,
                    seconds_per_invocation: 0.3,
                },
            ],
            kinesis_put_payload_units: 2.0 * MILLION,
            table_write_units: MILLION,
            index_write_units: MILLION,
            function_log_bytes: 800.0 * MILLION,
            access_log_bytes: 300.0 * MILLION,
            xray_traces: 0.05095 * MILLION,
            ..Usage::default()
        };
        let bill = flow(&prices(), &usage, &steady());
        assert_eq!((bill.subject.as_str(), bill.title.as_str()), ("small events", "flow"));
        let sum: f64 = bill.lines.iter().map(|line| line.quantity * line.unit_price).sum();
        assert!(close(bill.total(), sum));
        assert_eq!(bill.lines.iter().filter(|line| line.service == "Lambda").count(), 4);
        // 1 M × 0.25 GB × 0.02 s = 5,000 GB-seconds for ingest.
        assert!(close(line(&bill, "ingest duration").quantity, 5_000.0));
        // 800 MB of function logs: 800,000,000 / 2^30 GB at $0.50.
        assert!(close(line(&bill, "function logs").dollars, 800_000_000.0 / GB * 0.5));
    }

    #[test]
    fn the_table_shows_each_line_and_the_total() {
        let bill = naive(&prices(), 300, 1.0);
        let text = render_markdown(&bill);
        assert!(text.starts_with(
            "### naive design: flow (a record per event, a write per item)\n\nus-east-1 list prices of 2026-12-07"
        ));
        assert!(text.contains("| service | what | quantity per million events | price | $ per million events |"));
        assert!(text.contains(
            "| Kinesis | PUT payload units, one record per event | 1,000,000 | $0.014 per 1,000,000 PUT payload units | $0.01400 |"
        ));
        assert!(text.contains("| **total** | | | | **$0.6390** |"));
        assert!(text.contains("80 % of the total: dynamodb_write_request_unit (98 %)."));
    }

    #[test]
    fn the_summary_adds_each_storage_to_the_flow() {
        let prices = prices();
        let usage =
            Usage { mix: "m".into(), api_request_units: MILLION, table_bytes_per_event: 1_024.0, ..Usage::default() };
        let flow_bill = flow(&prices, &usage, &steady());
        let kept = storage(&prices, &usage, &steady(), Retention::Days(30));
        let text = render_summary(&flow_bill, std::slice::from_ref(&kept));
        assert!(text.starts_with("| m | $ per million events |\n|---|---:|\n"));
        assert!(text.contains(&format!("| flow | {} |", dollars(flow_bill.total()))));
        assert!(text.contains(&format!("| storage at 30 days' retention | {} |", dollars(kept.total()))));
        assert!(text.contains(&format!(
            "| flow + storage at 30 days' retention | {} |",
            dollars(flow_bill.total() + kept.total())
        )));
    }

    #[test]
    fn numbers_print_to_four_significant_figures() {
        assert_eq!(significant(2_000_000.0), "2,000,000");
        assert_eq!(significant(77.5), "77.50");
        assert_eq!(significant(1_460.0 / 2_628.0), "0.5556");
        assert_eq!(significant(1.0 / 2_628.0), "0.0003805");
        assert_eq!(significant(0.0), "0");
        assert_eq!(dollars(1_234.567_8), "$1,235");
        assert_eq!(with_thousands("-1234567.5"), "-1,234,567.5");
    }
}
