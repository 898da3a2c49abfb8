//! One AWS connection's estate in its default region: VPCs, subnets, security groups, EC2
//! instances, RDS instances, load balancers and target groups, and what can be inferred between
//! them:
//! - a load balancer forwarding to a target group, a target group registering an instance
//!   (`targets`, 1.0);
//! - a security-group rule that admits group A on a port: every member of A reaches every
//!   member of the rule's group (`reaches`, 0.8, the rule as evidence);
//! - a resource in a security group (`protected_by`, 1.0);
//! - an instance in a subnet, a subnet or a database in a VPC (`member_of`, 0.3: weak, being
//!   in one network says little about calling each other).

use std::collections::{BTreeMap, HashMap};

use aurora_adapters::clouds::aws::Aws;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::config::ConnectionsConfig;
use aurora_adapters::secrets::Secret;
use aurora_events::discovery::{Dependency, DependencyKind, Resource, ResourceKind};
use serde_json::Value;

use super::Found;

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|text| !text.is_empty()).map(str::to_owned)
}

fn tags(value: &Value) -> BTreeMap<String, String> {
    value.as_object().into_iter().flatten().map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned())).collect()
}

pub async fn scan(config: &ConnectionsConfig, secret: &Secret) -> Result<Found, ProviderError> {
    let aws = Aws::for_connection(config, secret).await?;
    let (account, _) = aws.caller_identity().await?;
    let region = aws.default_region.clone();
    let id = |kind: &str, native: &str| format!("aws:{account}:{region}:{kind}/{native}");
    let resource = |kind: ResourceKind, provider_type: &str, resource_id: String, name: String, tags: BTreeMap<String, String>, endpoint| {
        Resource {
            resource_id,
            provider: "aws".into(),
            kind,
            provider_type: provider_type.into(),
            name,
            region: Some(region.clone()),
            account: Some(account.clone()),
            tags,
            endpoint,
        }
    };
    let named = |tags: &BTreeMap<String, String>, fallback: &str| tags.get("Name").cloned().unwrap_or_else(|| fallback.to_owned());
    let mut found = Found::default();
    let edge = |from: &str, to: &str, kind: DependencyKind, evidence: String, confidence: f64| Dependency {
        from: from.to_owned(),
        to: to.to_owned(),
        kind,
        evidence,
        confidence,
    };
    for vpc in aws.vpcs(&region).await? {
        let Some(vpc_id) = text(&vpc["vpc_id"]) else { continue };
        let tags = tags(&vpc["tags"]);
        found.resources.push(resource(ResourceKind::Network, "AWS::EC2::VPC", id("vpc", &vpc_id), named(&tags, &vpc_id), tags, None));
    }
    for subnet in aws.subnets(&region).await? {
        let Some(subnet_id) = text(&subnet["subnet_id"]) else { continue };
        let tags = tags(&subnet["tags"]);
        let subnet_key = id("subnet", &subnet_id);
        found.resources.push(resource(ResourceKind::Subnet, "AWS::EC2::Subnet", subnet_key.clone(), named(&tags, &subnet_id), tags, None));
        if let Some(vpc_id) = text(&subnet["vpc_id"]) {
            let evidence = format!("subnet {subnet_id} is in VPC {vpc_id}");
            found.dependencies.push(edge(&subnet_key, &id("vpc", &vpc_id), DependencyKind::MemberOf, evidence, 0.3));
        }
    }
    let groups = aws.security_groups(&region).await?;
    for group in &groups {
        let Some(group_id) = text(&group["group_id"]) else { continue };
        let tags = tags(&group["tags"]);
        let name = text(&group["name"]).unwrap_or_else(|| group_id.clone());
        found.resources.push(resource(ResourceKind::Firewall, "AWS::EC2::SecurityGroup", id("security-group", &group_id), name, tags, None));
    }
    // Who is in which security group.
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for instance in aws.ec2_instances(&region, &[], None).await? {
        let Some(instance_id) = text(&instance["instance_id"]) else { continue };
        if instance["state"] == "terminated" {
            continue;
        }
        let tags = tags(&instance["tags"]);
        let key = id("instance", &instance_id);
        let endpoint = text(&instance["private_ip"]);
        found.resources.push(resource(ResourceKind::Vm, "AWS::EC2::Instance", key.clone(), named(&tags, &instance_id), tags, endpoint));
        if let Some(subnet_id) = text(&instance["subnet_id"]) {
            let evidence = format!("instance {instance_id} is in subnet {subnet_id}");
            found.dependencies.push(edge(&key, &id("subnet", &subnet_id), DependencyKind::MemberOf, evidence, 0.3));
        }
        for group_id in instance["security_groups"].as_array().into_iter().flatten().filter_map(text) {
            members.entry(group_id).or_default().push(key.clone());
        }
    }
    for database in aws.rds_instances(&region, None).await? {
        let Some(identifier) = text(&database["identifier"]) else { continue };
        let key = id("db", &identifier);
        found.resources.push(resource(
            ResourceKind::Database,
            "AWS::RDS::DBInstance",
            key.clone(),
            identifier.clone(),
            BTreeMap::new(),
            text(&database["endpoint"]),
        ));
        if let Some(vpc_id) = text(&database["vpc_id"]) {
            let evidence = format!("database {identifier} is in VPC {vpc_id}");
            found.dependencies.push(edge(&key, &id("vpc", &vpc_id), DependencyKind::MemberOf, evidence, 0.3));
        }
        for group_id in database["security_groups"].as_array().into_iter().flatten().filter_map(text) {
            members.entry(group_id).or_default().push(key.clone());
        }
    }
    for balancer in aws.load_balancers(&region).await? {
        let (Some(arn), Some(name)) = (text(&balancer["arn"]), text(&balancer["name"])) else { continue };
        found.resources.push(resource(
            ResourceKind::LoadBalancer,
            "AWS::ElasticLoadBalancingV2::LoadBalancer",
            arn,
            name,
            BTreeMap::new(),
            text(&balancer["dns_name"]),
        ));
    }
    for group in aws.target_groups(&region).await? {
        let (Some(arn), Some(name)) = (text(&group["arn"]), text(&group["name"])) else { continue };
        found.resources.push(resource(
            ResourceKind::LoadBalancer,
            "AWS::ElasticLoadBalancingV2::TargetGroup",
            arn.clone(),
            name.clone(),
            BTreeMap::new(),
            None,
        ));
        for balancer in group["load_balancers"].as_array().into_iter().flatten().filter_map(text) {
            let evidence = format!("load balancer {balancer} forwards to target group {name}");
            found.dependencies.push(edge(&balancer, &arn, DependencyKind::Targets, evidence, 1.0));
        }
        for target in group["targets"].as_array().into_iter().flatten() {
            let Some(target_id) = text(&target["id"]) else { continue };
            // Instance targets name the instance; IP and Lambda targets are not mapped yet.
            if !target_id.starts_with("i-") {
                continue;
            }
            let port = text(&target["port"]).unwrap_or_default();
            let evidence = format!("target group {name} registers {target_id} on port {port}");
            found.dependencies.push(edge(&arn, &id("instance", &target_id), DependencyKind::Targets, evidence, 1.0));
        }
    }
    for (group_id, inside) in &members {
        for member in inside {
            let evidence = format!("{member} is in security group {group_id}");
            found.dependencies.push(edge(member, &id("security-group", group_id), DependencyKind::ProtectedBy, evidence, 1.0));
        }
    }
    // A rule of group B admitting group A: A's members reach B's members on the rule's ports.
    for group in &groups {
        let Some(target) = text(&group["group_id"]) else { continue };
        let name = text(&group["name"]).unwrap_or_default();
        for rule in group["ingress"].as_array().into_iter().flatten() {
            let ports = match (text(&rule["from_port"]), text(&rule["to_port"])) {
                (Some(from), Some(to)) if from == to => from,
                (Some(from), Some(to)) => format!("{from}-{to}"),
                _ => "all ports".into(),
            };
            let protocol = text(&rule["protocol"]).map(|protocol| if protocol == "-1" { "all".into() } else { protocol }).unwrap_or_default();
            for source in rule["groups"].as_array().into_iter().flatten().filter_map(text) {
                let evidence = format!("security group {target} ({name}) allows {protocol} {ports} from security group {source}");
                for from in members.get(&source).into_iter().flatten() {
                    for to in members.get(&target).into_iter().flatten().filter(|to| *to != from) {
                        found.dependencies.push(edge(from, to, DependencyKind::Reaches, evidence.clone(), 0.8));
                    }
                }
            }
        }
    }
    found.dependencies.sort_by(|a, b| (&a.from, &a.to, a.kind).cmp(&(&b.from, &b.to, b.kind)));
    found.dependencies.dedup_by(|a, b| (&a.from, &a.to, a.kind) == (&b.from, &b.to, b.kind));
    Ok(found)
}
