//! The web dashboard: a page for the digital-transformation center's wall
//! screen, served by the aggregator itself.
//!
//! The zone network is closed, so the page is plain HTML, CSS and JavaScript
//! compiled into the binary (`assets/`), with Apache ECharts vendored for the energy trend (tooltips, target
//! mark lines) and small hand-drawn SVG charts elsewhere: no CDN,
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
/// Apache ECharts 6.1.0 (Apache-2.0; `assets/vendor/ECHARTS-LICENSE` and
/// `-NOTICE`), `dist/echarts.min.js` of the npm package as published
/// (sha256 b66b25ae…0fd0): tooltips and mark lines on the energy trend,
/// compiled in so the page fetches nothing from outside the zone network.
const ECHARTS_JS: &str = include_str!("assets/vendor/echarts.min.js");

/// The dashboard's pages and its read-only API; `shutdown` ends open event streams
/// so the HTTP server's graceful shutdown is not held up by them.
pub fn router(app: Arc<App>, shutdown: Shutdown) -> OpenApiRouter {
    let assets = assets_router();
    let tokens = crate::auth::Tokens::new(app.read_token.as_deref(), app.write_token.as_deref());
    OpenApiRouter::from(assets)
        .merge(api::routes(tokens).with_state(app))
        .layer(axum::Extension(shutdown))
}

/// The compiled-in page alone (`/` and `/dashboard/…`), with no data behind
/// it: a city or province center serves it too, over its own API.
pub fn assets_router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary(PATH) }))
        .route("/dashboard", get(|| async { Redirect::temporary(PATH) }))
        .route(PATH, get(|| async { asset("index.html") }))
        .route(
            "/dashboard/{file}",
            get(|file: axum::extract::Path<String>| async move { asset(&file) }),
        )
}

/// One compiled-in asset, or 404.
fn asset(name: &str) -> Response {
    let (body, kind) = match name {
        "index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "i18n.js" => (I18N_JS, "text/javascript; charset=utf-8"),
        "charts.js" => (CHARTS_JS, "text/javascript; charset=utf-8"),
        "echarts.min.js" => (ECHARTS_JS, "text/javascript; charset=utf-8"),
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
