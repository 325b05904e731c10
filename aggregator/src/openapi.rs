//! The HTTP API's OpenAPI description, for the provincial platform's
//! integrators and a zone's own tools. It is made from the routes themselves
//! (`api::routes`, `dashboard::api::routes`: utoipa-axum registers a route
//! and its description together), so it cannot drift from what is served.
//! Served at [`PATH`] (open, like `/healthz`: it holds no data) and printed
//! by `zonesync-aggregator openapi`.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi};

/// Where the description is served.
pub const PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "zonesync aggregator API",
        description = "A development zone's digital-transformation figures: goal tables of the Henan plans \
(zone, city, province), energy intensity, scenarios, alerts, agents, data quality and dead letters. \
Periods are `YYYY-MM` in China time; the default is the last complete month. Every figure carries its \
span (`period`) and its completeness. When the aggregator sets `http.read_token`, reads need \
`Authorization: Bearer <token>`; acknowledging an alert always needs the write token.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
    tags(
        (name = "goals", description = "Goal tables: a zone's, a city's, the province's, and the definitions"),
        (name = "zones", description = "Zones, their agents, enterprises, classification and data quality"),
        (name = "energy", description = "Energy use and intensity"),
        (name = "reports", description = "The goal table as CSV, Markdown or JSON"),
        (name = "alerts", description = "Energy-intensity and data alerts, their history and acknowledgement"),
        (name = "dead letters", description = "Input refused, with the reason"),
        (name = "dashboard", description = "The views the dashboard page reads"),
        (name = "health", description = "Liveness and Prometheus metrics")
    )
)]
struct Base;

/// The bearer token scheme the read and write tokens use.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole description: the base (title, tags, security) and `paths`,
/// the routes' own.
pub fn document(paths: Document) -> Document {
    let mut doc = Base::openapi();
    doc.merge(paths);
    doc
}

/// The description of every route a zone aggregator serves, without
/// starting one.
pub fn described() -> Document {
    let none = || crate::auth::Tokens::new(None, None);
    document(
        crate::api::routes(none())
            .merge(crate::dashboard::api::routes(none()))
            .into_openapi(),
    )
}

/// The route serving `doc`.
pub fn router(doc: Document) -> Router {
    let doc = std::sync::Arc::new(doc);
    Router::new().route(PATH, get(move || async move { Json(doc.as_ref().clone()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route added with a plain `.route(…)` would be served undocumented:
    /// the API's routes go through `routes!`, which takes the description too.
    #[test]
    fn every_api_route_is_registered_with_its_description() {
        for (file, src) in [
            ("api.rs", include_str!("api.rs")),
            ("dashboard/api.rs", include_str!("dashboard/api.rs")),
        ] {
            assert!(
                !src.contains(concat!(".route", "(\"")),
                "{file} registers a route without its OpenAPI description: use .routes(routes!(handler))"
            );
        }
    }

    /// The paths the dashboard page and integrators read are described.
    #[test]
    fn the_description_holds_the_api() {
        let doc = described();
        for path in [
            "/api/v1/zones/{zone}/goals",
            "/api/v1/cities",
            "/api/v1/cities/{city}/goals",
            "/api/v1/province/goals",
            "/api/v1/alerts/ack",
            "/api/v1/dashboard/events",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path} is not described");
        }
        assert!(doc
            .components
            .is_some_and(|c| c.security_schemes.contains_key("bearer")));
    }
}
