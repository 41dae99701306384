//! The reference table in DynamoDB: the generation pointer, and the buckets of each
//! generation (see [`eventline_model::reference`] for the layout and why it is atomic).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::batch_get::{batch_get, is_transient};
use crate::error_chain;
use crate::item::{Item, n, s};
use crate::keys::{self, attr};
use eventline_model::event::UserId;
use eventline_model::reference::ReferenceError;
use eventline_model::reference::{Generation, ReferenceTable, UserMeta, bucket_of, pack, parse_bucket};
use eventline_model::retry::Backoff;

/// BatchWriteItem's limit.
const WRITE_BATCH: usize = 25;

fn unavailable(error: impl std::error::Error + 'static) -> ReferenceError {
    ReferenceError::Unavailable(error_chain(&error).into())
}

#[derive(Debug, Clone)]
pub struct ReferenceStore {
    client: aws_sdk_dynamodb::Client,
    table_name: String,
    backoff: Backoff,
}

impl ReferenceStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table_name: impl Into<String>, backoff: Backoff) -> Self {
        Self { client, table_name: table_name.into(), backoff }
    }

    /// The current generation, or `None` before the first table.
    #[tracing::instrument(skip(self))]
    pub async fn current(&self) -> Result<Option<Generation>, ReferenceError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .key(keys::PK, s(keys::REFERENCE_PK))
            .key(keys::SK, s(keys::REFERENCE_CURRENT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.as_ref().map(generation_of).transpose()
    }

    /// Stores `table` as the next generation and makes it current, unless the current one
    /// is as new or newer.
    #[tracing::instrument(skip_all, fields(users = table.users.len()))]
    pub async fn replace(&self, table: &ReferenceTable) -> Result<Generation, ReferenceError> {
        let mut current = self.current().await?;
        if let Some(current) = current.as_ref().filter(|c| c.ts >= table.ts) {
            return Err(ReferenceError::Stale(current.clone()));
        }
        let key = uuid::Uuid::new_v4().simple().to_string();
        let (buckets, texts) = pack(table);
        self.write_buckets(&key, &texts).await?;
        loop {
            let next = Generation {
                number: current.as_ref().map_or(1, |c| c.number + 1),
                key: key.clone(),
                ts: table.ts,
                users: table.users.len() as u64,
                buckets,
            };
            let previous = current.clone();
            match self.switch(current.as_ref(), &next).await {
                Ok(()) => {
                    if let Some(old) = current {
                        self.expire(&old.key, old.buckets).await;
                    }
                    return Ok(next);
                }
                Err(SwitchError::Moved) => {
                    current = self.current().await?;
                    // The switch went through but its answer was lost: a retry found the
                    // pointer already on this generation.
                    if let Some(mine) = current.as_ref().filter(|c| c.key == key) {
                        if let Some(old) = previous.as_ref() {
                            self.expire(&old.key, old.buckets).await;
                        }
                        return Ok(mine.clone());
                    }
                    // Another replacement won in between: go again against it, unless it
                    // is as new as this one.
                    if let Some(winner) = current.as_ref().filter(|c| c.ts >= table.ts) {
                        self.expire(&key, buckets).await;
                        return Err(ReferenceError::Stale(winner.clone()));
                    }
                }
                Err(SwitchError::Failed(error)) => return Err(error),
            }
        }
    }

    async fn write_buckets(&self, generation_key: &str, texts: &[String]) -> Result<(), ReferenceError> {
        let requests: Vec<WriteRequest> = texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let item = Item::from([
                    (keys::PK.to_owned(), s(keys::reference_bucket_pk(generation_key))),
                    (keys::SK.to_owned(), s(keys::reference_bucket_sk(index as u32))),
                    (attr::BUCKET_USERS.to_owned(), s(text)),
                ]);
                let put = PutRequest::builder().set_item(Some(item)).build().map_err(unavailable)?;
                Ok(WriteRequest::builder().put_request(put).build())
            })
            .collect::<Result<_, ReferenceError>>()?;
        for chunk in requests.chunks(WRITE_BATCH) {
            let mut pending = chunk.to_vec();
            let mut retries = self.backoff.start();
            while !pending.is_empty() {
                let result =
                    self.client.batch_write_item().request_items(&self.table_name, pending.clone()).send().await;
                match result {
                    Ok(output) => {
                        pending =
                            output.unprocessed_items.and_then(|mut m| m.remove(&self.table_name)).unwrap_or_default();
                    }
                    Err(error) if !is_transient(&error) => return Err(unavailable(error)),
                    Err(error) => tracing::warn!(error = %error_chain(&error), "BatchWriteItem failed; retrying"),
                }
                if !pending.is_empty() && !retries.wait().await {
                    return Err(ReferenceError::Unavailable("buckets not written within the retry budget".into()));
                }
            }
        }
        Ok(())
    }

    /// Moves the pointer from `current` to `next` in one conditional write.
    async fn switch(&self, current: Option<&Generation>, next: &Generation) -> Result<(), SwitchError> {
        let ts_ns = next.ts.unix_timestamp_nanos();
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table_name)
            .item(keys::PK, s(keys::REFERENCE_PK))
            .item(keys::SK, s(keys::REFERENCE_CURRENT_SK))
            .item(attr::GENERATION, n(next.number))
            .item(attr::GENERATION_KEY, s(&next.key))
            .item(attr::TS, s(eventline_model::event::format_rfc3339(next.ts)))
            .item(attr::TS_NS, n(ts_ns))
            .item(attr::USERS, n(next.users))
            .item(attr::BUCKETS, n(next.buckets));
        put = match current {
            None => put.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", keys::PK),
            Some(current) => put
                .condition_expression("#generation = :current AND #ts_ns < :ts_ns")
                .expression_attribute_names("#generation", attr::GENERATION)
                .expression_attribute_names("#ts_ns", attr::TS_NS)
                .expression_attribute_values(":current", n(current.number))
                .expression_attribute_values(":ts_ns", n(ts_ns)),
        };
        let mut retries = self.backoff.start();
        loop {
            match put.clone().send().await {
                Ok(_) => return Ok(()),
                Err(error) if error.code() == Some("ConditionalCheckFailedException") => {
                    return Err(SwitchError::Moved);
                }
                Err(error) if is_transient(&error) && retries.wait().await => {
                    tracing::warn!(error = %error_chain(&error), "switching the reference generation failed; retrying");
                }
                Err(error) => return Err(SwitchError::Failed(unavailable(error))),
            }
        }
    }

    /// Lets a generation's buckets expire; readers of its pointer have a day to finish.
    async fn expire(&self, generation_key: &str, buckets: u32) {
        let expires_at = OffsetDateTime::now_utc().unix_timestamp() + keys::REFERENCE_EXPIRY_SECONDS;
        for index in 0..buckets {
            let result = self
                .client
                .update_item()
                .table_name(&self.table_name)
                .key(keys::PK, s(keys::reference_bucket_pk(generation_key)))
                .key(keys::SK, s(keys::reference_bucket_sk(index)))
                .update_expression("SET #ttl = :ttl")
                .expression_attribute_names("#ttl", keys::EXPIRES_AT)
                .expression_attribute_values(":ttl", n(expires_at))
                .send()
                .await;
            if let Err(error) = result {
                // Left unexpired, the bucket only costs storage.
                tracing::warn!(error = %error_chain(&error), index, "could not set a replaced bucket to expire");
            }
        }
    }

    /// The users of the given buckets of a generation, in as few BatchGetItem calls as the
    /// limits allow.
    #[tracing::instrument(skip(self, generation), fields(generation = generation.number, buckets = indexes.len()))]
    pub async fn buckets(
        &self,
        generation: &Generation,
        indexes: &[u32],
    ) -> Result<HashMap<u32, Vec<(UserId, UserMeta)>>, ReferenceError> {
        let keys: Vec<Item> = indexes
            .iter()
            .map(|&index| {
                Item::from([
                    (keys::PK.to_owned(), s(keys::reference_bucket_pk(&generation.key))),
                    (keys::SK.to_owned(), s(keys::reference_bucket_sk(index))),
                ])
            })
            .collect();
        let items = batch_get(&self.client, &self.table_name, keys, false, self.backoff)
            .await
            .map_err(ReferenceError::Unavailable)?;
        let found: HashMap<u32, Vec<(UserId, UserMeta)>> =
            items.iter().map(bucket_of_item).collect::<Result<_, _>>()?;
        // A bucket of an existing generation is never missing; an empty one is written too.
        if let Some(missing) = indexes.iter().find(|i| !found.contains_key(i)) {
            return Err(ReferenceError::Malformed(format!(
                "bucket {missing} of generation {} is missing",
                generation.number
            )));
        }
        Ok(found)
    }

    /// One user's entry in a generation.
    pub async fn user(&self, generation: &Generation, user: &UserId) -> Result<Option<UserMeta>, ReferenceError> {
        let index = bucket_of(user.as_str(), generation.buckets);
        let mut buckets = self.buckets(generation, &[index]).await?;
        Ok(buckets.remove(&index).unwrap_or_default().into_iter().find(|(u, _)| u == user).map(|(_, meta)| meta))
    }
}

enum SwitchError {
    Moved,
    Failed(ReferenceError),
}

fn generation_of(item: &Item) -> Result<Generation, ReferenceError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).ok_or_else(|| malformed(name));
    let number = |name: &str| -> Result<u64, ReferenceError> {
        item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| malformed(name))
    };
    Ok(Generation {
        number: number(attr::GENERATION)?,
        key: text(attr::GENERATION_KEY)?.clone(),
        ts: OffsetDateTime::parse(text(attr::TS)?, &Rfc3339).map_err(|_| malformed(attr::TS))?,
        users: number(attr::USERS)?,
        buckets: u32::try_from(number(attr::BUCKETS)?).map_err(|_| malformed(attr::BUCKETS))?,
    })
}

fn bucket_of_item(item: &Item) -> Result<(u32, Vec<(UserId, UserMeta)>), ReferenceError> {
    let sk = item.get(keys::SK).and_then(|v| v.as_s().ok()).ok_or_else(|| malformed(keys::SK))?;
    let index = sk.strip_prefix("BUCKET#").and_then(|i| i.parse().ok()).ok_or_else(|| malformed(keys::SK))?;
    let text = item.get(attr::BUCKET_USERS).and_then(|v| v.as_s().ok()).ok_or_else(|| malformed(attr::BUCKET_USERS))?;
    Ok((index, parse_bucket(text).map_err(ReferenceError::Malformed)?))
}

fn malformed(name: &str) -> ReferenceError {
    ReferenceError::Malformed(format!("reference item lacks a valid {name}"))
}
