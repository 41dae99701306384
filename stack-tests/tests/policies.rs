//! Least privilege on the events table, read from the IAM statements of the translated
//! template by a small policy evaluator (Allow and Deny, wildcard actions and resources,
//! and the condition operators the template uses). The emulator enforces no IAM, so this is
//! where a role that can write what it should not, or cannot reach what its function does,
//! is caught: first as a table of role × action × key, then against every DynamoDB request
//! the functions themselves send in a run on the emulator.

use eventline_stack_tests as common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use eventline_aws::keys;
use eventline_model::{EventId, IngestId, Position, Source, UserId};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const TABLE: &str = "EventsTable";

// --- The evaluator ------------------------------------------------------------------------

/// `*` any run of characters, `?` one, as IAM matches actions, resources and `...Like`.
fn glob(pattern: &str, text: &str) -> bool {
    fn matches(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], t) || (!t.is_empty() && matches(p, &t[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => matches(&p[1..], &t[1..]),
            _ => false,
        }
    }
    matches(&pattern.chars().collect::<Vec<_>>(), &text.chars().collect::<Vec<_>>())
}

/// The ARN the evaluator gives a resource of the template.
fn arn_of(template: &Value, logical_id: &str, region: &str) -> String {
    let kind = template["Resources"][logical_id]["Type"].as_str().unwrap_or_else(|| panic!("no resource {logical_id}"));
    match kind {
        "AWS::DynamoDB::Table" => format!("arn:aws:dynamodb:{region}:{ACCOUNT}:table/{logical_id}"),
        other => {
            let service = other.split("::").nth(1).unwrap_or("unknown").to_lowercase();
            format!("arn:aws:{service}:{region}:{ACCOUNT}:{logical_id}")
        }
    }
}

/// Resolves what IAM statements use: `Fn::GetAtt [X, Arn]`, `Fn::Sub` over `${X.Arn}` and
/// pseudo parameters, `Ref` to pseudo parameters. Anything else fails the test, so a
/// statement the evaluator cannot read is never judged.
fn resolve(value: &Value, template: &Value) -> Value {
    let region = common::REGION;
    let pseudo = |name: &str| match name {
        "AWS::AccountId" => Some(ACCOUNT.to_owned()),
        "AWS::Region" => Some(region.to_owned()),
        "AWS::Partition" => Some("aws".to_owned()),
        "AWS::StackName" => Some("eventline".to_owned()),
        _ => None,
    };
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| resolve(v, template)).collect()),
        Value::Object(map)
            if map.len() == 1 && map.keys().next().is_some_and(|k| k.starts_with("Fn::") || k == "Ref") =>
        {
            let (name, argument) = map.iter().next().unwrap();
            match (name.as_str(), argument) {
                ("Fn::GetAtt", Value::Array(parts)) if parts[1] == "Arn" => {
                    json!(arn_of(template, parts[0].as_str().unwrap(), region))
                }
                ("Ref", Value::String(name)) => {
                    json!(pseudo(name).unwrap_or_else(|| panic!("cannot resolve Ref {name}")))
                }
                ("Fn::Sub", Value::String(text)) => {
                    let mut out = String::new();
                    let mut rest = text.as_str();
                    while let Some(start) = rest.find("${") {
                        out.push_str(&rest[..start]);
                        let end = rest[start..].find('}').unwrap() + start;
                        let name = &rest[start + 2..end];
                        let replaced = match name.strip_suffix(".Arn") {
                            Some(id) => arn_of(template, id, region),
                            None => pseudo(name).unwrap_or_else(|| panic!("cannot resolve ${{{name}}}")),
                        };
                        out.push_str(&replaced);
                        rest = &rest[end + 1..];
                    }
                    out.push_str(rest);
                    json!(out)
                }
                _ => panic!("the evaluator does not read {value}"),
            }
        }
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), resolve(v, template))).collect()),
        other => other.clone(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many.iter().map(|v| v.as_str().expect("a string").to_owned()).collect(),
        Value::Bool(b) => vec![b.to_string()],
        other => panic!("not a string or a list of strings: {other}"),
    }
}

#[derive(Debug)]
struct Statement {
    sid: String,
    allow: bool,
    actions: Vec<String>,
    resources: Vec<String>,
    /// (operator, condition key, values)
    conditions: Vec<(String, String, Vec<String>)>,
}

impl Statement {
    fn parse(raw: &Value, template: &Value) -> Self {
        for unsupported in ["NotAction", "NotResource", "NotPrincipal"] {
            assert!(raw.get(unsupported).is_none(), "the evaluator does not read {unsupported}: {raw}");
        }
        let raw = resolve(raw, template);
        let mut conditions = Vec::new();
        if let Some(Value::Object(operators)) = raw.get("Condition") {
            for (operator, keys) in operators {
                for (key, values) in keys.as_object().expect("condition keys") {
                    conditions.push((operator.clone(), key.clone(), strings(values)));
                }
            }
        }
        Self {
            sid: raw["Sid"].as_str().unwrap_or_default().to_owned(),
            allow: match raw["Effect"].as_str() {
                Some("Allow") => true,
                Some("Deny") => false,
                other => panic!("Effect {other:?}"),
            },
            actions: strings(&raw["Action"]),
            resources: raw.get("Resource").map(strings).unwrap_or_else(|| vec!["*".to_owned()]),
            conditions,
        }
    }

    fn applies(&self, request: &Request) -> bool {
        self.actions.iter().any(|a| glob(&a.to_lowercase(), &request.action.to_lowercase()))
            && self.resources.iter().any(|r| glob(r, &request.resource))
            && self.conditions.iter().all(|(operator, key, values)| condition_holds(operator, key, values, request))
    }
}

fn condition_holds(operator: &str, key: &str, patterns: &[String], request: &Request) -> bool {
    let context: Vec<String> = match key {
        "dynamodb:LeadingKeys" => request.leading_keys.clone(),
        other => request.context.get(other).cloned().into_iter().collect(),
    };
    let like = |value: &String| patterns.iter().any(|p| glob(p, value));
    let equals = |value: &String| patterns.iter().any(|p| p == value);
    match operator {
        // True for a request without values: a statement granting a keyless action under it
        // grants it outright (see `conditioned_statements_grant_only_keyed_actions`).
        "ForAllValues:StringLike" => context.iter().all(like),
        "ForAllValues:StringEquals" => context.iter().all(equals),
        "ForAnyValue:StringLike" => context.iter().any(like),
        "StringLike" | "ArnLike" => context.len() == 1 && like(&context[0]),
        "StringEquals" | "ArnEquals" | "Bool" => context.len() == 1 && equals(&context[0]),
        other => panic!("the evaluator does not read the condition operator {other}"),
    }
}

#[derive(Debug, Clone)]
struct Request {
    action: String,
    resource: String,
    leading_keys: Vec<String>,
    context: HashMap<String, String>,
}

/// Explicit Deny wins, then any Allow; nothing else allows.
fn allowed(statements: &[Statement], request: &Request) -> bool {
    let applying: Vec<&Statement> = statements.iter().filter(|s| s.applies(request)).collect();
    !applying.iter().any(|s| !s.allow) && applying.iter().any(|s| s.allow)
}

/// The statements of the role a function runs as.
fn role_statements(template: &Value, function: &str) -> Vec<Statement> {
    let role = template["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{function} runs as a role of the template"));
    let properties = &template["Resources"][role]["Properties"];
    assert!(properties.get("ManagedPolicyArns").is_none(), "{role}: managed policies are not read here");
    properties["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().iter())
        .map(|s| Statement::parse(s, template))
        .collect()
}

fn table_arn(template: &Value) -> String {
    arn_of(template, TABLE, common::REGION)
}

fn index_arn(template: &Value, index: &str) -> String {
    format!("{}/index/{index}", table_arn(template))
}

fn dynamodb(action: &str, resource: String, leading_keys: &[&str]) -> Request {
    Request {
        action: format!("dynamodb:{action}"),
        resource,
        leading_keys: leading_keys.iter().map(|k| (*k).to_owned()).collect(),
        context: HashMap::new(),
    }
}

// --- Role × action × key ------------------------------------------------------------------

/// Item-level actions, which DynamoDB authorizes per item key (`dynamodb:LeadingKeys`).
const KEYED_ACTIONS: [&str; 8] = [
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
];

#[tokio::test]
async fn each_role_reaches_only_the_partitions_its_function_uses() {
    let template = common::translated_template().await;
    let (web, id, user) =
        (Source::parse("web").unwrap(), EventId::parse("e-1").unwrap(), UserId::parse("u-1").unwrap());
    let ingest_id = IngestId::generate();
    let shard = "shardId-000000000000";
    let owned = [
        keys::event_pk(&web, &id),
        keys::poison_pk(Some(&ingest_id), &Position::of_record(shard, "1")),
        keys::received_pk(&ingest_id),
        keys::reference_bucket_pk("0123abcd"),
        keys::window_pk(shard),
        keys::user_aggregate_pk(&user),
        keys::shard_aggregate_pk(shard),
        keys::user_pk(&user),
    ];
    let [event, poison, received, bucket, window, user_aggregate, shard_aggregate, user_pk] =
        owned.each_ref().map(String::as_str);
    let (reference, metrics, rate) = (keys::REFERENCE_PK, keys::METRICS_PK, keys::RATE_PK);
    let write_keys = keys::WRITE_KEYS_PK;
    let key_rate = keys::key_rate_pk(&eventline_model::write_key::KeyId::parse("0123456789abcdef").unwrap());
    let key_rate = key_rate.as_str();
    let refused = keys::refused_pk(
        &web,
        &eventline_model::Digest::of_event(&serde_json::value::RawValue::from_string("{}".into()).unwrap()),
    );
    let refused = refused.as_str();
    let arns = [table_arn(&template), index_arn(&template, keys::BY_USER_INDEX), index_arn(&template, "Other")];
    let [table, by_user, other_index] = arns.each_ref().map(String::as_str);

    let rows: Vec<(&str, &str, &str, Vec<&str>, bool)> = vec![
        // The internet-facing role: its counter slots, nothing else.
        ("IngestFunction", "PutItem", table, vec![received], false),
        ("IngestFunction", "UpdateItem", table, vec![metrics], true),
        ("IngestFunction", "PutItem", table, vec![reference], false),
        ("IngestFunction", "PutItem", table, vec![bucket], false),
        ("IngestFunction", "BatchWriteItem", table, vec![bucket, bucket], false),
        ("IngestFunction", "BatchWriteItem", table, vec![received], false),
        ("IngestFunction", "PutItem", table, vec![event], false),
        ("IngestFunction", "BatchWriteItem", table, vec![event], false),
        ("IngestFunction", "UpdateItem", table, vec![event], false),
        ("IngestFunction", "UpdateItem", table, vec![user_aggregate], false),
        ("IngestFunction", "UpdateItem", table, vec![reference], false),
        ("IngestFunction", "PutItem", table, vec![metrics], false),
        ("IngestFunction", "DeleteItem", table, vec![received], false),
        ("IngestFunction", "GetItem", table, vec![reference], false),
        ("IngestFunction", "Query", table, vec![metrics], false),
        ("IngestFunction", "Scan", table, vec![], false),
        // Write keys sent in the body, and each key's count of events per second.
        ("IngestFunction", "GetItem", table, vec![write_keys], true),
        ("IngestFunction", "UpdateItem", table, vec![key_rate], true),
        ("IngestFunction", "PutItem", table, vec![write_keys], false),
        ("IngestFunction", "DeleteItem", table, vec![write_keys], false),
        ("IngestFunction", "Query", table, vec![write_keys], false),
        ("IngestFunction", "UpdateItem", table, vec![write_keys], false),
        ("IngestFunction", "BatchWriteItem", table, vec![refused, refused], true),
        ("IngestFunction", "BatchWriteItem", table, vec![refused, event], false),
        ("IngestFunction", "PutItem", table, vec![refused], false),
        // The write-key authorizer reads keys, nothing else.
        ("AuthorizerFunction", "GetItem", table, vec![write_keys], true),
        ("AuthorizerFunction", "PutItem", table, vec![write_keys], false),
        ("AuthorizerFunction", "GetItem", table, vec![event], false),
        ("AuthorizerFunction", "UpdateItem", table, vec![key_rate], false),
        // The transform: events, markers, counters, windows and aggregates; reads the
        // reference table and the window sketches.
        ("TransformFunction", "PutItem", table, vec![event], true),
        ("TransformFunction", "PutItem", table, vec![poison], true),
        ("TransformFunction", "ConditionCheckItem", table, vec![event], true),
        ("TransformFunction", "UpdateItem", table, vec![metrics], true),
        ("TransformFunction", "UpdateItem", table, vec![rate], true),
        ("TransformFunction", "UpdateItem", table, vec![window], true),
        ("TransformFunction", "UpdateItem", table, vec![user_aggregate], true),
        ("TransformFunction", "UpdateItem", table, vec![shard_aggregate], true),
        ("TransformFunction", "GetItem", table, vec![reference], true),
        ("TransformFunction", "BatchGetItem", table, vec![bucket, bucket], true),
        ("TransformFunction", "BatchGetItem", table, vec![window, window], true),
        ("TransformFunction", "BatchGetItem", table, vec![window, event], false),
        // Analytics items re-read when an update's condition failed (their breakdown key
        // counts changed, or they took the records already).
        ("TransformFunction", "BatchGetItem", table, vec![window, shard_aggregate, user_aggregate], true),
        ("TransformFunction", "PutItem", table, vec![reference], false),
        ("TransformFunction", "PutItem", table, vec![bucket], false),
        ("TransformFunction", "UpdateItem", table, vec![bucket], false),
        ("TransformFunction", "BatchWriteItem", table, vec![event], false),
        ("TransformFunction", "PutItem", table, vec![received], false),
        ("TransformFunction", "DeleteItem", table, vec![event], false),
        ("TransformFunction", "GetItem", table, vec![event], false),
        // Metrics reads what it answers from, through the table and the user index.
        ("QueryFunction", "GetItem", table, vec![event], true),
        ("QueryFunction", "Query", table, vec![metrics], true),
        ("QueryFunction", "Query", table, vec![rate], true),
        ("QueryFunction", "Query", table, vec![window], true),
        ("QueryFunction", "Query", table, vec![user_aggregate], true),
        ("QueryFunction", "BatchGetItem", table, vec![shard_aggregate, user_aggregate], true),
        ("QueryFunction", "GetItem", table, vec![reference], true),
        ("QueryFunction", "BatchGetItem", table, vec![bucket], true),
        ("QueryFunction", "Query", by_user, vec![user_pk], true),
        ("QueryFunction", "DescribeTable", table, vec![], true),
        ("QueryFunction", "Query", by_user, vec![event], false),
        ("QueryFunction", "Query", other_index, vec![user_pk], false),
        ("QueryFunction", "Query", table, vec![user_pk], false),
        ("QueryFunction", "GetItem", table, vec![received], false),
        ("QueryFunction", "PutItem", table, vec![event], false),
        ("QueryFunction", "UpdateItem", table, vec![metrics], false),
        ("QueryFunction", "BatchWriteItem", table, vec![bucket], false),
        ("QueryFunction", "Scan", table, vec![], false),
        // The administrator function: the reference generations, nothing else.
        ("AdminFunction", "GetItem", table, vec![reference], true),
        ("AdminFunction", "PutItem", table, vec![reference], true),
        ("AdminFunction", "BatchWriteItem", table, vec![bucket, bucket, bucket], true),
        ("AdminFunction", "UpdateItem", table, vec![bucket], true),
        ("AdminFunction", "BatchWriteItem", table, vec![bucket, event], false),
        ("AdminFunction", "PutItem", table, vec![event], false),
        ("AdminFunction", "BatchWriteItem", table, vec![event], false),
        ("AdminFunction", "UpdateItem", table, vec![metrics], false),
        ("AdminFunction", "UpdateItem", table, vec![user_aggregate], false),
        ("AdminFunction", "GetItem", table, vec![event], false),
        ("AdminFunction", "Query", table, vec![reference], false),
        ("AdminFunction", "DeleteItem", table, vec![reference], false),
        ("AdminFunction", "Query", by_user, vec![user_pk], false),
        // ... and the write keys.
        ("AdminFunction", "PutItem", table, vec![write_keys], true),
        ("AdminFunction", "Query", table, vec![write_keys], true),
        ("AdminFunction", "DeleteItem", table, vec![write_keys], true),
        ("AdminFunction", "UpdateItem", table, vec![key_rate], false),
        ("TransformFunction", "GetItem", table, vec![write_keys], false),
        ("QueryFunction", "GetItem", table, vec![write_keys], false),
    ];
    let mut wrong = Vec::new();
    for (function, action, resource, leading_keys, expected) in &rows {
        let statements = role_statements(&template, function);
        let request = dynamodb(action, (*resource).to_owned(), leading_keys);
        if allowed(&statements, &request) != *expected {
            wrong.push(format!("{function} {action} {leading_keys:?} on {resource}: expected allowed={expected}"));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows wrong:\n{}", wrong.len(), rows.len(), wrong.join("\n"));
}

#[tokio::test]
async fn conditioned_statements_grant_only_keyed_actions_and_keyed_actions_are_always_conditioned() {
    // `ForAllValues` holds for a request with no key at all: a Scan granted beside item
    // actions under a LeadingKeys condition would read the whole table.
    let template = common::translated_template().await;
    let table = table_arn(&template);
    for function in ["IngestFunction", "TransformFunction", "QueryFunction", "AdminFunction"] {
        for statement in role_statements(&template, function) {
            let on_table = statement.resources.iter().any(|r| r == "*" || r.starts_with(&table));
            let keyed = statement.actions.iter().any(|a| KEYED_ACTIONS.iter().any(|k| glob(a, k)));
            let conditioned = statement.conditions.iter().any(|(_, key, _)| key == "dynamodb:LeadingKeys");
            if conditioned {
                for action in &statement.actions {
                    assert!(
                        KEYED_ACTIONS.contains(&action.as_str()),
                        "{function} {}: {action} has no keys",
                        statement.sid
                    );
                }
            } else if on_table && statement.allow {
                assert!(!keyed, "{function} {}: item actions without a LeadingKeys condition", statement.sid);
            }
        }
    }
}

#[test]
fn the_evaluator_reads_wildcards_denies_and_empty_key_sets() {
    let template = json!({"Resources": {"EventsTable": {"Type": "AWS::DynamoDB::Table"}}});
    let table = table_arn(&template);
    let statements: Vec<Statement> = [
        json!({"Effect": "Allow", "Action": "dynamodb:*Item", "Resource": {"Fn::GetAtt": [TABLE, "Arn"]},
               "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["A#*", "B"]}}}),
        json!({"Effect": "Deny", "Action": "dynamodb:DeleteItem", "Resource": "*"}),
    ]
    .iter()
    .map(|s| Statement::parse(s, &template))
    .collect();
    let can = |action: &str, keys: &[&str]| allowed(&statements, &dynamodb(action, table.clone(), keys));
    assert!(can("PutItem", &["A#1"]) && can("GetItem", &["B"]) && can("BatchWriteItem", &["A#1", "B"]));
    assert!(!can("PutItem", &["BB"]) && !can("BatchWriteItem", &["A#1", "C"]));
    assert!(!can("DeleteItem", &["A#1"]), "an explicit Deny wins");
    assert!(!can("Query", &["A#1"]), "not an action of the statement");
    assert!(can("UpdateItem", &[]), "ForAllValues over no keys holds");
    assert!(!allowed(&statements, &dynamodb("PutItem", format!("{table}/index/X"), &["A#1"])), "another resource");
    assert!(glob("kms:GenerateDataKey*", "kms:GenerateDataKeyWithoutPlaintext") && !glob("a?c", "abbc"));
}

// --- Every request the functions send -----------------------------------------------------

/// A DynamoDB operation (`PutItem`...) and its JSON body.
type SentRequest = (String, Vec<u8>);

/// The DynamoDB requests one function's clients send.
#[derive(Debug, Clone, Default)]
struct Sent(Arc<Mutex<Vec<SentRequest>>>);

impl Sent {
    fn take(&self) -> Vec<SentRequest> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The SDK's HTTP client, noting each DynamoDB request before sending it.
#[derive(Debug, Clone)]
struct RecordingClient {
    inner: SharedHttpClient,
    sent: Sent,
}

impl HttpClient for RecordingClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(RecordingConnector {
            inner: self.inner.http_connector(settings, components),
            sent: self.sent.clone(),
        })
    }
}

#[derive(Debug)]
struct RecordingConnector {
    inner: SharedHttpConnector,
    sent: Sent,
}

impl HttpConnector for RecordingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        if let Some(operation) =
            request.headers().get("x-amz-target").and_then(|t| t.strip_prefix("DynamoDB_20120810."))
        {
            let body = request.body().bytes().unwrap_or_default().to_vec();
            self.sent.0.lock().unwrap_or_else(PoisonError::into_inner).push((operation.to_owned(), body));
        }
        self.inner.call(request)
    }
}

fn pk_of(item: &Value) -> String {
    item[keys::PK]["S"].as_str().unwrap_or_else(|| panic!("an item key with a string pk: {item}")).to_owned()
}

/// The value `attribute` is matched to in a key condition such as `#upk = :upk AND ...`.
fn key_condition_value(body: &Value, attribute: &str) -> Option<String> {
    let condition = body["KeyConditionExpression"].as_str()?;
    let names = &body["ExpressionAttributeNames"];
    condition.split(" AND ").find_map(|part| {
        let (name, value) = part.split_once('=')?;
        let name = name.trim();
        let name = names.get(name).and_then(Value::as_str).unwrap_or(name);
        (name == attribute).then(|| body["ExpressionAttributeValues"][value.trim()]["S"].as_str().map(str::to_owned))?
    })
}

/// The IAM requests one DynamoDB API request is authorized as: a transaction is authorized
/// per item action, a batch as one action over every key it names.
fn as_iam_requests(template: &Value, operation: &str, body: &[u8]) -> Vec<Request> {
    let body: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{operation} body is JSON: {e}"));
    let table = table_arn(template);
    let one = |action: &str, resource: String, keys: Vec<String>| Request {
        action: format!("dynamodb:{action}"),
        resource,
        leading_keys: keys,
        context: HashMap::new(),
    };
    match operation {
        "GetItem" | "UpdateItem" | "DeleteItem" => vec![one(operation, table, vec![pk_of(&body["Key"])])],
        "PutItem" => vec![one(operation, table, vec![pk_of(&body["Item"])])],
        "DescribeTable" => vec![one(operation, table, vec![])],
        "Query" => match body["IndexName"].as_str() {
            Some(index) => {
                let index_pk =
                    key_condition_value(&body, keys::USER_PK).expect("a Query on the user index names a user");
                vec![one(operation, index_arn(template, index), vec![index_pk])]
            }
            None => {
                vec![one(operation, table, vec![key_condition_value(&body, keys::PK).expect("a Query names its pk")])]
            }
        },
        "BatchGetItem" => {
            let keys = body["RequestItems"].as_object().unwrap().values().flat_map(|t| t["Keys"].as_array().unwrap());
            vec![one(operation, table, keys.map(pk_of).collect())]
        }
        "BatchWriteItem" => {
            let requests = body["RequestItems"].as_object().unwrap().values().flat_map(|t| t.as_array().unwrap());
            let keys = requests.map(|r| match r.get("PutRequest") {
                Some(put) => pk_of(&put["Item"]),
                None => pk_of(&r["DeleteRequest"]["Key"]),
            });
            vec![one(operation, table, keys.collect())]
        }
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|action| {
                let (kind, inner) = action.as_object().unwrap().iter().next().unwrap();
                match kind.as_str() {
                    "Put" => one("PutItem", table.clone(), vec![pk_of(&inner["Item"])]),
                    "Update" => one("UpdateItem", table.clone(), vec![pk_of(&inner["Key"])]),
                    "Delete" => one("DeleteItem", table.clone(), vec![pk_of(&inner["Key"])]),
                    "ConditionCheck" => one("ConditionCheckItem", table.clone(), vec![pk_of(&inner["Key"])]),
                    other => panic!("transaction action {other}"),
                }
            })
            .collect(),
        other => panic!("{other}: add how IAM authorizes it"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dynamodb_request_of_a_run_is_allowed_by_its_functions_role() {
    let template = common::translated_template().await;
    let stack = common::stack(&[]).await;
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let sent: HashMap<&str, Sent> =
        ["ingest", "transform", "query", "admin", "authorizer"].into_iter().map(|f| (f, Sent::default())).collect();
    let sdk = |function: &str| {
        let client = RecordingClient { inner: inner.clone(), sent: sent[function].clone() };
        stack.sdk.to_builder().http_client(client).build()
    };
    let env = |function: &str| stack.manifest.functions[function].environment.clone();
    let ingest = eventline_ingest::with_aws(
        eventline_ingest::config::Config::from_lookup(&env("ingest")).unwrap(),
        &sdk("ingest"),
    );
    let transform = eventline_transform::with_aws(
        eventline_transform::config::Config::from_lookup(&env("transform")).unwrap(),
        &sdk("transform"),
    );
    let metrics =
        eventline_query::with_aws(eventline_query::config::Config::from_lookup(&env("query")).unwrap(), &sdk("query"));
    let admin =
        eventline_admin::with_aws(eventline_admin::config::Config::from_lookup(&env("admin")).unwrap(), &sdk("admin"));
    let authorizer = eventline_authorizer::with_aws(&env("authorizer"), &sdk("authorizer")).unwrap();

    // A write key made, listed, checked by the authorizer, used in a body, and revoked.
    let made = admin
        .handle(eventline_admin::routes::routed(common::request(
            "POST",
            "/write-keys",
            Some(json!({"source": "web"}).to_string()),
        )))
        .await;
    assert_eq!(made.status(), 201);
    let lambda_http::Body::Text(made) = made.body() else { panic!("JSON answers are text") };
    let made: Value = serde_json::from_str(made).unwrap();
    let listed = admin.handle(eventline_admin::routes::routed(common::request("GET", "/write-keys", None))).await;
    assert_eq!(listed.status(), 200);
    let key = made["write_key"].as_str().unwrap();
    let mut check: aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request = Default::default();
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{key}:"));
    check.headers.insert("authorization", format!("Basic {basic}").parse().unwrap());
    assert!(authorizer.authorize(&check).await.unwrap().is_authorized);
    let beacon = json!({"writeKey": key, "event": "Viewed", "userId": "u-9", "messageId": "beacon-1"}).to_string();
    let beaconed =
        ingest.handle(eventline_ingest::routes::routed(common::request("POST", "/v1/t", Some(beacon)))).await;
    assert_eq!(beaconed.status(), 200);
    let revoke = format!("/write-keys/{}", made["key_id"].as_str().unwrap());
    let revoked = admin.handle(eventline_admin::routes::routed(common::request("DELETE", &revoke, None))).await;
    assert_eq!(revoked.status(), 204);

    // Replace the reference table (a first generation, a stale one, a newer one whose switch
    // lets the first expire).
    let table = |ts: &str| {
        json!({"user_metadata": {"u-1": {"plan": "pro", "region": "eu"}, "u-2": {"plan": "free", "region": "us"}}, "ts": ts})
            .to_string()
    };
    for (ts, status) in [("2026-11-30T12:00:00Z", 200), ("2026-11-30T11:00:00Z", 409), ("2026-11-30T13:00:00Z", 200)] {
        let response = admin
            .handle(eventline_admin::routes::routed(common::request("PUT", "/reference/users", Some(table(ts)))))
            .await;
        assert_eq!(response.status(), status, "{ts}");
    }
    // Events through ingest, then the stream through the transform twice (the second time as
    // duplicates), with a record no producer could have validated.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let events: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": format!("e-{i}"), "source": "web", "type": if i % 2 == 0 { "click" } else { "view" }, "user_id": format!("u-{}", i % 3),
                   "timestamp": now - 5, "data": {"duration_seconds": i}})
        })
        .collect();
    let post =
        eventline_ingest::routes::routed(common::request("POST", "/events", Some(Value::Array(events).to_string())));
    let response = ingest.handle(post).await;
    assert_eq!(response.status(), 202);
    let stream = &stack.manifest.outputs["IngestStreamName"];
    aws_sdk_kinesis::Client::new(&stack.sdk)
        .put_record()
        .stream_name(stream)
        .partition_key("poison")
        .data(aws_sdk_kinesis::primitives::Blob::new(b"not an event".to_vec()))
        .send()
        .await
        .unwrap();
    let records = stack.read_stream(stream).await.unwrap();
    let source = &stack.manifest.event_sources[0];
    let shard = "shardId-000000000000";
    for _ in 0..2 {
        let event = eventline_local::poller::kinesis_event(&records, shard, &source.stream_arn, &stack.manifest.region)
            .unwrap();
        let answer = transform.handle(event).await;
        assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    }
    // Every read route.
    for uri in [
        "/metrics",
        "/metrics?window=60",
        "/events/web/e-1",
        "/users/u-1/events",
        "/users/u-1/aggregates",
        "/aggregates",
        "/reference/users",
        "/reference/users?user_id=u-1",
        "/health",
    ] {
        let response = metrics.handle(eventline_query::routes::routed(common::request("GET", uri, None))).await;
        assert_eq!(response.status(), 200, "GET {uri}");
    }

    let mut checked = 0;
    let mut refused = Vec::new();
    for (function, logical_id) in [
        ("ingest", "IngestFunction"),
        ("transform", "TransformFunction"),
        ("query", "QueryFunction"),
        ("admin", "AdminFunction"),
        ("authorizer", "AuthorizerFunction"),
    ] {
        let statements = role_statements(&template, logical_id);
        let requests = sent[function].take();
        assert!(!requests.is_empty(), "{function} sent DynamoDB requests");
        for (operation, body) in requests {
            for iam in as_iam_requests(&template, &operation, &body) {
                checked += 1;
                if !allowed(&statements, &iam) {
                    refused.push(format!("{function}: {} {:?} on {}", iam.action, iam.leading_keys, iam.resource));
                }
            }
        }
    }
    refused.dedup();
    assert!(refused.is_empty(), "AWS would refuse these requests of the run:\n{}", refused.join("\n"));
    assert!(checked > 20, "{checked} requests checked");
}
