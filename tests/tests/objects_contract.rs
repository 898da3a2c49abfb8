//! The object-store port's contract, run against the local filesystem (the embedded default) and
//! against an S3 API server (moto, which serves S3 with multipart uploads) on 127.0.0.1.

use aurora_adapters::config::ObjectsConfig;
use aurora_adapters::objects::{ObjectError, ObjectKey, Objects};
use aurora_tests::servers::PrivateMoto;
use uuid::Uuid;

async fn contract(objects: &Objects) {
    let (org, other_org) = (Uuid::now_v7(), Uuid::now_v7());
    let document = Uuid::now_v7();

    // A streamed upload of several parts (5 MiB each) appears whole, and only once finished.
    let key = ObjectKey::document(org, document, Uuid::now_v7());
    let mut upload = objects.upload(&key).await.unwrap();
    let piece: Vec<u8> = (0..1024 * 1024).map(|index| (index % 251) as u8).collect();
    for _ in 0..12 {
        upload.write(&piece).await.unwrap();
    }
    assert_eq!(objects.size(&key).await.unwrap(), None, "an unfinished upload is not visible");
    assert_eq!(upload.finish().await.unwrap(), 12 * 1024 * 1024);
    let stored = objects.get(&key).await.unwrap();
    assert_eq!(stored.len(), 12 * 1024 * 1024);
    assert!(stored.chunks(piece.len()).all(|chunk| chunk == piece.as_slice()));
    assert_eq!(objects.size(&key).await.unwrap(), Some(12 * 1024 * 1024));

    // An aborted upload, and one dropped midway, leave nothing behind.
    let aborted = ObjectKey::document(org, document, Uuid::now_v7());
    let mut upload = objects.upload(&aborted).await.unwrap();
    upload.write(&piece).await.unwrap();
    upload.abort().await;
    let dropped = ObjectKey::document(org, document, Uuid::now_v7());
    let mut upload = objects.upload(&dropped).await.unwrap();
    upload.write(&piece).await.unwrap();
    drop(upload);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(objects.size(&aborted).await.unwrap(), None);
    assert_eq!(objects.size(&dropped).await.unwrap(), None);
    assert_eq!(objects.list(&ObjectKey::document_prefix(org, document)).await.unwrap(), vec![key.to_string()]);

    // Small objects, listing by prefix, and the organisations' folders kept apart.
    let small = ObjectKey::scoped(org, "iac", document, &["main.tf"]);
    objects.put(&small, bytes::Bytes::from_static(b"resource \"terraform_data\" \"x\" {}")).await.unwrap();
    assert_eq!(&objects.get(&small).await.unwrap()[..], b"resource \"terraform_data\" \"x\" {}");
    let elsewhere = ObjectKey::scoped(other_org, "iac", document, &["main.tf"]);
    assert!(matches!(objects.get(&elsewhere).await, Err(ObjectError::NotFound(_))));
    // A part cannot climb out of its folder.
    let climbing = ObjectKey::scoped(org, "iac", document, &["../../..", "x"]);
    assert!(climbing.as_str().starts_with(&format!("{org}/iac/{document}/")), "{climbing}");
    // A key recorded for one organisation is never read as another's.
    assert!(ObjectKey::from_recorded(org, key.as_str()).is_some());
    assert!(ObjectKey::from_recorded(other_org, key.as_str()).is_none());

    // Deleting a prefix deletes everything under it and nothing else.
    assert_eq!(objects.delete_prefix(&ObjectKey::document_prefix(org, document)).await.unwrap(), 1);
    assert_eq!(objects.size(&key).await.unwrap(), None);
    assert!(objects.size(&small).await.unwrap().is_some());
    assert!(matches!(objects.get(&key).await, Err(ObjectError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem_store_keeps_the_contract() {
    let folder = std::env::temp_dir().join(format!("aurora-objects-{}", Uuid::now_v7().simple()));
    let config = ObjectsConfig { url: format!("file://{}", folder.display()), ..ObjectsConfig::default() };
    contract(&Objects::from_config(&config).unwrap()).await;
    std::fs::remove_dir_all(folder).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_keeps_the_contract() {
    let moto = PrivateMoto::start(None);
    let bucket = "aurora-objects";
    aurora_adapters::llm::install_tls_provider();
    let created = reqwest::Client::new().put(format!("{}/{bucket}", moto.endpoint())).send().await.unwrap();
    assert!(created.status().is_success(), "creating the bucket: {}", created.status());
    let config = ObjectsConfig {
        url: format!("s3://{bucket}/installation-a"),
        s3_endpoint: Some(moto.endpoint()),
        s3_region: "us-east-1".into(),
        s3_access_key_id: Some("testing".into()),
        s3_secret_access_key: Some("testing".to_owned().into()),
    };
    contract(&Objects::from_config(&config).unwrap()).await;
    // A bucket that does not exist is an error, not an empty store.
    let missing = ObjectsConfig { url: "s3://no-such-bucket".into(), ..config };
    let objects = Objects::from_config(&missing).unwrap();
    assert!(objects.put(&ObjectKey::scoped(Uuid::now_v7(), "kb", Uuid::now_v7(), &["x"]), bytes::Bytes::from_static(b"x")).await.is_err());
}

#[test]
fn a_store_url_of_an_unknown_kind_is_refused() {
    let config = ObjectsConfig { url: "ftp://example".into(), ..ObjectsConfig::default() };
    assert!(matches!(Objects::from_config(&config), Err(ObjectError::Config(_))));
}
