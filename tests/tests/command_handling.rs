//! Load, decide, append, retry: the command handler with the chat session aggregate on Postgres.

use std::sync::Arc;

use aurora_commands::postgres::PostgresEventStore;
use aurora_commands::{CommandHandler, CommandMeta, HandleError};
use aurora_domain::chat::{ChatSession, ChatSessionCommand, ChatSessionError};
use aurora_domain::DomainError;
use aurora_events::{Actor, OrgId, StreamId};
use uuid::Uuid;

async fn handler() -> (aurora_tests::TestEnv, CommandHandler) {
    let env = aurora_tests::TestEnv::new().await;
    let handler = CommandHandler::new(Arc::new(PostgresEventStore::new(env.pool.clone())));
    (env, handler)
}

fn create(session_id: Uuid) -> ChatSessionCommand {
    ChatSessionCommand::Create { session_id, title: "checkout latency".into(), owner: ana(), context: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_on_one_stream_all_land_by_retrying() {
    let (_env, handler) = handler().await;
    let org = OrgId(Uuid::now_v7());
    let session_id = Uuid::now_v7();
    let stream = StreamId::new("chat", session_id.to_string()).unwrap();
    handler.handle::<ChatSession>(&stream, create(session_id), &CommandMeta::new(org, ana()), None).await.unwrap();

    let renames = (0..4).map(|index| {
        let handler = handler.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let command = ChatSessionCommand::Rename { title: format!("title {index}") };
            handler.handle::<ChatSession>(&stream, command, &CommandMeta::new(org, ana()), None).await
        })
    });
    for outcome in futures::future::join_all(renames).await {
        outcome.unwrap().expect("every rename lands after retrying on conflict");
    }
    let (state, version) = handler.load::<ChatSession>(&stream, org).await.unwrap();
    assert_eq!(version, 5);
    assert!(state.title.starts_with("title "));
}

#[tokio::test]
async fn a_stale_expected_version_is_a_conflict_naming_the_current_one() {
    let (_env, handler) = handler().await;
    let org = OrgId(Uuid::now_v7());
    let session_id = Uuid::now_v7();
    let stream = StreamId::new("chat", session_id.to_string()).unwrap();
    let meta = || CommandMeta::new(org, ana());
    handler.handle::<ChatSession>(&stream, create(session_id), &meta(), None).await.unwrap();
    handler.handle::<ChatSession>(&stream, ChatSessionCommand::Rename { title: "one".into() }, &meta(), Some(1)).await.unwrap();
    let error =
        handler.handle::<ChatSession>(&stream, ChatSessionCommand::Rename { title: "two".into() }, &meta(), Some(1)).await.unwrap_err();
    assert!(matches!(error, HandleError::Conflict { expected: 1, actual: 2, .. }), "{error}");
}

#[tokio::test]
async fn a_repeated_command_returns_the_first_result_and_appends_nothing() {
    let (env, handler) = handler().await;
    let org = OrgId(Uuid::now_v7());
    let session_id = Uuid::now_v7();
    let stream = StreamId::new("chat", session_id.to_string()).unwrap();
    let meta = CommandMeta::idempotent(org, ana(), Uuid::now_v7());
    let first = handler.handle::<ChatSession>(&stream, create(session_id), &meta, None).await.unwrap();
    let again = handler.handle::<ChatSession>(&stream, create(session_id), &meta, None).await.unwrap();
    assert_eq!(again.appended.as_ref().unwrap().event_ids, first.appended.as_ref().unwrap().event_ids);
    assert!(again.appended.unwrap().duplicate);
    assert_eq!(env.count("SELECT count(*) FROM events").await, 1);
}

#[tokio::test]
async fn unknown_streams_and_other_organisations_streams_are_not_found() {
    let (_env, handler) = handler().await;
    let org = OrgId(Uuid::now_v7());
    let other_org = OrgId(Uuid::now_v7());
    let session_id = Uuid::now_v7();
    let stream = StreamId::new("chat", session_id.to_string()).unwrap();
    let rename = ChatSessionCommand::Rename { title: "x".into() };

    let unknown = handler.handle::<ChatSession>(&stream, rename.clone(), &CommandMeta::new(org, ana()), None).await;
    assert!(matches!(unknown, Err(HandleError::Domain(DomainError::ChatSession(ChatSessionError::NotFound)))));

    handler.handle::<ChatSession>(&stream, create(session_id), &CommandMeta::new(org, ana()), None).await.unwrap();
    let foreign = handler.handle::<ChatSession>(&stream, rename, &CommandMeta::new(other_org, Actor::user(Uuid::from_u128(2))), None).await;
    assert!(matches!(foreign, Err(HandleError::Domain(DomainError::ChatSession(ChatSessionError::NotFound)))));
}

/// A handler keeps the states it saw, as each process does; another process's handler writing the
/// same stream must not make it decide on what it kept.
#[tokio::test]
async fn a_handler_decides_on_what_another_process_appended_since() {
    let (env, here) = handler().await;
    let elsewhere = CommandHandler::new(Arc::new(PostgresEventStore::new(env.pool.clone())));
    let org = OrgId(Uuid::now_v7());
    let session_id = Uuid::now_v7();
    let stream = StreamId::new("chat", session_id.to_string()).unwrap();
    let meta = || CommandMeta::new(org, ana());
    here.handle::<ChatSession>(&stream, create(session_id), &meta(), None).await.unwrap();

    // Renamed elsewhere: the same rename here is already satisfied, not a second event.
    let rename = || ChatSessionCommand::Rename { title: "db pool".into() };
    elsewhere.handle::<ChatSession>(&stream, rename(), &meta(), None).await.unwrap();
    let again = here.handle::<ChatSession>(&stream, rename(), &meta(), None).await.unwrap();
    assert_eq!((again.stream_version, again.appended), (2, None));

    // Archived elsewhere: a rename here is refused, although the state it kept was open.
    elsewhere.handle::<ChatSession>(&stream, ChatSessionCommand::Archive { reason: None }, &meta(), None).await.unwrap();
    let refused =
        here.handle::<ChatSession>(&stream, ChatSessionCommand::Rename { title: "later".into() }, &meta(), None).await.unwrap_err();
    assert!(matches!(&refused, HandleError::Domain(DomainError::ChatSession(ChatSessionError::Archived))), "{refused}");
    assert_eq!(env.count("SELECT count(*) FROM events").await, 3);
    let (state, version) = here.load::<ChatSession>(&stream, org).await.unwrap();
    assert_eq!((state.title.as_str(), state.archived, version), ("db pool", true, 3));
}

fn ana() -> Actor {
    Actor::user(Uuid::from_u128(1))
}
