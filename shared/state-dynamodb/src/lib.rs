//! [`KeyValueStore`] on one DynamoDB table, for the AWS host.
//!
//! Layout: partition key `pk` (S) = the store's table name, sort key `sk` (S) = the key,
//! attributes `value` (B) and `version` (N). One DynamoDB table holds every store table, so the
//! infrastructure declares a single table; a store table is one partition, and `scan` is a
//! `Query` on it, which DynamoDB returns in sort-key (byte) order, the order the embedded store
//! uses for UTF-8 keys.
//!
//! Compare-and-set is a `ConditionExpression` on `version` (`attribute_not_exists(pk)` when the
//! key must not exist); DynamoDB evaluates it atomically with the write, so two writers with the
//! same expected version cannot both win.
//!
//! Where DynamoDB differs from the embedded store: a key must not be empty (DynamoDB refuses
//! empty key attributes; the error is [`StateError::Storage`]), a key is at most 1,024 bytes,
//! and an item (key and value) at most 400 KB. shadowsync's keys are ids and its values small
//! JSON records, well inside these limits.

use async_trait::async_trait;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;
use shadowsync_state::{KeyValueStore, StateError, Versioned};
use std::collections::HashMap;

pub use aws_sdk_dynamodb;

const PK: &str = "pk";
const SK: &str = "sk";
const VALUE: &str = "value";
const VERSION: &str = "version";

/// The state store on the DynamoDB table `table_name`.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table_name: String,
}

impl DynamoStore {
    pub fn new(client: Client, table_name: impl Into<String>) -> Self {
        Self {
            client,
            table_name: table_name.into(),
        }
    }

    /// A client for a local endpoint (moto, DynamoDB Local): region us-east-1 and static test
    /// credentials, so nothing is read from the environment or instance metadata.
    pub async fn local_client(endpoint_url: &str) -> Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint_url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .load()
            .await;
        Client::new(&config)
    }

    /// Creates the table with the store's key schema (on-demand billing) and waits until it is
    /// active. For tests and local setups; production tables come from the infrastructure code.
    pub async fn create_table(client: &Client, table_name: &str) -> Result<(), StateError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(storage)
        };
        let key = |name: &str, key_type| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(storage)
        };
        client
            .create_table()
            .table_name(table_name)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(storage)?;
        client
            .wait_until_table_exists()
            .table_name(table_name)
            .wait(std::time::Duration::from_secs(60))
            .await
            .map_err(storage)?;
        Ok(())
    }

    fn key(&self, table: &str, key: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_string(), AttributeValue::S(table.to_string())),
            (SK.to_string(), AttributeValue::S(key.to_string())),
        ])
    }
}

/// An SDK failure, described with its whole chain of causes (the SDK's own Display says little
/// more than "service error").
fn storage(e: impl std::error::Error + Send + Sync + 'static) -> StateError {
    StateError::Storage {
        message: DisplayErrorContext(&e).to_string(),
        source: Box::new(e),
    }
}

/// A failed conditional write is a lost compare-and-set; anything else is a storage error.
fn write_error<E, R>(e: SdkError<E, R>, table: &str, key: &str, expected: Option<u64>) -> StateError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if e.code() == Some("ConditionalCheckFailedException") {
        StateError::conflict(table, key, expected)
    } else {
        storage(e)
    }
}

/// The condition that makes a write a compare-and-set on `expected`, with its values.
fn condition(expected: Option<u64>) -> (&'static str, Option<(String, AttributeValue)>) {
    match expected {
        None => ("attribute_not_exists(pk)", None),
        Some(v) => (
            "version = :expected",
            Some((":expected".into(), AttributeValue::N(v.to_string()))),
        ),
    }
}

fn decode(
    table: &str,
    key: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Versioned<Vec<u8>>, StateError> {
    let corrupt = |reason: &str| StateError::Corrupt {
        table: table.into(),
        key: key.into(),
        reason: reason.into(),
    };
    let value = match item.get(VALUE) {
        Some(AttributeValue::B(b)) => b.clone().into_inner(),
        _ => return Err(corrupt("attribute `value` is missing or not binary")),
    };
    let version = match item.get(VERSION) {
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| corrupt("attribute `version` is not an integer"))?,
        _ => return Err(corrupt("attribute `version` is missing or not a number")),
    };
    Ok(Versioned { value, version })
}

#[async_trait]
impl KeyValueStore for DynamoStore {
    async fn get(&self, table: &str, key: &str) -> Result<Option<Versioned<Vec<u8>>>, StateError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table_name)
            .set_key(Some(self.key(table, key)))
            // A read after our own compare-and-set must see it.
            .consistent_read(true)
            .send()
            .await
            .map_err(storage)?;
        out.item.map(|item| decode(table, key, &item)).transpose()
    }

    async fn put(
        &self,
        table: &str,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let version = expected.map_or(1, |v| v + 1);
        let mut item = self.key(table, key);
        item.insert(VALUE.into(), AttributeValue::B(value.into()));
        item.insert(VERSION.into(), AttributeValue::N(version.to_string()));
        let (cond, values) = condition(expected);
        self.client
            .put_item()
            .table_name(&self.table_name)
            .set_item(Some(item))
            .condition_expression(cond)
            .set_expression_attribute_values(values.map(|v| HashMap::from([v])))
            .send()
            .await
            .map_err(|e| write_error(e, table, key, expected))?;
        Ok(version)
    }

    async fn delete(
        &self,
        table: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), StateError> {
        let (cond, values) = condition(expected);
        self.client
            .delete_item()
            .table_name(&self.table_name)
            .set_key(Some(self.key(table, key)))
            // `expected == None`: the key must not exist, so deleting it is a no-op that
            // succeeds; an existing key conflicts (the embedded store's rule).
            .condition_expression(cond)
            .set_expression_attribute_values(values.map(|v| HashMap::from([v])))
            .send()
            .await
            .map_err(|e| write_error(e, table, key, expected))?;
        Ok(())
    }

    async fn scan(
        &self,
        table: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Versioned<Vec<u8>>)>, StateError> {
        let mut values = HashMap::from([(":pk".to_string(), AttributeValue::S(table.into()))]);
        let key_condition = match start_after {
            // Every key is greater than "", and DynamoDB refuses an empty key value.
            Some(after) if !after.is_empty() => {
                values.insert(":after".into(), AttributeValue::S(after.into()));
                "pk = :pk AND sk > :after"
            }
            _ => "pk = :pk",
        };
        let mut entries = Vec::new();
        let mut last_key = None;
        // A page also ends at 1 MB of data, so keep querying until `limit` or the end.
        while entries.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table_name)
                .key_condition_expression(key_condition)
                .set_expression_attribute_values(Some(values.clone()))
                .set_exclusive_start_key(last_key.take())
                .limit(i32::try_from(limit - entries.len()).unwrap_or(i32::MAX))
                .consistent_read(true)
                .send()
                .await
                .map_err(storage)?;
            for item in out.items.unwrap_or_default() {
                let Some(AttributeValue::S(key)) = item.get(SK) else {
                    return Err(StateError::storage(format!(
                        "an item of {table} has no string sort key"
                    )));
                };
                let versioned = decode(table, key, &item)?;
                entries.push((key.clone(), versioned));
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => last_key = Some(k),
                _ => break,
            }
        }
        Ok(entries)
    }
}
