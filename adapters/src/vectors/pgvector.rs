//! Vectors in Postgres with pgvector: table `knowledge_vectors`, an HNSW index on cosine
//! distance. pgvector 0.6 (the stack's) filters the index's candidates after the scan, so when
//! other organisations' vectors crowd out one organisation's, the search measures that
//! organisation's vectors exactly instead: never fewer results than it has.

use async_trait::async_trait;
use sqlx::PgPool;
use uuid::Uuid;

use super::{Source, SourceKind, VectorError, VectorHit, VectorIndex, VectorRecord};

/// Candidates the HNSW search keeps per query (`hnsw.ef_search`).
const EF_SEARCH: usize = 100;

pub struct PgVectors {
    pool: PgPool,
}

impl PgVectors {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// pgvector's text form of a vector: `[0.1,0.2,…]`.
pub fn literal(vector: &[f32]) -> String {
    let mut text = String::with_capacity(vector.len() * 10 + 2);
    text.push('[');
    for (index, value) in vector.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&value.to_string());
    }
    text.push(']');
    text
}

#[async_trait]
impl VectorIndex for PgVectors {
    fn name(&self) -> &'static str {
        "pgvector"
    }

    async fn upsert(&self, records: &[VectorRecord]) -> Result<(), VectorError> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = records.iter().map(|record| record.id).collect();
        let orgs: Vec<Uuid> = records.iter().map(|record| record.org_id).collect();
        let kinds: Vec<&str> = records.iter().map(|record| record.source.kind.as_str()).collect();
        let sources: Vec<Uuid> = records.iter().map(|record| record.source.id).collect();
        let versions: Vec<i32> = records.iter().map(|record| record.source.version as i32).collect();
        let indexes: Vec<i32> = records.iter().map(|record| record.chunk_index as i32).collect();
        let vectors: Vec<String> = records.iter().map(|record| literal(&record.embedding)).collect();
        sqlx::query(
            "INSERT INTO knowledge_vectors (id, org_id, source_kind, source_id, source_version, chunk_index, embedding) \
             SELECT id, org_id, kind, source, version, chunk, vector::vector \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::int[], $6::int[], $7::text[]) \
                 AS input(id, org_id, kind, source, version, chunk, vector) \
             ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding",
        )
        .bind(&ids)
        .bind(&orgs)
        .bind(&kinds)
        .bind(&sources)
        .bind(&versions)
        .bind(&indexes)
        .bind(&vectors)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn search(&self, org_id: Uuid, vector: &[f32], kinds: &[SourceKind], limit: usize) -> Result<Vec<VectorHit>, VectorError> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let query = literal(vector);
        let mut transaction = self.pool.begin().await?;
        sqlx::query(&format!("SET LOCAL hnsw.ef_search = {}", EF_SEARCH.max(limit).min(1000))).execute(&mut *transaction).await?;
        let mut rows = nearest(&mut transaction, "embedding <=> $2::vector", org_id, &query, &kinds, limit).await?;
        if rows.len() < limit {
            // The index's candidates were mostly other organisations' (or other kinds): measure
            // every vector of this organisation instead. `+ 0` keeps the planner off the index.
            rows = nearest(&mut transaction, "(embedding <=> $2::vector) + 0", org_id, &query, &kinds, limit).await?;
        }
        transaction.commit().await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind, source_id, version, chunk_index, distance)| {
                Some(VectorHit {
                    id,
                    source: Source { kind: SourceKind::parse(&kind)?, id: source_id, version: version as u32 },
                    chunk_index: chunk_index as u32,
                    similarity: (1.0 - distance) as f32,
                })
            })
            .collect())
    }

    async fn delete_source(&self, org_id: Uuid, kind: SourceKind, id: Uuid, keep: Option<u32>) -> Result<u64, VectorError> {
        let deleted = sqlx::query(
            "DELETE FROM knowledge_vectors WHERE org_id = $1 AND source_kind = $2 AND source_id = $3 \
             AND ($4::int IS NULL OR source_version <> $4)",
        )
        .bind(org_id)
        .bind(kind.as_str())
        .bind(id)
        .bind(keep.map(|version| version as i32))
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }

    async fn count(&self, org_id: Uuid, kind: SourceKind, id: Uuid) -> Result<u64, VectorError> {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM knowledge_vectors WHERE org_id = $1 AND source_kind = $2 AND source_id = $3")
                .bind(org_id)
                .bind(kind.as_str())
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(count as u64)
    }
}

type Row = (Uuid, String, Uuid, i32, i32, f64);

/// The `limit` rows nearest by `order` (an expression of the distance to `$2`).
async fn nearest(
    transaction: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    order: &str,
    org_id: Uuid,
    query: &str,
    kinds: &[&str],
    limit: usize,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT id, source_kind, source_id, source_version, chunk_index, embedding <=> $2::vector AS distance \
         FROM knowledge_vectors WHERE org_id = $1 AND source_kind = ANY($3) ORDER BY {order} LIMIT $4"
    ))
    .bind(org_id)
    .bind(query)
    .bind(kinds)
    .bind(limit as i64)
    .fetch_all(&mut **transaction)
    .await
}
