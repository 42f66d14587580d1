//! The DynamoDB store against a local moto server (started by `tests/moto/moto.sh ensure`, or
//! the endpoint in SHADOWSYNC_TEST_AWS_ENDPOINT). Each test works in a table of its own.

use shadowsync_state::{KeyValueStore, StateError};
use shadowsync_state_dynamodb::DynamoStore;
use std::sync::Arc;

fn endpoint() -> &'static str {
    shadowsync_e2e::aws::moto()
}

/// A store on a fresh table with a unique name.
async fn fresh_store(name: &str) -> DynamoStore {
    let client = DynamoStore::local_client(endpoint()).await;
    let table = format!("shadowsync-{name}-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&client, &table)
        .await
        .expect("create table");
    DynamoStore::new(client, table)
}

#[tokio::test]
async fn conformance() {
    let store = fresh_store("conformance").await;
    shadowsync_state::conformance::check(&store).await;
}

/// Many writers with the same expected version, many times over: exactly one wins each round,
/// the others see a conflict, and the winner's value is what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_exactly_one_wins() {
    let store = Arc::new(fresh_store("race").await);
    let writers = 4;
    let mut expected = None;
    for round in 0..15u64 {
        let tasks = (0..writers).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let value = format!("round {round} writer {w}").into_bytes();
                (value.clone(), store.put("t", "k", value, expected).await)
            })
        });
        let results = futures::future::join_all(tasks).await;
        let mut winners = Vec::new();
        for r in results {
            match r.expect("task") {
                (value, Ok(version)) => winners.push((value, version)),
                (_, Err(StateError::Conflict { .. })) => {}
                (_, Err(e)) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let (value, version) = winners.remove(0);
        assert_eq!(version, round + 1);
        let stored = store.get("t", "k").await.unwrap().unwrap();
        assert_eq!((stored.value, stored.version), (value, version));
        expected = Some(version);
    }
}

/// Scanning page by page with `start_after` visits every key once, in order; tables (partitions)
/// stay apart.
#[tokio::test]
async fn scan_pages_and_tables() {
    let store = fresh_store("scan").await;
    for i in 0..25 {
        store
            .put("a", &format!("k{i:02}"), vec![i], None)
            .await
            .unwrap();
    }
    store
        .put("b", "k00", b"other".to_vec(), None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan("a", after.as_deref(), 7).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = Some(page.last().unwrap().0.clone());
        seen.extend(page.into_iter().map(|(k, v)| (k, v.value[0])));
    }
    let expected: Vec<_> = (0..25).map(|i| (format!("k{i:02}"), i)).collect();
    assert_eq!(seen, expected);
    assert_eq!(store.scan("a", None, 0).await.unwrap(), vec![]);
    assert_eq!(store.scan("a", Some(""), 100).await.unwrap().len(), 25);
    let b = store.scan("b", None, 10).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].1.value, b"other");
}

/// An item written by something else without our attributes reads as corrupt, not as a panic.
#[tokio::test]
async fn foreign_item_is_corrupt() {
    use shadowsync_state_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
    let client = DynamoStore::local_client(endpoint()).await;
    let table = format!("shadowsync-corrupt-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&client, &table).await.unwrap();
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("t".into()))
        .item("sk", AttributeValue::S("k".into()))
        .item("value", AttributeValue::S("not binary".into()))
        .send()
        .await
        .unwrap();
    let store = DynamoStore::new(client, table);
    assert!(matches!(
        store.get("t", "k").await,
        Err(StateError::Corrupt { .. })
    ));
}

/// An empty value is a value (DynamoDB allows empty binary attributes outside the key).
#[tokio::test]
async fn empty_value_round_trips() {
    let store = fresh_store("empty").await;
    assert_eq!(store.put("t", "k", Vec::new(), None).await.unwrap(), 1);
    let got = store.get("t", "k").await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (Vec::new(), 1));
}
