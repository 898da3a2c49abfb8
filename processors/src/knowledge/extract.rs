//! Text out of a document: a PDF page by page (keeping page numbers), a DOCX's paragraphs,
//! headings and tables (refusing packages that unpack to far more than they weigh, and XML with
//! a DTD, so no external entity is ever read), Markdown with its heading path, plain text.
//! What cannot be read becomes a [`Failure`] a person can act on.

use std::io::Read;

use aurora_events::knowledge::{DocumentKind, FailureCode};

/// A run of text under one heading path, on one page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Section {
    pub text: String,
    pub heading_path: Vec<String>,
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub sections: Vec<Section>,
    pub pages: Option<u32>,
    pub characters: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: FailureCode,
    pub reason: String,
}

fn fail(code: FailureCode, reason: impl Into<String>) -> Failure {
    Failure { code, reason: reason.into() }
}

/// Limits of what one document may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_text_chars: usize,
    pub max_docx_uncompressed_bytes: u64,
    pub max_docx_ratio: u64,
}

/// Reads `bytes` as a `kind` document.
pub fn extract(kind: DocumentKind, bytes: &[u8], limits: Limits) -> Result<Extracted, Failure> {
    let (sections, pages) = match kind {
        DocumentKind::Pdf => pdf(bytes)?,
        DocumentKind::Docx => (docx(bytes, limits)?, None),
        DocumentKind::Markdown => (markdown(utf8(bytes)?), None),
        DocumentKind::Text => (vec![Section { text: utf8(bytes)?.to_owned(), ..Section::default() }], None),
    };
    let sections: Vec<Section> = sections
        .into_iter()
        .map(|section| Section { text: clean(&section.text), ..section })
        .filter(|section| !section.text.trim().is_empty())
        .collect();
    let characters: u64 = sections.iter().map(|section| section.text.chars().count() as u64).sum();
    if characters > limits.max_text_chars as u64 {
        return Err(fail(
            FailureCode::TooLarge,
            format!("the document holds {characters} characters of text; at most {} are indexed per document — split it", limits.max_text_chars),
        ));
    }
    if characters == 0 {
        return Err(match (kind, pages) {
            (DocumentKind::Pdf, Some(pages)) if pages > 0 => fail(
                FailureCode::NoTextLayer,
                format!("the PDF has {pages} page(s) but no text layer (scanned pages?); run it through OCR and upload the result"),
            ),
            _ => fail(FailureCode::Empty, "the document holds no text"),
        });
    }
    Ok(Extracted { sections, pages, characters })
}

fn utf8(bytes: &[u8]) -> Result<&str, Failure> {
    let text = std::str::from_utf8(bytes).map_err(|error| fail(FailureCode::Corrupt, format!("the file is not UTF-8 text: {error}")))?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// Control characters other than line breaks and tabs go; runs of blank lines shrink to one.
fn clean(text: &str) -> String {
    let mut cleaned = String::with_capacity(text.len());
    let mut blank_lines = 0;
    for line in text.lines() {
        let line: String = line.chars().filter(|character| !character.is_control() || *character == '\t').collect();
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank_lines += 1;
            if blank_lines > 1 || cleaned.is_empty() {
                continue;
            }
        } else {
            blank_lines = 0;
        }
        cleaned.push_str(line);
        cleaned.push('\n');
    }
    cleaned.trim_end().to_owned()
}

fn pdf(bytes: &[u8]) -> Result<(Vec<Section>, Option<u32>), Failure> {
    let mut document =
        pdf_extract::Document::load_mem(bytes).map_err(|error| fail(FailureCode::Corrupt, format!("the PDF could not be read: {error}")))?;
    if document.is_encrypted() && document.decrypt("").is_err() {
        return Err(fail(FailureCode::Encrypted, "the PDF is protected by a password; remove the protection and upload it again"));
    }
    let pages = document.get_pages().len() as u32;
    let mut sections = Vec::with_capacity(pages as usize);
    for page in 1..=pages {
        let mut text = String::new();
        let mut output = pdf_extract::PlainTextOutput::new(&mut text);
        pdf_extract::output_doc_page(&document, &mut output, page)
            .map_err(|error| fail(FailureCode::Corrupt, format!("page {page} of the PDF could not be read: {error}")))?;
        sections.push(Section { text: unwrap_lines(&text), heading_path: Vec::new(), page: Some(page) });
    }
    Ok((sections, Some(pages)))
}

/// A PDF's text comes a visual line at a time, blank lines between: lines join into their
/// sentence, and a line that ends a sentence ends its line.
fn unwrap_lines(text: &str) -> String {
    let mut joined = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        if !joined.is_empty() {
            let ends_sentence = joined.ends_with(['.', '!', '?', ':', ';']);
            joined.push(if ends_sentence { '\n' } else { ' ' });
        }
        joined.push_str(line);
    }
    joined
}

const WORD_NS: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";

fn docx(bytes: &[u8], limits: Limits) -> Result<Vec<Section>, Failure> {
    let not_docx = |detail: String| fail(FailureCode::Corrupt, format!("the file is not a Word document (DOCX): {detail}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|error| not_docx(error.to_string()))?;
    let mut declared: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(|error| not_docx(error.to_string()))?;
        declared = declared.saturating_add(entry.size());
        if entry.size() > 1024 * 1024 && entry.size() / entry.compressed_size().max(1) > limits.max_docx_ratio {
            return Err(fail(
                FailureCode::Unsafe,
                format!("`{}` in the package unpacks to {}× its size (a zip bomb?); it was not read", entry.name(), entry.size() / entry.compressed_size().max(1)),
            ));
        }
    }
    if declared > limits.max_docx_uncompressed_bytes {
        return Err(fail(
            FailureCode::Unsafe,
            format!("the package unpacks to {declared} bytes, more than the {} a document may", limits.max_docx_uncompressed_bytes),
        ));
    }
    if archive.by_name("[Content_Types].xml").is_err() {
        return Err(not_docx("the package has no [Content_Types].xml".into()));
    }
    let mut xml = String::new();
    let entry = archive.by_name("word/document.xml").map_err(|_| not_docx("the package has no word/document.xml".into()))?;
    // The sizes a package declares can lie: never read more than the limit, whatever it says.
    let read = entry.take(limits.max_docx_uncompressed_bytes + 1).read_to_string(&mut xml);
    read.map_err(|error| fail(FailureCode::Corrupt, format!("word/document.xml could not be unpacked: {error}")))?;
    if xml.len() as u64 > limits.max_docx_uncompressed_bytes {
        return Err(fail(FailureCode::Unsafe, "word/document.xml unpacks to more than a document may"));
    }
    // roxmltree refuses a DTD, so no entity (external or expanding) is ever resolved.
    let tree = roxmltree::Document::parse(&xml).map_err(|error| match error {
        roxmltree::Error::DtdDetected => fail(FailureCode::Unsafe, "word/document.xml declares a DTD (entities); Aurora does not read those"),
        other => fail(FailureCode::Corrupt, format!("word/document.xml is not well-formed XML: {other}")),
    })?;
    let body = tree
        .descendants()
        .find(|node| node.has_tag_name((WORD_NS, "body")))
        .ok_or_else(|| not_docx("word/document.xml has no body".into()))?;
    let mut sections = vec![Section::default()];
    let mut headings: Vec<(u32, String)> = Vec::new();
    for block in body.children().filter(roxmltree::Node::is_element) {
        let text = if block.has_tag_name((WORD_NS, "p")) {
            let text = paragraph_text(block);
            if let Some(level) = heading_level(block) {
                let title = text.trim().to_owned();
                if !title.is_empty() {
                    headings.retain(|(known, _)| *known < level);
                    headings.push((level, title));
                    sections.push(Section { heading_path: headings.iter().map(|(_, title)| title.clone()).collect(), ..Section::default() });
                }
                continue;
            }
            text
        } else if block.has_tag_name((WORD_NS, "tbl")) {
            table_text(block)
        } else {
            continue;
        };
        let section = sections.last_mut().expect("there is always a section");
        section.text.push_str(&text);
        section.text.push('\n');
    }
    Ok(sections)
}

/// The paragraph's heading level: a `Heading<n>`/`Title` style or an outline level.
fn heading_level(paragraph: roxmltree::Node) -> Option<u32> {
    let properties = paragraph.children().find(|node| node.has_tag_name((WORD_NS, "pPr")))?;
    let value = |name: &str| {
        properties.children().find(|node| node.has_tag_name((WORD_NS, name))).and_then(|node| node.attribute((WORD_NS, "val")))
    };
    if let Some(style) = value("pStyle") {
        let lower = style.to_ascii_lowercase();
        if lower == "title" {
            return Some(0);
        }
        if let Some(level) = lower.strip_prefix("heading").and_then(|rest| rest.trim().parse::<u32>().ok()) {
            return Some(level);
        }
    }
    value("outlineLvl").and_then(|level| level.parse::<u32>().ok()).filter(|level| *level < 9).map(|level| level + 1)
}

fn paragraph_text(paragraph: roxmltree::Node) -> String {
    let mut text = String::new();
    for node in paragraph.descendants() {
        if node.has_tag_name((WORD_NS, "t")) {
            text.push_str(node.text().unwrap_or_default());
        } else if node.has_tag_name((WORD_NS, "tab")) {
            text.push('\t');
        } else if node.has_tag_name((WORD_NS, "br")) || node.has_tag_name((WORD_NS, "cr")) {
            text.push('\n');
        }
    }
    text
}

/// A table, a row per line and its cells separated by ` | `.
fn table_text(table: roxmltree::Node) -> String {
    let mut text = String::new();
    for row in table.children().filter(|node| node.has_tag_name((WORD_NS, "tr"))) {
        let cells: Vec<String> = row
            .children()
            .filter(|node| node.has_tag_name((WORD_NS, "tc")))
            .map(|cell| {
                let paragraphs: Vec<String> = cell
                    .children()
                    .filter(|node| node.has_tag_name((WORD_NS, "p")))
                    .map(paragraph_text)
                    .map(|text| text.trim().to_owned())
                    .filter(|text| !text.is_empty())
                    .collect();
                paragraphs.join(" ")
            })
            .collect();
        text.push_str(&cells.join(" | "));
        text.push('\n');
    }
    text
}

/// Markdown cut at its headings (ATX `#` and setext underlines), outside fenced code.
fn markdown(text: &str) -> Vec<Section> {
    let mut sections = vec![Section::default()];
    let mut headings: Vec<(u32, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut start_section = |level: u32, title: String, sections: &mut Vec<Section>| {
        headings.retain(|(known, _)| *known < level);
        headings.push((level, title));
        sections.push(Section { heading_path: headings.iter().map(|(_, title)| title.clone()).collect(), ..Section::default() });
    };
    let mut index = 0;
    while index < lines.len() {
        let line = lines[index];
        let trimmed = line.trim_start();
        if let Some(open) = fence {
            if trimmed.starts_with(open) {
                fence = None;
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fence = Some(&trimmed[..3]);
        } else if let Some((level, title)) = atx_heading(trimmed) {
            start_section(level, title, &mut sections);
            index += 1;
            continue;
        } else if !trimmed.is_empty() && index + 1 < lines.len() {
            let underline = lines[index + 1].trim();
            let level = match underline.chars().next() {
                Some('=') if underline.chars().all(|character| character == '=') => Some(1),
                Some('-') if underline.len() >= 2 && underline.chars().all(|character| character == '-') => Some(2),
                _ => None,
            };
            let previous_blank = index == 0 || lines[index - 1].trim().is_empty();
            if let (Some(level), true) = (level, previous_blank) {
                start_section(level, trimmed.trim().to_owned(), &mut sections);
                index += 2;
                continue;
            }
        }
        let section = sections.last_mut().expect("there is always a section");
        section.text.push_str(line);
        section.text.push('\n');
        index += 1;
    }
    sections
}

fn atx_heading(line: &str) -> Option<(u32, String)> {
    let level = line.chars().take_while(|character| *character == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim().to_owned();
    (!title.is_empty()).then_some((level as u32, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_text_chars: 1_000_000, max_docx_uncompressed_bytes: 10 * 1024 * 1024, max_docx_ratio: 100 };

    #[test]
    fn markdown_sections_keep_their_heading_path_and_code_is_not_a_heading() {
        let text = "Intro line.\n\n# Payments\n\nAbout payments.\n\n## Restart\n\n```sh\n# not a heading\nsystemctl restart pay\n```\n\nDatabase\n--------\n\nCheck the pool.\n\n# Other\nDone.\n";
        let extracted = extract(DocumentKind::Markdown, text.as_bytes(), LIMITS).unwrap();
        let paths: Vec<(Vec<String>, &str)> =
            extracted.sections.iter().map(|section| (section.heading_path.clone(), section.text.lines().next().unwrap_or(""))).collect();
        assert_eq!(
            paths,
            vec![
                (vec![], "Intro line."),
                (vec!["Payments".to_owned()], "About payments."),
                (vec!["Payments".to_owned(), "Restart".to_owned()], "```sh"),
                (vec!["Payments".to_owned(), "Database".to_owned()], "Check the pool."),
                (vec!["Other".to_owned()], "Done."),
            ]
        );
        assert!(extracted.sections[2].text.contains("# not a heading"));
    }

    #[test]
    fn a_pdf_s_visual_lines_join_into_sentences() {
        assert_eq!(unwrap_lines("Run systemctl restart\n\npayments-gateway. Then\n  wait.\n\nDone"), "Run systemctl restart payments-gateway. Then wait.\nDone");
    }

    #[test]
    fn empty_and_non_utf8_text_are_refused_with_reasons() {
        assert_eq!(extract(DocumentKind::Text, b"  \n\n ", LIMITS).unwrap_err().code, FailureCode::Empty);
        assert_eq!(extract(DocumentKind::Text, b"\xff\xfe", LIMITS).unwrap_err().code, FailureCode::Corrupt);
        let limits = Limits { max_text_chars: 3, ..LIMITS };
        assert_eq!(extract(DocumentKind::Text, b"abcd", limits).unwrap_err().code, FailureCode::TooLarge);
    }
}
