//! The web dashboard: a page for the digital-transformation center's wall
//! screen, served by the aggregator itself.
//!
//! The zone network is closed, so the page is plain HTML, CSS and JavaScript
//! compiled into the binary (`assets/`), with hand-drawn SVG charts: no CDN,
//! no build step. The page reads the JSON API (`/api/v1/...`) like any other
//! client, plus the few read-only views it needs that the API did not serve
//! (`series.rs`, routes in `api.rs`), and follows changes over server-sent
//! events (`events.rs`). The assets themselves carry no data and stay open
//! even when reads need a token; the page asks for the token then.

pub mod api;
pub mod events;
pub mod series;

use crate::app::App;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use zonesync_runtime::shutdown::Shutdown;

/// Where the dashboard is served.
pub const PATH: &str = "/dashboard/";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const I18N_JS: &str = include_str!("assets/i18n.js");
const CHARTS_JS: &str = include_str!("assets/charts.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The dashboard's pages and its read-only API; `shutdown` ends open event streams
/// so the HTTP server's graceful shutdown is not held up by them.
pub fn router(app: Arc<App>, shutdown: Shutdown) -> OpenApiRouter {
    let assets = Router::new()
        .route("/", get(|| async { Redirect::temporary(PATH) }))
        .route("/dashboard", get(|| async { Redirect::temporary(PATH) }))
        .route(PATH, get(|| async { asset("index.html") }))
        .route(
            "/dashboard/{file}",
            get(|file: axum::extract::Path<String>| async move { asset(&file) }),
        );
    let tokens = crate::auth::Tokens::new(app.read_token.as_deref(), app.write_token.as_deref());
    OpenApiRouter::from(assets)
        .merge(api::routes(tokens).with_state(app))
        .layer(axum::Extension(shutdown))
}

/// One compiled-in asset, or 404.
fn asset(name: &str) -> Response {
    let (body, kind) = match name {
        "index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "i18n.js" => (I18N_JS, "text/javascript; charset=utf-8"),
        "charts.js" => (CHARTS_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    // The assets change only with the binary; a short cache keeps a wall screen's reloads cheap.
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=60")],
        body,
    )
        .into_response()
}
