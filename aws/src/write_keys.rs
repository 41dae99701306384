//! Write keys in DynamoDB (`WRITE_KEYS`, one item per key, sorted by id), and each key's
//! count of events per second (`KEYRATE#{key id}`), the ledger the ingest instances share.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};

use crate::error_chain;
use crate::item::{Item, n, s};
use crate::keys::{self, attr};
use eventline_model::event::Source;
use eventline_model::event::sortable_timestamp;
use eventline_model::rate::RateLedger;
use eventline_model::write_key::{
    KeyGrant, KeyId, KeyStore, KeyStoreError, RefusalLog, RefusedCall, SecretHash, StoredKey,
};

fn unavailable(error: impl std::error::Error + 'static) -> KeyStoreError {
    KeyStoreError(error_chain(&error))
}

#[derive(Debug, Clone)]
pub struct DynamoKeys {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoKeys {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self { client, table_name: table_name.into() }
    }
}

impl KeyStore for DynamoKeys {
    async fn get(&self, id: &KeyId) -> Result<Option<StoredKey>, KeyStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::WRITE_KEYS_PK))
            .key(keys::SK, s(id.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        output.item.as_ref().map(stored_key).transpose()
    }

    async fn put(&self, key: &StoredKey) -> Result<(), KeyStoreError> {
        let grant = &key.grant;
        let mut item = Item::from([
            (keys::PK.to_owned(), s(keys::WRITE_KEYS_PK)),
            (keys::SK.to_owned(), s(grant.key_id.as_str())),
            (attr::KEY_SOURCE.to_owned(), s(grant.source.as_str())),
            (attr::SECRET_HASH.to_owned(), s(&key.secret_hash.0)),
            (attr::EVENTS_PER_SECOND.to_owned(), n(grant.events_per_second)),
            (attr::CREATED_AT.to_owned(), s(&grant.created_at)),
        ]);
        if !grant.allowed_origins.is_empty() {
            item.insert(attr::ALLOWED_ORIGINS.to_owned(), AttributeValue::Ss(grant.allowed_origins.clone()));
        }
        self.client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<KeyGrant>, KeyStoreError> {
        let mut grants = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table_name)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(keys::WRITE_KEYS_PK))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            for item in output.items() {
                grants.push(stored_key(item)?.grant);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(grants);
            }
        }
    }

    async fn delete(&self, id: &KeyId) -> Result<bool, KeyStoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::WRITE_KEYS_PK))
            .key(keys::SK, s(id.as_str()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }
}

/// BatchWriteItem's limit.
const WRITE_BATCH: usize = 25;
/// Tries of a batch's unprocessed items before giving up on them.
const WRITE_TRIES: usize = 3;

impl RefusalLog for DynamoKeys {
    /// Each call as an item listed through the `ByUser` index (partition `REFUSED`, newest
    /// last), beside the conflicts; kept [`keys::REFUSED_TTL_SECONDS`].
    async fn keep(&self, calls: &[RefusedCall]) -> Result<(), KeyStoreError> {
        // One request may not name an item twice: two identical calls are kept once.
        let mut seen = std::collections::HashSet::new();
        let calls: Vec<&RefusedCall> = calls.iter().filter(|call| seen.insert((&call.source, &call.digest))).collect();
        for chunk in calls.chunks(WRITE_BATCH) {
            let mut requests: Vec<WriteRequest> =
                chunk.iter().map(|call| refused_item(call)).map(put_request).collect::<Result<_, _>>()?;
            for attempt in 0..WRITE_TRIES {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table_name, requests)
                    .send()
                    .await
                    .map_err(unavailable)?;
                requests =
                    output.unprocessed_items.and_then(|mut left| left.remove(&self.table_name)).unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if attempt + 1 == WRITE_TRIES {
                    return Err(KeyStoreError(format!(
                        "{} refused calls left unwritten after {WRITE_TRIES} tries",
                        requests.len()
                    )));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }
}

fn put_request(item: Item) -> Result<WriteRequest, KeyStoreError> {
    let put = PutRequest::builder().set_item(Some(item)).build().map_err(|e| KeyStoreError(e.to_string()))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

fn refused_item(call: &RefusedCall) -> Item {
    let id = call.message_id.clone().unwrap_or_else(|| call.digest.to_string());
    let mut item = Item::from([
        (keys::PK.to_owned(), s(keys::refused_pk(&call.source, &call.digest))),
        (keys::SK.to_owned(), s(keys::REFUSED_SK)),
        (keys::USER_PK.to_owned(), s(keys::REFUSED_INDEX_PK)),
        (keys::USER_SK.to_owned(), s(format!("{}#{}#{id}", sortable_timestamp(call.received_at), call.source))),
        (attr::KEY_SOURCE.to_owned(), s(call.source.as_str())),
        (attr::KEY_ID.to_owned(), s(call.key_id.as_str())),
        (attr::RECEIVED_AT.to_owned(), s(eventline_model::format_rfc3339(call.received_at))),
        (attr::ERRORS.to_owned(), s(serde_json::to_string(&call.errors).unwrap_or_default())),
        (attr::CALL.to_owned(), s(&call.call)),
        (keys::EXPIRES_AT.to_owned(), n(call.received_at.unix_timestamp() + keys::REFUSED_TTL_SECONDS)),
    ]);
    if let Some(message_id) = &call.message_id {
        item.insert(attr::MESSAGE_ID.to_owned(), s(message_id));
    }
    item
}

fn stored_key(item: &Item) -> Result<StoredKey, KeyStoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let malformed = |what: &str| KeyStoreError(format!("a stored write key has no valid {what}"));
    let key_id = KeyId::parse(text(keys::SK).unwrap_or_default()).map_err(|_| malformed("id"))?;
    let source = Source::parse(text(attr::KEY_SOURCE).unwrap_or_default()).map_err(|_| malformed("source"))?;
    let events_per_second = item
        .get(attr::EVENTS_PER_SECOND)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| malformed("rate"))?;
    let allowed_origins = item.get(attr::ALLOWED_ORIGINS).and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default();
    Ok(StoredKey {
        grant: KeyGrant {
            key_id,
            source,
            allowed_origins,
            events_per_second,
            created_at: text(attr::CREATED_AT).unwrap_or_default(),
        },
        secret_hash: SecretHash(text(attr::SECRET_HASH).ok_or_else(|| malformed("secret hash"))?),
    })
}

/// Each key's count of events per second, in DynamoDB: one conditional increment per lease.
#[derive(Debug, Clone)]
pub struct DynamoRateLedger {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
}

impl DynamoRateLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>) -> Self {
        Self { client, table_name: table_name.into() }
    }
}

impl RateLedger for DynamoRateLedger {
    async fn take(&self, key: &KeyId, second: i64, amount: u64, limit: u64) -> Result<bool, KeyStoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::key_rate_pk(key)))
            .key(keys::SK, s(keys::key_rate_sk(second)))
            .update_expression("ADD #count :amount SET #expires = if_not_exists(#expires, :expires)")
            .expression_attribute_names("#count", attr::COUNT)
            .expression_attribute_names("#expires", keys::EXPIRES_AT)
            .expression_attribute_values(":amount", n(amount))
            .expression_attribute_values(":expires", n(second + keys::KEY_RATE_TTL_SECONDS));
        let Some(room) = limit.checked_sub(amount) else { return Ok(false) };
        let update = update
            .condition_expression("attribute_not_exists(#count) OR #count <= :room")
            .expression_attribute_values(":room", n(room));
        match update.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(error))
                if matches!(error.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(false)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}
