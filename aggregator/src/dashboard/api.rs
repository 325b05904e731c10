//! The dashboard's read-only API (documented in `docs/api.md`, "Dashboard"):
//! views the page needs beyond the goal table, behind the same read token as
//! the rest of `/api`.

use super::events;
use super::series::{self, months_ending};
use crate::api::{bad_request, period_param, read_state, registered, zone_param, ApiError, Params, PeriodQuery};
use crate::app::App;
use crate::auth::Tokens;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zonesync_runtime::shutdown::Shutdown;

/// Most months one series request may span.
const MAX_MONTHS: usize = 36;

/// The dashboard's API routes, with their OpenAPI description (as
/// `crate::api::routes`); the event stream ends on the `Shutdown` given as
/// an `Extension` by [`super::router`].
pub fn routes(tokens: Arc<Tokens>) -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(energy_series))
        .routes(routes!(scenarios))
        .routes(routes!(dashboard_events))
        .route_layer(axum::middleware::from_fn_with_state(tokens, crate::auth::read_guard))
}

#[utoipa::path(get, path = "/api/v1/dashboard/events", tag = "dashboard",
    summary = "Server-sent events: one whenever a zone's figures change (the page redraws on it)",
    responses((status = 200, description = "`text/event-stream`; each event's data is a fingerprint of the zones' data versions", content_type = "text/event-stream", body = String),
        (status = 401, description = "The read token is missing or wrong", body = crate::api::ErrorBody)))]
async fn dashboard_events(State(app): State<Arc<App>>, Extension(shutdown): Extension<Shutdown>) -> impl IntoResponse {
    events::stream(app, shutdown)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SeriesQuery {
    /// The last month of the series, `YYYY-MM` (default: the last complete month).
    period: Option<String>,
    /// How many months, 1–36 (default 12).
    months: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/dashboard/zones/{zone}/energy-series", tag = "dashboard",
    summary = "Monthly energy intensity of a zone and its enterprises against the plan's trajectory",
    params(("zone" = String, Path, description = "Zone id"), SeriesQuery),
    responses((status = 200, description = "`{\"zone\", \"series\": {\"months\", \"zone\", \"enterprises\", \"rate\"}}`", body = Object), (status = 400, description = "A parameter is malformed", body = crate::api::ErrorBody), (status = 401, description = "The read token is missing or wrong", body = crate::api::ErrorBody), (status = 404, description = "Zone not served here", body = crate::api::ErrorBody)))]
async fn energy_series(
    State(app): State<Arc<App>>,
    Path(zone): Path<String>,
    Params(q): Params<SeriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let z = zone_param(&app, &zone)?;
    let last = period_param(&PeriodQuery { period: q.period })?;
    let count = q.months.unwrap_or(12);
    if count == 0 || count > MAX_MONTHS {
        return Err(bad_request(format!("months must be 1-{MAX_MONTHS}, not {count}")));
    }
    let months = months_ending(last, count);
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let s = series::energy_series(
        reg,
        st.zones.get(&z),
        &months,
        series::trajectory_rate(&app.goals),
        &app.catalog,
        &app.settings,
    );
    Ok(Json(json!({ "zone": z, "series": s })))
}

#[utoipa::path(get, path = "/api/v1/dashboard/zones/{zone}/scenarios", tag = "dashboard",
    summary = "Intelligent-manufacturing scenario coverage of a zone",
    params(("zone" = String, Path, description = "Zone id")),
    responses((status = 200, description = "`{\"zone\", \"scenarios\": {\"coverage\", \"by_standing\", \"by_scenario\", \"without\"}}`", body = Object), (status = 400, description = "A parameter is malformed", body = crate::api::ErrorBody), (status = 401, description = "The read token is missing or wrong", body = crate::api::ErrorBody), (status = 404, description = "Zone not served here", body = crate::api::ErrorBody)))]
async fn scenarios(State(app): State<Arc<App>>, Path(zone): Path<String>) -> Result<Json<Value>, ApiError> {
    let z = zone_param(&app, &zone)?;
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let v = series::scenarios(reg, st.zones.get(&z), &app.settings);
    Ok(Json(json!({ "zone": z, "scenarios": v })))
}
