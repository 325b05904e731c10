//! Clock sanity: the one rule, applied by the aggregator on receipt and by
//! the agent before queueing, for how far ahead of the receiver's clock and
//! how far back an instant or a reporting period may lie.

use crate::period::Period;
use crate::problem::Reason;
use chrono::{DateTime, Duration, Utc};

/// Clock sanity for an instant: no later than `max_ahead` past `now`, and not
/// before `earliest`. The one rule for both ends: the aggregator applies it on
/// receipt with its limits, the agent before queueing with its own (tighter
/// ahead limit, and an enterprise's establishment date as `earliest`).
pub fn check_ts(
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    max_ahead: Duration,
    earliest: DateTime<Utc>,
) -> Result<(), Reason> {
    if ts > now + max_ahead {
        return Err(Reason::Future {
            ts,
            ahead_secs: (ts - now).num_seconds(),
            limit_secs: max_ahead.num_seconds(),
        });
    }
    if ts < earliest {
        return Err(Reason::TooOld { ts, earliest });
    }
    Ok(())
}

/// Clock sanity for a reporting period: it must have started by `now +
/// max_ahead` and must not have ended by `earliest`.
pub fn check_period(p: Period, now: DateTime<Utc>, max_ahead: Duration, earliest: DateTime<Utc>) -> Result<(), Reason> {
    if p.start() > now + max_ahead {
        return Err(Reason::PeriodInFuture(p));
    }
    if p.end() <= earliest {
        return Err(Reason::TooOld {
            ts: p.start(),
            earliest,
        });
    }
    Ok(())
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{:?} is not an RFC 3339 timestamp ({e})",
                s.chars().take(40).collect::<String>()
            )
        })
}
