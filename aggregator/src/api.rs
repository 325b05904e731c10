//! The HTTP API (JSON; documented in `docs/api.md`).

use crate::alerts::{AckError, AlertRecord, Phase};
use crate::app::App;
use crate::auth::{read_guard, write_guard, Tokens};
use crate::goals::cache::Cached;
use crate::goals::incremental::rollup_table;
use crate::goals::{energy, evaluate, Asked, GoalRow, Level, SpanChoice, SpanError};
use crate::registry::Zone;
use crate::report::{render, Format};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use zonesync_proto::{EnterpriseId, Period, ReadingTime, ZoneId};

/// An API error: status and a message saying what was wrong.
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An error with `status`, saying `what` was wrong.
    pub fn new(status: StatusCode, what: impl Into<String>) -> Self {
        Self(status, what.into())
    }
}

/// The body of every error answer: what was wrong, in words.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Query parameters whose refusal is a JSON error like every other one
/// (axum's own `Query` answers a malformed query string in plain text,
/// which a client parsing `{"error": …}` cannot read).
pub(crate) struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| bad_request(format!("query string: {}", e.body_text())))
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, what)
}

pub(crate) fn bad_request(what: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, what)
}

pub(crate) fn zone_param(app: &App, zone: &str) -> Result<ZoneId, ApiError> {
    let z = ZoneId::parse(zone).map_err(|e| bad_request(e.to_string()))?;
    if app.registry.zone(&z).is_none() || !app.zones.contains(&z) {
        return Err(not_found(format!("zone {z} is not served here")));
    }
    Ok(z)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PeriodQuery {
    /// `YYYY-MM` (default: the last complete month, China time).
    pub(crate) period: Option<String>,
}

pub(crate) fn period_param(q: &PeriodQuery) -> Result<Period, ApiError> {
    match &q.period {
        None => Ok(Period::last_complete_month(Utc::now())),
        Some(p) => Period::parse(p).map_err(|e| bad_request(e.to_string())),
    }
}

/// Largest body of a state-changing request, bytes.
const WRITE_BODY_LIMIT: usize = 4096;

/// `?period=&span=&compare=` of a goal table.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GoalQuery {
    /// `YYYY-MM` (default: the last complete month, China time).
    period: Option<String>,
    /// `basis` (each goal's own, the default), `month`, `quarter`, `year` or `ytd`.
    span: Option<String>,
    /// Add each row's 同比 and 环比 (two more tables; off by default so the
    /// plain table stays one lookup).
    #[serde(default)]
    compare: bool,
    /// Add each dated goal's pace against its deadline (`goals::pace`), as
    /// of today: given for the last complete month or the month running.
    #[serde(default)]
    pace: bool,
}

/// The period (default: the last complete month) and span (default: each goal's basis) asked for.
fn asked_param(period: Option<String>, span: Option<&str>) -> Result<Asked, ApiError> {
    let period = period_param(&PeriodQuery { period })?;
    let choice = span
        .map_or(Ok(SpanChoice::Basis), str::parse)
        .map_err(|e: SpanError| bad_request(e.to_string()))?;
    Asked::new(period, choice).map_err(|e| bad_request(e.to_string()))
}

/// The API's routes and their OpenAPI description, made from one list
/// (utoipa-axum's `routes!` takes each handler's `#[utoipa::path]`): a route
/// cannot be served undocumented, nor documented and not served. `tokens`
/// guard the reads and the writes.
pub fn routes(tokens: Arc<Tokens>) -> OpenApiRouter<Arc<App>> {
    let open = OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(metrics));
    let api = OpenApiRouter::new()
        .routes(routes!(zones))
        .routes(routes!(goals))
        .routes(routes!(zone_energy))
        .routes(routes!(zone_report))
        .routes(routes!(agents))
        .routes(routes!(chase))
        .routes(routes!(classification))
        .routes(routes!(quality))
        .routes(routes!(enterprise))
        .routes(routes!(cities))
        .routes(routes!(city_goals))
        .routes(routes!(province_goals))
        .routes(routes!(goal_catalog))
        .routes(routes!(alerts))
        .routes(routes!(alert_history))
        .routes(routes!(dead_letters))
        .route_layer(axum::middleware::from_fn_with_state(tokens.clone(), read_guard));
    // The token is checked before the body is read (auth::write_guard), and
    // an acknowledgement is a few hundred bytes, not axum's default 2 MB.
    let write = OpenApiRouter::new()
        .routes(routes!(ack_alert))
        .route_layer(axum::middleware::from_fn_with_state(tokens, write_guard))
        .layer(axum::extract::DefaultBodyLimit::max(WRITE_BODY_LIMIT));
    open.merge(api).merge(write)
}

/// The API's routes over `app`, with their OpenAPI description.
pub fn router(app: Arc<App>) -> OpenApiRouter {
    routes(Tokens::new(app.read_token.as_deref(), app.write_token.as_deref())).with_state(app)
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    summary = "Liveness and readiness of the zone aggregator",
    responses((status = 503, description = "Unhealthy: `{\"status\": \"unhealthy\", \"problems\": [...]}`", body = Object), (status = 200, description = "`{\"status\": \"ok\", \"mqtt_connected\"}`", body = Object)))]
/// 200 while every task runs and the store takes writes; 503 with the
/// problems otherwise (a load balancer or systemd watchdog must not see "ok"
/// from a process whose ingest is dead).
async fn healthz(State(app): State<Arc<App>>) -> Response {
    let connected = app.metrics.mqtt_connected.load(Ordering::Relaxed) == 1;
    let problems = app.health.problems();
    if problems.is_empty() {
        Json(json!({ "status": "ok", "mqtt_connected": connected })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "mqtt_connected": connected, "problems": problems })),
        )
            .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    summary = "Prometheus metrics, goal gauges included",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String)))]
async fn metrics(State(app): State<Arc<App>>) -> Response {
    let sampled = crate::metrics::Sampled {
        dead_letters_stored: app.dead_letters.count() as u64,
    };
    let mut text = app.metrics.render(&sampled);
    if let Ok(st) = app.state.read() {
        text.push_str(&crate::metrics::render_agents(&st));
    }
    // The goal tables of the last complete month, as the page opens on
    // (kept made by the refresher, so a scrape reads them from the cache).
    let tables = app.tables();
    let asked = Asked::basis(Period::last_complete_month(Utc::now()));
    let goals: Vec<(String, Vec<GoalRow>)> = app
        .zones
        .iter()
        .filter_map(|z| Some((z.to_string(), tables.table(z, asked)?.rows.to_vec())))
        .collect();
    text.push_str(&crate::metrics::render_goals(&goals));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[utoipa::path(get, path = "/api/v1/zones", tag = "zones",
    summary = "The zones this aggregator serves, with counts",
    responses((status = 200, description = "`{\"zones\": [{\"id\", \"name_zh\", \"name_en\", \"city\", \"province\", \"enterprises\", \"in_scope\", \"reporting\", \"agents\", \"readings_stored\"}]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn zones(State(app): State<Arc<App>>) -> ApiResult {
    let st = read_state(&app)?;
    let list: Vec<Value> = app
        .zones
        .iter()
        .filter_map(|z| app.registry.zone(z))
        .map(|z| {
            let zs = st.zones.get(&z.id);
            json!({
                "id": z.id,
                "name_zh": z.name_zh,
                "name_en": z.name_en,
                "city": z.city,
                "province": z.province,
                "enterprises": z.enterprise.len(),
                "in_scope": z.enterprise.iter().filter(|e| e.in_scope()).count(),
                "reporting": zs.map_or(0, |s| s.enterprises.len()),
                "agents": zs.map_or(0, |s| s.agents.len()),
                "readings_stored": zs.map_or(0, |s| s.readings_stored),
            })
        })
        .collect();
    Ok(Json(json!({ "zones": list })))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/goals", tag = "goals",
    summary = "A zone's goal table for a period",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), GoalQuery),
    responses((status = 200, description = "`{\"zone\", \"period\", \"period_progress\", \"span\", \"goals\": [GoalRow], \"comparisons\"?}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn goals(State(app): State<Arc<App>>, Path(zone): Path<String>, Params(q): Params<GoalQuery>) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let asked = asked_param(q.period, q.span.as_deref())?;
    let (reg, c) = zone_table(&app, &z, asked)?;
    let comparisons = if q.compare {
        Some(zone_comparisons(&app, &z, asked, &c.rows)?)
    } else {
        None
    };
    let now = Utc::now();
    let current = [Period::last_complete_month(now), Period::month_of(now)].contains(&asked.period);
    let pace = if q.pace && current {
        Some(zone_pace(&app, &z, asked, &c.rows, now)?)
    } else {
        None
    };
    Ok(Json(json!({
        "zone": z,
        "name_zh": reg.name_zh,
        "name_en": reg.name_en,
        "period": asked.period,
        "period_progress": asked.period.progress(Utc::now()),
        "span": asked.span,
        "computed_at": c.computed_at,
        "compute_ms": c.took_ms,
        "settings": &*app.settings,
        "goals": &*c.rows,
        "comparisons": comparisons,
        "pace": pace,
    })))
}

/// The registry entry of a zone `zone_param` accepted.
pub(crate) fn registered<'a>(app: &'a App, z: &ZoneId) -> Result<&'a Zone, ApiError> {
    app.registry.zone(z).ok_or_else(|| not_found(format!("zone {z}")))
}

/// The state, for reading.
pub(crate) fn read_state(app: &App) -> Result<std::sync::RwLockReadGuard<'_, crate::state::State>, ApiError> {
    app.state
        .read()
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned".into()))
}

/// 同比 and 环比 of a zone's rows: the same span a year earlier and the period before.
fn zone_comparisons(
    app: &App,
    z: &ZoneId,
    asked: Asked,
    rows: &[GoalRow],
) -> Result<std::collections::BTreeMap<String, crate::goals::compare::Comparisons>, ApiError> {
    let earlier = |period: Period| -> Result<Arc<Vec<GoalRow>>, ApiError> {
        match Asked::new(period, asked.span) {
            Ok(a) => Ok(zone_table(app, z, a)?.1.rows),
            Err(_) => Ok(Arc::default()),
        }
    };
    let (last_year, previous) = (earlier(asked.period.year_before())?, earlier(asked.period.previous())?);
    Ok(crate::goals::compare::comparisons(rows, &last_year, &previous))
}

/// Each dated goal's pace against its deadline (see `goals::pace`): a
/// coverage goal from the declarations as they stood a year before, a ratio
/// from the same span a year before.
fn zone_pace(
    app: &App,
    z: &ZoneId,
    asked: Asked,
    rows: &[GoalRow],
    now: chrono::DateTime<Utc>,
) -> Result<std::collections::BTreeMap<String, crate::goals::pace::Pace>, ApiError> {
    use crate::goals::pace;
    let reg = registered(app, z)?;
    let goals = &app.goals.goal;
    let last_year = match Asked::new(asked.period.year_before(), asked.span) {
        Ok(a) => zone_table(app, z, a)?.1.rows,
        Err(_) => Arc::default(),
    };
    let st = read_state(app)?;
    let zs = st.zones.get(z);
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let Some(gi) = goals.iter().position(|g| g.id == row.id) else {
            continue;
        };
        let g = &goals[gi];
        if !pace::projectable(g) {
            continue;
        }
        let p = match g.kind {
            crate::goals::GoalKind::Coverage => {
                pace::coverage_pace(goals, gi, row, reg, zs, now, &app.catalog, &app.settings)
            }
            _ => pace::ratio_pace(g, row, last_year.iter().find(|r| r.id == row.id), asked.period),
        };
        if let Some(p) = p {
            out.insert(row.id.clone(), p);
        }
    }
    Ok(out)
}

/// A zone's goal table, from the cache (see `goals::cache`).
fn zone_table<'a>(app: &'a App, z: &ZoneId, asked: Asked) -> Result<(&'a Zone, Cached), ApiError> {
    let reg = registered(app, z)?;
    let c = app
        .tables()
        .table(z, asked)
        .ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "state lock poisoned".into()))?;
    Ok((reg, c))
}

/// Goals over several zones: a city's, or every zone served (the province as far as this instance sees it).
fn rollup(app: &App, level: Level, asked: Asked) -> ApiResult {
    let served = zones_of(app, &level);
    if served.is_empty() {
        return Err(not_found(format!("no zone served here belongs to {level:?}")));
    }
    let st = read_state(app)?;
    let zones: Vec<_> = served
        .iter()
        .filter_map(|z| app.registry.zone(z))
        .map(|z| (z, st.zones.get(&z.id)))
        .collect();
    let ids: Vec<String> = zones.iter().map(|(z, _)| z.id.to_string()).collect();
    // Merged from the zones' kept tallies (goals::incremental); scanned only if a zone has none.
    let kept: Option<Vec<(&Zone, &crate::state::ZoneState)>> =
        zones.iter().map(|(z, zs)| zs.map(|zs| (*z, zs))).collect();
    let rows = kept
        .and_then(|k| rollup_table(&app.tallies, &k, &app.goals.goal, &app.settings, &level, asked))
        .unwrap_or_else(|| {
            evaluate(
                &app.goals.goal,
                &zones,
                level.clone(),
                asked,
                &app.catalog,
                &app.settings,
            )
        });
    drop(st);
    let parts = zone_parts(app, &served, &rows, asked)?;
    Ok(Json(json!({
        "level": level,
        "zones": ids,
        "parts": parts,
        "period": asked.period,
        "period_progress": asked.period.progress(Utc::now()),
        "span": asked.span,
        "computed_at": Utc::now(),
        "settings": &*app.settings,
        "goals": rows,
    })))
}

/// The zones served here that `level` takes in.
fn zones_of(app: &App, level: &Level) -> Vec<ZoneId> {
    app.zones
        .iter()
        .filter_map(|z| app.registry.zone(z))
        .filter(|z| match level {
            Level::City(c) => &z.city == c,
            _ => true,
        })
        .map(|z| z.id.clone())
        .collect()
}

/// Per goal id, each zone's part of a city or province figure: the zone's
/// own row for that goal over the same span (its 贡献量), in the shape the
/// federation center serves (`federation::center::tables::Part`), so one
/// page reads either. `value` is the zone's own figure where it has one.
fn zone_parts(app: &App, zones: &[ZoneId], rows: &[GoalRow], asked: Asked) -> Result<Value, ApiError> {
    let mut tables = Vec::with_capacity(zones.len());
    for z in zones {
        tables.push((z, zone_table(app, z, asked)?.1.rows));
    }
    let mut parts = serde_json::Map::new();
    for row in rows {
        let list: Vec<Value> = tables
            .iter()
            .filter_map(|(z, t)| {
                t.iter()
                    .find(|r| r.id == row.id && r.period == row.period)
                    .map(|r| (z, r))
            })
            .map(|(z, r)| {
                json!({
                    "zone": z,
                    "numerator": r.numerator,
                    "denominator": r.denominator,
                    "in_scope": r.in_scope,
                    "reported": r.reported,
                    "unknown": r.unknown,
                    "value": r.value,
                })
            })
            .collect();
        parts.insert(row.id.clone(), Value::Array(list));
    }
    Ok(Value::Object(parts))
}

#[utoipa::path(get, path = "/api/v1/cities", tag = "goals",
    summary = "The cities (and their zones) served here",
    responses((status = 200, description = "`{\"role\": \"zone\", \"cities\": [{\"city\", \"province\", \"zones\", \"names\"}]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
/// The cities (and their zones) served here, for the dashboard's city view.
/// A federation center answers the same shape with `"role": "center"`.
async fn cities(State(app): State<Arc<App>>) -> Json<Value> {
    Json(cities_of(app.zones.iter().filter_map(|z| app.registry.zone(z)), "zone"))
}

/// `/api/v1/cities` of a zone aggregator (`role` "zone") or a federation
/// center ("center"): each city with its zones in registry order, and each
/// zone's Chinese name, so one page reads both.
pub(crate) fn cities_of<'a>(zones: impl Iterator<Item = &'a Zone>, role: &str) -> Value {
    let mut by_city: std::collections::BTreeMap<(String, String), Vec<&Zone>> = Default::default();
    for z in zones {
        by_city.entry((z.province.clone(), z.city.clone())).or_default().push(z);
    }
    let list: Vec<Value> = by_city
        .into_iter()
        .map(|((province, city), zones)| {
            let names: serde_json::Map<String, Value> =
                zones.iter().map(|z| (z.id.to_string(), json!(z.name_zh))).collect();
            let ids: Vec<String> = zones.iter().map(|z| z.id.to_string()).collect();
            json!({ "city": city, "province": province, "zones": ids, "names": names })
        })
        .collect();
    json!({ "role": role, "cities": list })
}

#[utoipa::path(get, path = "/api/v1/cities/{city}/goals", tag = "goals",
    summary = "A city's goal table over the zones served here, with each zone's part",
    params(("city" = String, Path, description = "City name as in the registry, e.g. 济源"), GoalQuery),
    responses((status = 200, description = "`{\"level\", \"zones\", \"parts\": {goal id: [{\"zone\", \"numerator\", \"denominator\", \"in_scope\", \"reported\", \"unknown\", \"value\"}]}, \"period\", \"goals\": [GoalRow]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn city_goals(State(app): State<Arc<App>>, Path(city): Path<String>, Params(q): Params<GoalQuery>) -> ApiResult {
    rollup(&app, Level::City(city), asked_param(q.period, q.span.as_deref())?)
}

#[utoipa::path(get, path = "/api/v1/province/goals", tag = "goals",
    summary = "The province goal table over every zone served here",
    params(GoalQuery),
    responses((status = 200, description = "As the city table, over every zone served here (not the whole province unless every zone is)", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn province_goals(State(app): State<Arc<App>>, Params(q): Params<GoalQuery>) -> ApiResult {
    rollup(&app, Level::Province, asked_param(q.period, q.span.as_deref())?)
}

#[utoipa::path(get, path = "/api/v1/goals", tag = "goals",
    summary = "The goal definitions in force",
    responses((status = 200, description = "`{\"goals\": [GoalDef], \"not_computable\": [...]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn goal_catalog(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "goals": app.goals.goal, "not_computable": app.goals.not_computable }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportQuery {
    /// `YYYY-MM` (default: the last complete month, China time).
    period: Option<String>,
    /// `basis` (default), `month`, `quarter`, `year` or `ytd`.
    span: Option<String>,
    /// `csv` (default; UTF-8 with BOM, opens in Excel), `xlsx`, `md`, `table` or `json`;
    /// a month's `xlsx`, `md` and `table` add the enterprises to chase.
    format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/report", tag = "reports",
    summary = "A zone's goal table as a report (CSV with BOM, Markdown or JSON)",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), ReportQuery),
    responses((status = 200, description = "The report, in the asked format", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn zone_report(
    State(app): State<Arc<App>>,
    Path(zone): Path<String>,
    Params(q): Params<ReportQuery>,
) -> Result<Response, ApiError> {
    let z = zone_param(&app, &zone)?;
    let asked = asked_param(q.period, q.span.as_deref())?;
    let period = asked.period;
    let format: Format = q.format.as_deref().unwrap_or("csv").parse().map_err(bad_request)?;
    let (reg, c) = zone_table(&app, &z, asked)?;
    let rows = c.rows;
    let span = match asked.span {
        SpanChoice::Basis => String::new(),
        other => format!(", span {}", other.name()),
    };
    let progress = crate::report::progress_words(period.progress(Utc::now()));
    let title = format!("{} {} ({period}{span}{progress})", reg.name_zh, reg.name_en);
    // The enterprises to chase go with a month's briefing (md, table, xlsx).
    let chase = match period {
        Period::Month(..) if format != Format::Csv && format != Format::Json => Some(zone_chase(&app, &z, period)?),
        _ => None,
    };
    let body: axum::body::Body = match format {
        Format::Xlsx => {
            let cmp = zone_comparisons(&app, &z, asked, &rows)?;
            crate::report::xlsx::workbook(&title, &rows, &cmp, chase.as_ref())
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("writing the workbook: {e}")))?
                .into()
        }
        _ => {
            let mut text = render(&title, &rows, format);
            if let Some(c) = &chase {
                text.push_str(&crate::report::chase_md(c));
            }
            text.into()
        }
    };
    let mut headers = vec![(header::CONTENT_TYPE, format.content_type().to_owned())];
    if let Format::Csv | Format::Xlsx = format {
        let ext = if format == Format::Csv { "csv" } else { "xlsx" };
        headers.push((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"zonesync-{z}-{period}.{ext}\""),
        ));
    }
    let mut resp = body.into_response();
    for (k, v) in headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/energy", tag = "energy",
    summary = "A zone's energy use and intensity for a month",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), PeriodQuery),
    responses((status = 200, description = "Energy figures per enterprise and for the zone", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn zone_energy(
    State(app): State<Arc<App>>,
    Path(zone): Path<String>,
    Params(q): Params<PeriodQuery>,
) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let period = period_param(&q)?;
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let rows = energy(reg, st.zones.get(&z), period, &app.catalog, &app.settings);
    Ok(Json(
        json!({ "zone": z, "period": period, "unit": "tce/10k yuan", "enterprises": rows }),
    ))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/classification", tag = "zones",
    summary = "Mu-benefit (亩均效益) classification of a zone's enterprises",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), PeriodQuery),
    responses((status = 200, description = "Classes A–D per enterprise, with the figures behind them", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn classification(
    State(app): State<Arc<App>>,
    Path(zone): Path<String>,
    Params(q): Params<PeriodQuery>,
) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let year = period_param(&q)?.year();
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let c = crate::classify::classify(
        reg,
        st.zones.get(&z),
        year,
        &app.catalog,
        &app.settings,
        &app.classification,
    );
    Ok(Json(json!({ "zone": z, "classification": c })))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/quality", tag = "zones",
    summary = "Data quality of a zone for a month: gaps, late and suspect readings",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), PeriodQuery),
    responses((status = 200, description = "Quality figures per enterprise and series", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn quality(State(app): State<Arc<App>>, Path(zone): Path<String>, Params(q): Params<PeriodQuery>) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let month = match period_param(&q)? {
        p @ Period::Month(..) => p,
        other => return Err(bad_request(format!("quality is reported by month, not {other}"))),
    };
    let reg = registered(&app, &z)?;
    let st = read_state(&app)?;
    let zs = st.zones.get(&z);
    let view = crate::quality::QualityView {
        report: crate::quality::report(reg, zs, month, Utc::now(), &app.catalog, &app.quality),
        contradictions: crate::quality::contradictions(reg, zs, &app.settings),
    };
    Ok(Json(json!({ "zone": z, "quality": view })))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/chase", tag = "reports",
    summary = "The enterprises to chase for a month and what each is missing (off the energy trajectory, undeclared attributes, incomplete or no data), and silent gateways",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), PeriodQuery),
    responses((status = 200, description = "`{\"zone\", \"chase\": {\"period\", \"enterprises\": [{\"enterprise\", \"name\", \"why\", \"why_zh\"}], \"silent_agents\"}}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn chase(State(app): State<Arc<App>>, Path(zone): Path<String>, Params(q): Params<PeriodQuery>) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let month = match period_param(&q)? {
        p @ Period::Month(..) => p,
        other => return Err(bad_request(format!("the list to chase is made by month, not {other}"))),
    };
    Ok(Json(json!({ "zone": z, "chase": zone_chase(&app, &z, month)? })))
}

/// A zone's list to chase for `month` (see `briefing`).
pub(crate) fn zone_chase(app: &App, z: &ZoneId, month: Period) -> Result<crate::briefing::Chase, ApiError> {
    use crate::dashboard::series;
    let reg = registered(app, z)?;
    let st = read_state(app)?;
    let zs = st.zones.get(z);
    let energy = series::energy_series(
        reg,
        zs,
        &series::months_ending(month, 12),
        series::trajectory_rate(&app.goals),
        &app.catalog,
        &app.settings,
    );
    let quality = crate::quality::report(reg, zs, month, Utc::now(), &app.catalog, &app.quality);
    Ok(crate::briefing::chase(
        reg,
        zs,
        &energy,
        &quality,
        &app.goals.goal,
        &app.catalog,
    ))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/agents", tag = "zones",
    summary = "The agents of a zone: presence, backlog, last batch, refusals",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)")),
    responses((status = 200, description = "`{\"agents\": [...]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn agents(State(app): State<Arc<App>>, Path(zone): Path<String>) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let st = read_state(&app)?;
    let now = Utc::now();
    let list: Vec<Value> = st
        .zones
        .get(&z)
        .map(|zs| {
            zs.agents
                .iter()
                .map(|(id, a)| {
                    let missing = a.missing_seqs(now, app.quality.missing_seq_grace_secs);
                    json!({ "agent": id, "state": a, "missing_seqs": missing.map(|(from, to)| [from, to]) })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({ "zone": z, "agents": list })))
}

#[utoipa::path(get, path = "/api/v1/zones/{zone}/enterprises/{id}", tag = "zones",
    summary = "One enterprise: registry entry, declarations and monthly figures",
    params(("zone" = String, Path, description = "Zone id, as in the registry (e.g. `jiyuan-hitech`)"), ("id" = String, Path, description = "Unified social credit code (统一社会信用代码)")),
    responses((status = 200, description = "The enterprise", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn enterprise(State(app): State<Arc<App>>, Path((zone, id)): Path<(String, String)>) -> ApiResult {
    let z = zone_param(&app, &zone)?;
    let e = EnterpriseId::parse_with_test_prefix(&id, app.validator.limits.test_prefix.as_deref())
        .map_err(|e| bad_request(e.to_string()))?;
    let reg = app
        .registry
        .enterprise(&z, &e)
        .ok_or_else(|| not_found(format!("enterprise {e} is not registered in zone {z}")))?;
    let st = read_state(&app)?;
    let es = st.zones.get(&z).and_then(|zs| zs.enterprises.get(&e));
    let latest: Vec<Value> = es
        .map(|es| {
            es.latest
                .iter()
                .map(|((ind, point), (at, v))| {
                    let unit = app.catalog.get(ind).and_then(|i| i.unit.clone());
                    let (ts, period) = match at {
                        ReadingTime::Ts(t) => (Some(t.to_rfc3339()), None),
                        ReadingTime::Period(p) => (None, Some(p.to_string())),
                    };
                    json!({ "indicator": ind, "point": point, "value": v, "unit": unit, "ts": ts, "period": period })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({
        "zone": z,
        "enterprise": e,
        "name": reg.name,
        "above_scale": reg.above_scale,
        "industrial": reg.industrial,
        "reported": es.is_some(),
        "declarations": es.map(|es| &es.declarations),
        "latest": latest,
        "readings": es.map_or(0, |es| es.readings),
        "counter_resets": es.map_or(0, |es| es.counter_resets),
        "late_readings": es.map_or(0, |es| es.late_readings),
    })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    /// Only this zone's alerts.
    zone: Option<String>,
    /// Include cleared alerts.
    all: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    summary = "Alerts, active by default",
    params(AlertQuery),
    responses((status = 200, description = "`{\"alerts\": [...], \"pending_deliveries\"}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn alerts(State(app): State<Arc<App>>, Params(q): Params<AlertQuery>) -> ApiResult {
    let list: Vec<AlertRecord> = app
        .alert_store
        .all()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .into_iter()
        .filter(|a| q.zone.as_deref().is_none_or(|z| a.subject.zone == z))
        .filter(|a| q.all.unwrap_or(false) || a.phase != Phase::Clear)
        .collect();
    Ok(Json(
        json!({ "alerts": list, "pending_deliveries": app.deliveries.pending() }),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    /// Most events (default 100, at most 10,000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/alerts/history", tag = "alerts",
    summary = "Alert transitions, newest first",
    params(LimitQuery),
    responses((status = 200, description = "`{\"events\": [...]}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
async fn alert_history(State(app): State<Arc<App>>, Params(q): Params<LimitQuery>) -> ApiResult {
    let list = app
        .alert_store
        .history(q.limit.unwrap_or(100).min(10_000))
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "events": list })))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct AckBody {
    /// The alert's key, from `/api/v1/alerts`.
    key: String,
    /// Who acknowledges (1–64 characters).
    by: String,
}

#[utoipa::path(post, path = "/api/v1/alerts/ack", tag = "alerts",
    summary = "Acknowledge an active alert (write token)",
    request_body = AckBody,
    responses((status = 403, description = "Writes are disabled: no `http.write_token` set", body = ErrorBody), (status = 409, description = "The alert is not active", body = ErrorBody), (status = 413, description = "The body is over 4 KiB\"), (status = 200, description = \"`{\"alert\": {...}}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
/// Behind `auth::write_guard`: only a request with the write token gets here.
async fn ack_alert(State(app): State<Arc<App>>, Json(body): Json<AckBody>) -> ApiResult {
    if body.by.trim().is_empty() || body.by.chars().count() > 64 {
        return Err(bad_request("`by` must name who acknowledges (1-64 characters)".into()));
    }
    match crate::alerts::acknowledge(&app.alerts(), &body.key, body.by.trim()) {
        Ok(rec) => Ok(Json(json!({ "alert": rec }))),
        Err(AckError::Unknown(k)) => Err(not_found(format!("no alert {k}"))),
        Err(e @ AckError::NotActive(_)) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadQuery {
    /// Letters per page (default 100, at most `dead_letters::MAX_PAGE`).
    limit: Option<usize>,
    /// Only letters older than this id: the previous page's `next_before`.
    before: Option<u64>,
    /// Only this zone's letters.
    zone: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "dead letters",
    summary = "Dead letters (refused input, with the reason), newest first",
    params(DeadQuery),
    responses((status = 200, description = "`{\"total_stored\", \"letters\": [...], \"next_before\"}`", body = Object), (status = 400, description = "A parameter is malformed; `{\"error\": …}` says which", body = ErrorBody), (status = 401, description = "The read token is missing or wrong (`http.read_token`)", body = ErrorBody), (status = 404, description = "Not served here", body = ErrorBody)))]
/// One bounded page of dead letters, newest first, with the cursor to the next.
async fn dead_letters(State(app): State<Arc<App>>, Params(q): Params<DeadQuery>) -> ApiResult {
    let page = app
        .dead_letters
        .page(q.limit.unwrap_or(100), q.before, q.zone.as_deref())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({
        "total_stored": app.dead_letters.count(),
        "stored_bytes": app.dead_letters.bytes(),
        "rejected_by_reason": app.metrics.rejected(),
        "dead_letters": page.dead_letters,
        "next_before": page.next_before,
    })))
}
