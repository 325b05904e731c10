//! `GET /api/v1/dashboard/events`: server-sent events telling the page when
//! to fetch again, so a wall screen follows new data without reloading.
//!
//! Each event carries every served zone's data version (`ZoneState.version`,
//! which grows with each stored change) and a fingerprint of the alert
//! states; the page refetches what it shows when either differs from the
//! last event. The state has no change notification, so the stream samples
//! it every [`SAMPLE`]: cheap (a read lock and a few integers) and bounded.
//! The stream ends on shutdown so it never holds up the server's exit.

use crate::app::App;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::json;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use zonesync_runtime::shutdown::Shutdown;

/// How often the state is looked at.
const SAMPLE: Duration = Duration::from_millis(500);

/// What the page compares: zone versions and an alert fingerprint.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    versions: BTreeMap<String, u64>,
    alerts: u64,
}

fn snapshot(app: &App) -> Snapshot {
    let versions = match app.state.read() {
        Ok(st) => app
            .zones
            .iter()
            .map(|z| (z.to_string(), st.zones.get(z).map_or(0, |s| s.version)))
            .collect(),
        Err(_) => BTreeMap::new(),
    };
    let mut h = DefaultHasher::new();
    // A failed read counts as "no alerts"; the next sample tries again.
    for a in app.alert_store.all().unwrap_or_default() {
        a.key.hash(&mut h);
        serde_json::to_string(&a.phase).unwrap_or_default().hash(&mut h);
        a.updated_at.hash(&mut h);
    }
    Snapshot {
        versions,
        alerts: h.finish(),
    }
}

fn event(s: &Snapshot) -> Event {
    Event::default()
        .event("change")
        .data(json!({ "versions": s.versions, "alerts": s.alerts.to_string() }).to_string())
}

/// The event stream: one event at once, then one per change, until shutdown.
pub fn stream(app: Arc<App>, shutdown: Shutdown) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let start = (app, shutdown, None::<Snapshot>);
    let s = stream::unfold(start, |(app, mut shutdown, last)| async move {
        loop {
            if shutdown.is_triggered() {
                return None;
            }
            let now = snapshot(&app);
            if last.as_ref() != Some(&now) {
                let ev = event(&now);
                return Some((Ok(ev), (app, shutdown, Some(now))));
            }
            tokio::select! {
                _ = shutdown.wait() => return None,
                _ = tokio::time::sleep(SAMPLE) => {}
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
