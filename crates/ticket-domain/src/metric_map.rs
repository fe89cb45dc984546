//! [`MetricMap`]: at most one value per [`Metric`], held inline in metric order.
//!
//! A ticket keeps one clock per metric, and so do the read models' rows. As a `BTreeMap` each
//! of these was a separate allocation sized for eleven entries (about 3 KB for a ticket's
//! clocks) that every event applied had to reach through a pointer: a rebuild spent much of its
//! time on those cache misses and on faulting the memory in. Four inline slots are a quarter of
//! that and sit next to the rest of the row.
//!
//! It keeps the parts of `BTreeMap`'s interface the engine uses, iterates in the same (metric)
//! order, and serializes as the same map, so stored snapshots and read-model rows written with
//! a `BTreeMap` read back unchanged.

use std::fmt;

use crate::Metric;

static METRICS: [Metric; 4] = Metric::ALL;

const fn slot(metric: Metric) -> usize {
    match metric {
        Metric::FirstResponse => 0,
        Metric::FollowUp => 1,
        Metric::Resolution => 2,
        Metric::NoResponse => 3,
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MetricMap<V>([Option<V>; 4]);

impl<V> Default for MetricMap<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: fmt::Debug> fmt::Debug for MetricMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V> MetricMap<V> {
    pub const fn new() -> Self {
        Self([None, None, None, None])
    }

    pub fn get(&self, metric: &Metric) -> Option<&V> {
        self.0.get(slot(*metric)).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, metric: &Metric) -> Option<&mut V> {
        self.0.get_mut(slot(*metric)).and_then(Option::as_mut)
    }

    pub fn contains_key(&self, metric: &Metric) -> bool {
        self.get(metric).is_some()
    }

    /// Sets the metric's value; returns the one it replaces.
    pub fn insert(&mut self, metric: Metric, value: V) -> Option<V> {
        self.0.get_mut(slot(metric)).and_then(|v| v.replace(value))
    }

    pub fn remove(&mut self, metric: &Metric) -> Option<V> {
        self.0.get_mut(slot(*metric)).and_then(Option::take)
    }

    /// The metric's value, set by `new` first if there is none.
    pub fn get_or_insert_with(&mut self, metric: Metric, new: impl FnOnce() -> V) -> &mut V {
        let [a, b, c, d] = &mut self.0;
        let value = match metric {
            Metric::FirstResponse => a,
            Metric::FollowUp => b,
            Metric::Resolution => c,
            Metric::NoResponse => d,
        };
        value.get_or_insert_with(new)
    }

    pub fn len(&self) -> usize {
        self.0.iter().filter(|v| v.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The entries in metric order (as a `BTreeMap<Metric, _>` iterates).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Metric, &V)> + Clone {
        METRICS.iter().zip(&self.0).filter_map(|(m, v)| v.as_ref().map(|v| (m, v)))
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = (&Metric, &mut V)> {
        METRICS.iter().zip(&mut self.0).filter_map(|(m, v)| v.as_mut().map(|v| (m, v)))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Metric> + Clone {
        self.iter().map(|(m, _)| m)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + Clone {
        self.0.iter().filter_map(Option::as_ref)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> {
        self.0.iter_mut().filter_map(Option::as_mut)
    }

    /// Keeps the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Metric, &mut V) -> bool) {
        for (metric, value) in METRICS.iter().zip(&mut self.0) {
            if value.as_mut().is_some_and(|v| !keep(metric, v)) {
                *value = None;
            }
        }
    }
}

impl<V> FromIterator<(Metric, V)> for MetricMap<V> {
    fn from_iter<I: IntoIterator<Item = (Metric, V)>>(entries: I) -> Self {
        let mut map = Self::new();
        for (metric, value) in entries {
            map.insert(metric, value);
        }
        map
    }
}

/// An entry if the metric has a value.
type Present<V> = fn((Metric, Option<V>)) -> Option<(Metric, V)>;

impl<V> IntoIterator for MetricMap<V> {
    type Item = (Metric, V);
    type IntoIter = std::iter::FilterMap<
        std::iter::Zip<std::array::IntoIter<Metric, 4>, std::array::IntoIter<Option<V>, 4>>,
        Present<V>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let present: Present<V> = |(m, v)| v.map(|v| (m, v));
        Metric::ALL.into_iter().zip(self.0).filter_map(present)
    }
}

#[cfg(feature = "serde-state")]
mod serde_impl {
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::MetricMap;
    use crate::Metric;

    /// As a map in metric order: the bytes a `BTreeMap<Metric, V>` wrote.
    impl<V: Serialize> Serialize for MetricMap<V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.len()))?;
            for (metric, value) in self.iter() {
                map.serialize_entry(metric, value)?;
            }
            map.end()
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for MetricMap<V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Entries<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
                type Value = MetricMap<V>;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a map from metrics")
                }

                fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                    let mut map = MetricMap::new();
                    while let Some((metric, value)) = access.next_entry::<Metric, V>()? {
                        map.insert(metric, value);
                    }
                    Ok(map)
                }
            }
            deserializer.deserialize_map(Entries(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn metric() -> impl Strategy<Value = Metric> {
        prop::sample::select(Metric::ALL.to_vec())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Metric, u32),
        Remove(Metric),
        Bump(Metric),
        RetainEven,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (metric(), any::<u32>()).prop_map(|(m, v)| Op::Insert(m, v)),
            metric().prop_map(Op::Remove),
            metric().prop_map(Op::Bump),
            Just(Op::RetainEven),
        ]
    }

    proptest! {
        /// Given any run of changes, the map holds what a BTreeMap holds, in the same order,
        /// and serializes to the same bytes.
        #[test]
        fn it_behaves_as_a_btree_map(ops in prop::collection::vec(op(), 0..40)) {
            let mut ours = MetricMap::new();
            let mut theirs = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(m, v) => prop_assert_eq!(ours.insert(m, v), theirs.insert(m, v)),
                    Op::Remove(m) => prop_assert_eq!(ours.remove(&m), theirs.remove(&m)),
                    Op::Bump(m) => {
                        if let (Some(a), Some(b)) = (ours.get_mut(&m), theirs.get_mut(&m)) {
                            *a = a.wrapping_add(1);
                            *b = b.wrapping_add(1);
                        }
                        prop_assert_eq!(ours.get(&m), theirs.get(&m));
                    }
                    Op::RetainEven => {
                        ours.retain(|_, v| *v % 2 == 0);
                        theirs.retain(|_, v| *v % 2 == 0);
                    }
                }
                prop_assert_eq!(ours.len(), theirs.len());
                prop_assert_eq!(ours.is_empty(), theirs.is_empty());
                prop_assert!(ours.iter().eq(theirs.iter()));
                prop_assert!(ours.clone().into_iter().eq(theirs.clone().into_iter()));
            }
            #[cfg(feature = "serde-state")]
            {
                let config = bincode::config::standard();
                let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
                let bytes = bincode::serde::encode_to_vec(&ours, config).map_err(|e| fail(&e))?;
                prop_assert_eq!(&bytes, &bincode::serde::encode_to_vec(&theirs, config).map_err(|e| fail(&e))?);
                let (back, _): (MetricMap<u32>, usize) =
                    bincode::serde::decode_from_slice(&bytes, config).map_err(|e| fail(&e))?;
                prop_assert_eq!(back, ours);
            }
        }
    }
}
