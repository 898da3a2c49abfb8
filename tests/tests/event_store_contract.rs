//! One contract for every event store implementation. Postgres always runs; KurrentDB runs when
//! built with `--features kurrentdb` and `AURORA_TEST_KURRENTDB_URL` names a server.

use std::sync::Arc;

use aurora_commands::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StoreError};
use aurora_events::{Actor, OrgId, StreamId};
use chrono::Utc;
use uuid::Uuid;

fn stream() -> StreamId {
    StreamId::new("chat", Uuid::now_v7().to_string()).unwrap()
}

fn request(stream: &StreamId, expected: ExpectedVersion, count: usize, command_id: Option<Uuid>) -> AppendRequest {
    AppendRequest {
        stream: stream.clone(),
        expected,
        command_id,
        org_id: OrgId(Uuid::nil()),
        actor: Actor::user(Uuid::from_u128(1)),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        traceparent: None,
        occurred_at: Utc::now(),
        events: (0..count)
            .map(|index| NewEvent {
                event_type: "chat.session_renamed".into(),
                schema_version: 1,
                payload: serde_json::json!({ "title": format!("title {index}") }),
            })
            .collect(),
    }
}

macro_rules! event_store_contract {
    ($make_store:expr) => {
        use super::*;

        async fn store() -> Option<Arc<dyn EventStore>> {
            $make_store.await
        }

        #[tokio::test]
        async fn appended_events_load_in_order_with_gap_free_versions() {
            let Some(store) = store().await else { return };
            let stream = stream();
            let first = store.append(request(&stream, ExpectedVersion::NoStream, 2, None)).await.unwrap();
            assert_eq!((first.first_version, first.last_version, first.duplicate), (1, 2, false));
            let second = store.append(request(&stream, ExpectedVersion::Exact(2), 1, None)).await.unwrap();
            assert_eq!((second.first_version, second.last_version), (3, 3));
            let loaded = store.load_stream(&stream, 0).await.unwrap();
            let versions: Vec<u64> = loaded.iter().map(|event| event.stream_version).collect();
            assert_eq!(versions, vec![1, 2, 3]);
            let ids: Vec<Uuid> = loaded.iter().map(|event| event.id).collect();
            assert_eq!(ids, [first.event_ids.clone(), second.event_ids.clone()].concat());
            assert_eq!(loaded[2].payload, serde_json::json!({ "title": "title 0" }));
            assert_eq!(store.load_stream(&stream, 2).await.unwrap().len(), 1);
        }

        #[tokio::test]
        async fn a_wrong_expected_version_is_a_typed_conflict_and_appends_nothing() {
            let Some(store) = store().await else { return };
            let stream = stream();
            store.append(request(&stream, ExpectedVersion::NoStream, 1, None)).await.unwrap();
            let stale = store.append(request(&stream, ExpectedVersion::NoStream, 1, None)).await.unwrap_err();
            assert!(matches!(stale, StoreError::Conflict { actual: 1, expected: ExpectedVersion::NoStream, .. }), "{stale}");
            let ahead = store.append(request(&stream, ExpectedVersion::Exact(5), 1, None)).await.unwrap_err();
            assert!(matches!(ahead, StoreError::Conflict { actual: 1, .. }), "{ahead}");
            assert_eq!(store.load_stream(&stream, 0).await.unwrap().len(), 1);
            let any = store.append(request(&stream, ExpectedVersion::Any, 1, None)).await.unwrap();
            assert_eq!(any.last_version, 2);
        }

        #[tokio::test]
        async fn the_same_command_twice_appends_once_and_returns_the_first_result() {
            let Some(store) = store().await else { return };
            let stream = stream();
            let command_id = Uuid::now_v7();
            let first = store.append(request(&stream, ExpectedVersion::NoStream, 2, Some(command_id))).await.unwrap();
            let again = store.append(request(&stream, ExpectedVersion::NoStream, 2, Some(command_id))).await.unwrap();
            assert!(again.duplicate);
            assert_eq!((again.first_version, again.last_version, &again.event_ids), (1, 2, &first.event_ids));
            assert_eq!(store.load_stream(&stream, 0).await.unwrap().len(), 2);
            let remembered = store.command_result(command_id).await.unwrap().unwrap();
            assert_eq!(remembered.event_ids, first.event_ids);
            assert!(store.command_result(Uuid::now_v7()).await.unwrap().is_none());
        }

        #[tokio::test]
        async fn concurrent_appends_at_one_version_let_exactly_one_through() {
            let Some(store) = store().await else { return };
            let stream = stream();
            store.append(request(&stream, ExpectedVersion::NoStream, 1, None)).await.unwrap();
            let attempts = (0..8).map(|_| {
                let store = store.clone();
                let stream = stream.clone();
                tokio::spawn(async move { store.append(request(&stream, ExpectedVersion::Exact(1), 1, None)).await })
            });
            let outcomes = futures::future::join_all(attempts).await;
            let succeeded = outcomes.iter().filter(|outcome| outcome.as_ref().unwrap().is_ok()).count();
            let conflicted = outcomes
                .iter()
                .filter(|outcome| matches!(outcome.as_ref().unwrap(), Err(StoreError::Conflict { .. })))
                .count();
            assert_eq!((succeeded, conflicted), (1, 7));
            assert_eq!(store.load_stream(&stream, 0).await.unwrap().len(), 2);
        }

        /// Many appends at once, as a gateway under load makes them (the Postgres store writes
        /// those that wait together, in one statement): each new stream gets its events at
        /// versions from 1, each append onto a stream already there conflicts alone, and two at
        /// once onto one stream let one through.
        #[tokio::test]
        async fn many_appends_at_once_each_keep_their_own_version_check() {
            let Some(store) = store().await else { return };
            let taken: Vec<StreamId> = (0..8).map(|_| stream()).collect();
            for stream in &taken {
                store.append(request(stream, ExpectedVersion::NoStream, 1, None)).await.unwrap();
            }
            let fresh: Vec<StreamId> = (0..120).map(|_| stream()).collect();
            let shared = stream();
            let mut attempts = Vec::new();
            for (index, stream) in fresh.iter().enumerate() {
                let (store, stream) = (store.clone(), stream.clone());
                attempts.push(tokio::spawn(async move {
                    (stream.clone(), "fresh", store.append(request(&stream, ExpectedVersion::NoStream, 1 + index % 3, None)).await)
                }));
            }
            for stream in &taken {
                let (store, stream) = (store.clone(), stream.clone());
                attempts.push(tokio::spawn(async move {
                    (stream.clone(), "taken", store.append(request(&stream, ExpectedVersion::NoStream, 2, None)).await)
                }));
            }
            for _ in 0..2 {
                let (store, stream) = (store.clone(), shared.clone());
                attempts.push(tokio::spawn(async move {
                    (stream.clone(), "shared", store.append(request(&stream, ExpectedVersion::NoStream, 1, None)).await)
                }));
            }
            let mut shared_through = 0;
            for outcome in futures::future::join_all(attempts).await {
                let (stream, kind, outcome) = outcome.unwrap();
                let loaded = store.load_stream(&stream, 0).await.unwrap();
                match (kind, outcome) {
                    ("fresh", Ok(appended)) => {
                        assert_eq!(appended.first_version, 1, "{stream}");
                        assert_eq!(appended.last_version as usize, loaded.len(), "{stream}");
                        assert_eq!(loaded.iter().map(|event| event.id).collect::<Vec<_>>(), appended.event_ids, "{stream}");
                    }
                    ("taken", Err(StoreError::Conflict { actual: 1, .. })) => assert_eq!(loaded.len(), 1, "{stream}"),
                    ("shared", Ok(_)) => shared_through += 1,
                    ("shared", Err(StoreError::Conflict { actual: 1, .. })) => {}
                    (kind, outcome) => panic!("{kind} append to {stream}: {outcome:?}"),
                }
            }
            assert_eq!(shared_through, 1);
            assert_eq!(store.load_stream(&shared, 0).await.unwrap().len(), 1);
        }

        #[tokio::test]
        async fn an_unknown_stream_loads_empty_and_empty_appends_are_refused() {
            let Some(store) = store().await else { return };
            let stream = stream();
            assert!(store.load_stream(&stream, 0).await.unwrap().is_empty());
            let error = store.append(request(&stream, ExpectedVersion::Any, 0, None)).await.unwrap_err();
            assert!(matches!(error, StoreError::NothingToAppend));
        }
    };
}

mod postgres {
    event_store_contract!(async {
        let env = aurora_tests::TestEnv::new().await;
        Some(Arc::new(aurora_commands::postgres::PostgresEventStore::new(env.pool.clone())) as Arc<dyn EventStore>)
    });
}

#[cfg(feature = "kurrentdb")]
mod kurrentdb {
    event_store_contract!(async {
        let Ok(url) = std::env::var("AURORA_TEST_KURRENTDB_URL") else {
            eprintln!("SKIPPED: KurrentDB contract case: AURORA_TEST_KURRENTDB_URL is not set");
            return None;
        };
        let store = aurora_commands::kurrentdb::KurrentDbEventStore::connect(&url).await.expect("connect to KurrentDB");
        Some(Arc::new(store) as Arc<dyn EventStore>)
    });
}

/// Says plainly, in the test output, when the KurrentDB run did not happen.
#[test]
fn kurrentdb_contract_run_or_skip_notice() {
    let built_with_kurrentdb = cfg!(feature = "kurrentdb");
    let url = std::env::var("AURORA_TEST_KURRENTDB_URL").ok();
    match (built_with_kurrentdb, url) {
        (true, Some(_)) => eprintln!("KurrentDB contract suite runs against AURORA_TEST_KURRENTDB_URL"),
        (true, None) => eprintln!("SKIPPED: KurrentDB contract suite: AURORA_TEST_KURRENTDB_URL is not set (no KurrentDB server can be installed on this machine)"),
        (false, _) => eprintln!(
            "SKIPPED: KurrentDB contract suite: built without `--features kurrentdb`; run \
             `AURORA_TEST_KURRENTDB_URL=esdb://... cargo test -p aurora-tests --features kurrentdb --test event_store_contract`"
        ),
    }
}
