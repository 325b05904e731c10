//! A map keyed by (indicator, point), nested so that looking a series up by
//! the batch's `&str` codes allocates nothing: ingest does this for every
//! reading, and a tuple key of two `String`s cost two allocations, two frees
//! and a string comparison per level of the tree each time.

use std::collections::BTreeMap;

/// Indicator → point → value, iterated in (indicator, point) order.
#[derive(Debug, Clone)]
pub struct ByPoint<V> {
    inner: BTreeMap<String, BTreeMap<String, V>>,
}

impl<V> Default for ByPoint<V> {
    fn default() -> Self {
        Self { inner: BTreeMap::new() }
    }
}

impl<V> ByPoint<V> {
    /// The value of one series.
    pub fn get(&self, indicator: &str, point: &str) -> Option<&V> {
        self.inner.get(indicator)?.get(point)
    }

    /// The value of one series, to change.
    pub fn get_mut(&mut self, indicator: &str, point: &str) -> Option<&mut V> {
        self.inner.get_mut(indicator)?.get_mut(point)
    }

    /// Changes the value of one series with `f`, made first with `new` if
    /// absent (the codes are copied only then). One search per level where
    /// the series is held — a method handing the value back could not do
    /// that under today's borrow checker.
    pub fn update<R>(
        &mut self,
        indicator: &str,
        point: &str,
        new: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        match self.inner.get_mut(indicator) {
            Some(points) => match points.get_mut(point) {
                Some(v) => f(v),
                None => f(points.entry(point.to_owned()).or_insert_with(new)),
            },
            None => f(self
                .inner
                .entry(indicator.to_owned())
                .or_default()
                .entry(point.to_owned())
                .or_insert_with(new)),
        }
    }

    /// Every series of one indicator, by point.
    pub fn of(&self, indicator: &str) -> impl Iterator<Item = (&str, &V)> {
        self.inner
            .get(indicator)
            .into_iter()
            .flat_map(|p| p.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Every series, in (indicator, point) order.
    pub fn iter(&self) -> impl Iterator<Item = ((&str, &str), &V)> {
        self.inner
            .iter()
            .flat_map(|(i, p)| p.iter().map(move |(k, v)| ((i.as_str(), k.as_str()), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::ByPoint;

    #[test]
    fn series_are_found_by_codes_and_listed_in_order() {
        let mut m = ByPoint::default();
        m.update("gas", "G1", || 0, |v| *v += 5);
        m.update("electricity", "M2", || 0, |v| *v += 2);
        m.update("electricity", "M1", || 0, |v| *v += 1);
        m.update("electricity", "M1", || 0, |v| *v += 1);
        assert_eq!(m.get("electricity", "M1"), Some(&2));
        assert_eq!(m.get("electricity", "M3"), None);
        let all: Vec<_> = m.iter().map(|((i, p), v)| (i.to_owned(), p.to_owned(), *v)).collect();
        assert_eq!(
            all,
            vec![
                ("electricity".into(), "M1".into(), 2),
                ("electricity".into(), "M2".into(), 2),
                ("gas".into(), "G1".into(), 5)
            ]
        );
        assert_eq!(
            m.of("electricity").map(|(p, _)| p).collect::<Vec<_>>(),
            vec!["M1", "M2"]
        );
    }
}
