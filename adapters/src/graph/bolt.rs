//! The graph in a Bolt 5 server (Memgraph, Neo4j, or the kglite-bolt-server the stack starts),
//! read with Cypher. The `graph_bolt` projection writes it:
//!
//! - `(:Service {node_id, org_id, ...})`, one per resource, merged on its node id, as it is now
//!   (`gone_at` once gone);
//! - `(:ServiceVersion {node_id, org_id, ..., valid_from, valid_to})`, one per version, for the past;
//! - `(:Service)-[:DEPENDS_ON {kind, org_id, evidence, confidence, gone_at}]->(:Service)`, merged
//!   on its ends and kind, as it is now, and `[:DEPENDED_ON {..., valid_from, valid_to}]`, one
//!   per version;
//! - `(:Estate {org_id, summary})`, the summary the latest completed scan left.
//!
//! Times are microseconds since the epoch, node ids their hyphenated text, tags their JSON text
//! (compact, keys in order, so that a tag is found as the text of its pair). Every statement names
//! the organisation.
//!
//! The client is `boltr`'s, over plain TCP: a session per connection, a few kept open, a broken
//! or timed-out one dropped, never reused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use boltr::BoltSession;
pub use boltr::BoltValue;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

use super::{Affected, AsOf, Direction, GraphError, GraphSummary, Neighbour, ServiceFilter, ServiceView};
use crate::config::BoltConfig;

/// How long one statement, or a connection's opening, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A statement's parameters.
pub type Params = HashMap<String, BoltValue>;

/// A value as a statement parameter.
pub trait ToBolt {
    fn to_bolt(&self) -> BoltValue;
}

impl ToBolt for str {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::String(self.to_owned())
    }
}
impl ToBolt for String {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::String(self.clone())
    }
}
impl ToBolt for i64 {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::Integer(*self)
    }
}
impl ToBolt for f64 {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::Float(*self)
    }
}
impl ToBolt for Uuid {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::String(self.to_string())
    }
}
/// A time as microseconds since the epoch.
impl ToBolt for DateTime<Utc> {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::Integer(self.timestamp_micros())
    }
}
impl<T: ToBolt + ?Sized> ToBolt for &T {
    fn to_bolt(&self) -> BoltValue {
        (**self).to_bolt()
    }
}
impl<T: ToBolt> ToBolt for Option<T> {
    fn to_bolt(&self) -> BoltValue {
        self.as_ref().map_or(BoltValue::Null, ToBolt::to_bolt)
    }
}
impl<T: ToBolt> ToBolt for [T] {
    fn to_bolt(&self) -> BoltValue {
        BoltValue::List(self.iter().map(ToBolt::to_bolt).collect())
    }
}

/// The parameters `pairs` name.
pub fn params<const N: usize>(pairs: [(&str, BoltValue); N]) -> Params {
    pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// One row of a result, its values in the order of the statement's `RETURN`.
#[derive(Debug)]
pub struct Row(Vec<BoltValue>);

impl Row {
    fn value(&self, index: usize) -> &BoltValue {
        self.0.get(index).unwrap_or(&BoltValue::Null)
    }

    fn unexpected(&self, index: usize, wanted: &str) -> GraphError {
        GraphError::Unavailable(format!("the Bolt server answered {:?} where {wanted} belongs (column {index})", self.value(index)))
    }

    pub fn maybe_text(&self, index: usize) -> Result<Option<String>, GraphError> {
        match self.value(index) {
            BoltValue::Null => Ok(None),
            BoltValue::String(text) => Ok(Some(text.clone())),
            _ => Err(self.unexpected(index, "text")),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, GraphError> {
        self.maybe_text(index)?.ok_or_else(|| self.unexpected(index, "text"))
    }

    pub fn integer(&self, index: usize) -> Result<i64, GraphError> {
        match self.value(index) {
            BoltValue::Integer(number) => Ok(*number),
            _ => Err(self.unexpected(index, "an integer")),
        }
    }

    pub fn float(&self, index: usize) -> Result<f64, GraphError> {
        match self.value(index) {
            BoltValue::Float(number) => Ok(*number),
            BoltValue::Integer(number) => Ok(*number as f64),
            _ => Err(self.unexpected(index, "a number")),
        }
    }

    pub fn uuid(&self, index: usize) -> Result<Uuid, GraphError> {
        self.text(index)?.parse().map_err(|_| self.unexpected(index, "a node id"))
    }

    pub fn maybe_time(&self, index: usize) -> Result<Option<DateTime<Utc>>, GraphError> {
        match self.value(index) {
            BoltValue::Null => Ok(None),
            BoltValue::Integer(micros) => {
                DateTime::from_timestamp_micros(*micros).map(Some).ok_or_else(|| self.unexpected(index, "a time"))
            }
            _ => Err(self.unexpected(index, "a time")),
        }
    }

    pub fn time(&self, index: usize) -> Result<DateTime<Utc>, GraphError> {
        self.maybe_time(index)?.ok_or_else(|| self.unexpected(index, "a time"))
    }
}

fn failed(error: boltr::BoltError) -> GraphError {
    GraphError::Unavailable(error.to_string())
}

/// Where the server is, from `bolt://host[:port]`; the configuration is checked with it.
pub fn address(url: &str) -> Result<String, String> {
    let rest =
        url.strip_prefix("bolt://").ok_or_else(|| format!("`{url}` is not a bolt:// address (routing and TLS are not supported)"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('@') || host.contains('/') {
        return Err(format!("`{url}` is not bolt://host:port (credentials go in AURORA_DISCOVERY_BOLT_USER and _PASSWORD)"));
    }
    Ok(if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) { host.to_owned() } else { format!("{host}:7687") })
}

/// A Bolt server holding the graph, and the sessions open to it.
pub struct BoltGraph {
    address: String,
    user: Option<String>,
    password: Option<SecretString>,
    idle: Mutex<Vec<BoltSession>>,
    open: Semaphore,
}

/// A session taken from the pool; back into it when dropped, unless something failed on it.
struct Lease<'a> {
    graph: &'a BoltGraph,
    session: Option<BoltSession>,
    /// Taken from the pool, not opened for this use: it may have gone stale while it waited.
    reused: bool,
    /// The connection, not the statement, failed (I/O, the protocol, no answer in time).
    broken: bool,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    /// Runs `cypher`. The session is out of the lease while the statement runs and goes back only
    /// once it answered, so a caller that gives up (a dropped request) leaves no half-read answer
    /// in the pool; on any failure it is dropped (its state is unknown).
    async fn run(&mut self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        let mut session = self.session.take().ok_or_else(|| GraphError::Unavailable("the Bolt session broke earlier".into()))?;
        match tokio::time::timeout(TIMEOUT, session.run_with_params(cypher, params, HashMap::new())).await {
            Ok(Ok(result)) => {
                self.session = Some(session);
                Ok(result.records.into_iter().map(Row).collect())
            }
            Ok(Err(error)) => {
                self.broken = !matches!(error, boltr::BoltError::Query { .. });
                Err(failed(error))
            }
            Err(_) => {
                self.broken = true;
                Err(GraphError::Unavailable(format!("the Bolt server did not answer within {} s", TIMEOUT.as_secs())))
            }
        }
    }

    /// Whether a failure may be the pooled connection's staleness (the server restarted while it
    /// waited), worth one more try on a new connection.
    fn stale(&self) -> bool {
        self.reused && self.broken
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.graph.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(session);
        }
    }
}

/// An explicit transaction: its statements commit together, or none does (dropping it without
/// [`Transaction::commit`] drops its session, and the server rolls it back).
pub struct Transaction<'a> {
    lease: Lease<'a>,
    committed: bool,
}

impl Transaction<'_> {
    pub async fn run(&mut self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        self.lease.run(cypher, params).await
    }

    pub async fn commit(mut self) -> Result<(), GraphError> {
        let session = self.lease.session.as_mut().ok_or_else(|| GraphError::Unavailable("the Bolt session broke earlier".into()))?;
        match tokio::time::timeout(TIMEOUT, session.commit()).await {
            Ok(Ok(_)) => {
                self.committed = true;
                Ok(())
            }
            Ok(Err(error)) => Err(failed(error)),
            Err(_) => Err(GraphError::Unavailable("the Bolt server did not commit in time".into())),
        }
    }
}

impl Drop for Transaction<'_> {
    /// A session whose transaction was not committed is closed, not pooled: the server rolls
    /// the transaction back.
    fn drop(&mut self) {
        if !self.committed {
            self.lease.session = None;
        }
    }
}

impl BoltGraph {
    /// The server `config` names; no connection is made until the first statement. (The
    /// configuration checked the address: one that does not parse is tried as it is, and fails
    /// to resolve.)
    pub fn new(config: &BoltConfig) -> Self {
        Self {
            address: address(&config.url).unwrap_or_else(|_| config.url.clone()),
            user: config.user.clone(),
            password: config.password.clone(),
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(config.pool_size.max(1)),
        }
    }

    async fn connect(&self) -> Result<BoltSession, GraphError> {
        let unreachable = |reason: String| GraphError::Unavailable(format!("the Bolt server at {} {reason}", self.address));
        let connecting = async {
            let address: SocketAddr = tokio::net::lookup_host(&self.address)
                .await
                .map_err(|error| unreachable(format!("has no address: {error}")))?
                .next()
                .ok_or_else(|| unreachable("has no address".into()))?;
            match (&self.user, &self.password) {
                (Some(user), Some(password)) => BoltSession::connect_basic(address, user, password.expose_secret()).await,
                _ => BoltSession::connect(address).await,
            }
            .map_err(|error| unreachable(format!("refused the session: {error}")))
        };
        tokio::time::timeout(TIMEOUT, connecting).await.map_err(|_| unreachable("did not answer in time".into()))?
    }

    /// A session: a pooled one, or a new one when `fresh` or none waits.
    async fn lease(&self, fresh: bool) -> Result<Lease<'_>, GraphError> {
        let permit = self.open.acquire().await.map_err(|_| GraphError::Unavailable("the Bolt pool is closed".into()))?;
        let idle = if fresh { None } else { self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop() };
        let reused = idle.is_some();
        let session = match idle {
            Some(session) => session,
            None => self.connect().await?,
        };
        Ok(Lease { graph: self, session: Some(session), reused, broken: false, _permit: permit })
    }

    /// Runs one statement in its own transaction; again once on a new connection when a pooled
    /// one turns out broken.
    pub async fn query(&self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        let mut lease = self.lease(false).await?;
        match lease.run(cypher, params.clone()).await {
            Err(_) if lease.stale() => {
                drop(lease);
                self.lease(true).await?.run(cypher, params).await
            }
            answered => answered,
        }
    }

    /// Opens an explicit transaction (on a new connection when a pooled one turns out broken).
    pub async fn begin(&self) -> Result<Transaction<'_>, GraphError> {
        match self.begin_on(self.lease(false).await?).await {
            Err((lease, _)) if lease.stale() => {
                drop(lease);
                self.begin_on(self.lease(true).await?).await.map_err(|(_, error)| error)
            }
            begun => begun.map_err(|(_, error)| error),
        }
    }

    async fn begin_on<'a>(&'a self, mut lease: Lease<'a>) -> Result<Transaction<'a>, (Lease<'a>, GraphError)> {
        let Some(mut session) = lease.session.take() else {
            return Err((lease, GraphError::Unavailable("the Bolt session broke".into())));
        };
        let error = match tokio::time::timeout(TIMEOUT, session.begin()).await {
            Ok(Ok(())) => {
                lease.session = Some(session);
                return Ok(Transaction { lease, committed: false });
            }
            Ok(Err(error)) => {
                lease.broken = !matches!(error, boltr::BoltError::Query { .. });
                failed(error)
            }
            Err(_) => {
                lease.broken = true;
                GraphError::Unavailable("the Bolt server did not begin a transaction in time".into())
            }
        };
        Err((lease, error))
    }

    /// The organisation's services, as [`super::GraphReader::services`].
    pub(super) async fn services(&self, org_id: Uuid, filter: &ServiceFilter, as_of: AsOf) -> Result<Vec<ServiceView>, GraphError> {
        let view = View::of(as_of);
        let mut bound = view.params(org_id);
        let mut tagged = Vec::new();
        match &filter.tag {
            None => {}
            Some(serde_json::Value::Object(pairs)) => {
                for (index, (key, value)) in pairs.iter().enumerate() {
                    bound.insert(format!("tag{index}"), tag_text(key, value).to_bolt());
                    tagged.push(format!(" AND v.tags CONTAINS $tag{index}"));
                }
            }
            // Only an object of tags matches anything, as Postgres's `@>` on the tags object.
            Some(_) => tagged.push(" AND false".into()),
        }
        bound.extend(params([
            ("kind", filter.kind.to_bolt()),
            ("provider", filter.provider.to_bolt()),
            ("name", filter.name.to_bolt()),
            ("limit", filter.limit.to_bolt()),
        ]));
        let rows = self
            .query(
                &format!(
                    "MATCH (v:{label}) WHERE v.org_id = $org AND {valid} \
                     AND ($kind IS NULL OR v.kind = $kind) AND ($provider IS NULL OR v.provider = $provider){tags} \
                     AND ($name IS NULL OR toLower(v.name) CONTAINS toLower($name)) \
                     RETURN {SERVICE} ORDER BY ($name IS NOT NULL AND toLower(v.name) = toLower($name)) DESC, v.kind, v.name, v.node_id \
                     LIMIT $limit",
                    label = view.node,
                    valid = view.valid("v"),
                    tags = tagged.concat(),
                ),
                bound,
            )
            .await?;
        rows.iter().map(service_view).collect()
    }

    pub(super) async fn service(&self, org_id: Uuid, node_id: Uuid, as_of: AsOf) -> Result<Option<ServiceView>, GraphError> {
        let view = View::of(as_of);
        let mut bound = view.params(org_id);
        bound.insert("node".into(), node_id.to_bolt());
        let rows = self
            .query(
                &format!(
                    "MATCH (v:{label} {{node_id: $node}}) WHERE v.org_id = $org AND {valid} RETURN {SERVICE}",
                    label = view.node,
                    valid = view.valid("v")
                ),
                bound,
            )
            .await?;
        rows.first().map(service_view).transpose()
    }

    pub(super) async fn neighbours(
        &self,
        org_id: Uuid,
        node_id: Uuid,
        as_of: AsOf,
    ) -> Result<(Vec<Neighbour>, Vec<Neighbour>), GraphError> {
        let view = View::of(as_of);
        let query = |arrow: &str| {
            format!(
                "MATCH (s:Service {{node_id: $node}}){arrow}(n:Service) WHERE s.org_id = $org AND r.org_id = $org AND {edge_valid} \
                 MATCH (v:{label} {{node_id: n.node_id}}) WHERE v.org_id = $org AND {node_valid} \
                 RETURN v.node_id, v.name, v.kind, r.kind, r.evidence, r.confidence ORDER BY r.kind, v.name",
                label = view.node,
                edge_valid = view.valid("r"),
                node_valid = view.valid("v"),
            )
        };
        let mut bound = view.params(org_id);
        bound.insert("node".into(), node_id.to_bolt());
        let out = self.query(&query(&format!("-[r:{}]->", view.edge)), bound.clone()).await?;
        let inward = self.query(&query(&format!("<-[r:{}]-", view.edge)), bound).await?;
        let neighbour = |row: &Row| -> Result<Neighbour, GraphError> {
            Ok(Neighbour {
                node_id: row.uuid(0)?,
                name: row.text(1)?,
                kind: row.text(2)?,
                dependency: row.text(3)?,
                evidence: row.text(4)?,
                confidence: row.float(5)?,
            })
        };
        Ok((out.iter().map(neighbour).collect::<Result<_, _>>()?, inward.iter().map(neighbour).collect::<Result<_, _>>()?))
    }

    /// The services within `depth` of `node_id`: every chain of dependencies the server walks
    /// (each dependency once per chain), each service at its shortest distance.
    pub(super) async fn reach(
        &self,
        org_id: Uuid,
        node_id: Uuid,
        direction: Direction,
        depth: i32,
        as_of: AsOf,
    ) -> Result<Vec<Affected>, GraphError> {
        let view = View::of(as_of);
        let hops = format!("[rs:{}*1..{}]", view.edge, depth.max(1));
        let pattern = match direction {
            Direction::Upstream => format!("-{hops}->"),
            Direction::Downstream => format!("<-{hops}-"),
        };
        let mut bound = view.params(org_id);
        bound.insert("node".into(), node_id.to_bolt());
        let rows = self
            .query(
                &format!(
                    "MATCH (s:Service {{node_id: $node}}){pattern}(d:Service) \
                     WHERE s.org_id = $org AND d.node_id <> $node AND all(r IN rs WHERE r.org_id = $org AND {edge_valid}) \
                     WITH d.node_id AS reached, min(size(rs)) AS distance \
                     MATCH (v:{label} {{node_id: reached}}) WHERE v.org_id = $org AND {node_valid} \
                     RETURN v.node_id, v.name, v.kind, distance ORDER BY distance, v.name",
                    label = view.node,
                    edge_valid = view.valid("r"),
                    node_valid = view.valid("v"),
                ),
                bound,
            )
            .await?;
        rows.iter()
            .map(|row| Ok(Affected { node_id: row.uuid(0)?, name: row.text(1)?, kind: row.text(2)?, distance: row.integer(3)? as i32 }))
            .collect()
    }

    pub(super) async fn step_back(
        &self,
        org_id: Uuid,
        to: Uuid,
        nearer: &[Uuid],
        as_of: AsOf,
    ) -> Result<Option<(Uuid, String)>, GraphError> {
        let view = View::of(as_of);
        let mut bound = view.params(org_id);
        bound.extend(params([("to", to.to_bolt()), ("nearer", nearer.to_bolt())]));
        let rows = self
            .query(
                &format!(
                    "MATCH (a:Service)-[r:{edge}]->(b:Service {{node_id: $to}}) \
                     WHERE r.org_id = $org AND {edge_valid} AND a.node_id IN $nearer \
                     RETURN a.node_id, r.kind ORDER BY r.confidence DESC, r.kind, a.node_id LIMIT 1",
                    edge = view.edge,
                    edge_valid = view.valid("r"),
                ),
                bound,
            )
            .await?;
        rows.first().map(|row| Ok((row.uuid(0)?, row.text(1)?))).transpose()
    }

    pub(super) async fn summary(&self, org_id: Uuid) -> Result<Option<GraphSummary>, GraphError> {
        let rows = self.query("MATCH (e:Estate {org_id: $org}) RETURN e.summary", params([("org", org_id.to_bolt())])).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let Some(text) = row.maybe_text(0)? else { return Ok(None) };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| GraphError::Unavailable(format!("the estate's summary does not read: {error}")))
    }
}

/// The text a tag is found by in a service's tags: its pair as the compact JSON of the tags
/// writes it (`"env":"prod"`). Quotes inside a key or value are escaped there, so the text of
/// one pair never appears inside another's.
pub fn tag_text(key: &str, value: &serde_json::Value) -> String {
    format!("{}:{}", serde_json::Value::from(key), value)
}

/// The properties of a service, as `v` holds them, in the order [`service_view`] reads.
const SERVICE: &str = "v.node_id, v.resource_id, v.provider, v.kind, v.provider_type, v.name, v.region, v.account, v.tags, v.endpoint, \
                       v.first_seen, v.last_changed, v.status, v.last_seen";

fn service_view(row: &Row) -> Result<ServiceView, GraphError> {
    let tags = match row.maybe_text(8)? {
        Some(text) => serde_json::from_str(&text).map_err(|_| row.unexpected(8, "tags"))?,
        None => serde_json::json!({}),
    };
    Ok(ServiceView {
        node_id: row.uuid(0)?,
        resource_id: row.text(1)?,
        provider: row.text(2)?,
        kind: row.text(3)?,
        provider_type: row.text(4)?,
        name: row.text(5)?,
        region: row.maybe_text(6)?,
        account: row.maybe_text(7)?,
        tags: sqlx::types::Json(tags),
        endpoint: row.maybe_text(9)?,
        first_seen: row.time(10)?,
        last_changed: row.time(11)?,
        status: row.text(12)?,
        last_seen: row.maybe_time(13)?,
    })
}

/// The labels and conditions of the graph now or at a past time. The time is a parameter,
/// `$at`, bound by [`View::params`].
struct View {
    node: &'static str,
    edge: &'static str,
    at: Option<DateTime<Utc>>,
}

impl View {
    fn of(as_of: AsOf) -> Self {
        match as_of {
            AsOf::Now => View { node: "Service", edge: "DEPENDS_ON", at: None },
            AsOf::At(at) => View { node: "ServiceVersion", edge: "DEPENDED_ON", at: Some(at) },
        }
    }

    fn params(&self, org_id: Uuid) -> Params {
        params([("org", org_id.to_bolt()), ("at", self.at.to_bolt())])
    }

    fn valid(&self, var: &str) -> String {
        match self.at {
            None => format!("{var}.gone_at IS NULL"),
            Some(_) => format!("{var}.valid_from <= $at AND ({var}.valid_to IS NULL OR {var}.valid_to > $at)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_host_and_port() {
        assert_eq!(address("bolt://127.0.0.1:7687").unwrap(), "127.0.0.1:7687");
        assert_eq!(address("bolt://graph.internal").unwrap(), "graph.internal:7687");
        assert!(address("neo4j://graph:7687").is_err());
        assert!(address("bolt://user:secret@graph:7687").unwrap_err().contains("AURORA_DISCOVERY_BOLT_USER"));
    }

    #[test]
    fn a_tag_is_found_by_the_text_of_its_pair_only() {
        let tags: std::collections::BTreeMap<&str, &str> = [("env", "prod"), ("note", "\"env\":\"prod\"")].into();
        let text = serde_json::to_string(&tags).unwrap();
        let needle = tag_text("env", &serde_json::json!("prod"));
        assert_eq!(text.matches(&needle).count(), 1);
        assert!(!text.contains(&tag_text("env", &serde_json::json!("pro"))));
        assert!(!text.contains(&tag_text("nv", &serde_json::json!("prod"))));
    }
}
