//! The failure bucket in S3.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use eventline_aws::error_chain;
use time::OffsetDateTime;

use crate::error::{Error, classify};
use crate::redrive::{FailureBucket, ObjectInfo};

/// Failure objects larger than this are not read. Lambda's hold one invocation, which is at
/// most 6 MB, a few more as JSON text.
pub const MAX_OBJECT_BYTES: i64 = 64 * 1024 * 1024;
/// DeleteObjects takes 1,000 keys per call.
const MAX_KEYS_PER_DELETE: usize = 1000;
const BUCKET_HINT: &str = "check --bucket (the stack output StreamFailureBucketName) and AWS_REGION";

#[derive(Debug, Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    name: String,
}

impl S3Bucket {
    pub fn new(client: aws_sdk_s3::Client, name: impl Into<String>) -> Self {
        Self { client, name: name.into() }
    }

    fn what(&self) -> String {
        format!("bucket {}", self.name)
    }
}

impl FailureBucket for S3Bucket {
    #[tracing::instrument(skip(self), fields(bucket = %self.name))]
    async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, Error> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .set_prefix(prefix.map(str::to_owned))
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|error| {
                classify(&error, "s3:ListBucket", &self.what(), |error| match error {
                    ListObjectsV2Error::NoSuchBucket(_) => {
                        Some(Error::NotFound { what: self.what(), hint: BUCKET_HINT.to_owned() })
                    }
                    // S3 answers for a bucket in another region with a redirect.
                    error if matches!(error.code(), Some("PermanentRedirect" | "AuthorizationHeaderMalformed")) => {
                        Some(Error::Refused {
                            action: "s3:ListBucket",
                            what: self.what(),
                            detail: "the bucket is in another region: set AWS_REGION to the stack's region".into(),
                        })
                    }
                    _ => None,
                })
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let last_modified =
                    object.last_modified().and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok());
                objects.push(ObjectInfo { key: key.to_owned(), last_modified });
            }
        }
        Ok(objects)
    }

    #[tracing::instrument(skip(self), fields(bucket = %self.name))]
    async fn read(&self, key: &str) -> Result<Vec<u8>, Error> {
        let what = format!("s3://{}/{key}", self.name);
        let output = self.client.get_object().bucket(&self.name).key(key).send().await.map_err(|error| {
            classify(&error, "s3:GetObject", &what, |error| match error {
                GetObjectError::NoSuchKey(_) => Some(Error::NotFound {
                    what: what.clone(),
                    hint: "it was deleted or expired after it was listed".to_owned(),
                }),
                _ => None,
            })
        })?;
        if let Some(bytes) = output.content_length().filter(|bytes| *bytes > MAX_OBJECT_BYTES) {
            return Err(Error::Refused {
                action: "s3:GetObject",
                what,
                detail: format!(
                    "{bytes} bytes is more than a failure record holds (at most {MAX_OBJECT_BYTES} are read)"
                ),
            });
        }
        let body = output.body.collect().await.map_err(|error| Error::Unavailable {
            action: "s3:GetObject",
            what,
            detail: error.to_string(),
        })?;
        Ok(body.into_bytes().to_vec())
    }

    #[tracing::instrument(skip_all, fields(bucket = %self.name, keys = keys.len()))]
    async fn delete(&self, keys: &[String]) -> Vec<Result<(), String>> {
        let mut results: Vec<Result<(), String>> = vec![Ok(()); keys.len()];
        for (chunk, start) in keys.chunks(MAX_KEYS_PER_DELETE).zip((0..).step_by(MAX_KEYS_PER_DELETE)) {
            let slots = start..start + chunk.len();
            let delete = chunk
                .iter()
                .map(|key| ObjectIdentifier::builder().key(key).build())
                .collect::<Result<Vec<_>, _>>()
                .and_then(|objects| Delete::builder().set_objects(Some(objects)).quiet(true).build());
            let delete = match delete {
                Ok(delete) => delete,
                Err(error) => {
                    results[slots].fill(Err(error.to_string()));
                    continue;
                }
            };
            match self.client.delete_objects().bucket(&self.name).delete(delete).send().await {
                Err(error) => results[slots].fill(Err(error_chain(&error))),
                Ok(output) => {
                    for failed in output.errors() {
                        let reason = format!(
                            "{}: {}",
                            failed.code().unwrap_or("Error"),
                            failed.message().unwrap_or("not deleted")
                        );
                        if let Some(at) = chunk.iter().position(|key| Some(key.as_str()) == failed.key()) {
                            results[start + at] = Err(reason);
                        }
                    }
                }
            }
        }
        results
    }
}
