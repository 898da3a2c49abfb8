//! The pieces every listing route shares: a comma-separated filter of known values, and the
//! keyset cursor of a list ordered newest first by a time and an id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::problem::ApiError;

/// The comma-separated values of `field`, each one of `allowed`; none when absent or empty.
pub fn list_of(field: &'static str, text: &Option<String>, allowed: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(text) = text.as_deref().filter(|text| !text.is_empty()) else { return Ok(None) };
    let values: Vec<String> = text.split(',').map(|value| value.trim().to_owned()).collect();
    if let Some(wrong) = values.iter().find(|value| !allowed.contains(&value.as_str())) {
        let wrong: String = wrong.chars().take(40).collect();
        return Err(ApiError::BadRequest {
            detail: format!("{field} `{wrong}` is not one of {}", allowed.join(", ")),
            field: Some(field.into()),
        });
    }
    Ok(Some(values))
}

/// The position a `cursor` this API gave names: the last row's time and id.
pub fn time_cursor(cursor: &Option<String>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let parsed = cursor
        .split_once('_')
        .and_then(|(at, id)| Some((DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc), Uuid::parse_str(id).ok()?)));
    parsed.map(Some).ok_or_else(|| ApiError::BadRequest { detail: "cursor is not one this API gave".into(), field: Some("cursor".into()) })
}

/// The cursor of the page after the row at `at` with `id`.
pub fn next_time_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}
