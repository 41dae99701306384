//! Write keys in DynamoDB (`WRITE_KEYS`, one item per key, sorted by id), and each key's
//! count of events per second (`KEYRATE#{key id}`), the ledger the ingest instances share.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::error_chain;
use crate::item::{Item, n, s};
use crate::keys::{self, attr};
use eventline_model::event::Source;
use eventline_model::rate::RateLedger;
use eventline_model::write_key::{KeyGrant, KeyId, KeyStore, KeyStoreError, SecretHash, StoredKey};

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
        // Within the limit, or the first of its second (a request larger than the whole rate).
        let update = match limit.checked_sub(amount) {
            Some(room) => update
                .condition_expression("attribute_not_exists(#count) OR #count <= :room")
                .expression_attribute_values(":room", n(room)),
            None => update.condition_expression("attribute_not_exists(#count)"),
        };
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
