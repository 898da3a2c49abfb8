//! Vectors in Weaviate, over its REST and GraphQL API: one collection (class `AuroraKnowledge`,
//! no vectorizer, cosine distance) whose objects hold the vector, the content, heading path and
//! page, the source and the organisation; every query filters on the organisation.
//!
//! Written on the workspace's own HTTP client rather than the `weaviate-community` crate, which
//! brings a second, older HTTP and TLS stack into every build; the API is the same.

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{Source, SourceKind, VectorError, VectorHit, VectorIndex, VectorRecord};

pub const COLLECTION: &str = "AuroraKnowledge";

pub struct WeaviateVectors {
    url: String,
    api_key: Option<String>,
    collection: String,
    http: reqwest::Client,
    ready: OnceCell<()>,
}

impl WeaviateVectors {
    /// A client of the Weaviate at `url` (e.g. `http://127.0.0.1:8080`) using `collection`.
    pub fn new(url: &str, api_key: Option<String>, collection: &str) -> Self {
        crate::llm::install_tls_provider();
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("an HTTP client builds");
        Self { url: url.trim_end_matches('/').to_owned(), api_key, collection: collection.to_owned(), http, ready: OnceCell::new() }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, VectorError> {
        let request = match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request.send().await.map_err(|error| VectorError::Unavailable(format!("weaviate: {error}")))?;
        let status = response.status();
        let body = response.text().await.map_err(|error| VectorError::Unavailable(format!("weaviate: {error}")))?;
        if status.is_server_error() {
            return Err(VectorError::Unavailable(format!("weaviate answered {status}: {}", crate::clouds::cut(&body, 300))));
        }
        if !status.is_success() {
            return Err(VectorError::Refused(format!("weaviate answered {status}: {}", crate::clouds::cut(&body, 300))));
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&body).map_err(|error| VectorError::Unavailable(format!("weaviate sent something that is not JSON: {error}")))
    }

    /// Creates the collection when it does not exist.
    async fn ensure_collection(&self) -> Result<(), VectorError> {
        self.ready
            .get_or_try_init(|| async {
                let existing = self.http.get(format!("{}/v1/schema/{}", self.url, self.collection));
                match self.send(existing).await {
                    Ok(_) => return Ok(()),
                    Err(VectorError::Refused(_)) => {}
                    Err(error) => return Err(error),
                }
                let property = |name: &str, data_type: &str| json!({ "name": name, "dataType": [data_type] });
                let class = json!({
                    "class": self.collection,
                    "vectorizer": "none",
                    "vectorIndexConfig": { "distance": "cosine" },
                    "properties": [
                        property("org_id", "text"), property("source_kind", "text"), property("source_id", "text"),
                        property("source_version", "int"), property("chunk_index", "int"), property("content", "text"),
                        property("heading_path", "text[]"), property("page", "int"),
                    ],
                });
                match self.send(self.http.post(format!("{}/v1/schema", self.url)).json(&class)).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile by another process.
                    Err(VectorError::Refused(reason)) if reason.contains("already exists") => Ok(()),
                    Err(error) => Err(error),
                }
            })
            .await
            .map(|_| ())
    }

    fn filter(org_id: Uuid, kinds: &[SourceKind]) -> Value {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        json!({ "operator": "And", "operands": [
            { "path": ["org_id"], "operator": "Equal", "valueText": org_id.to_string() },
            { "path": ["source_kind"], "operator": "ContainsAny", "valueText": kinds },
        ]})
    }

    fn source_filter(org_id: Uuid, kind: SourceKind, id: Uuid, keep: Option<u32>) -> Value {
        let mut operands = vec![
            json!({ "path": ["org_id"], "operator": "Equal", "valueText": org_id.to_string() }),
            json!({ "path": ["source_kind"], "operator": "Equal", "valueText": kind.as_str() }),
            json!({ "path": ["source_id"], "operator": "Equal", "valueText": id.to_string() }),
        ];
        if let Some(version) = keep {
            operands.push(json!({ "path": ["source_version"], "operator": "NotEqual", "valueInt": version }));
        }
        json!({ "operator": "And", "operands": operands })
    }
}

/// GraphQL's `where` argument is not JSON: keys are bare, enum values unquoted.
fn graphql_where(filter: &Value) -> String {
    match filter {
        Value::Object(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|(key, value)| match (key.as_str(), value) {
                    ("operator", Value::String(operator)) => format!("operator: {operator}"),
                    (key, value) => format!("{key}: {}", graphql_where(value)),
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(graphql_where).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

#[async_trait]
impl VectorIndex for WeaviateVectors {
    fn name(&self) -> &'static str {
        "weaviate"
    }

    async fn upsert(&self, records: &[VectorRecord]) -> Result<(), VectorError> {
        if records.is_empty() {
            return Ok(());
        }
        self.ensure_collection().await?;
        let objects: Vec<Value> = records
            .iter()
            .map(|record| {
                json!({
                    "class": self.collection,
                    "id": record.id,
                    "vector": record.embedding,
                    "properties": {
                        "org_id": record.org_id.to_string(),
                        "source_kind": record.source.kind.as_str(),
                        "source_id": record.source.id.to_string(),
                        "source_version": record.source.version,
                        "chunk_index": record.chunk_index,
                        "content": record.content,
                        "heading_path": record.heading_path,
                        "page": record.page,
                    },
                })
            })
            .collect();
        let answer = self.send(self.http.post(format!("{}/v1/batch/objects", self.url)).json(&json!({ "objects": objects }))).await?;
        let failed: Vec<String> = answer
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|object| object.pointer("/result/errors/error/0/message").and_then(Value::as_str).map(str::to_owned))
            .collect();
        match failed.first() {
            Some(first) => Err(VectorError::Refused(format!("{} objects were refused, the first: {first}", failed.len()))),
            None => Ok(()),
        }
    }

    async fn search(&self, org_id: Uuid, vector: &[f32], kinds: &[SourceKind], limit: usize) -> Result<Vec<VectorHit>, VectorError> {
        self.ensure_collection().await?;
        let query = format!(
            "{{ Get {{ {class}(nearVector: {{vector: {vector}}}, where: {filter}, limit: {limit}) \
             {{ source_kind source_id source_version chunk_index _additional {{ id distance }} }} }} }}",
            class = self.collection,
            vector = serde_json::to_string(vector).unwrap_or_default(),
            filter = graphql_where(&Self::filter(org_id, kinds)),
        );
        let answer = self.send(self.http.post(format!("{}/v1/graphql", self.url)).json(&json!({ "query": query }))).await?;
        if let Some(error) = answer.pointer("/errors/0/message").and_then(Value::as_str) {
            return Err(VectorError::Refused(format!("weaviate: {error}")));
        }
        let found = answer.pointer(&format!("/data/Get/{}", self.collection)).and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(found
            .iter()
            .filter_map(|object| {
                let kind = SourceKind::parse(object.get("source_kind")?.as_str()?)?;
                let id = object.get("source_id")?.as_str()?.parse().ok()?;
                Some(VectorHit {
                    id: object.pointer("/_additional/id")?.as_str()?.parse().ok()?,
                    source: Source { kind, id, version: object.get("source_version")?.as_u64()? as u32 },
                    chunk_index: object.get("chunk_index")?.as_u64()? as u32,
                    similarity: 1.0 - object.pointer("/_additional/distance")?.as_f64()? as f32,
                })
            })
            .collect())
    }

    async fn delete_source(&self, org_id: Uuid, kind: SourceKind, id: Uuid, keep: Option<u32>) -> Result<u64, VectorError> {
        self.ensure_collection().await?;
        let body =
            json!({ "match": { "class": self.collection, "where": Self::source_filter(org_id, kind, id, keep) }, "output": "minimal" });
        let answer = self.send(self.http.delete(format!("{}/v1/batch/objects", self.url)).json(&body)).await?;
        Ok(answer.pointer("/results/successful").and_then(Value::as_u64).unwrap_or(0))
    }

    async fn count(&self, org_id: Uuid, kind: SourceKind, id: Uuid) -> Result<u64, VectorError> {
        self.ensure_collection().await?;
        let query = format!(
            "{{ Aggregate {{ {class}(where: {filter}) {{ meta {{ count }} }} }} }}",
            class = self.collection,
            filter = graphql_where(&Self::source_filter(org_id, kind, id, None)),
        );
        let answer = self.send(self.http.post(format!("{}/v1/graphql", self.url)).json(&json!({ "query": query }))).await?;
        if let Some(error) = answer.pointer("/errors/0/message").and_then(Value::as_str) {
            return Err(VectorError::Refused(format!("weaviate: {error}")));
        }
        Ok(answer.pointer(&format!("/data/Aggregate/{}/0/meta/count", self.collection)).and_then(Value::as_u64).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_written_as_graphql_not_json() {
        let org = Uuid::nil();
        let written = graphql_where(&WeaviateVectors::filter(org, &[SourceKind::Document]));
        for expected in ["operator: And", "operator: Equal", "operator: ContainsAny", "path: [\"org_id\"]", "valueText: [\"document\"]"] {
            assert!(written.contains(expected), "{expected} in {written}");
        }
        assert!(!written.contains("\"operator\"") && written.contains(&format!("valueText: \"{org}\"")), "{written}");
    }
}
