//! The vector-index port's contract, run against pgvector (the default) and against Weaviate
//! when `AURORA_TEST_WEAVIATE_URL` names one (no Weaviate server can be had from this machine's
//! registries; the run says so when it is skipped). Real embeddings of the real model.

use std::sync::Arc;

use aurora_adapters::embeddings::Embedder;
use aurora_adapters::vectors::pgvector::PgVectors;
use aurora_adapters::vectors::weaviate::WeaviateVectors;
use aurora_adapters::vectors::{record_id, Source, SourceKind, VectorIndex, VectorRecord};
use aurora_tests::TestEnv;
use uuid::Uuid;

async fn contract(index: &dyn VectorIndex, embedder: &Embedder) {
    let (org, other_org) = (Uuid::now_v7(), Uuid::now_v7());
    let document = Source { kind: SourceKind::Document, id: Uuid::now_v7(), version: 1 };
    let texts = [
        "Restart the payments gateway with systemctl restart payments-gateway.",
        "The orders database fails over to the replica orders-db-2.",
        "Certificates renew thirty days before they expire.",
    ];
    let embeddings = embedder.embed(&texts.map(str::to_owned)).await.unwrap();
    let records = |org_id: Uuid, source: Source| -> Vec<VectorRecord> {
        texts
            .iter()
            .zip(&embeddings)
            .enumerate()
            .map(|(index, (text, embedding))| VectorRecord {
                id: record_id(org_id, source, index as u32),
                org_id,
                source,
                chunk_index: index as u32,
                content: text.to_string(),
                heading_path: vec!["Runbook".into()],
                page: Some(index as u32 + 1),
                embedding: embedding.clone(),
            })
            .collect()
    };
    index.upsert(&records(org, document)).await.unwrap();
    // Writing the same chunks again changes nothing: ids are deterministic.
    index.upsert(&records(org, document)).await.unwrap();
    assert_eq!(index.count(org, SourceKind::Document, document.id).await.unwrap(), 3);
    // Another organisation's identical chunks are its own.
    index.upsert(&records(other_org, document)).await.unwrap();

    let query = embedder.embed(&["how do I restart the payment gateway?".to_owned()]).await.unwrap().remove(0);
    let hits = index.search(org, &query, &[SourceKind::Document], 3).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].id, record_id(org, document, 0), "{hits:?}");
    assert!(hits[0].similarity > hits[1].similarity && hits[0].similarity > 0.5, "{hits:?}");
    assert!(hits.iter().all(|hit| hit.source == document));
    // Filtered by kind, and never another organisation's.
    assert!(index.search(org, &query, &[SourceKind::Conversation], 3).await.unwrap().is_empty());
    let other = index.search(other_org, &query, &[SourceKind::Document], 10).await.unwrap();
    assert!(other.iter().all(|hit| hit.id != record_id(org, document, 0)) && other.len() == 3);

    // A new version: deleting all but it leaves only its records.
    let second = Source { version: 2, ..document };
    index.upsert(&records(org, second)).await.unwrap();
    assert_eq!(index.count(org, SourceKind::Document, document.id).await.unwrap(), 6);
    assert_eq!(index.delete_source(org, SourceKind::Document, document.id, Some(2)).await.unwrap(), 3);
    let hits = index.search(org, &query, &[SourceKind::Document], 10).await.unwrap();
    assert!(hits.len() == 3 && hits.iter().all(|hit| hit.source.version == 2), "{hits:?}");
    assert_eq!(index.delete_source(org, SourceKind::Document, document.id, None).await.unwrap(), 3);
    assert_eq!(index.count(org, SourceKind::Document, document.id).await.unwrap(), 0);
    assert_eq!(index.count(other_org, SourceKind::Document, document.id).await.unwrap(), 3);
}

fn embedder(env: &TestEnv) -> Arc<Embedder> {
    Embedder::shared(&env.config.embedding)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_keeps_the_contract() {
    let env = TestEnv::new().await;
    contract(&PgVectors::new(env.pool.clone()), &embedder(&env)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgvector_finds_an_organisation_s_vectors_among_many_of_others() {
    // Many other organisations' vectors near the query must not crowd out the one asked for.
    let env = TestEnv::new().await;
    let index = PgVectors::new(env.pool.clone());
    let embedder = embedder(&env);
    let near = embedder.embed(&["restart the payments gateway".to_owned()]).await.unwrap().remove(0);
    let crowd: Vec<VectorRecord> = (0..400)
        .map(|index| {
            let org_id = Uuid::now_v7();
            let source = Source { kind: SourceKind::Document, id: Uuid::now_v7(), version: 1 };
            let mut embedding = near.clone();
            embedding[index % 384] += 0.01;
            VectorRecord {
                id: record_id(org_id, source, 0),
                org_id,
                source,
                chunk_index: 0,
                content: String::new(),
                heading_path: vec![],
                page: None,
                embedding,
            }
        })
        .collect();
    index.upsert(&crowd).await.unwrap();
    let org = Uuid::now_v7();
    let source = Source { kind: SourceKind::Document, id: Uuid::now_v7(), version: 1 };
    let far = embedder.embed(&["the cafeteria menu for next week".to_owned()]).await.unwrap().remove(0);
    let mine = VectorRecord {
        id: record_id(org, source, 0),
        org_id: org,
        source,
        chunk_index: 0,
        content: String::new(),
        heading_path: vec![],
        page: None,
        embedding: far,
    };
    index.upsert(&[mine]).await.unwrap();
    let hits = index.search(org, &near, &[SourceKind::Document], 5).await.unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaviate_keeps_the_contract_when_one_is_given() {
    let Ok(url) = std::env::var("AURORA_TEST_WEAVIATE_URL") else {
        eprintln!("SKIPPED: AURORA_TEST_WEAVIATE_URL is not set; no Weaviate server can be had from this machine's registries");
        return;
    };
    let env = TestEnv::new().await;
    let collection = format!("AuroraTest{}", Uuid::now_v7().simple());
    let api_key = std::env::var("AURORA_TEST_WEAVIATE_API_KEY").ok();
    contract(&WeaviateVectors::new(&url, api_key, &collection), &embedder(&env)).await;
}
