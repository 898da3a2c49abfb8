//! An AWS account in moto for the tests that connect one.

use aurora_adapters::clouds::aws::{Aws, Credentials};
use aurora_adapters::config::ConnectionsConfig;

/// An IAM user with every permission and its key, and a role it may assume; made with the first
/// five (unauthenticated) requests moto accepts, after which it checks every signature.
pub struct Account {
    pub user: Credentials,
    pub role_arn: String,
}

pub fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml.find(&open).unwrap_or_else(|| panic!("no {tag} in {xml}")) + open.len();
    xml[start..].split('<').next().unwrap().to_owned()
}

pub async fn set_up_account(config: &ConnectionsConfig) -> Account {
    let anonymous =
        Aws::new(config, Credentials { access_key_id: "AKIASETUP".into(), secret_access_key: "setup".into(), session_token: None });
    let iam = |action: &'static str, params: Vec<(&'static str, String)>| {
        let anonymous = &anonymous;
        async move {
            anonymous.query("iam", "us-east-1", action, "2010-05-08", &params).await.unwrap_or_else(|error| panic!("{action}: {error}"))
        }
    };
    let allow_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#.to_owned();
    iam("CreateUser", vec![("UserName", "aurora-test".into())]).await;
    let key = iam("CreateAccessKey", vec![("UserName", "aurora-test".into())]).await;
    iam("PutUserPolicy", vec![("UserName", "aurora-test".into()), ("PolicyName", "all".into()), ("PolicyDocument", allow_all.clone())])
        .await;
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/aurora-test"},"Action":"sts:AssumeRole"}]}"#;
    let role = iam("CreateRole", vec![("RoleName", "aurora-reader".into()), ("AssumeRolePolicyDocument", trust.into())]).await;
    iam("PutRolePolicy", vec![("RoleName", "aurora-reader".into()), ("PolicyName", "all".into()), ("PolicyDocument", allow_all)]).await;
    Account {
        user: Credentials {
            access_key_id: xml_field(&key, "AccessKeyId"),
            secret_access_key: xml_field(&key, "SecretAccessKey"),
            session_token: None,
        },
        role_arn: xml_field(&role, "Arn"),
    }
}
