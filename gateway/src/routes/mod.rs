//! The route table. Each feature registers its routes here (`register` in `gateway/src/<feature>`),
//! each with the rule for who may call it and the description its `#[utoipa::path]` annotation
//! gives. The router and the API description are both made from this one table, so a route cannot
//! be served without a rule, nor described at another path or method than it is served at.

pub mod health;
pub mod metrics;

use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::path::PathItem;
use utoipa::OpenApi;
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use crate::auth::Access::{self, Public};
use crate::auth::{guard, Guarded};
use crate::AppState;

/// One route: method, path and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    pub path: String,
    pub access: Access,
}

/// Every route of this build with its rule and its description.
pub struct Routes {
    table: Vec<(RouteSpec, MethodRouter<AppState>)>,
    api: utoipa::openapi::OpenApi,
}

impl Routes {
    /// The routes of the gateway itself (health, metrics, this description) and of every feature.
    pub fn standard() -> Self {
        let mut routes = Self { table: Vec::new(), api: crate::openapi::ApiDoc::openapi() };
        routes.add(Public, routes!(health::healthz));
        routes.add(Public, routes!(health::readyz));
        routes.add(Public, routes!(metrics::metrics_text));
        routes.add(Public, routes!(crate::openapi::openapi_json));
        crate::register_features(&mut routes);
        routes
    }

    /// Registers one annotated handler, as `routes!(handler)` makes it, which `access` guards.
    /// One handler serves one method at one path.
    pub fn add(&mut self, access: Access, (schemas, paths, handler): UtoipaMethodRouter<AppState>) {
        assert_eq!(paths.paths.len(), 1, "a handler is described at exactly one path");
        let (path, item) = paths.paths.iter().next().expect("one path");
        let [method]: [Method; 1] = methods_of(item).try_into().expect("a handler is described with exactly one method");
        assert!(!self.table.iter().any(|(known, _)| known.method == method && known.path == *path), "{method} {path} is registered twice");
        self.table.push((RouteSpec { method, path: path.clone(), access }, handler));
        self.api.paths.merge(paths);
        self.api.components.get_or_insert_with(Default::default).schemas.extend(schemas);
    }

    /// Every route with its rule.
    pub fn specs(&self) -> Vec<RouteSpec> {
        self.table.iter().map(|(spec, _)| spec.clone()).collect()
    }

    /// The description as the annotations give it, before the rules are applied.
    pub(crate) fn api(&self) -> utoipa::openapi::OpenApi {
        self.api.clone()
    }

    /// The routes, each behind the guard that enforces its rule.
    fn into_router(self, state: &AppState) -> Router<AppState> {
        self.table.into_iter().fold(Router::new(), |router, (spec, handler)| {
            let guarded = Guarded { state: state.clone(), access: spec.access };
            router.route(&spec.path, handler.route_layer(axum::middleware::from_fn_with_state(guarded, guard)))
        })
    }
}

fn methods_of(item: &PathItem) -> Vec<Method> {
    [
        (Method::GET, item.get.is_some()),
        (Method::POST, item.post.is_some()),
        (Method::PUT, item.put.is_some()),
        (Method::PATCH, item.patch.is_some()),
        (Method::DELETE, item.delete.is_some()),
    ]
    .into_iter()
    .filter_map(|(method, described)| described.then_some(method))
    .collect()
}

/// Every route with its rule, for the API description and for tests.
pub fn specs() -> Vec<RouteSpec> {
    Routes::standard().specs()
}

/// The routes, each behind the guard that enforces its rule.
pub fn router(state: &AppState) -> Router<AppState> {
    Routes::standard().into_router(state)
}
