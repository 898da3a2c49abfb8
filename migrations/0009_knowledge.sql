-- The knowledge base. `documents` and `knowledge_memory` are read models (projections of the
-- `knowledge` events); `knowledge_chunks` and `knowledge_vectors` are what the indexing
-- processor derives from the files, written idempotently under deterministic ids.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE documents (
    document_id    uuid        PRIMARY KEY,
    org_id         uuid        NOT NULL,
    name           text        NOT NULL,
    kind           text        NOT NULL,
    version        integer     NOT NULL,
    -- processing, ready, failed, deleted
    status         text        NOT NULL,
    bytes          bigint      NOT NULL,
    total_bytes    bigint      NOT NULL,
    sha256         text        NOT NULL,
    chunks         integer,
    pages          integer,
    characters     bigint,
    tokens         bigint,
    failure_code   text,
    failure_reason text,
    -- Every version: number, bytes, digest, who uploaded it and when.
    versions       jsonb       NOT NULL DEFAULT '[]',
    uploaded_by    text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    processing_started_at timestamptz,
    indexed_at     timestamptz,
    stream_version bigint      NOT NULL
);
CREATE INDEX documents_org ON documents (org_id, updated_at) WHERE status <> 'deleted';
SELECT aurora_expose_to_tenants('documents');

CREATE TABLE knowledge_memory (
    org_id     uuid        PRIMARY KEY,
    text       text        NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL
);
SELECT aurora_expose_to_tenants('knowledge_memory');

CREATE TABLE knowledge_chunks (
    id             uuid    PRIMARY KEY,
    org_id         uuid    NOT NULL,
    -- document, conversation, investigation
    source_kind    text    NOT NULL,
    source_id      uuid    NOT NULL,
    source_version integer NOT NULL,
    chunk_index    integer NOT NULL,
    title          text    NOT NULL,
    content        text    NOT NULL,
    heading_path   text[]  NOT NULL DEFAULT '{}',
    page           integer,
    tokens         integer NOT NULL,
    -- Heading path (weight A), title (B) and text (C), written with the row.
    search         tsvector NOT NULL
);
CREATE INDEX knowledge_chunks_source ON knowledge_chunks (org_id, source_kind, source_id, source_version);
CREATE INDEX knowledge_chunks_search ON knowledge_chunks USING gin (search);
SELECT aurora_expose_to_tenants('knowledge_chunks');

CREATE TABLE knowledge_vectors (
    id             uuid        PRIMARY KEY,
    org_id         uuid        NOT NULL,
    source_kind    text        NOT NULL,
    source_id      uuid        NOT NULL,
    source_version integer     NOT NULL,
    chunk_index    integer     NOT NULL,
    embedding      vector(384) NOT NULL
);
CREATE INDEX knowledge_vectors_source ON knowledge_vectors (org_id, source_kind, source_id, source_version);
CREATE INDEX knowledge_vectors_nearest ON knowledge_vectors USING hnsw (embedding vector_cosine_ops);
