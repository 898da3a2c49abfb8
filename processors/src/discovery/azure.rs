//! One Azure connection's estate: in each enabled subscription the service principal reaches,
//! its virtual machines, AKS clusters, SQL databases (each of its server's, but `master`) and
//! App Service apps, each under its Resource Manager id. An App Service app is managed
//! compute the team runs no server for, a `serverless_function` like a Lambda function; its
//! provider type tells a web app from a function app. What is inferred, with its evidence: an
//! app's setting or connection string naming a database's server, a cluster's API server or
//! another app's host (`uses`, 0.9, the setting's name as evidence, never its value). A
//! principal not allowed to read an app's settings still lists the app, without that inference.

use aurora_adapters::clouds::azure::Azure;
use aurora_adapters::clouds::ProviderError;
use aurora_adapters::config::ConnectionsConfig;
use aurora_adapters::secrets::Secret;
use aurora_events::discovery::ResourceKind;

use super::inventory::{tags, text, texts, Inventory, Listed};
use super::Found;

pub async fn scan(config: &ConnectionsConfig, secret: &Secret) -> Result<Found, ProviderError> {
    let azure = Azure::sign_in(config, secret).await?;
    let mut inventory = Inventory::new("azure");
    for subscription in azure.subscriptions().await? {
        if subscription["state"] != "Enabled" {
            continue;
        }
        // A subscription id (a GUID) goes into the API's paths, or it is not listed.
        let Some(subscription) =
            text(&subscription["subscription_id"]).filter(|id| id.chars().all(|character| character.is_ascii_hexdigit() || character == '-'))
        else {
            continue;
        };
        list_subscription(&azure, &subscription, &mut inventory).await?;
    }
    Ok(inventory.finish())
}

async fn list_subscription(azure: &Azure, subscription: &str, inventory: &mut Inventory) -> Result<(), ProviderError> {
    let account = Some(subscription.to_owned());
    for vm in azure.virtual_machines(subscription).await? {
        let (Some(resource_id), Some(name)) = (text(&vm["id"]), text(&vm["name"])) else { continue };
        let listed = Listed {
            kind: ResourceKind::Vm,
            provider_type: "Microsoft.Compute/virtualMachines",
            resource_id,
            name,
            region: text(&vm["location"]),
            account: account.clone(),
            tags: tags(&vm["tags"]),
            endpoint: None,
        };
        inventory.add(listed);
    }
    for cluster in azure.aks_clusters(subscription).await? {
        let (Some(resource_id), Some(name)) = (text(&cluster["id"]), text(&cluster["name"])) else { continue };
        let endpoint = text(&cluster["fqdn"]);
        inventory.nameable(endpoint.clone(), &resource_id, format!("the API server of cluster {name}"));
        let listed = Listed {
            kind: ResourceKind::KubernetesCluster,
            provider_type: "Microsoft.ContainerService/managedClusters",
            resource_id,
            name,
            region: text(&cluster["location"]),
            account: account.clone(),
            tags: tags(&cluster["tags"]),
            endpoint,
        };
        inventory.add(listed);
    }
    for server in azure.sql_servers(subscription).await? {
        let (Some(server_id), Some(server_name)) = (text(&server["id"]), text(&server["name"])) else { continue };
        let host = text(&server["properties"]["fullyQualifiedDomainName"]);
        for database in azure.sql_databases(&server_id).await? {
            let (Some(resource_id), Some(name)) = (text(&database["id"]), text(&database["name"])) else { continue };
            if name == "master" {
                continue;
            }
            let name = format!("{server_name}/{name}");
            inventory.nameable(host.clone(), &resource_id, format!("the server of database {name}"));
            let listed = Listed {
                kind: ResourceKind::Database,
                provider_type: "Microsoft.Sql/servers/databases",
                resource_id,
                name,
                region: text(&database["location"]),
                account: account.clone(),
                tags: tags(&database["tags"]),
                endpoint: host.clone(),
            };
            inventory.add(listed);
        }
    }
    for app in azure.web_apps(subscription).await? {
        let (Some(resource_id), Some(name)) = (text(&app["id"]), text(&app["name"])) else { continue };
        let properties = &app["properties"];
        let endpoint = text(&properties["defaultHostName"]);
        for host in texts(&properties["hostNames"]).chain(endpoint.clone()) {
            inventory.nameable(Some(host), &resource_id, format!("the host of app {name}"));
        }
        // Reading settings is a permission of its own (`Microsoft.Web/sites/config/list/action`):
        // without it the app is listed, and what its settings name is not inferred.
        let settings = match azure.app_configuration(&resource_id).await {
            Err(ProviderError::Forbidden { .. }) => Vec::new(),
            settings => settings?,
        };
        inventory.configured(&resource_id, "setting", format!("app {name}"), settings);
        let function_app = app["kind"].as_str().is_some_and(|kind| kind.contains("functionapp"));
        let listed = Listed {
            kind: ResourceKind::ServerlessFunction,
            provider_type: if function_app { "Microsoft.Web/sites/functionapp" } else { "Microsoft.Web/sites" },
            resource_id,
            name,
            region: text(&app["location"]),
            account: account.clone(),
            tags: tags(&app["tags"]),
            endpoint,
        };
        inventory.add(listed);
    }
    Ok(())
}
