//! One AWS connection's estate: in each region scanned (the connection's default region, or
//! those `AURORA_DISCOVERY_AWS_REGIONS` names, or `all` enabled ones) its VPCs, subnets,
//! security groups, EC2 instances, EKS clusters, RDS instances, Lambda functions, load
//! balancers and target groups, SQS queues; and the account's S3 buckets. What is inferred
//! between them, each with its evidence:
//! - a load balancer forwarding to a target group, a target group registering an instance
//!   (`targets`, 1.0);
//! - a security-group rule that admits group A on a port: every member of A (instances,
//!   databases, clusters, functions, load balancers) reaches every member of the rule's group
//!   (`reaches`, 0.8, the rule as evidence);
//! - a resource in a security group (`protected_by`, 1.0);
//! - a Lambda environment variable naming another resource's endpoint, ARN, URL or address
//!   (`uses`, 0.9; the evidence names the variable, never its value, which may be a secret);
//! - an event source mapping: the queue invokes the function (`triggers`, 1.0);
//! - an instance, function or subnet in a subnet or VPC (`member_of`, 0.3: weak, being in one
//!   network says little about calling each other).

use std::collections::{BTreeMap, HashMap};

use aurora_adapters::clouds::aws::Aws;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::config::{ConnectionsConfig, DiscoveryConfig};
use aurora_adapters::secrets::Secret;
use aurora_events::discovery::{DependencyKind, ResourceKind};
use serde_json::Value;

use super::inventory::{edge, tags, text, texts, Inventory, Listed, RULE, SURE, WEAK};
use super::Found;

/// What a scan of one account gathers before it infers across regions.
struct Listing {
    account: String,
    inventory: Inventory,
    /// Who is in which security group.
    members: HashMap<String, Vec<String>>,
    groups: Vec<(String, Value)>,
}

impl Listing {
    fn id(&self, region: &str, kind: &str, native: &str) -> String {
        format!("aws:{}:{region}:{kind}/{native}", self.account)
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        kind: ResourceKind,
        provider_type: &'static str,
        resource_id: String,
        name: String,
        region: Option<&str>,
        tags: BTreeMap<String, String>,
        endpoint: Option<String>,
    ) {
        let (region, account) = (region.map(str::to_owned), Some(self.account.clone()));
        self.inventory.add(Listed { kind, provider_type, resource_id, name, region, account, tags, endpoint });
    }

    fn link(&mut self, from: &str, to: &str, kind: DependencyKind, evidence: String, confidence: f64) {
        self.inventory.link(from, to, kind, evidence, confidence);
    }

    fn nameable(&mut self, text: Option<String>, resource_id: &str, what: String) {
        self.inventory.nameable(text, resource_id, what);
    }
}

fn named(tags: &BTreeMap<String, String>, fallback: &str) -> String {
    tags.get("Name").cloned().unwrap_or_else(|| fallback.to_owned())
}

pub async fn scan(config: &ConnectionsConfig, discovery: &DiscoveryConfig, secret: &Secret) -> Result<Found, ProviderError> {
    let aws = Aws::for_connection(config, secret).await?;
    let (account, _) = aws.caller_identity().await?;
    let regions = match discovery.aws_regions.as_slice() {
        [] => vec![aws.default_region.clone()],
        [all] if all == "all" => aws.regions().await?,
        named => named.to_vec(),
    };
    let mut listing = Listing { account, inventory: Inventory::new("aws"), members: HashMap::new(), groups: Vec::new() };
    for region in &regions {
        list_region(&aws, region, &mut listing).await?;
    }
    for bucket in aws.s3_buckets().await? {
        let Some(name) = text(&bucket["name"]) else { continue };
        let arn = format!("arn:aws:s3:::{name}");
        let region = text(&bucket["region"]);
        listing.add(ResourceKind::Bucket, "AWS::S3::Bucket", arn.clone(), name.clone(), region.as_deref(), BTreeMap::new(), None);
        listing.nameable(Some(format!("s3://{name}")), &arn, format!("bucket {name}"));
        listing.nameable(Some(format!("{name}.s3.")), &arn, format!("bucket {name}"));
        listing.nameable(Some(arn.clone()), &arn, format!("bucket {name}"));
    }
    infer(&mut listing);
    Ok(listing.inventory.finish())
}

async fn list_region(aws: &Aws, region: &str, listing: &mut Listing) -> Result<(), ProviderError> {
    for vpc in aws.vpcs(region).await? {
        let Some(vpc_id) = text(&vpc["vpc_id"]) else { continue };
        let tags = tags(&vpc["tags"]);
        let id = listing.id(region, "vpc", &vpc_id);
        listing.add(ResourceKind::Network, "AWS::EC2::VPC", id, named(&tags, &vpc_id), Some(region), tags, None);
    }
    for subnet in aws.subnets(region).await? {
        let Some(subnet_id) = text(&subnet["subnet_id"]) else { continue };
        let tags = tags(&subnet["tags"]);
        let key = listing.id(region, "subnet", &subnet_id);
        listing.add(ResourceKind::Subnet, "AWS::EC2::Subnet", key.clone(), named(&tags, &subnet_id), Some(region), tags, None);
        if let Some(vpc_id) = text(&subnet["vpc_id"]) {
            let vpc = listing.id(region, "vpc", &vpc_id);
            listing.link(&key, &vpc, DependencyKind::MemberOf, format!("subnet {subnet_id} is in VPC {vpc_id}"), WEAK);
        }
    }
    for group in aws.security_groups(region).await? {
        let Some(group_id) = text(&group["group_id"]) else { continue };
        let tags = tags(&group["tags"]);
        let name = text(&group["name"]).unwrap_or_else(|| group_id.clone());
        let id = listing.id(region, "security-group", &group_id);
        listing.add(ResourceKind::Firewall, "AWS::EC2::SecurityGroup", id, name, Some(region), tags, None);
        listing.groups.push((region.to_owned(), group));
    }
    for instance in aws.ec2_instances(region, &[], None).await? {
        let Some(instance_id) = text(&instance["instance_id"]) else { continue };
        if instance["state"] == "terminated" {
            continue;
        }
        let tags = tags(&instance["tags"]);
        let key = listing.id(region, "instance", &instance_id);
        let endpoint = text(&instance["private_ip"]);
        let what = format!("the address of instance {}", named(&tags, &instance_id));
        listing.nameable(endpoint.clone(), &key, what.clone());
        listing.nameable(text(&instance["public_ip"]), &key, what);
        listing.add(ResourceKind::Vm, "AWS::EC2::Instance", key.clone(), named(&tags, &instance_id), Some(region), tags, endpoint);
        if let Some(subnet_id) = text(&instance["subnet_id"]) {
            let subnet = listing.id(region, "subnet", &subnet_id);
            listing.link(&key, &subnet, DependencyKind::MemberOf, format!("instance {instance_id} is in subnet {subnet_id}"), WEAK);
        }
        for group_id in texts(&instance["security_groups"]) {
            listing.members.entry(group_id).or_default().push(key.clone());
        }
    }
    for cluster in aws.eks_clusters(region, None, usize::MAX).await? {
        let (Some(arn), Some(name)) = (text(&cluster["arn"]), text(&cluster["name"])) else { continue };
        let endpoint = text(&cluster["endpoint"]).map(|url| url.trim_start_matches("https://").trim_end_matches('/').to_owned());
        listing.nameable(endpoint.clone(), &arn, format!("the endpoint of cluster {name}"));
        let tags = tags(&cluster["tags"]);
        listing.add(ResourceKind::KubernetesCluster, "AWS::EKS::Cluster", arn.clone(), name.clone(), Some(region), tags, endpoint);
        if let Some(vpc_id) = text(&cluster["vpc"]) {
            let vpc = listing.id(region, "vpc", &vpc_id);
            listing.link(&arn, &vpc, DependencyKind::MemberOf, format!("cluster {name} is in VPC {vpc_id}"), WEAK);
        }
        for group_id in texts(&cluster["security_groups"]).chain(text(&cluster["cluster_security_group"])) {
            listing.members.entry(group_id).or_default().push(arn.clone());
        }
    }
    for database in aws.rds_instances(region, None).await? {
        let Some(identifier) = text(&database["identifier"]) else { continue };
        let key = listing.id(region, "db", &identifier);
        let endpoint = text(&database["endpoint"]);
        listing.nameable(endpoint.clone(), &key, format!("the endpoint of database {identifier}"));
        listing.nameable(text(&database["arn"]), &key, format!("the ARN of database {identifier}"));
        listing.add(ResourceKind::Database, "AWS::RDS::DBInstance", key.clone(), identifier.clone(), Some(region), BTreeMap::new(), endpoint);
        if let Some(vpc_id) = text(&database["vpc_id"]) {
            let vpc = listing.id(region, "vpc", &vpc_id);
            listing.link(&key, &vpc, DependencyKind::MemberOf, format!("database {identifier} is in VPC {vpc_id}"), WEAK);
        }
        for group_id in texts(&database["security_groups"]) {
            listing.members.entry(group_id).or_default().push(key.clone());
        }
    }
    for function in aws.lambda_configurations(region).await? {
        let (Some(arn), Some(name)) = (text(&function["FunctionArn"]), text(&function["FunctionName"])) else { continue };
        listing.nameable(Some(arn.clone()), &arn, format!("the ARN of function {name}"));
        listing.add(ResourceKind::ServerlessFunction, "AWS::Lambda::Function", arn.clone(), name.clone(), Some(region), BTreeMap::new(), None);
        let vpc = &function["VpcConfig"];
        for subnet_id in texts(&vpc["SubnetIds"]) {
            let subnet = listing.id(region, "subnet", &subnet_id);
            listing.link(&arn, &subnet, DependencyKind::MemberOf, format!("function {name} runs in subnet {subnet_id}"), WEAK);
        }
        for group_id in texts(&vpc["SecurityGroupIds"]) {
            listing.members.entry(group_id).or_default().push(arn.clone());
        }
        let variables = function["Environment"]["Variables"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(variable, value)| Some((variable.clone(), value.as_str()?.to_owned())))
            .collect();
        listing.inventory.configured(&arn, "environment variable", format!("function {name}"), variables);
    }
    for url in aws.sqs_queues(region).await? {
        let Some(name) = url.rsplit('/').next().filter(|name| !name.is_empty()).map(str::to_owned) else { continue };
        let arn = format!("arn:aws:sqs:{region}:{}:{name}", listing.account);
        listing.nameable(Some(url.clone()), &arn, format!("the URL of queue {name}"));
        listing.nameable(Some(arn.clone()), &arn, format!("the ARN of queue {name}"));
        listing.add(ResourceKind::Queue, "AWS::SQS::Queue", arn, name, Some(region), BTreeMap::new(), Some(url));
    }
    for mapping in aws.lambda_event_sources(region).await? {
        let (Some(source), Some(function)) = (text(&mapping["source"]), text(&mapping["function"])) else { continue };
        // `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`: the function itself.
        let function = function.splitn(8, ':').take(7).collect::<Vec<_>>().join(":");
        let state = text(&mapping["state"]).unwrap_or_default();
        let evidence = format!("event source mapping {} ({state}) invokes {function} from {source}", text(&mapping["uuid"]).unwrap_or_default());
        listing.link(&source, &function, DependencyKind::Triggers, evidence, SURE);
    }
    for balancer in aws.load_balancers(region).await? {
        let (Some(arn), Some(name)) = (text(&balancer["arn"]), text(&balancer["name"])) else { continue };
        let endpoint = text(&balancer["dns_name"]);
        listing.nameable(endpoint.clone(), &arn, format!("the DNS name of load balancer {name}"));
        let provider_type = "AWS::ElasticLoadBalancingV2::LoadBalancer";
        listing.add(ResourceKind::LoadBalancer, provider_type, arn.clone(), name, Some(region), BTreeMap::new(), endpoint);
        for group_id in texts(&balancer["security_groups"]) {
            listing.members.entry(group_id).or_default().push(arn.clone());
        }
    }
    for group in aws.target_groups(region).await? {
        let (Some(arn), Some(name)) = (text(&group["arn"]), text(&group["name"])) else { continue };
        let provider_type = "AWS::ElasticLoadBalancingV2::TargetGroup";
        listing.add(ResourceKind::LoadBalancer, provider_type, arn.clone(), name.clone(), Some(region), BTreeMap::new(), None);
        for balancer in texts(&group["load_balancers"]) {
            listing.link(&balancer, &arn, DependencyKind::Targets, format!("load balancer {balancer} forwards to target group {name}"), SURE);
        }
        for target in group["targets"].as_array().into_iter().flatten() {
            let Some(target_id) = text(&target["id"]) else { continue };
            let port = text(&target["port"]).unwrap_or_default();
            let evidence = format!("target group {name} registers {target_id} on port {port}");
            // Instance targets name the instance, Lambda targets the function; IP targets an
            // address no resource owns for sure.
            let to = if target_id.starts_with("i-") {
                listing.id(region, "instance", &target_id)
            } else if target_id.starts_with("arn:aws:lambda:") {
                target_id.clone()
            } else {
                continue;
            };
            listing.link(&arn, &to, DependencyKind::Targets, evidence, SURE);
        }
    }
    Ok(())
}

/// The dependencies that need the whole account listed first: security-group membership and
/// reachability.
fn infer(listing: &mut Listing) {
    let mut inferred = Vec::new();
    for (group_id, inside) in &listing.members {
        let Some((region, _)) = listing.groups.iter().find(|(_, group)| group["group_id"] == group_id.as_str()) else { continue };
        let group = listing.id(region, "security-group", group_id);
        for member in inside {
            inferred.push(edge(member, &group, DependencyKind::ProtectedBy, format!("{member} is in security group {group_id}"), SURE));
        }
    }
    // A rule of group B admitting group A: A's members reach B's members on the rule's ports.
    for (_, group) in &listing.groups {
        let Some(target) = text(&group["group_id"]) else { continue };
        let name = text(&group["name"]).unwrap_or_default();
        for rule in group["ingress"].as_array().into_iter().flatten() {
            let ports = match (text(&rule["from_port"]), text(&rule["to_port"])) {
                (Some(from), Some(to)) if from == to => from,
                (Some(from), Some(to)) => format!("{from}-{to}"),
                _ => "all ports".into(),
            };
            let protocol = text(&rule["protocol"]).map(|protocol| if protocol == "-1" { "all".into() } else { protocol }).unwrap_or_default();
            for source in texts(&rule["groups"]) {
                let evidence = format!("security group {target} ({name}) allows {protocol} {ports} from security group {source}");
                for from in listing.members.get(&source).into_iter().flatten() {
                    for to in listing.members.get(&target).into_iter().flatten().filter(|to| *to != from) {
                        inferred.push(edge(from, to, DependencyKind::Reaches, evidence.clone(), RULE));
                    }
                }
            }
        }
    }
    listing.inventory.found.dependencies.extend(inferred);
}
