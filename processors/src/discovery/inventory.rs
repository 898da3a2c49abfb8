//! What every provider's scan shares: the resources and dependencies one connection's listing
//! gathers, and the one inference that needs the whole listing first — configuration (a
//! function's environment, an app's settings, an instance's metadata) that names another
//! resource's endpoint, id or address is a `uses` dependency, with the setting's name as
//! evidence and never its value, which may be a secret. Values live only as long as the scan.

use std::collections::BTreeMap;

use aurora_events::discovery::{Dependency, DependencyKind, Resource, ResourceKind};
use serde_json::Value;

use super::Found;

/// A JSON string that is not empty, or a number, as text.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The texts of a JSON array.
pub fn texts(value: &Value) -> impl Iterator<Item = String> + '_ {
    value.as_array().into_iter().flatten().filter_map(text)
}

/// A JSON object of labels or tags as a map (values that are not strings count as empty).
pub fn tags(value: &Value) -> BTreeMap<String, String> {
    value.as_object().into_iter().flatten().map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned())).collect()
}

pub fn edge(from: &str, to: &str, kind: DependencyKind, evidence: String, confidence: f64) -> Dependency {
    Dependency { from: from.to_owned(), to: to.to_owned(), kind, evidence, confidence }
}

/// How much a dependency says: a rule or a registration is sure, a configuration that names
/// something nearly so, sharing a network little (flagged as weak).
pub const SURE: f64 = 1.0;
pub const NAMED: f64 = 0.9;
pub const RULE: f64 = 0.8;
pub const WEAK: f64 = 0.3;

/// One resource's configuration, held for the scan's inference only.
struct Configuration {
    resource_id: String,
    /// What the entries are and whose: "environment variable", "function checkout-worker".
    setting: &'static str,
    owner: String,
    entries: Vec<(String, String)>,
}

/// One connection's listing as it is gathered.
pub struct Inventory {
    provider: &'static str,
    pub found: Found,
    /// Text that names a resource (an endpoint, id, URL or address), the resource, and how to
    /// say what the text is.
    names: Vec<(String, String, String)>,
    configurations: Vec<Configuration>,
}

/// A resource of the listing, before it is added.
pub struct Listed {
    pub kind: ResourceKind,
    pub provider_type: &'static str,
    pub resource_id: String,
    pub name: String,
    pub region: Option<String>,
    pub account: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub endpoint: Option<String>,
}

impl Inventory {
    pub fn new(provider: &'static str) -> Self {
        Self { provider, found: Found::default(), names: Vec::new(), configurations: Vec::new() }
    }

    pub fn add(&mut self, listed: Listed) {
        self.found.resources.push(Resource {
            resource_id: listed.resource_id,
            provider: self.provider.into(),
            kind: listed.kind,
            provider_type: listed.provider_type.into(),
            name: listed.name,
            region: listed.region,
            account: listed.account,
            tags: listed.tags,
            endpoint: listed.endpoint,
        });
    }

    pub fn link(&mut self, from: &str, to: &str, kind: DependencyKind, evidence: String, confidence: f64) {
        self.found.dependencies.push(edge(from, to, kind, evidence, confidence));
    }

    /// `text`, when some configuration holds it, names `resource_id` (described as `what`).
    /// Text shorter than four characters names nothing for sure.
    pub fn nameable(&mut self, text: Option<String>, resource_id: &str, what: String) {
        if let Some(text) = text.filter(|text| text.len() >= 4) {
            self.names.push((text, resource_id.to_owned(), what));
        }
    }

    /// The configuration `entries` of `resource_id` (its `setting`s, of `owner`), for
    /// [`Inventory::finish`] to search for what they name.
    pub fn configured(&mut self, resource_id: &str, setting: &'static str, owner: String, entries: Vec<(String, String)>) {
        if !entries.is_empty() {
            self.configurations.push(Configuration { resource_id: resource_id.to_owned(), setting, owner, entries });
        }
    }

    /// The listing with what the configurations name, each dependency once.
    pub fn finish(mut self) -> Found {
        for configuration in &self.configurations {
            for (key, value) in &configuration.entries {
                for (needle, resource_id, what) in &self.names {
                    if *resource_id != configuration.resource_id && mentions(value, needle) {
                        let evidence = format!("{} {key} of {} names {what}", configuration.setting, configuration.owner);
                        self.found.dependencies.push(edge(&configuration.resource_id, resource_id, DependencyKind::Uses, evidence, NAMED));
                    }
                }
            }
        }
        let dependencies = &mut self.found.dependencies;
        dependencies.sort_by(|a, b| (&a.from, &a.to, a.kind).cmp(&(&b.from, &b.to, b.kind)));
        dependencies.dedup_by(|a, b| (&a.from, &a.to, a.kind) == (&b.from, &b.to, b.kind));
        self.found
    }
}

/// Whether `haystack` holds `needle` as a whole word: not inside a longer name or address.
fn mentions(haystack: &str, needle: &str) -> bool {
    let part = |character: char| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.');
    haystack.match_indices(needle).any(|(start, _)| {
        let before = haystack[..start].chars().next_back();
        let after = haystack[start + needle.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(|character| part(character) && !needle.ends_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_name_is_found_whole_or_not_at_all() {
        assert!(mentions("postgres://app:pw@orders.abc.us-east-1.rds.amazonaws.com:5432/db", "orders.abc.us-east-1.rds.amazonaws.com"));
        assert!(mentions("10.0.0.1", "10.0.0.1"));
        assert!(!mentions("10.0.0.10", "10.0.0.1"), "another address");
        assert!(!mentions("x-orders.example.com", "orders.example.com"), "another host");
        assert!(mentions("https://my-bucket.s3.amazonaws.com/key", "my-bucket.s3."));
        assert!(mentions("arn:aws:sqs:us-east-1:1:jobs", "arn:aws:sqs:us-east-1:1:jobs"));
        assert!(!mentions("arn:aws:sqs:us-east-1:1:jobs-dlq", "arn:aws:sqs:us-east-1:1:jobs"));
        assert!(mentions("Server=tcp:orders-sql.database.windows.net,1433;Database=orders", "orders-sql.database.windows.net"));
    }
}
