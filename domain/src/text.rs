//! Free text from people: every field has a length limit, and characters that make no sense in
//! it (NUL, which Postgres cannot store in text, and the other control characters) are refused
//! when the command is decided, not when a database or a terminal chokes on them later.

use crate::DomainError;

/// Whether a field may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// A name or a title: no control character at all.
    One,
    /// A message or a reason: line breaks and tabs allowed, other control characters not.
    Many,
}

/// `text` trimmed; refused when longer than `max` characters or holding a control character
/// the field does not allow. May be empty: the caller decides whether that is allowed.
pub fn bounded(field: &'static str, text: &str, max: usize, lines: Lines) -> Result<String, DomainError> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(DomainError::InvalidInput { field, reason: format!("must be at most {max} characters") });
    }
    let allowed = |character: char| lines == Lines::Many && matches!(character, '\n' | '\r' | '\t');
    if text.chars().any(|character| character.is_control() && !allowed(character)) {
        return Err(DomainError::InvalidInput { field, reason: "must not contain control characters".into() });
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused_where_they_make_no_sense() {
        assert_eq!(bounded("title", "  Payments  ", 20, Lines::One), Ok("Payments".to_owned()));
        assert!(bounded("title", "a\u{0}b", 20, Lines::Many).is_err());
        assert!(bounded("title", "a\u{1b}[31mb", 20, Lines::Many).is_err());
        assert!(bounded("title", "a\nb", 20, Lines::One).is_err());
        assert_eq!(bounded("text", "a\nb\tc", 20, Lines::Many), Ok("a\nb\tc".to_owned()));
        assert!(bounded("text", "é".repeat(21).as_str(), 20, Lines::Many).is_err());
        assert_eq!(bounded("text", "é".repeat(20).as_str(), 20, Lines::Many).map(|text| text.chars().count()), Ok(20));
    }
}
