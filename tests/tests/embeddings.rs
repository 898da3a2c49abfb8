//! The embedding model, in process: all-MiniLM-L6-v2 from its safetensors and tokenizer.json.
//! Similar texts are near and unrelated ones far; the tokenizer is the model's own; a text longer
//! than the model reads at once is read whole (the mean of windows), so a fact at its end counts.

use aurora_adapters::config::EmbeddingConfig;
use aurora_adapters::embeddings::{similarity, Embedder, EmbeddingError, DIMENSIONS, MAX_WORD_PIECES};
use aurora_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_embeds_meaning_and_reads_long_texts_whole() {
    let env = TestEnv::new().await;
    let embedder = Embedder::shared(&env.config.embedding);
    let texts = ["How do I restart the payments service?", "Steps to reboot the payment gateway", "The cafeteria serves pasta on Fridays."];
    let vectors = embedder.embed(&texts.map(str::to_owned)).await.unwrap();
    assert!(vectors.iter().all(|vector| vector.len() == DIMENSIONS));
    let norm: f32 = vectors[0].iter().map(|value| value * value).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    let (near, far) = (similarity(&vectors[0], &vectors[1]), similarity(&vectors[0], &vectors[2]));
    assert!(near > 0.5 && far < 0.2 && near > far + 0.3, "near {near}, far {far}");
    // The same text embeds the same, alone or in a batch.
    let alone = embedder.embed(&[texts[1].to_owned()]).await.unwrap().remove(0);
    assert!(similarity(&alone, &vectors[1]) > 0.9999);

    // The model's own word pieces: lowercased, split into known pieces.
    let tokens = embedder.tokenize("Kubernetes CrashLoopBackOff").unwrap();
    assert!(tokens.len() > 3, "{tokens:?}");
    assert_eq!(tokens.offsets.first().map(|offset| offset.0), Some(0));

    // A long text with a fact at its end: embedded whole, the fact counts; cut at what the model
    // reads at once (as a plain truncation would), it is lost.
    let filler = "The weekly report lists the open tickets, the closed tickets and the tickets waiting for review. ".repeat(20);
    let fact = "The vault unseal keys are held by Priya Raman in the Frankfurt office safe.";
    let long = format!("{filler}{fact}");
    let pieces = embedder.tokenize(&long).unwrap();
    assert!(pieces.len() > MAX_WORD_PIECES + 100, "{}", pieces.len());
    let truncated = &long[..pieces.offsets[MAX_WORD_PIECES - 3].1];
    assert!(!truncated.contains("Priya"));
    let question = "who holds the vault unseal keys?".to_owned();
    let embedded = embedder.embed(&[long.clone(), truncated.to_owned(), question]).await.unwrap();
    let (whole, cut) = (similarity(&embedded[0], &embedded[2]), similarity(&embedded[1], &embedded[2]));
    assert!(whole > cut + 0.05, "whole {whole}, truncated {cut}");
}

#[tokio::test]
async fn a_missing_model_is_a_clear_error() {
    let config = EmbeddingConfig { model_dir: std::env::temp_dir().join("no-model-here"), threads: 1 };
    let embedder = Embedder::shared(&config);
    let error = embedder.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(matches!(&error, EmbeddingError::NotInstalled(_)), "{error}");
    assert!(error.to_string().contains("scripts/stack.sh up"), "{error}");
}
