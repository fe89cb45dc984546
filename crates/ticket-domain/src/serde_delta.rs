//! Serde for `chrono::TimeDelta` as `(seconds, nanoseconds)`, for snapshots of ticket state.

use chrono::TimeDelta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<S: Serializer>(d: &TimeDelta, s: S) -> Result<S::Ok, S::Error> {
    (d.num_seconds(), d.subsec_nanos()).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimeDelta, D::Error> {
    let (seconds, nanos) = <(i64, i32)>::deserialize(d)?;
    TimeDelta::try_seconds(seconds)
        .and_then(|s| s.checked_add(&TimeDelta::nanoseconds(i64::from(nanos))))
        .ok_or_else(|| serde::de::Error::custom("duration out of range"))
}
