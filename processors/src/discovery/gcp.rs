//! One Google Cloud connection's estate: in each active project the token reaches, its VPC
//! networks, firewall rules, Compute Engine instances, GKE clusters and Cloud SQL instances,
//! each under its full resource name (`//compute.googleapis.com/projects/p/zones/z/instances/n`,
//! stable across scans). A project where an API is not enabled has none of that API's
//! resources; any other refusal fails the connection's scan, which keeps what it had. What is
//! inferred, each with its evidence:
//! - an ingress firewall rule that admits instances with source tags: each of them reaches each
//!   instance the rule targets (by target tag, or every instance of the network) (`reaches`, 0.8);
//! - an instance a firewall rule applies to (`protected_by`, 1.0);
//! - an instance's metadata naming another resource's address, endpoint or connection name
//!   (`uses`, 0.9, the metadata key as evidence, never its value);
//! - an instance, cluster or database in a network (`member_of`, 0.3: weak).

use std::collections::BTreeSet;

use aurora_adapters::clouds::gcp::Gcp;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::config::ConnectionsConfig;
use aurora_adapters::secrets::Secret;
use aurora_events::discovery::{DependencyKind, ResourceKind};
use serde_json::Value;

use super::inventory::{tags, text, texts, Inventory, Listed, RULE, SURE, WEAK};
use super::Found;

/// The last part of a resource URL (`.../zones/europe-west1-b` → `europe-west1-b`).
fn last(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// The full resource name of a Compute Engine object from its `selfLink` or a reference to it
/// (a URL, `projects/p/global/networks/n`, or a network's bare name in `project`).
fn compute_name(project: &str, reference: &str, collection: &str) -> String {
    match reference.find("projects/") {
        Some(start) => format!("//compute.googleapis.com/{}", &reference[start..]),
        None => format!("//compute.googleapis.com/projects/{project}/global/{collection}/{reference}"),
    }
}

/// The region of a zone (`europe-west1-b` → `europe-west1`).
fn region_of(zone: &str) -> String {
    zone.rsplit_once('-').map_or(zone, |(region, _)| region).to_owned()
}

/// A list of a project's resources, or none where the API is not enabled (there can be no
/// resources of an API a project never enabled).
fn unless_disabled(listed: Result<Vec<Value>, ProviderError>) -> Result<Vec<Value>, ProviderError> {
    match listed {
        Err(ProviderError::Forbidden { detail, .. }) if detail.contains("is disabled") || detail.contains("not been used") => Ok(Vec::new()),
        other => other,
    }
}

/// An instance as the firewall rules see it.
struct Member {
    resource_id: String,
    network: String,
    tags: BTreeSet<String>,
}

pub async fn scan(config: &ConnectionsConfig, secret: &Secret) -> Result<Found, ProviderError> {
    let gcp = Gcp::new(config, secret)?;
    let mut inventory = Inventory::new("gcp");
    for project in gcp.projects().await? {
        if project["state"] != "ACTIVE" {
            continue;
        }
        // A project id goes into the API's paths: letters, digits, hyphens, and a domain
        // prefix (`example.com:project`), or it is not listed.
        let Some(project) = text(&project["project_id"])
            .filter(|id| id.chars().all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '.' | ':')))
        else {
            continue;
        };
        list_project(&gcp, &project, &mut inventory).await?;
    }
    Ok(inventory.finish())
}

async fn list_project(gcp: &Gcp, project: &str, inventory: &mut Inventory) -> Result<(), ProviderError> {
    let account = Some(project.to_owned());
    for network in unless_disabled(gcp.networks(project).await)? {
        let Some(name) = text(&network["name"]) else { continue };
        let resource_id = compute_name(project, &text(&network["selfLink"]).unwrap_or_else(|| name.clone()), "networks");
        let listed = Listed {
            kind: ResourceKind::Network,
            provider_type: "compute.googleapis.com/Network",
            resource_id,
            name,
            region: None,
            account: account.clone(),
            tags: Default::default(),
            endpoint: None,
        };
        inventory.add(listed);
    }
    let mut members = Vec::new();
    for instance in unless_disabled(gcp.compute_instances(project).await)? {
        let (Some(name), Some(link)) = (text(&instance["name"]), text(&instance["selfLink"])) else { continue };
        let resource_id = compute_name(project, &link, "instances");
        let interfaces = instance["networkInterfaces"].as_array().cloned().unwrap_or_default();
        let endpoint = interfaces.first().and_then(|interface| text(&interface["networkIP"]));
        for interface in &interfaces {
            let what = format!("the address of instance {name}");
            inventory.nameable(text(&interface["networkIP"]), &resource_id, what.clone());
            for access in interface["accessConfigs"].as_array().into_iter().flatten() {
                inventory.nameable(text(&access["natIP"]), &resource_id, what.clone());
            }
            if let Some(network) = text(&interface["network"]) {
                let network_id = compute_name(project, &network, "networks");
                let evidence = format!("instance {name} has an interface in network {}", last(&network));
                inventory.link(&resource_id, &network_id, DependencyKind::MemberOf, evidence, WEAK);
                let tags = texts(&instance["tags"]["items"]).collect();
                members.push(Member { resource_id: resource_id.clone(), network: network_id, tags });
            }
        }
        let metadata = instance["metadata"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| Some((text(&item["key"])?, text(&item["value"])?)))
            .collect();
        inventory.configured(&resource_id, "metadata item", format!("instance {name}"), metadata);
        let zone = text(&instance["zone"]).map(|zone| last(&zone).to_owned());
        let listed = Listed {
            kind: ResourceKind::Vm,
            provider_type: "compute.googleapis.com/Instance",
            resource_id,
            name,
            region: zone.as_deref().map(region_of),
            account: account.clone(),
            tags: tags(&instance["labels"]),
            endpoint,
        };
        inventory.add(listed);
    }
    for rule in unless_disabled(gcp.firewalls(project).await)? {
        let (Some(name), Some(network)) = (text(&rule["name"]), text(&rule["network"])) else { continue };
        let resource_id = compute_name(project, &text(&rule["selfLink"]).unwrap_or_else(|| name.clone()), "firewalls");
        let listed = Listed {
            kind: ResourceKind::Firewall,
            provider_type: "compute.googleapis.com/Firewall",
            resource_id: resource_id.clone(),
            name: name.clone(),
            region: None,
            account: account.clone(),
            tags: Default::default(),
            endpoint: None,
        };
        inventory.add(listed);
        if rule["disabled"] == true || rule["direction"].as_str().is_some_and(|direction| direction != "INGRESS") {
            continue;
        }
        firewall(inventory, &rule, &name, &resource_id, &compute_name(project, &network, "networks"), &members);
    }
    for cluster in unless_disabled(gcp.gke_clusters(project, None).await)? {
        let (Some(name), Some(location)) = (text(&cluster["name"]), text(&cluster["location"])) else { continue };
        let resource_id = format!("//container.googleapis.com/projects/{project}/locations/{location}/clusters/{name}");
        let endpoint = text(&cluster["endpoint"]);
        inventory.nameable(endpoint.clone(), &resource_id, format!("the endpoint of cluster {name}"));
        if let Some(network) = text(&cluster["network"]) {
            let evidence = format!("cluster {name} runs in network {network}");
            inventory.link(&resource_id, &compute_name(project, &network, "networks"), DependencyKind::MemberOf, evidence, WEAK);
        }
        let region = if location.matches('-').count() >= 2 { region_of(&location) } else { location.clone() };
        let listed = Listed {
            kind: ResourceKind::KubernetesCluster,
            provider_type: "container.googleapis.com/Cluster",
            resource_id,
            name,
            region: Some(region),
            account: account.clone(),
            tags: tags(&cluster["labels"]),
            endpoint,
        };
        inventory.add(listed);
    }
    for database in unless_disabled(gcp.sql_instances(project).await)? {
        let Some(name) = text(&database["name"]) else { continue };
        let resource_id = format!("//cloudsql.googleapis.com/projects/{project}/instances/{name}");
        let addresses: Vec<&Value> = database["ipAddresses"].as_array().into_iter().flatten().collect();
        // The private address is the one a workload in the network uses.
        let endpoint = addresses
            .iter()
            .find(|address| address["type"] == "PRIVATE")
            .or_else(|| addresses.first())
            .and_then(|address| text(&address["ipAddress"]));
        for address in &addresses {
            inventory.nameable(text(&address["ipAddress"]), &resource_id, format!("the address of database {name}"));
        }
        inventory.nameable(text(&database["connectionName"]), &resource_id, format!("the connection name of database {name}"));
        inventory.nameable(text(&database["dnsName"]), &resource_id, format!("the DNS name of database {name}"));
        if let Some(network) = text(&database["settings"]["ipConfiguration"]["privateNetwork"]) {
            let evidence = format!("database {name} has a private address in network {}", last(&network));
            inventory.link(&resource_id, &compute_name(project, &network, "networks"), DependencyKind::MemberOf, evidence, WEAK);
        }
        let listed = Listed {
            kind: ResourceKind::Database,
            provider_type: "sqladmin.googleapis.com/Instance",
            resource_id,
            name,
            region: text(&database["region"]),
            account: account.clone(),
            tags: tags(&database["settings"]["userLabels"]),
            endpoint,
        };
        inventory.add(listed);
    }
    Ok(())
}

/// An ingress rule of `network`: the instances it applies to (its target tags, or all of the
/// network's) are protected by it; those with one of its source tags reach them on its ports.
fn firewall(inventory: &mut Inventory, rule: &Value, name: &str, rule_id: &str, network: &str, members: &[Member]) {
    let tagged = |member: &Member, wanted: &BTreeSet<String>| member.network == network && member.tags.intersection(wanted).next().is_some();
    let targets: BTreeSet<String> = texts(&rule["targetTags"]).collect();
    let sources: BTreeSet<String> = texts(&rule["sourceTags"]).collect();
    let applies = |member: &Member| if targets.is_empty() { member.network == network } else { tagged(member, &targets) };
    let allowed: Vec<String> = rule["allowed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|allowed| {
            let protocol = text(&allowed["IPProtocol"]).unwrap_or_else(|| "all".into());
            let ports: Vec<String> = texts(&allowed["ports"]).collect();
            if ports.is_empty() { protocol } else { format!("{protocol} {}", ports.join(",")) }
        })
        .collect();
    if allowed.is_empty() {
        // A deny rule lets nothing through.
        return;
    }
    let sources_text = sources.iter().cloned().collect::<Vec<_>>().join(", ");
    let evidence = format!("firewall rule {name} allows {} from instances tagged {sources_text}", allowed.join("; "));
    for target in members.iter().filter(|member| applies(member)) {
        inventory.link(&target.resource_id, rule_id, DependencyKind::ProtectedBy, format!("firewall rule {name} applies to {}", target.resource_id), SURE);
        if sources.is_empty() {
            continue;
        }
        for source in members.iter().filter(|member| member.resource_id != target.resource_id && tagged(member, &sources)) {
            inventory.link(&source.resource_id, &target.resource_id, DependencyKind::Reaches, evidence.clone(), RULE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{compute_name, region_of};

    #[test]
    fn references_name_one_resource_however_they_are_written() {
        let full = "//compute.googleapis.com/projects/acme/global/networks/prod";
        assert_eq!(compute_name("acme", "https://www.googleapis.com/compute/v1/projects/acme/global/networks/prod", "networks"), full);
        assert_eq!(compute_name("acme", "projects/acme/global/networks/prod", "networks"), full);
        assert_eq!(compute_name("acme", "prod", "networks"), full);
        assert_eq!(region_of("europe-west1-b"), "europe-west1");
    }
}
