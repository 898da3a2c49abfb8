//! Events of an organisation's service discovery (`discovery-<org id>`): scans asked for, begun
//! and ended, and what each scan found changed since the one before it: resources discovered,
//! changed, missed, stale, returned or gone, and the dependencies inferred between them, each
//! with its evidence.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event_family;

/// What a resource is, whatever its provider calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    Vm,
    KubernetesCluster,
    Database,
    ServerlessFunction,
    LoadBalancer,
    Queue,
    Bucket,
    Network,
    Subnet,
    Firewall,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Vm => "vm",
            ResourceKind::KubernetesCluster => "kubernetes_cluster",
            ResourceKind::Database => "database",
            ResourceKind::ServerlessFunction => "serverless_function",
            ResourceKind::LoadBalancer => "load_balancer",
            ResourceKind::Queue => "queue",
            ResourceKind::Bucket => "bucket",
            ResourceKind::Network => "network",
            ResourceKind::Subnet => "subnet",
            ResourceKind::Firewall => "firewall",
        }
    }
}

/// One resource as a scan saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Resource {
    /// Stable across scans: the provider's own id, qualified (`aws:ec2:instance:i-0abc`).
    pub resource_id: String,
    /// `aws`, `gcp`, `azure`.
    pub provider: String,
    pub kind: ResourceKind,
    /// The provider's own type (`AWS::EC2::Instance`).
    pub provider_type: String,
    pub name: String,
    pub region: Option<String>,
    /// The account, project or subscription it belongs to.
    pub account: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Where it answers (a host name or address), when it has one.
    pub endpoint: Option<String>,
}

/// How one resource depends on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// A network rule lets `from` reach `to` (a security-group rule).
    Reaches,
    /// `from` sits in `to` (a subnet, a network): weak, flagged as such.
    MemberOf,
    /// `from` is guarded by the firewall `to`.
    ProtectedBy,
    /// `from` (a load balancer) sends traffic to `to`.
    Targets,
    /// `from` (a queue) invokes `to` (a function).
    Triggers,
    /// `from`'s configuration names `to` (its endpoint, ARN or host).
    Uses,
}

impl DependencyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::Reaches => "reaches",
            DependencyKind::MemberOf => "member_of",
            DependencyKind::ProtectedBy => "protected_by",
            DependencyKind::Targets => "targets",
            DependencyKind::Triggers => "triggers",
            DependencyKind::Uses => "uses",
        }
    }
}

/// One inferred dependency, with what it was inferred from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Dependency {
    pub from: String,
    pub to: String,
    pub kind: DependencyKind,
    /// What shows it, for a person (a rule, a setting), at most 1 000 characters.
    pub evidence: String,
    /// 0 to 1.
    pub confidence: f64,
}

/// `discovery.scan_requested`: someone (or the hourly timer) asked for a scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanRequested {
    pub scan_id: Uuid,
}

/// `discovery.schedule_changed`: an admin set how often the organisation's clouds are scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleChanged {
    /// Minutes from one scan's end to the next (15 to 10 080); none: the deployment's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_minutes: Option<u32>,
}

/// `discovery.scan_started`: a processor began listing the organisation's clouds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanStarted {
    pub scan_id: Uuid,
    /// The providers it lists.
    pub providers: Vec<String>,
}

/// `resource.discovered`, `resource.changed` and `resource.returned` (listed again after being
/// missed): a resource, whole, as the scan saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceSeen {
    pub scan_id: Uuid,
    pub resource: Resource,
}

/// `resource.gone`: no scan of its provider has listed it for the estate's gone threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceGone {
    pub scan_id: Uuid,
    pub resource_id: String,
}

/// `resource.missed`: a scan of its provider did not list it. It stays in the graph, marked
/// missing, until it is listed again or has not been for the estate's gone threshold (30 days by
/// default); `last_seen` is when a scan last listed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResourceMissed {
    pub scan_id: Uuid,
    pub resource_id: String,
    pub last_seen: DateTime<Utc>,
}

/// `dependency.discovered`: a dependency the scan inferred, new or with new evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DependencyDiscovered {
    pub scan_id: Uuid,
    pub dependency: Dependency,
}

/// `dependency.gone`: the scan no longer infers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DependencyGone {
    pub scan_id: Uuid,
    pub from: String,
    pub to: String,
    pub kind: DependencyKind,
}

/// Why one provider could not be listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderFailure {
    pub provider: String,
    pub connection: String,
    /// At most 1 000 characters.
    pub reason: String,
    /// The connection that failed, when one did (not for a refusal of the whole scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<Uuid>,
    /// The provider refused the credentials or their permissions: retrying will not help until
    /// someone changes them.
    #[serde(default)]
    pub refused: bool,
    /// How many scans in a row, this one included, the connection has failed.
    #[serde(default)]
    pub consecutive: u32,
}

/// `discovery.scan_completed`: the scan ended; the counts are of what it recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanCompleted {
    pub scan_id: Uuid,
    pub resources: u32,
    pub dependencies: u32,
    pub discovered: u32,
    pub changed: u32,
    pub gone: u32,
    /// Resources it no longer listed for the first time, and those it marked stale.
    #[serde(default)]
    pub missed: u32,
    #[serde(default)]
    pub stale: u32,
    /// Resources listed again after being missed.
    #[serde(default)]
    pub returned: u32,
    /// When the providers in `listed` were listed (absent in scans recorded before it was kept).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
    /// The providers it listed (whose resources it saw as they are).
    #[serde(default)]
    pub listed: Vec<String>,
    /// Providers that failed while others were listed: what they had is kept, not marked gone.
    pub failures: Vec<ProviderFailure>,
}

/// `discovery.scan_failed`: no provider could be listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanFailed {
    pub scan_id: Uuid,
    pub failures: Vec<ProviderFailure>,
}

/// The kind of the durable timers that start an organisation's scans (one waits at a time).
pub const SCAN_TIMER: &str = "discovery_scan";

event_family! {
    /// Everything that happens to one organisation's discovered estate.
    pub enum DiscoveryEvent in "discovery", named by DiscoveryEventType {
        ScanRequested(ScanRequested) = ("discovery.scan_requested", 1),
        ScanStarted(ScanStarted) = ("discovery.scan_started", 1),
        ResourceDiscovered(ResourceSeen) = ("resource.discovered", 1),
        ResourceChanged(ResourceSeen) = ("resource.changed", 1),
        ResourceGone(ResourceGone) = ("resource.gone", 1),
        ResourceMissed(ResourceMissed) = ("resource.missed", 1),
        ResourceStale(ResourceMissed) = ("resource.stale", 1),
        ResourceReturned(ResourceSeen) = ("resource.returned", 1),
        DependencyDiscovered(DependencyDiscovered) = ("dependency.discovered", 1),
        DependencyGone(DependencyGone) = ("dependency.gone", 1),
        ScanCompleted(ScanCompleted) = ("discovery.scan_completed", 1),
        ScanFailed(ScanFailed) = ("discovery.scan_failed", 1),
        ScheduleChanged(ScheduleChanged) = ("discovery.schedule_changed", 1),
    }
}

/// Registers this feature's event family.
pub fn register(families: &mut crate::catalog::Families) {
    families.add::<DiscoveryEvent>();
}
