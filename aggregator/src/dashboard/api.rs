//! The dashboard's read-only API (documented in `docs/api.md`, "Dashboard"):
//! views the page needs beyond the goal table, behind the same read token as
//! the rest of `/api`.

use super::events;
use super::series::{self, months_ending};
use crate::api::{bad_request, period_param, read_state, registered, zone_param, ApiError, Params, PeriodQuery};
use crate::app::App;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use zonesync_runtime::shutdown::Shutdown;

/// Most months one series request may span.
const MAX_MONTHS: usize = 36;

/// The dashboard's API routes.
pub fn router(app: Arc<App>, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/api/v1/dashboard/zones/{zone}/energy-series", get(energy_series))
        .route("/api/v1/dashboard/zones/{zone}/scenarios", get(scenarios))
        .route(
            "/api/v1/dashboard/events",
            get(move |State(app): State<Arc<App>>| async move { events::stream(app, shutdown) }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            crate::auth::Tokens::new(app.read_token.as_deref(), app.write_token.as_deref()),
            crate::auth::read_guard,
        ))
        .with_state(app)
}

#[derive(Deserialize)]
struct SeriesQuery {
    period: Option<String>,
    months: Option<usize>,
}

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

async fn scenarios(State(app): State<Arc<App>>, Path(zone): Path<String>) -> Result<Json<Value>, ApiError> {
    let z = zone_param(&app, &zone)?;
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let v = series::scenarios(reg, st.zones.get(&z), &app.settings);
    Ok(Json(json!({ "zone": z, "scenarios": v })))
}
