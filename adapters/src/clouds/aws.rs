//! AWS: Signature Version 4 over the services' own wire protocols (the Query API's XML for STS,
//! EC2, RDS, ELB and SQS; REST XML for S3; REST JSON for EKS and Lambda; JSON 1.1 for CloudWatch Logs). A few hundred lines
//! of our own instead of the SDK, whose crates cost minutes of every clean build; moto serves the
//! same protocols in the tests and checks the signatures.
//!
//! A connection is either an access key pair or — the recommended way — a role that Aurora
//! assumes through STS with the organisation's external id, using Aurora's own AWS identity
//! (`AURORA_AWS_ACCESS_KEY_ID`, `AURORA_AWS_SECRET_ACCESS_KEY`). Assumed credentials live for one
//! use.

use std::time::Duration;

use aurora_events::connection::{InventoryItem, MAX_INVENTORY_ITEMS};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{http_client, ProviderError, Verified};
use crate::config::ConnectionsConfig;
use crate::secrets::Secret;

const PROVIDER: &str = "AWS";
/// Most pages one listing follows (a page holds 50 to 1 000 items, by service).
pub const MAX_PAGES: usize = 200;

/// Keys that sign requests.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// A client acting with one set of credentials.
pub struct Aws {
    http: reqwest::Client,
    endpoint: Option<String>,
    pub default_region: String,
    timeout: Duration,
    credentials: Credentials,
}

impl Aws {
    pub fn new(config: &ConnectionsConfig, credentials: Credentials) -> Self {
        Self {
            http: http_client(config),
            endpoint: config.aws_endpoint.clone(),
            default_region: config.aws_region.clone(),
            timeout: config.provider_timeout,
            credentials,
        }
    }

    /// The client a stored connection's secret gives: its keys, or its role assumed now.
    pub async fn for_connection(config: &ConnectionsConfig, secret: &Secret) -> Result<Self, ProviderError> {
        if let Some(role_arn) = secret.get("role_arn") {
            let external_id = secret.get("external_id").unwrap_or_default();
            let base = aurora_identity(config)?;
            let credentials = Aws::new(config, base).assume_role(role_arn, external_id).await?;
            return Ok(Aws::new(config, credentials));
        }
        let access_key_id = secret.get("access_key_id").ok_or_else(|| ProviderError::invalid("the AWS connection has no access key"))?;
        let secret_access_key =
            secret.get("secret_access_key").ok_or_else(|| ProviderError::invalid("the AWS connection has no secret access key"))?;
        Ok(Aws::new(
            config,
            Credentials { access_key_id: access_key_id.into(), secret_access_key: secret_access_key.into(), session_token: None },
        ))
    }

    /// The environment that gives a child process (the Terraform CLI and its AWS provider) these
    /// credentials, the default region and the configured endpoint.
    pub fn environment(&self) -> super::RunEnvironment {
        let credentials = &self.credentials;
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key.clone()),
            ("AWS_REGION", self.default_region.clone()),
            ("AWS_DEFAULT_REGION", self.default_region.clone()),
        ];
        let mut secret = vec![credentials.secret_access_key.clone()];
        if let Some(token) = &credentials.session_token {
            env.push(("AWS_SESSION_TOKEN", token.clone()));
            secret.push(token.clone());
        }
        if let Some(endpoint) = &self.endpoint {
            env.push(("AWS_ENDPOINT_URL", endpoint.clone()));
        }
        super::RunEnvironment { vars: env, secrets: secret }
    }

    fn base_url(&self, service: &str, region: &str) -> String {
        match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None if service == "sts" => format!("https://sts.{region}.amazonaws.com"),
            None => format!("https://{service}.{region}.amazonaws.com"),
        }
    }

    /// A Query API call (STS, EC2, RDS): form parameters in, XML out.
    pub async fn query(
        &self,
        service: &str,
        region: &str,
        action: &str,
        version: &str,
        params: &[(&str, String)],
    ) -> Result<String, ProviderError> {
        let mut pairs: Vec<(String, String)> = vec![("Action".into(), action.into()), ("Version".into(), version.into())];
        pairs.extend(params.iter().map(|(name, value)| ((*name).to_owned(), value.clone())));
        let body = pairs.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect::<Vec<_>>().join("&");
        let url = format!("{}/", self.base_url(service, region));
        let request = self.signed(
            "POST",
            &url,
            &[],
            Some(("application/x-www-form-urlencoded; charset=utf-8", body.into_bytes())),
            service,
            region,
            &[],
        )?;
        self.send(request).await
    }

    /// A REST JSON GET (EKS, Lambda).
    pub async fn rest_json(&self, service: &str, region: &str, path: &str, query: &[(&str, String)]) -> Result<Value, ProviderError> {
        self.rest("GET", service, region, path, query, None).await
    }

    /// A REST JSON call with any method and an optional JSON body.
    pub async fn rest(
        &self,
        method: &str,
        service: &str,
        region: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.base_url(service, region));
        let body = body.map(|body| ("application/json", serde_json::to_vec(body).expect("JSON serializes")));
        let request = self.signed(method, &url, query, body, service, region, &[])?;
        parse_json(&self.send(request).await?)
    }

    /// A Query API listing, page after page: each answer's `token_tag` is sent back as
    /// `token_param` until an answer has none (at most [`MAX_PAGES`] pages).
    async fn query_pages<'a>(
        &self,
        service: &str,
        region: &str,
        action: &str,
        version: &str,
        params: &[(&'a str, String)],
        (token_tag, token_param): (&str, &'a str),
    ) -> Result<Vec<String>, ProviderError> {
        let mut pages = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut sent = params.to_vec();
            sent.extend(token.take().map(|token| (token_param, token)));
            let xml = self.query(service, region, action, version, &sent).await?;
            token = text_of(&parse_xml(&xml)?, token_tag).filter(|token| !token.is_empty());
            pages.push(xml);
            if token.is_none() || pages.len() >= MAX_PAGES {
                return Ok(pages);
            }
        }
    }

    /// A REST JSON listing, page after page: the `items` of each answer, its `token_field`
    /// sent back as the `token_param` query parameter (at most [`MAX_PAGES`] pages).
    async fn rest_pages(
        &self,
        service: &str,
        region: &str,
        path: &str,
        items: &str,
        (token_field, token_param): (&str, &str),
    ) -> Result<Vec<Value>, ProviderError> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let query: Vec<(&str, String)> = token.take().map(|token| (token_param, token)).into_iter().collect();
            let mut page = self.rest_json(service, region, path, &query).await?;
            listed.extend(page[items].as_array_mut().map(std::mem::take).unwrap_or_default());
            token = page[token_field].as_str().filter(|token| !token.is_empty()).map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        Ok(listed)
    }

    /// A JSON 1.1 call (CloudWatch Logs): `X-Amz-Target: <target>`.
    pub async fn json_rpc(&self, service: &str, region: &str, target: &str, body: &Value) -> Result<Value, ProviderError> {
        let url = format!("{}/", self.base_url(service, region));
        let payload = serde_json::to_vec(body).expect("JSON serializes");
        let request =
            self.signed("POST", &url, &[], Some(("application/x-amz-json-1.1", payload)), service, region, &[("x-amz-target", target)])?;
        parse_json(&self.send(request).await?)
    }

    /// A request signed with Signature Version 4.
    #[allow(clippy::too_many_arguments)]
    fn signed(
        &self,
        method: &str,
        url: &str,
        query: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
        service: &str,
        region: &str,
        extra_headers: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let parsed = reqwest::Url::parse(url).map_err(|error| ProviderError::invalid(format!("the AWS endpoint is not a URL: {error}")))?;
        let host = match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        };
        let now = Utc::now();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let date = now.format("%Y%m%d").to_string();
        let mut sorted_query: Vec<(String, String)> = query.iter().map(|(name, value)| (encode(name), encode(value))).collect();
        sorted_query.sort();
        let canonical_query = sorted_query.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&");
        let canonical_path = parsed.path().split('/').map(encode).collect::<Vec<_>>().join("/");
        let payload: &[u8] = body.as_ref().map(|(_, bytes)| bytes.as_slice()).unwrap_or_default();
        let payload_hash = hex::encode(Sha256::digest(payload));
        let mut headers: Vec<(String, String)> = vec![("host".into(), host), ("x-amz-date".into(), amz_date.clone())];
        if let Some((content_type, _)) = &body {
            headers.push(("content-type".into(), (*content_type).to_owned()));
        }
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.clone()));
        }
        if service == "s3" {
            headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        }
        headers.extend(extra_headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(name, value)| format!("{name}:{}\n", value.trim())).collect();
        let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
        let canonical_request =
            format!("{method}\n{canonical_path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign =
            format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex::encode(Sha256::digest(canonical_request.as_bytes())));
        let mut key = hmac(format!("AWS4{}", self.credentials.secret_access_key).as_bytes(), date.as_bytes());
        for part in [region, service, "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.credentials.access_key_id
        );
        let target =
            if canonical_query.is_empty() { url.to_owned() } else { format!("{}?{canonical_query}", url.split('?').next().unwrap_or(url)) };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a known method");
        let mut request = self.http.request(method, target).header("authorization", authorization);
        for (name, value) in headers.into_iter().filter(|(name, _)| name != "host") {
            request = request.header(name, value);
        }
        if let Some((_, bytes)) = body {
            request = request.body(bytes);
        }
        Ok(request)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, ProviderError> {
        let response = request.send().await.map_err(|error| super::transport_error(PROVIDER, self.timeout, &error))?;
        let status = response.status().as_u16();
        let error_type = response.headers().get("x-amzn-errortype").and_then(|value| value.to_str().ok()).map(str::to_owned);
        let body = response.text().await.map_err(|error| super::transport_error(PROVIDER, self.timeout, &error))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let (code, message) = error_of(&body, error_type.as_deref());
        Err(classify(status, &code, message))
    }

    /// STS GetCallerIdentity: the account and ARN the credentials act as.
    pub async fn caller_identity(&self) -> Result<(String, String), ProviderError> {
        let xml = self.query("sts", &self.default_region, "GetCallerIdentity", "2011-06-15", &[]).await?;
        let document = parse_xml(&xml)?;
        Ok((text_of(&document, "Account").unwrap_or_default(), text_of(&document, "Arn").unwrap_or_default()))
    }

    /// STS AssumeRole with the organisation's external id, for one use (15 minutes at most).
    pub async fn assume_role(&self, role_arn: &str, external_id: &str) -> Result<Credentials, ProviderError> {
        let params = [
            ("RoleArn", role_arn.to_owned()),
            ("RoleSessionName", "aurora".to_owned()),
            ("ExternalId", external_id.to_owned()),
            ("DurationSeconds", "900".to_owned()),
        ];
        let xml = self.query("sts", &self.default_region, "AssumeRole", "2011-06-15", &params).await?;
        let document = parse_xml(&xml)?;
        let field = |name: &str| {
            text_of(&document, name)
                .ok_or_else(|| ProviderError::Unavailable { provider: PROVIDER, detail: format!("AssumeRole answered without {name}") })
        };
        Ok(Credentials {
            access_key_id: field("AccessKeyId")?,
            secret_access_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        })
    }

    /// EC2 DescribeRegions: the regions enabled for the account.
    pub async fn regions(&self) -> Result<Vec<String>, ProviderError> {
        let xml = self.query("ec2", &self.default_region, "DescribeRegions", "2016-11-15", &[]).await?;
        let document = parse_xml(&xml)?;
        Ok(document
            .descendants()
            .filter(|node| node.has_tag_name("regionName"))
            .filter_map(|node| node.text().map(str::to_owned))
            .collect())
    }

    /// EC2 DescribeInstances, optionally of some instance ids or one state.
    pub async fn ec2_instances(&self, region: &str, instance_ids: &[String], state: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        let names: Vec<String> = (1..=instance_ids.len()).map(|index| format!("InstanceId.{index}")).collect();
        for (name, id) in names.iter().zip(instance_ids) {
            params.push((name.as_str(), id.clone()));
        }
        if let Some(state) = state {
            params.push(("Filter.1.Name", "instance-state-name".into()));
            params.push(("Filter.1.Value.1", state.to_owned()));
        }
        let mut instances = Vec::new();
        for xml in self.query_pages("ec2", region, "DescribeInstances", "2016-11-15", &params, ("nextToken", "NextToken")).await? {
            let document = parse_xml(&xml)?;
            instances.extend(Self::instances_of(&document));
        }
        Ok(instances)
    }

    fn instances_of(document: &roxmltree::Document<'_>) -> Vec<Value> {
        document
            .descendants()
            .filter(|node| node.has_tag_name("item") && node.parent().is_some_and(|parent| parent.has_tag_name("instancesSet")))
            .map(|instance| {
                let child = |name: &str| child_text(&instance, name);
                let tags: serde_json::Map<String, Value> = instance
                    .children()
                    .filter(|node| node.has_tag_name("tagSet"))
                    .flat_map(|set| set.children().filter(|node| node.has_tag_name("item")))
                    .filter_map(|tag| Some((child_text(&tag, "key")?, Value::String(child_text(&tag, "value").unwrap_or_default()))))
                    .collect();
                let state = instance.children().find(|node| node.has_tag_name("instanceState")).and_then(|node| child_text(&node, "name"));
                let groups: Vec<String> = instance
                    .children()
                    .filter(|node| node.has_tag_name("groupSet"))
                    .flat_map(|set| set.children().filter(|node| node.has_tag_name("item")))
                    .filter_map(|group| child_text(&group, "groupId"))
                    .collect();
                json!({
                    "instance_id": child("instanceId"), "type": child("instanceType"), "state": state,
                    "private_ip": child("privateIpAddress"), "public_ip": child("ipAddress"), "vpc_id": child("vpcId"),
                    "subnet_id": child("subnetId"), "image_id": child("imageId"), "launch_time": child("launchTime"), "tags": tags,
                    "security_groups": groups,
                })
            })
            .collect()
    }

    /// RDS DescribeDBInstances, optionally of one instance.
    pub async fn rds_instances(&self, region: &str, identifier: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let params: Vec<(&str, String)> = identifier.map(|id| ("DBInstanceIdentifier", id.to_owned())).into_iter().collect();
        let mut instances = Vec::new();
        for xml in self.query_pages("rds", region, "DescribeDBInstances", "2014-10-31", &params, ("Marker", "Marker")).await? {
            instances.extend(Self::databases_of(&parse_xml(&xml)?));
        }
        Ok(instances)
    }

    fn databases_of(document: &roxmltree::Document<'_>) -> Vec<Value> {
        document
            .descendants()
            .filter(|node| node.has_tag_name("DBInstance"))
            .map(|instance| {
                let child = |name: &str| child_text(&instance, name);
                let endpoint = instance.children().find(|node| node.has_tag_name("Endpoint"));
                let groups: Vec<String> = instance
                    .descendants()
                    .filter(|node| node.has_tag_name("VpcSecurityGroupMembership"))
                    .filter_map(|membership| child_text(&membership, "VpcSecurityGroupId"))
                    .collect();
                let vpc =
                    instance.descendants().find(|node| node.has_tag_name("DBSubnetGroup")).and_then(|group| child_text(&group, "VpcId"));
                json!({
                    "identifier": child("DBInstanceIdentifier"), "engine": child("Engine"), "engine_version": child("EngineVersion"),
                    "class": child("DBInstanceClass"), "status": child("DBInstanceStatus"), "multi_az": child("MultiAZ"),
                    "storage_gb": child("AllocatedStorage"),
                    "endpoint": endpoint.and_then(|node| child_text(&node, "Address")),
                    "port": endpoint.and_then(|node| child_text(&node, "Port")),
                    "arn": child("DBInstanceArn"), "security_groups": groups, "vpc_id": vpc,
                })
            })
            .collect()
    }

    /// EC2 DescribeVpcs.
    pub async fn vpcs(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let xml = self.query("ec2", region, "DescribeVpcs", "2016-11-15", &[]).await?;
        let document = parse_xml(&xml)?;
        Ok(items_of(&document, "vpcSet")
            .map(|vpc| json!({ "vpc_id": child_text(&vpc, "vpcId"), "cidr": child_text(&vpc, "cidrBlock"), "tags": tags_of(&vpc) }))
            .collect())
    }

    /// EC2 DescribeSubnets.
    pub async fn subnets(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let xml = self.query("ec2", region, "DescribeSubnets", "2016-11-15", &[]).await?;
        let document = parse_xml(&xml)?;
        Ok(items_of(&document, "subnetSet")
            .map(|subnet| {
                json!({
                    "subnet_id": child_text(&subnet, "subnetId"), "vpc_id": child_text(&subnet, "vpcId"),
                    "cidr": child_text(&subnet, "cidrBlock"), "zone": child_text(&subnet, "availabilityZone"), "tags": tags_of(&subnet),
                })
            })
            .collect())
    }

    /// EC2 DescribeSecurityGroups, with each group's ingress rules (protocol, ports, the groups
    /// and address ranges they admit).
    pub async fn security_groups(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let xml = self.query("ec2", region, "DescribeSecurityGroups", "2016-11-15", &[]).await?;
        let document = parse_xml(&xml)?;
        Ok(items_of(&document, "securityGroupInfo")
            .map(|group| {
                let ingress: Vec<Value> = group
                    .children()
                    .filter(|node| node.has_tag_name("ipPermissions"))
                    .flat_map(|set| set.children().filter(|node| node.has_tag_name("item")))
                    .map(|rule| {
                        let nested = |set: &str, field: &str| -> Vec<String> {
                            rule.children()
                                .filter(|node| node.has_tag_name(set))
                                .flat_map(|set| set.children().filter(|node| node.has_tag_name("item")))
                                .filter_map(|item| child_text(&item, field))
                                .collect()
                        };
                        json!({
                            "protocol": child_text(&rule, "ipProtocol"), "from_port": child_text(&rule, "fromPort"),
                            "to_port": child_text(&rule, "toPort"), "groups": nested("groups", "groupId"), "cidrs": nested("ipRanges", "cidrIp"),
                        })
                    })
                    .collect();
                json!({
                    "group_id": child_text(&group, "groupId"), "name": child_text(&group, "groupName"),
                    "vpc_id": child_text(&group, "vpcId"), "ingress": ingress, "tags": tags_of(&group),
                })
            })
            .collect())
    }

    /// Elastic Load Balancing v2 DescribeLoadBalancers.
    pub async fn load_balancers(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let mut balancers = Vec::new();
        for xml in
            self.query_pages("elasticloadbalancing", region, "DescribeLoadBalancers", "2015-12-01", &[], ("NextMarker", "Marker")).await?
        {
            let document = parse_xml(&xml)?;
            balancers.extend(members_of(&document, "LoadBalancers").map(|balancer| {
                let groups: Vec<String> = balancer
                    .children()
                    .filter(|node| node.has_tag_name("SecurityGroups"))
                    .flat_map(|set| set.children().filter(|node| node.has_tag_name("member")))
                    .filter_map(|member| member.text().map(str::to_owned))
                    .collect();
                json!({
                    "arn": child_text(&balancer, "LoadBalancerArn"), "name": child_text(&balancer, "LoadBalancerName"),
                    "dns_name": child_text(&balancer, "DNSName"), "type": child_text(&balancer, "Type"),
                    "scheme": child_text(&balancer, "Scheme"), "vpc_id": child_text(&balancer, "VpcId"), "security_groups": groups,
                })
            }));
        }
        Ok(balancers)
    }

    /// Elastic Load Balancing v2 DescribeTargetGroups, then DescribeTargetHealth of each: the
    /// group, the load balancers that send to it, and its registered targets.
    pub async fn target_groups(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let mut groups = Vec::new();
        for xml in
            self.query_pages("elasticloadbalancing", region, "DescribeTargetGroups", "2015-12-01", &[], ("NextMarker", "Marker")).await?
        {
            let document = parse_xml(&xml)?;
            groups.extend(members_of(&document, "TargetGroups").map(|group| {
                let balancers: Vec<String> = group
                    .children()
                    .filter(|node| node.has_tag_name("LoadBalancerArns"))
                    .flat_map(|set| set.children().filter(|node| node.has_tag_name("member")))
                    .filter_map(|member| member.text().map(str::to_owned))
                    .collect();
                json!({
                    "arn": child_text(&group, "TargetGroupArn"), "name": child_text(&group, "TargetGroupName"),
                    "protocol": child_text(&group, "Protocol"), "port": child_text(&group, "Port"),
                    "target_type": child_text(&group, "TargetType"), "load_balancers": balancers,
                })
            }));
        }
        for group in &mut groups {
            let Some(arn) = group["arn"].as_str().map(str::to_owned) else { continue };
            let xml = self.query("elasticloadbalancing", region, "DescribeTargetHealth", "2015-12-01", &[("TargetGroupArn", arn)]).await?;
            let document = parse_xml(&xml)?;
            let targets: Vec<Value> = document
                .descendants()
                .filter(|node| node.has_tag_name("Target"))
                .map(|target| json!({ "id": child_text(&target, "Id"), "port": child_text(&target, "Port") }))
                .collect();
            group["targets"] = Value::Array(targets);
        }
        Ok(groups)
    }

    /// EKS ListClusters, then DescribeCluster of each (at most `limit`).
    pub async fn eks_clusters(&self, region: &str, name: Option<&str>, limit: usize) -> Result<Vec<Value>, ProviderError> {
        let names: Vec<String> = match name {
            Some(name) => vec![name.to_owned()],
            None => self
                .rest_pages("eks", region, "/clusters", "clusters", ("nextToken", "nextToken"))
                .await?
                .iter()
                .filter_map(|name| name.as_str().map(str::to_owned))
                .take(limit)
                .collect(),
        };
        let mut clusters = Vec::new();
        for name in names {
            let described = self.rest_json("eks", region, &format!("/clusters/{name}"), &[]).await?;
            let cluster = &described["cluster"];
            clusters.push(json!({
                "name": cluster["name"], "status": cluster["status"], "version": cluster["version"], "endpoint": cluster["endpoint"],
                "arn": cluster["arn"], "role_arn": cluster["roleArn"], "created_at": cluster["createdAt"],
                "vpc": cluster["resourcesVpcConfig"]["vpcId"], "subnets": cluster["resourcesVpcConfig"]["subnetIds"],
                "security_groups": cluster["resourcesVpcConfig"]["securityGroupIds"],
                "cluster_security_group": cluster["resourcesVpcConfig"]["clusterSecurityGroupId"], "tags": cluster["tags"],
            }));
        }
        Ok(clusters)
    }

    /// Lambda ListFunctions, or GetFunction of one.
    pub async fn lambda_functions(&self, region: &str, name: Option<&str>) -> Result<Vec<Value>, ProviderError> {
        let summarize = |function: &Value| {
            json!({
                "name": function["FunctionName"], "runtime": function["Runtime"], "handler": function["Handler"],
                "memory_mb": function["MemorySize"], "timeout_s": function["Timeout"], "last_modified": function["LastModified"],
                "arn": function["FunctionArn"], "role": function["Role"],
                // Variable names only: their values may be secrets.
                "environment_variables": function["Environment"]["Variables"].as_object().map(|variables| variables.keys().cloned().collect::<Vec<_>>()),
            })
        };
        match name {
            Some(name) => {
                let function = self.rest_json("lambda", region, &format!("/2015-03-31/functions/{name}"), &[]).await?;
                Ok(vec![summarize(&function["Configuration"])])
            }
            None => Ok(self.lambda_configurations(region).await?.iter().map(summarize).collect()),
        }
    }

    /// Lambda ListFunctions, every page: each function's whole configuration, the values of
    /// its environment variables included. Those may be secrets: for inference, never to keep.
    pub async fn lambda_configurations(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        self.rest_pages("lambda", region, "/2015-03-31/functions/", "Functions", ("NextMarker", "Marker")).await
    }

    /// Lambda ListEventSourceMappings, every page: which queue or stream invokes which function.
    pub async fn lambda_event_sources(&self, region: &str) -> Result<Vec<Value>, ProviderError> {
        let mappings = self
            .rest_pages("lambda", region, "/2015-03-31/event-source-mappings/", "EventSourceMappings", ("NextMarker", "Marker"))
            .await?;
        Ok(mappings
            .iter()
            .map(|mapping| {
                json!({ "source": mapping["EventSourceArn"], "function": mapping["FunctionArn"], "state": mapping["State"], "uuid": mapping["UUID"] })
            })
            .collect())
    }

    /// SQS ListQueues, every page: the queues' URLs.
    pub async fn sqs_queues(&self, region: &str) -> Result<Vec<String>, ProviderError> {
        let params = [("MaxResults", "1000".to_owned())];
        let mut urls = Vec::new();
        for xml in self.query_pages("sqs", region, "ListQueues", "2012-11-05", &params, ("NextToken", "NextToken")).await? {
            let document = parse_xml(&xml)?;
            urls.extend(
                document.descendants().filter(|node| node.has_tag_name("QueueUrl")).filter_map(|node| node.text().map(str::to_owned)),
            );
        }
        Ok(urls)
    }

    /// S3 ListBuckets: the account's buckets, with their region when the answer names it.
    pub async fn s3_buckets(&self) -> Result<Vec<Value>, ProviderError> {
        let url = format!("{}/", self.base_url("s3", &self.default_region));
        let request = self.signed("GET", &url, &[], None, "s3", &self.default_region, &[])?;
        let xml = self.send(request).await?;
        let document = parse_xml(&xml)?;
        Ok(document
            .descendants()
            .filter(|node| node.has_tag_name("Bucket"))
            .map(|bucket| {
                json!({ "name": child_text(&bucket, "Name"), "created": child_text(&bucket, "CreationDate"), "region": child_text(&bucket, "BucketRegion") })
            })
            .collect())
    }

    /// CloudWatch Logs FilterLogEvents over a window, newest pages first up to `limit` events.
    pub async fn log_events(
        &self,
        region: &str,
        log_group: &str,
        filter_pattern: Option<&str>,
        start_ms: i64,
        end_ms: i64,
        limit: usize,
    ) -> Result<Vec<Value>, ProviderError> {
        let mut body = json!({ "logGroupName": log_group, "startTime": start_ms, "endTime": end_ms, "limit": limit.min(10_000) });
        if let Some(pattern) = filter_pattern.filter(|pattern| !pattern.is_empty()) {
            body["filterPattern"] = Value::String(pattern.to_owned());
        }
        let answer = self.json_rpc("logs", region, "Logs_20140328.FilterLogEvents", &body).await?;
        Ok(answer["events"]
            .as_array()
            .into_iter()
            .flatten()
            .take(limit)
            .map(|event| json!({ "timestamp": event["timestamp"], "stream": event["logStreamName"], "message": event["message"] }))
            .collect())
    }
}

/// Aurora's own AWS identity, which assumes the roles teams create for it.
fn aurora_identity(config: &ConnectionsConfig) -> Result<Credentials, ProviderError> {
    match (&config.aws_access_key_id, &config.aws_secret_access_key) {
        (Some(access_key_id), Some(secret)) => Ok(Credentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: secrecy::ExposeSecret::expose_secret(secret).to_owned(),
            session_token: None,
        }),
        _ => Err(ProviderError::invalid(
            "this installation has no AWS identity of its own to assume roles with (AURORA_AWS_ACCESS_KEY_ID, AURORA_AWS_SECRET_ACCESS_KEY); connect with an access key pair instead",
        )),
    }
}

/// The external id a role trusted by Aurora must require for this organisation: stable, unique
/// per organisation, and never chosen by the organisation itself.
pub fn external_id(org_id: uuid::Uuid) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5a0c_77d2_1f4b_4e1a_8c33_9b2d_71e0_a6f4);
    format!("aurora-{}", uuid::Uuid::new_v5(&NAMESPACE, org_id.as_bytes()).simple())
}

/// Checks keys (or a role) against STS before they are kept.
pub async fn verify(config: &ConnectionsConfig, org_id: uuid::Uuid, input: &Value) -> Result<Verified, ProviderError> {
    let field = |name: &str| super::optional_field(input, name);
    let secret = match (field("role_arn"), field("access_key_id"), field("secret_access_key")) {
        (Some(role_arn), None, None) => {
            if !role_arn.starts_with("arn:aws:iam::") || !role_arn.contains(":role/") {
                return Err(ProviderError::invalid("`role_arn` must be an IAM role ARN, arn:aws:iam::<account>:role/<name>"));
            }
            Secret::new().with("role_arn", role_arn).with("external_id", external_id(org_id))
        }
        (None, Some(access_key_id), Some(secret_access_key)) => {
            Secret::new().with("access_key_id", access_key_id).with("secret_access_key", secret_access_key)
        }
        _ => return Err(ProviderError::invalid("give either `role_arn` (recommended) or both `access_key_id` and `secret_access_key`")),
    };
    let aws = Aws::for_connection(config, &secret).await?;
    let (account, arn) = aws.caller_identity().await?;
    Ok(Verified { account: format!("{account} ({arn})"), secret, expires_at: None, scopes: Vec::new() })
}

/// The account and its regions.
pub async fn inventory(config: &ConnectionsConfig, secret: &Secret) -> Result<Vec<InventoryItem>, ProviderError> {
    let aws = Aws::for_connection(config, secret).await?;
    let (account, arn) = aws.caller_identity().await?;
    let mut items = vec![InventoryItem { kind: "account".into(), id: account, name: Some(arn) }];
    for region in aws.regions().await?.into_iter().take(MAX_INVENTORY_ITEMS - 1) {
        items.push(InventoryItem { kind: "region".into(), id: region, name: None });
    }
    Ok(items)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants it.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => encoded.push(byte as char),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

fn parse_xml(xml: &str) -> Result<roxmltree::Document<'_>, ProviderError> {
    roxmltree::Document::parse(xml)
        .map_err(|error| ProviderError::Unavailable { provider: PROVIDER, detail: format!("an answer that is not XML: {error}") })
}

fn parse_json(body: &str) -> Result<Value, ProviderError> {
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body)
        .map_err(|error| ProviderError::Unavailable { provider: PROVIDER, detail: format!("an answer that is not JSON: {error}") })
}

fn text_of(document: &roxmltree::Document<'_>, tag: &str) -> Option<String> {
    document.descendants().find(|node| node.has_tag_name(tag)).and_then(|node| node.text()).map(str::to_owned)
}

/// The `item`s directly under each `set` element of `document`.
fn items_of<'a, 'input>(document: &'a roxmltree::Document<'input>, set: &'a str) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    document.descendants().filter(move |node| node.has_tag_name("item") && node.parent().is_some_and(|parent| parent.has_tag_name(set)))
}

/// The `member`s directly under each `list` element of a Query API answer.
fn members_of<'a, 'input>(
    document: &'a roxmltree::Document<'input>,
    list: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    document.descendants().filter(move |node| node.has_tag_name("member") && node.parent().is_some_and(|parent| parent.has_tag_name(list)))
}

/// A resource's `tagSet`, as a map.
fn tags_of(node: &roxmltree::Node<'_, '_>) -> serde_json::Map<String, Value> {
    node.children()
        .filter(|child| child.has_tag_name("tagSet"))
        .flat_map(|set| set.children().filter(|child| child.has_tag_name("item")))
        .filter_map(|tag| Some((child_text(&tag, "key")?, Value::String(child_text(&tag, "value").unwrap_or_default()))))
        .collect()
}

fn child_text(node: &roxmltree::Node<'_, '_>, tag: &str) -> Option<String> {
    node.children().find(|child| child.has_tag_name(tag)).and_then(|child| child.text()).map(str::to_owned)
}

/// The error code and message of an AWS error answer in any of its protocols.
fn error_of(body: &str, error_type: Option<&str>) -> (String, String) {
    if let Ok(document) = roxmltree::Document::parse(body) {
        let code = text_of(&document, "Code").unwrap_or_default();
        let message = text_of(&document, "Message").unwrap_or_default();
        return (code, message);
    }
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = error_type
        .map(str::to_owned)
        .or_else(|| value["__type"].as_str().map(str::to_owned))
        .or_else(|| value["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    // `com.amazonaws.logs#ResourceNotFoundException` and `ResourceNotFoundException:http://...`.
    let code = code.rsplit('#').next().unwrap_or_default().split(':').next().unwrap_or_default().to_owned();
    let message = value["message"].as_str().or_else(|| value["Message"].as_str()).unwrap_or_default().to_owned();
    (code, message)
}

fn classify(status: u16, code: &str, message: String) -> ProviderError {
    let detail = if message.is_empty() { format!("{code} (HTTP {status})") } else { format!("{code}: {}", super::cut(&message, 300)) };
    match code {
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "AuthFailure"
        | "UnrecognizedClientException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidAccessKeyId"
        | "IncompleteSignature" => ProviderError::Unauthorized { provider: PROVIDER, detail },
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "UnauthorizedException" => {
            ProviderError::Forbidden { provider: PROVIDER, detail }
        }
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException" | "SlowDown" => {
            ProviderError::RateLimited { provider: PROVIDER, retry_after_secs: None }
        }
        "OptInRequired" | "InvalidAction" | "UnsupportedOperation" => ProviderError::NotFound {
            provider: PROVIDER,
            detail: format!("{detail}; the service may not be offered or enabled in this region"),
        },
        _ if status == 404 || code.ends_with("NotFound") || code.ends_with("NotFoundException") || code.ends_with("NotFoundFault") => {
            ProviderError::NotFound { provider: PROVIDER, detail }
        }
        _ if status == 401 => ProviderError::Unauthorized { provider: PROVIDER, detail },
        _ if status == 403 => ProviderError::Forbidden { provider: PROVIDER, detail },
        _ if status == 429 => ProviderError::RateLimited { provider: PROVIDER, retry_after_secs: None },
        _ if status >= 500 => ProviderError::Unavailable { provider: PROVIDER, detail },
        _ => ProviderError::Invalid(format!("AWS refused the request: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_every_protocol_are_classified() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error></ErrorResponse>";
        let (code, message) = error_of(xml, None);
        assert!(matches!(classify(403, &code, message), ProviderError::Unauthorized { .. }));
        let json = r#"{"__type":"com.amazonaws.logs#ResourceNotFoundException","message":"The specified log group does not exist."}"#;
        let (code, message) = error_of(json, None);
        assert_eq!(code, "ResourceNotFoundException");
        assert!(matches!(classify(400, &code, message), ProviderError::NotFound { .. }));
        let (code, message) = error_of("{}", Some("ThrottlingException:http://internal"));
        assert!(matches!(classify(400, &code, message), ProviderError::RateLimited { .. }));
    }

    #[test]
    fn signing_encodes_as_sigv4_wants() {
        assert_eq!(encode("a b/c~d*"), "a%20b%2Fc~d%2A");
        assert_eq!(external_id(uuid::Uuid::nil()), external_id(uuid::Uuid::nil()));
        assert_ne!(external_id(uuid::Uuid::nil()), external_id(uuid::Uuid::max()));
    }
}
