//! The center's HTTP API: city and province goal tables in the shape a zone
//! aggregator serves them (`/api/v1/cities/{city}/goals`,
//! `/api/v1/province/goals`), plus the zones behind each table and figure,
//! the cities it serves (`/api/v1/cities`), the center's own status and
//! metrics, and the compiled-in dashboard page at `/`.

use super::consume::ConsumeStats;
use super::merge::Merge;
use super::tables::table;
use crate::api::{bad_request, ApiError, Params};
use crate::auth::{read_guard, Tokens};
use crate::goals::{Asked, Level, SpanChoice, SpanError};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use zonesync_proto::Period;

/// What the handlers read: the merge, the consumer's counts and the staleness limit.
#[derive(Clone)]
pub struct CenterApi {
    /// Every zone's tallies.
    pub merge: Arc<Mutex<Merge>>,
    /// The consumer's counts.
    pub stats: Arc<ConsumeStats>,
    /// Seconds after which a silent zone is stale.
    pub stale_after_s: i64,
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The center's router; reads need the read token when one is set.
pub fn router(api: CenterApi, tokens: Arc<Tokens>) -> Router {
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(api.clone());
    let guarded = Router::new()
        .route("/api/v1/cities", get(cities))
        .route("/api/v1/cities/{city}/goals", get(city_goals))
        .route("/api/v1/province/goals", get(province_goals))
        .route("/api/v1/center/status", get(status))
        .route_layer(axum::middleware::from_fn_with_state(tokens, read_guard))
        .with_state(api);
    // The same page a zone aggregator serves; it asks `/api/v1/cities` which role it faces.
    open.merge(guarded).merge(crate::dashboard::assets_router())
}

/// The cities of the center's registry, each with its zones (in registry
/// order), and the role, so the dashboard shows the city and province view.
async fn cities(State(api): State<CenterApi>) -> ApiResult {
    let m = locked(&api)?;
    Ok(Json(crate::api::cities_of(m.zones(), "center")))
}

/// `?period=&span=` of a table.
#[derive(Deserialize)]
struct GoalQuery {
    period: Option<String>,
    span: Option<String>,
}

/// The period (default: the last complete month) and span (default: each goal's basis), as a zone reads them.
fn asked(q: GoalQuery) -> Result<Asked, ApiError> {
    let period = match &q.period {
        None => Period::last_complete_month(Utc::now()),
        Some(p) => Period::parse(p).map_err(|e| bad_request(e.to_string()))?,
    };
    let choice = q
        .span
        .as_deref()
        .map_or(Ok(SpanChoice::Basis), str::parse)
        .map_err(|e: SpanError| bad_request(e.to_string()))?;
    Asked::new(period, choice).map_err(|e| bad_request(e.to_string()))
}

fn locked(api: &CenterApi) -> Result<MutexGuard<'_, Merge>, ApiError> {
    api.merge
        .lock()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "center state lock poisoned"))
}

fn rollup(api: &CenterApi, level: Level, asked: Asked) -> ApiResult {
    let m = locked(api)?;
    let now = Utc::now();
    let t = table(&m, &level, asked, now, api.stale_after_s).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no zone of the registry belongs to {level:?}"),
        )
    })?;
    let ids: Vec<String> = t.zones.iter().map(|z| z.zone.to_string()).collect();
    Ok(Json(json!({
        "level": level,
        "zones": ids,
        "period": asked.period,
        "span": asked.span,
        "computed_at": now,
        "settings": m.settings(),
        "goals": t.rows,
        "zone_standing": t.zones,
        "completeness": t.completeness,
        "parts": t.parts,
        "ready": api.stats.ready.load(Ordering::Relaxed),
    })))
}

async fn city_goals(State(api): State<CenterApi>, Path(city): Path<String>, Params(q): Params<GoalQuery>) -> ApiResult {
    rollup(&api, Level::City(city), asked(q)?)
}

async fn province_goals(State(api): State<CenterApi>, Params(q): Params<GoalQuery>) -> ApiResult {
    rollup(&api, Level::Province, asked(q)?)
}

async fn healthz(State(api): State<CenterApi>) -> Response {
    let ready = api.stats.ready.load(Ordering::Relaxed);
    Json(json!({ "status": "ok", "rebuilt": ready })).into_response()
}

/// Per zone: version held, data age, lag, messages taken and refused; and the consumer's counts.
async fn status(State(api): State<CenterApi>) -> ApiResult {
    let m = locked(&api)?;
    let now = Utc::now();
    let zones: Vec<Value> = m
        .zones()
        .map(|z| {
            let h = m.held(&z.id);
            json!({
                "zone": z.id,
                "city": z.city,
                "epoch": h.and_then(|h| h.key).map(|k| k.epoch),
                "version": h.and_then(|h| h.key).map(|k| k.version),
                "data_at": h.and_then(|h| h.data_at),
                "data_age_s": h.and_then(|h| h.data_at).map(|t| (now - t).num_seconds()),
                "heard_at": h.and_then(|h| h.heard_at),
                "heard_age_s": h.and_then(|h| h.heard_at).map(|t| (now - t).num_seconds()),
                "lag_ms": h.map(|h| h.lag_ms),
                "max_lag_ms": h.map(|h| h.max_lag_ms),
                "accepted": h.map_or(0, |h| h.accepted),
                "unchanged": h.map_or(0, |h| h.unchanged),
                "refused": h.map_or(0, |h| h.refused),
            })
        })
        .collect();
    let s = &api.stats;
    Ok(Json(json!({
        "ready": s.ready.load(Ordering::Relaxed),
        "consumed": s.consumed.load(Ordering::Relaxed),
        "rebuilt": s.rebuilt.load(Ordering::Relaxed),
        "rebuild_ms": s.rebuild_ms.load(Ordering::Relaxed),
        "applied": s.applied.load(Ordering::Relaxed),
        "unchanged": s.unchanged.load(Ordering::Relaxed),
        "refused": s.refused.load(Ordering::Relaxed),
        "refused_by_reason": m.refused,
        "zones": zones,
    })))
}

/// `zonesync_center_…` metrics, each defined here once.
async fn metrics(State(api): State<CenterApi>) -> Response {
    let s = &api.stats;
    let mut text = String::new();
    for (name, help, v) in [
        (
            "zonesync_center_messages_consumed_total",
            "Tally messages read from the hub stream.",
            &s.consumed,
        ),
        (
            "zonesync_center_messages_applied_total",
            "Tally messages that changed a figure.",
            &s.applied,
        ),
        (
            "zonesync_center_messages_unchanged_total",
            "Duplicates, replays, older snapshots, heartbeats.",
            &s.unchanged,
        ),
        (
            "zonesync_center_messages_refused_total",
            "Tally messages refused.",
            &s.refused,
        ),
        (
            "zonesync_center_rebuild_messages_total",
            "Messages read by the start-up rebuild.",
            &s.rebuilt,
        ),
    ] {
        let _ = writeln!(
            text,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    if let Ok(m) = api.merge.lock() {
        let _ = writeln!(text, "# HELP zonesync_center_zone_version Data version held per zone.\n# TYPE zonesync_center_zone_version gauge");
        for z in m.zones() {
            let v = m.held(&z.id).and_then(|h| h.key).map_or(0, |k| k.version);
            let _ = writeln!(text, "zonesync_center_zone_version{{zone=\"{}\"}} {v}", z.id);
        }
        let _ = writeln!(text, "# HELP zonesync_center_zone_lag_milliseconds Delay from a zone's data changing to the center holding it (newest version).\n# TYPE zonesync_center_zone_lag_milliseconds gauge");
        for z in m.zones() {
            let v = m.held(&z.id).map_or(0, |h| h.lag_ms);
            let _ = writeln!(text, "zonesync_center_zone_lag_milliseconds{{zone=\"{}\"}} {v}", z.id);
        }
        let _ = writeln!(text, "# HELP zonesync_center_zone_refused_total Messages naming a zone that were refused.\n# TYPE zonesync_center_zone_refused_total counter");
        for z in m.zones() {
            let v = m.held(&z.id).map_or(0, |h| h.refused);
            let _ = writeln!(text, "zonesync_center_zone_refused_total{{zone=\"{}\"}} {v}", z.id);
        }
        let _ = writeln!(text, "# HELP zonesync_center_refused_total Messages refused, by reason.\n# TYPE zonesync_center_refused_total counter");
        for (reason, n) in &m.refused {
            let _ = writeln!(text, "zonesync_center_refused_total{{reason=\"{reason}\"}} {n}");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_list_each_city_once_with_its_zones_and_say_center() {
        let reg = crate::registry::Registry::from_toml(
            "[[zone]]\nid = \"jy-a\"\nname_zh = \"a\"\ncity = \"济源\"\nprovince = \"河南\"\n\
             [[zone]]\nid = \"py-a\"\nname_zh = \"p\"\ncity = \"濮阳\"\nprovince = \"河南\"\n\
             [[zone]]\nid = \"jy-b\"\nname_zh = \"b\"\ncity = \"济源\"\nprovince = \"河南\"\n",
            "registry.toml",
        )
        .unwrap();
        assert_eq!(
            crate::api::cities_of(reg.zones(), "center"),
            json!({"role": "center", "cities": [
                {"city": "济源", "province": "河南", "zones": ["jy-a", "jy-b"], "names": {"jy-a": "a", "jy-b": "b"}},
                {"city": "濮阳", "province": "河南", "zones": ["py-a"], "names": {"py-a": "p"}},
            ]})
        );
    }
}
