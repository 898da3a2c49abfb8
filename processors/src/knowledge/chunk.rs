//! Chunks of a document: at most `size` word pieces each (counted by the embedding model's own
//! tokenizer), neighbours sharing about `overlap` of them, cut where a sentence, line or paragraph
//! ends when one is near, and never across a heading or a page, so each chunk keeps its heading
//! path and page.

use aurora_adapters::embeddings::{EmbeddingError, Tokens};
use aurora_adapters::vectors::search::Chunk;

use super::extract::Section;

/// Cuts `sections` into chunks; `tokenize` is the model's tokenizer.
pub fn chunks(
    sections: &[Section],
    size: usize,
    overlap: usize,
    tokenize: impl Fn(&str) -> Result<Tokens, EmbeddingError>,
) -> Result<Vec<Chunk>, EmbeddingError> {
    let mut chunks = Vec::new();
    for section in sections {
        let tokens = tokenize(&section.text)?;
        for (start, end) in spans(&section.text, &tokens, size, overlap) {
            let content = section.text[tokens.offsets[start].0..tokens.offsets[end - 1].1].trim().to_owned();
            if content.is_empty() {
                continue;
            }
            chunks.push(Chunk {
                index: chunks.len() as u32,
                content,
                heading_path: section.heading_path.clone(),
                page: section.page,
                tokens: (end - start) as u32,
            });
        }
    }
    Ok(chunks)
}

/// Whether a cut before the word piece starting at `offset` falls on a boundary: after a
/// sentence's end, at a line break.
fn boundary_before(text: &str, offset: usize) -> bool {
    let before = text[..offset].trim_end_matches([' ', '\t']);
    before.ends_with('\n') || before.ends_with(['.', '!', '?', ':', ';'])
}

/// Token ranges `[start, end)` of the chunks of one section.
fn spans(text: &str, tokens: &Tokens, size: usize, overlap: usize) -> Vec<(usize, usize)> {
    let count = tokens.len();
    if count == 0 {
        return Vec::new();
    }
    let boundaries: Vec<bool> = (0..count).map(|index| index == 0 || boundary_before(text, tokens.offsets[index].0)).collect();
    let mut spans = Vec::new();
    let mut start = 0;
    loop {
        if count - start <= size {
            spans.push((start, count));
            return spans;
        }
        let limit = start + size;
        // The last boundary in the second half of the window, else a hard cut at the limit.
        let end = (start + size / 2 + 1..=limit).rev().find(|index| boundaries[*index]).unwrap_or(limit);
        spans.push((start, end));
        // The next chunk starts about `overlap` pieces back, on a boundary when one is close.
        let back = end.saturating_sub(overlap).max(start + 1);
        let next = (back..end).find(|index| boundaries[*index]).filter(|index| end - index <= overlap).unwrap_or(back);
        start = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One "word piece" per whitespace-separated word.
    fn words(text: &str) -> Result<Tokens, EmbeddingError> {
        let mut tokens = Tokens::default();
        let mut position = 0;
        for word in text.split_whitespace() {
            let start = position + text[position..].find(word).unwrap();
            tokens.ids.push(0);
            tokens.offsets.push((start, start + word.len()));
            position = start + word.len();
        }
        Ok(tokens)
    }

    #[test]
    fn chunks_respect_the_size_overlap_and_prefer_sentence_ends() {
        let sentence = |index: usize| format!("Sentence {index} has exactly seven words here.");
        let text: String = (0..40).map(sentence).collect::<Vec<_>>().join(" ");
        let section = Section { text: text.clone(), heading_path: vec!["Runbook".into()], page: Some(3) };
        let chunks = chunks(&[section], 50, 10, words).unwrap();
        assert!(chunks.len() > 5, "{}", chunks.len());
        for chunk in &chunks {
            assert!(chunk.tokens <= 50, "{chunk:?}");
            assert_eq!((chunk.heading_path.as_slice(), chunk.page), (&["Runbook".to_owned()][..], Some(3)));
        }
        // Every chunk but the last ends a sentence, and the next starts a sentence inside it.
        for pair in chunks.windows(2) {
            assert!(pair[0].content.ends_with('.'), "{:?}", pair[0].content);
            assert!(pair[1].content.starts_with("Sentence"), "{:?}", pair[1].content);
            let first_words: Vec<&str> = pair[1].content.split_whitespace().take(3).collect();
            assert!(pair[0].content.contains(&first_words.join(" ")), "neighbours must overlap: {pair:?}");
        }
        // Nothing is lost: every sentence is in some chunk.
        for index in 0..40 {
            assert!(chunks.iter().any(|chunk| chunk.content.contains(&sentence(index))), "sentence {index}");
        }
    }

    #[test]
    fn a_sentence_longer_than_a_chunk_is_cut_hard_and_still_overlaps() {
        let text: String = (0..120).map(|index| format!("w{index}")).collect::<Vec<_>>().join(" ");
        let spans = spans(&text, &words(&text).unwrap(), 50, 10);
        assert_eq!(spans, vec![(0, 50), (40, 90), (80, 120)]);
    }
}
