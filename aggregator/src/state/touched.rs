//! What a batch can change, worked out from the ledger's ops before the
//! read model applies them: the goal tallies recompute only the spans a
//! batch can reach.

use crate::facts::Op;
use chrono::{DateTime, Utc};
use zonesync_proto::{Accepted, Catalog, IndicatorKind, Period};

/// What a batch can change for one enterprise, worked out before it is
/// applied: the indicators with the time window their amounts may change in,
/// and the declared attributes. Goal tallies over spans outside a window are
/// left alone.
#[derive(Debug, Default)]
pub struct Touched {
    /// Indicator code and window.
    pub indicators: Vec<(String, Window)>,
    /// Declared attribute codes.
    pub attributes: Vec<String>,
}

/// A half-open interval of time `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start.
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

impl Window {
    /// All time.
    pub const ALL: Window = Window {
        from: DateTime::<Utc>::MIN_UTC,
        to: DateTime::<Utc>::MAX_UTC,
    };

    /// Whether it meets `[start, end)`.
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from < end && self.to > start
    }
}

impl Touched {
    /// What the ledger's `ops` for one enterprise can change.
    ///
    /// A period amount changes its period. A register changes the China
    /// months from the register before it to the one after (whole months, so
    /// an interval ending at midnight is covered whichever way it is split).
    /// A stock (gauge) is read as of a span's end from any earlier report or
    /// reading, so it may change any span. Other time-stamped readings only
    /// move the latest value, which flows do not read; their month is given anyway.
    pub fn of_ops<'a>(ops: &[Op], batch: &'a Accepted, catalog: &Catalog) -> Touched {
        let mut t = Touched::default();
        // One window per indicator, widened: a batch of a hundred registers
        // of one indicator asks the goal tallies once, not a hundred times.
        // Instants are gathered as first and last time and made whole China
        // months once, at the end.
        let mut spans: Vec<(&str, Span)> = Vec::new();
        // The kind of the last indicator asked (a batch is nearly always one).
        let mut last_kind: Option<(&str, IndicatorKind)> = None;
        let mut kind_of = |code: &'a str| match last_kind {
            Some((c, k)) if c == code => k,
            _ => {
                let k = catalog.get(code).map_or(IndicatorKind::Gauge, |i| i.kind);
                last_kind = Some((code, k));
                k
            }
        };
        for op in ops {
            match op {
                Op::Instant {
                    reading,
                    ts,
                    counter,
                    prev,
                    next,
                    ..
                } => {
                    let Some(r) = batch.readings.get(*reading) else {
                        continue;
                    };
                    let s = span_of(&mut spans, &r.indicator);
                    if *counter {
                        s.instants(prev.map_or(*ts, |p| p.0), next.map_or(*ts, |n| n.0));
                    } else if kind_of(&r.indicator) == IndicatorKind::Gauge {
                        s.all = true;
                    } else {
                        s.instants(*ts, *ts);
                    }
                }
                Op::Period { reading, period, .. } => {
                    let Some(r) = batch.readings.get(*reading) else {
                        continue;
                    };
                    let s = span_of(&mut spans, &r.indicator);
                    if kind_of(&r.indicator) == IndicatorKind::Gauge {
                        s.all = true;
                    } else {
                        s.widen(Window {
                            from: period.start(),
                            to: period.end(),
                        });
                    }
                }
                Op::Declared { declaration } => {
                    if let Some((code, _)) = batch.declarations.get(*declaration) {
                        t.attributes.push(code.clone());
                    }
                }
            }
        }
        for (code, s) in spans {
            if let Some(w) = s.window() {
                t.indicators.push((code.to_owned(), w));
            }
        }
        t
    }
}

/// The gathered span of one indicator, added on first use.
fn span_of<'s, 'a>(spans: &'s mut Vec<(&'a str, Span)>, code: &'a str) -> &'s mut Span {
    let i = match spans.iter().position(|(c, _)| *c == code) {
        Some(i) => i,
        None => {
            spans.push((code, Span::default()));
            spans.len() - 1
        }
    };
    &mut spans[i].1
}

/// What one batch's ops touch of one indicator, gathered.
#[derive(Default)]
struct Span {
    /// A stock: every span.
    all: bool,
    /// First and last time of instants (made whole months at the end).
    instants: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Periods.
    window: Option<Window>,
}

impl Span {
    fn instants(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) {
        self.instants = Some(self.instants.map_or((from, to), |(f, t)| (f.min(from), t.max(to))));
    }

    fn widen(&mut self, w: Window) {
        self.window = Some(self.window.map_or(w, |h| Window {
            from: h.from.min(w.from),
            to: h.to.max(w.to),
        }));
    }

    fn window(mut self) -> Option<Window> {
        if self.all {
            return Some(Window::ALL);
        }
        if let Some((from, to)) = self.instants {
            self.widen(months(from, to));
        }
        self.window
    }
}

/// The China months from the one containing `from` to the one containing `to`, whole.
fn months(from: DateTime<Utc>, to: DateTime<Utc>) -> Window {
    Window {
        from: Period::month_of(from).start(),
        to: Period::month_of(to).end(),
    }
}
