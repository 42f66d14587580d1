//! The behaviour every [`KeyValueStore`] must have, as a check each implementation's tests run
//! against a real instance (the embedded store here; DynamoDB against moto in its own crate).

use crate::{KeyValueStore, StateError};

/// Panics with a message naming the broken rule.
pub async fn check(store: &dyn KeyValueStore) {
    let t = "conformance";
    assert!(
        store.get(t, "a").await.unwrap().is_none(),
        "missing key reads as None"
    );
    assert!(store
        .scan("never-written", None, 10)
        .await
        .unwrap()
        .is_empty());

    let v1 = store.put(t, "a", b"one".to_vec(), None).await.unwrap();
    assert_eq!(v1, 1, "first version is 1");
    let got = store.get(t, "a").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"one"[..], 1));

    assert!(
        matches!(
            store.put(t, "a", b"x".to_vec(), None).await,
            Err(StateError::Conflict { .. })
        ),
        "create over an existing key conflicts"
    );
    assert!(
        matches!(
            store.put(t, "a", b"x".to_vec(), Some(7)).await,
            Err(StateError::Conflict { .. })
        ),
        "stale version conflicts"
    );
    assert_eq!(
        store.put(t, "a", b"two".to_vec(), Some(1)).await.unwrap(),
        2
    );
    assert_eq!(store.get(t, "a").await.unwrap().unwrap().value, b"two");

    assert!(
        matches!(
            store.delete(t, "a", Some(1)).await,
            Err(StateError::Conflict { .. })
        ),
        "delete with a stale version conflicts"
    );
    store.delete(t, "a", Some(2)).await.unwrap();
    assert!(store.get(t, "a").await.unwrap().is_none());
    store.delete(t, "a", None).await.unwrap();

    for k in ["k3", "k1", "k2", "k4"] {
        store.put(t, k, k.as_bytes().to_vec(), None).await.unwrap();
    }
    let keys = |page: Vec<(String, _)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.scan(t, None, 2).await.unwrap()), ["k1", "k2"]);
    assert_eq!(
        keys(store.scan(t, Some("k2"), 10).await.unwrap()),
        ["k3", "k4"]
    );
    assert!(
        store.get("other-table", "k1").await.unwrap().is_none(),
        "tables are separate"
    );
}
