use chrono::Utc;
use shadowsync_state::{
    conformance, AccountStatus, EmbeddedStore, GuestRecord, KeyValueStore, StateError,
};
use std::sync::Arc;

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("state.redb")).unwrap();
    conformance::check(&store).await;
}

#[tokio::test]
async fn the_in_memory_store_conforms_too() {
    conformance::check(&EmbeddedStore::in_memory().unwrap()).await;
}

#[tokio::test]
async fn survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/state.redb");
    {
        let store = EmbeddedStore::open(&path).unwrap();
        store.put("t", "k", b"v".to_vec(), None).await.unwrap();
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.get("t", "k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn concurrent_writers_cannot_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
    store.put("t", "k", b"0".to_vec(), None).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put("t", "k", vec![i], Some(1)).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StateError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn guest_record_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
    let id = shadowsync_core::ObjectId::parse("4f8a2c1e-9b3d-4e5f-8a7b-6c5d4e3f2a1b").unwrap();
    let record = GuestRecord {
        object_id: id.clone(),
        dn: Some("CN=a,OU=Guests".into()),
        object_guid: None,
        sam_account_name: Some("a".into()),
        status: AccountStatus::Enabled,
        disabled_at: None,
        applied_fingerprint: Some("f".into()),
        conflict: None,
        not_found_since: None,
        updated_at: Utc::now(),
    };
    let v = record.save(&store, None).await.unwrap();
    let loaded = GuestRecord::load(&store, &id).await.unwrap().unwrap();
    assert_eq!((loaded.value, loaded.version), (record.clone(), v));
    assert!(
        record.save(&store, None).await.is_err(),
        "stale save must conflict"
    );
}

/// The store holds the queue's jobs and every guest's record: readable by its owner only.
#[cfg(unix)]
mod permissions {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn mode(path: &Path) -> String {
        format!(
            "{:o}",
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777
        )
    }

    #[test]
    fn a_new_store_file_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        drop(EmbeddedStore::open(&path).unwrap());
        assert_eq!(mode(&path), "600");
    }

    #[tokio::test]
    async fn an_existing_store_file_open_to_others_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.put("t", "k", b"v".to_vec(), None).await.unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(mode(&path), "600");
        assert_eq!(store.get("t", "k").await.unwrap().unwrap().value, b"v");
    }
}
