//! An organisation's discovered estate (stream `discovery-<org id>`): its scans, and every
//! resource and dependency the scans found. A completed scan is decided here against what the
//! earlier scans left, so what it records is exactly the difference: new, changed and gone
//! resources and dependencies. A provider that failed keeps what it had. A resource its provider
//! no longer lists is missed, then stale once it has not been listed for the stale threshold,
//! and gone after the gone threshold (7 and 30 days by default); listed again, it returns.
//! Dependencies are inferred afresh by every scan: those of a resource not listed go at once.

use std::collections::{BTreeMap, BTreeSet};

use aurora_events::discovery::{
    Dependency, DependencyDiscovered, DependencyGone, DependencyKind, DiscoveryEvent, ProviderFailure, Resource, ResourceGone,
    ResourceMissed, ResourceSeen, ScanCompleted, ScanFailed, ScanRequested, ScanStarted, ScheduleChanged,
};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{Aggregate, DomainError, ErrorKind};

pub const MAX_EVIDENCE_CHARS: usize = 1_000;
pub const MAX_REASON_CHARS: usize = 1_000;
pub const MAX_NAME_CHARS: usize = 500;
/// Most resources one organisation's estate may hold.
pub const MAX_RESOURCES: usize = 50_000;
/// The shortest and the longest time between scans an organisation may ask for, in minutes.
pub const MIN_INTERVAL_MINUTES: u32 = 15;
pub const MAX_INTERVAL_MINUTES: u32 = 7 * 24 * 60;

#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryCommand {
    Request {
        scan_id: Uuid,
    },
    Start {
        scan_id: Uuid,
        providers: Vec<String>,
    },
    /// What the scan listed, from the providers it listed, at `now`; `failures` could not be
    /// listed.
    Complete {
        scan_id: Uuid,
        resources: Vec<Resource>,
        dependencies: Vec<Dependency>,
        failures: Vec<ProviderFailure>,
        now: DateTime<Utc>,
        thresholds: Thresholds,
    },
    /// Scan every `interval_minutes`, or as the deployment does by default.
    Schedule {
        interval_minutes: Option<u32>,
    },
}

/// How long a resource may go unlisted before it is marked stale, and before it is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub stale_after: TimeDelta,
    pub gone_after: TimeDelta,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { stale_after: TimeDelta::days(7), gone_after: TimeDelta::days(30) }
    }
}

/// A resource its provider's scans no longer list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub last_seen: DateTime<Utc>,
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no such scan")]
    ScanNotFound,
    #[error("a scan of this organisation is running already ({0})")]
    ScanRunning(Uuid),
    #[error("the scan found {0} resources, more than an organisation may keep ({MAX_RESOURCES})")]
    TooManyResources(usize),
    #[error("scans run every {MIN_INTERVAL_MINUTES} to {MAX_INTERVAL_MINUTES} minutes, not every {0}")]
    Interval(u32),
}

impl DiscoveryError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DiscoveryError::ScanNotFound => ErrorKind::NotFound("scan".into()),
            DiscoveryError::ScanRunning(_) => ErrorKind::InvalidState,
            DiscoveryError::TooManyResources(_) => ErrorKind::QuotaExceeded,
            DiscoveryError::Interval(_) => ErrorKind::InvalidInput { field: "interval_minutes", reason: self.to_string() },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    Requested,
    Running,
    Ended,
}

type EdgeKey = (String, String, DependencyKind);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estate {
    pub resources: BTreeMap<String, Resource>,
    pub dependencies: BTreeMap<EdgeKey, Dependency>,
    pub scans: BTreeMap<Uuid, ScanStatus>,
    /// The resources kept but not listed by the latest scans of their provider.
    pub missing: BTreeMap<String, Missing>,
    /// When each provider was last listed.
    pub listed_at: BTreeMap<String, DateTime<Utc>>,
    /// The connections whose latest scans failed, and how many in a row.
    pub failing: BTreeMap<Uuid, u32>,
    /// Minutes between scans, when an admin chose them.
    pub interval_minutes: Option<u32>,
    /// Whether an admin ever set the schedule.
    pub scheduled: bool,
}

impl Estate {
    fn running(&self) -> Option<Uuid> {
        self.scans.iter().find(|(_, status)| **status != ScanStatus::Ended).map(|(scan_id, _)| *scan_id)
    }
}

/// The connections a scan's failures name, with their streaks: every scan tries each connection,
/// so one it does not name did not fail (or is gone), and its streak ends.
fn streaks(failures: &[ProviderFailure]) -> BTreeMap<Uuid, u32> {
    failures.iter().filter_map(|failure| Some((failure.connection_id?, failure.consecutive))).collect()
}

/// `text` without control characters, at most `max` characters.
fn cleaned(text: &str, max: usize) -> String {
    text.chars().filter(|character| !character.is_control()).take(max).collect::<String>().trim().to_owned()
}

fn key(dependency: &Dependency) -> EdgeKey {
    (dependency.from.clone(), dependency.to.clone(), dependency.kind)
}

impl Aggregate for Estate {
    type Command = DiscoveryCommand;
    type Event = DiscoveryEvent;

    fn decide(&self, command: DiscoveryCommand) -> Result<Vec<DiscoveryEvent>, DomainError> {
        match command {
            DiscoveryCommand::Schedule { interval_minutes } => {
                if let Some(minutes) = interval_minutes.filter(|minutes| !(MIN_INTERVAL_MINUTES..=MAX_INTERVAL_MINUTES).contains(minutes)) {
                    return Err(DiscoveryError::Interval(minutes).into());
                }
                if interval_minutes == self.interval_minutes {
                    return Ok(Vec::new());
                }
                Ok(vec![DiscoveryEvent::ScheduleChanged(ScheduleChanged { interval_minutes })])
            }
            DiscoveryCommand::Request { scan_id } => {
                if self.scans.contains_key(&scan_id) {
                    return Ok(Vec::new());
                }
                if let Some(running) = self.running() {
                    return Err(DiscoveryError::ScanRunning(running).into());
                }
                Ok(vec![DiscoveryEvent::ScanRequested(ScanRequested { scan_id })])
            }
            DiscoveryCommand::Start { scan_id, providers } => match self.scans.get(&scan_id) {
                None => Err(DiscoveryError::ScanNotFound.into()),
                Some(ScanStatus::Requested) => Ok(vec![DiscoveryEvent::ScanStarted(ScanStarted { scan_id, providers })]),
                Some(_) => Ok(Vec::new()),
            },
            DiscoveryCommand::Complete { scan_id, resources, dependencies, mut failures, now, thresholds } => {
                match self.scans.get(&scan_id) {
                    None => return Err(DiscoveryError::ScanNotFound.into()),
                    Some(ScanStatus::Ended) => return Ok(Vec::new()),
                    Some(_) => {}
                }
                for failure in &mut failures {
                    failure.reason = cleaned(&failure.reason, MAX_REASON_CHARS);
                    failure.consecutive = failure.connection_id.map_or(1, |id| self.failing.get(&id).copied().unwrap_or(0) + 1);
                }
                let listed: BTreeSet<String> = resources.iter().map(|resource| resource.provider.clone()).collect();
                if resources.is_empty() && !failures.is_empty() {
                    return Ok(vec![DiscoveryEvent::ScanFailed(ScanFailed { scan_id, failures })]);
                }
                if resources.len() > MAX_RESOURCES {
                    return Err(DiscoveryError::TooManyResources(resources.len()).into());
                }
                let failed: BTreeSet<String> = failures.iter().map(|failure| failure.provider.clone()).collect();
                let mut events = Vec::new();
                let (mut discovered, mut changed, mut gone, mut missed, mut stale, mut returned) = (0, 0, 0, 0, 0, 0);
                let mut seen = BTreeSet::new();
                for mut resource in resources {
                    // A provider's text is what it is: cleaned and cut, never a reason to lose the scan.
                    resource.name = cleaned(&resource.name, MAX_NAME_CHARS);
                    seen.insert(resource.resource_id.clone());
                    match self.resources.get(&resource.resource_id) {
                        None => {
                            discovered += 1;
                            events.push(DiscoveryEvent::ResourceDiscovered(ResourceSeen { scan_id, resource }));
                        }
                        Some(_) if self.missing.contains_key(&resource.resource_id) => {
                            returned += 1;
                            events.push(DiscoveryEvent::ResourceReturned(ResourceSeen { scan_id, resource }));
                        }
                        Some(known) if *known != resource => {
                            changed += 1;
                            events.push(DiscoveryEvent::ResourceChanged(ResourceSeen { scan_id, resource }));
                        }
                        Some(_) => {}
                    }
                }
                // What a listed provider no longer has is missed, then stale, then gone; a failed
                // provider keeps its own as they were, and the dependencies that touch them,
                // which nothing could check again.
                let unchecked = |resource_id: &str| {
                    self.resources
                        .get(resource_id)
                        .is_some_and(|known| failed.contains(&known.provider) && !listed.contains(&known.provider))
                };
                for (resource_id, known) in
                    self.resources.iter().filter(|(resource_id, _)| !seen.contains(*resource_id) && !unchecked(resource_id))
                {
                    let was = self.missing.get(resource_id);
                    // First missed now: last seen by the provider's previous listing.
                    let last_seen = was.map_or_else(|| self.listed_at.get(&known.provider).copied().unwrap_or(now), |was| was.last_seen);
                    let unlisted = now - last_seen;
                    let resource_id = resource_id.clone();
                    if unlisted >= thresholds.gone_after {
                        gone += 1;
                        events.push(DiscoveryEvent::ResourceGone(ResourceGone { scan_id, resource_id }));
                        continue;
                    }
                    if was.is_none() {
                        missed += 1;
                        events.push(DiscoveryEvent::ResourceMissed(ResourceMissed {
                            scan_id,
                            resource_id: resource_id.clone(),
                            last_seen,
                        }));
                    }
                    if unlisted >= thresholds.stale_after && !was.is_some_and(|was| was.stale) {
                        stale += 1;
                        events.push(DiscoveryEvent::ResourceStale(ResourceMissed { scan_id, resource_id, last_seen }));
                    }
                }
                let mut inferred = BTreeSet::new();
                let count = dependencies.len() as u32;
                for mut dependency in dependencies {
                    dependency.evidence = cleaned(&dependency.evidence, MAX_EVIDENCE_CHARS);
                    dependency.confidence = dependency.confidence.clamp(0.0, 1.0);
                    inferred.insert(key(&dependency));
                    if self.dependencies.get(&key(&dependency)) != Some(&dependency) {
                        events.push(DiscoveryEvent::DependencyDiscovered(DependencyDiscovered { scan_id, dependency }));
                    }
                }
                for (from, to, kind) in self.dependencies.keys() {
                    let stays = inferred.contains(&(from.clone(), to.clone(), *kind)) || unchecked(from) || unchecked(to);
                    if !stays {
                        events.push(DiscoveryEvent::DependencyGone(DependencyGone {
                            scan_id,
                            from: from.clone(),
                            to: to.clone(),
                            kind: *kind,
                        }));
                    }
                }
                events.push(DiscoveryEvent::ScanCompleted(ScanCompleted {
                    scan_id,
                    resources: seen.len() as u32,
                    dependencies: count,
                    discovered,
                    changed,
                    gone,
                    missed,
                    stale,
                    returned,
                    at: Some(now),
                    listed: listed.into_iter().collect(),
                    failures,
                }));
                Ok(events)
            }
        }
    }

    fn evolve(mut self, event: &DiscoveryEvent) -> Self {
        match event {
            DiscoveryEvent::ScanRequested(requested) => {
                self.scans.insert(requested.scan_id, ScanStatus::Requested);
            }
            DiscoveryEvent::ScanStarted(started) => {
                self.scans.insert(started.scan_id, ScanStatus::Running);
            }
            DiscoveryEvent::ResourceDiscovered(seen) | DiscoveryEvent::ResourceChanged(seen) | DiscoveryEvent::ResourceReturned(seen) => {
                self.missing.remove(&seen.resource.resource_id);
                self.resources.insert(seen.resource.resource_id.clone(), seen.resource.clone());
            }
            DiscoveryEvent::ResourceMissed(missed) => {
                self.missing.insert(missed.resource_id.clone(), Missing { last_seen: missed.last_seen, stale: false });
            }
            DiscoveryEvent::ResourceStale(stale) => {
                self.missing.insert(stale.resource_id.clone(), Missing { last_seen: stale.last_seen, stale: true });
            }
            DiscoveryEvent::ResourceGone(gone) => {
                self.resources.remove(&gone.resource_id);
                self.missing.remove(&gone.resource_id);
            }
            DiscoveryEvent::DependencyDiscovered(discovered) => {
                self.dependencies.insert(key(&discovered.dependency), discovered.dependency.clone());
            }
            DiscoveryEvent::DependencyGone(gone) => {
                self.dependencies.remove(&(gone.from.clone(), gone.to.clone(), gone.kind));
            }
            DiscoveryEvent::ScanCompleted(completed) => {
                self.scans.insert(completed.scan_id, ScanStatus::Ended);
                if let Some(at) = completed.at {
                    self.listed_at.extend(completed.listed.iter().map(|provider| (provider.clone(), at)));
                }
                self.failing = streaks(&completed.failures);
            }
            DiscoveryEvent::ScanFailed(ScanFailed { scan_id, failures }) => {
                self.scans.insert(*scan_id, ScanStatus::Ended);
                self.failing = streaks(failures);
            }
            DiscoveryEvent::ScheduleChanged(changed) => {
                self.interval_minutes = changed.interval_minutes;
                self.scheduled = true;
            }
        }
        self
    }

    fn exists(&self) -> bool {
        !self.scans.is_empty() || self.scheduled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aurora_events::discovery::ResourceKind;

    fn resource(id: &str, provider: &str, name: &str) -> Resource {
        Resource {
            resource_id: id.into(),
            provider: provider.into(),
            kind: ResourceKind::Vm,
            provider_type: "AWS::EC2::Instance".into(),
            name: name.into(),
            region: Some("us-east-1".into()),
            account: None,
            tags: BTreeMap::new(),
            endpoint: None,
        }
    }

    fn edge(from: &str, to: &str) -> Dependency {
        Dependency { from: from.into(), to: to.into(), kind: DependencyKind::Reaches, evidence: "a rule".into(), confidence: 0.8 }
    }

    fn day(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::days(days)
    }

    fn scanned(
        estate: Estate,
        resources: Vec<Resource>,
        dependencies: Vec<Dependency>,
        failures: Vec<ProviderFailure>,
    ) -> (Estate, Vec<DiscoveryEvent>) {
        let now = estate.listed_at.values().max().map_or(day(0), |last| *last + TimeDelta::hours(1));
        scanned_at(estate, now, Thresholds::default(), resources, dependencies, failures)
    }

    fn scanned_at(
        estate: Estate,
        now: DateTime<Utc>,
        thresholds: Thresholds,
        resources: Vec<Resource>,
        dependencies: Vec<Dependency>,
        failures: Vec<ProviderFailure>,
    ) -> (Estate, Vec<DiscoveryEvent>) {
        let scan_id = Uuid::now_v7();
        let mut estate = estate;
        for command in [DiscoveryCommand::Request { scan_id }, DiscoveryCommand::Start { scan_id, providers: vec!["aws".into()] }] {
            for event in estate.decide(command).unwrap() {
                estate = estate.evolve(&event);
            }
        }
        let events = estate.decide(DiscoveryCommand::Complete { scan_id, resources, dependencies, failures, now, thresholds }).unwrap();
        let after = events.iter().fold(estate, |estate, event| estate.evolve(event));
        (after, events)
    }

    fn names(events: &[DiscoveryEvent]) -> Vec<&'static str> {
        events.iter().map(|event| aurora_events::EventPayload::event_type(event)).collect()
    }

    #[test]
    fn a_second_scan_records_exactly_the_differences() {
        let (estate, events) =
            scanned(Estate::default(), vec![resource("a", "aws", "a"), resource("b", "aws", "b")], vec![edge("a", "b")], vec![]);
        assert_eq!(names(&events), ["resource.discovered", "resource.discovered", "dependency.discovered", "discovery.scan_completed"]);
        let (estate, events) = scanned(estate, vec![resource("a", "aws", "a"), resource("b", "aws", "b")], vec![edge("a", "b")], vec![]);
        assert_eq!(names(&events), ["discovery.scan_completed"], "nothing changed");
        let (_, events) = scanned(estate, vec![resource("a", "aws", "a renamed"), resource("c", "aws", "c")], vec![], vec![]);
        assert_eq!(
            names(&events),
            ["resource.changed", "resource.discovered", "resource.missed", "dependency.gone", "discovery.scan_completed"]
        );
    }

    #[test]
    fn an_unlisted_resource_is_missed_then_stale_then_gone_and_may_return() {
        let scan = |estate: Estate, at: i64, resources: Vec<Resource>| {
            let (estate, events) = scanned_at(estate, day(at), Thresholds::default(), resources, vec![], vec![]);
            let names = names(&events);
            (estate, names)
        };
        let (a, b) = (resource("a", "aws", "a"), resource("b", "aws", "b"));
        let (estate, _) = scan(Estate::default(), 0, vec![a.clone(), b.clone()]);
        let (estate, events) = scan(estate, 1, vec![a.clone()]);
        assert_eq!(events, ["resource.missed", "discovery.scan_completed"]);
        assert_eq!(estate.missing["b"], Missing { last_seen: day(0), stale: false }, "last seen by the scan before");
        let (estate, events) = scan(estate, 6, vec![a.clone()]);
        assert_eq!(events, ["discovery.scan_completed"], "missed already, not yet stale");
        let (estate, events) = scan(estate, 7, vec![a.clone()]);
        assert_eq!(events, ["resource.stale", "discovery.scan_completed"], "seven days unlisted");
        let (estate, events) = scan(estate, 8, vec![a.clone()]);
        assert_eq!(events, ["discovery.scan_completed"], "stale already");
        let (estate, events) = scan(estate, 10, vec![a.clone(), b.clone()]);
        assert_eq!(events, ["resource.returned", "discovery.scan_completed"]);
        assert!(estate.missing.is_empty());
        let (estate, events) = scan(estate, 11, vec![a.clone()]);
        assert_eq!(events, ["resource.missed", "discovery.scan_completed"]);
        assert_eq!(estate.missing["b"].last_seen, day(10), "counted from its return");
        let (estate, events) = scan(estate, 39, vec![a.clone()]);
        assert_eq!(events, ["resource.stale", "discovery.scan_completed"]);
        let (estate, events) = scan(estate, 40, vec![a.clone()]);
        assert_eq!(events, ["resource.gone", "discovery.scan_completed"], "thirty days unlisted");
        assert!(!estate.resources.contains_key("b") && estate.missing.is_empty());
        // No grace at all: gone at the first scan that misses it.
        let at_once = Thresholds { stale_after: TimeDelta::zero(), gone_after: TimeDelta::zero() };
        let (_, events) = scanned_at(
            estate,
            day(41),
            at_once,
            vec![],
            vec![],
            vec![ProviderFailure { provider: "gcp".into(), connection: "prod".into(), reason: "down".into(), ..Default::default() }],
        );
        assert_eq!(names(&events), ["discovery.scan_failed"], "nothing listed: nothing decided");
        let (estate, _) = scan(Estate::default(), 0, vec![a.clone(), b.clone()]);
        let (_, events) = scanned_at(estate, day(1), at_once, vec![a], vec![], vec![]);
        assert_eq!(names(&events), ["resource.gone", "discovery.scan_completed"]);
    }

    #[test]
    fn a_failed_provider_keeps_what_it_had() {
        let failure =
            ProviderFailure { provider: "gcp".into(), connection: "prod".into(), reason: "token expired".into(), ..Default::default() };
        let (estate, _) =
            scanned(Estate::default(), vec![resource("a", "aws", "a"), resource("g", "gcp", "g")], vec![edge("a", "g")], vec![]);
        let (estate, events) = scanned(estate, vec![resource("a", "aws", "a")], vec![], vec![failure.clone()]);
        assert_eq!(names(&events), ["discovery.scan_completed"], "g and its dependency could not be checked again");
        assert!(estate.resources.contains_key("g"));
        assert_eq!(estate.dependencies.len(), 1);
        let (_, events) = scanned(estate, vec![], vec![], vec![failure]);
        assert_eq!(names(&events), ["discovery.scan_failed"]);
    }

    #[test]
    fn a_connection_failing_scan_after_scan_is_counted_until_it_lists_again() {
        let connection_id = Some(Uuid::from_u128(7));
        let down = ProviderFailure {
            provider: "gcp".into(),
            connection: "prod".into(),
            reason: "down".into(),
            connection_id,
            ..Default::default()
        };
        let streak = |events: &[DiscoveryEvent]| match events.last() {
            Some(
                DiscoveryEvent::ScanCompleted(ScanCompleted { failures, .. }) | DiscoveryEvent::ScanFailed(ScanFailed { failures, .. }),
            ) => failures.iter().map(|failure| failure.consecutive).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let a = vec![resource("a", "aws", "a")];
        let (estate, events) = scanned(Estate::default(), a.clone(), vec![], vec![down.clone()]);
        assert_eq!(streak(&events), [1]);
        let (estate, events) = scanned(estate, vec![], vec![], vec![down.clone()]);
        assert_eq!(streak(&events), [2], "a scan that failed whole counts too");
        let (estate, events) = scanned(estate, a.clone(), vec![], vec![]);
        assert_eq!(streak(&events), Vec::<u32>::new());
        assert!(estate.failing.is_empty(), "listed again: the streak ends");
        let (_, events) = scanned(estate, a, vec![], vec![down]);
        assert_eq!(streak(&events), [1]);
    }

    #[test]
    fn a_schedule_is_kept_within_bounds_and_set_once() {
        let schedule = |estate: &Estate, minutes: Option<u32>| estate.decide(DiscoveryCommand::Schedule { interval_minutes: minutes });
        assert!(matches!(schedule(&Estate::default(), Some(5)), Err(DomainError::Discovery(DiscoveryError::Interval(5)))));
        assert!(schedule(&Estate::default(), Some(MAX_INTERVAL_MINUTES + 1)).is_err());
        let events = schedule(&Estate::default(), Some(30)).unwrap();
        let estate = Estate::default().evolve(&events[0]);
        assert_eq!((estate.interval_minutes, estate.exists()), (Some(30), true));
        assert!(schedule(&estate, Some(30)).unwrap().is_empty(), "the same schedule again changes nothing");
        assert_eq!(schedule(&estate, None).unwrap().len(), 1, "back to the default");
    }

    #[test]
    fn a_providers_odd_text_is_cleaned_not_refused() {
        let (estate, _) = scanned(Estate::default(), vec![resource("a", "aws", "web\u{1b}[31m server")], vec![], vec![]);
        assert_eq!(estate.resources["a"].name, "web[31m server");
    }

    #[test]
    fn one_scan_runs_at_a_time() {
        let scan_id = Uuid::now_v7();
        let estate = Estate::default().evolve(&DiscoveryEvent::ScanRequested(ScanRequested { scan_id }));
        assert_eq!(estate.decide(DiscoveryCommand::Request { scan_id: Uuid::now_v7() }), Err(DiscoveryError::ScanRunning(scan_id).into()));
        assert_eq!(estate.decide(DiscoveryCommand::Request { scan_id }), Ok(Vec::new()), "the same request again changes nothing");
    }
}
