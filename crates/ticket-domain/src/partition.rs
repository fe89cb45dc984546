//! Partitions (issue 14, ADR 0015): a cluster divides its tickets among a fixed number of
//! partitions, chosen when the cluster is created; each partition has its own log and one owner
//! at a time. A ticket belongs to one partition for life, by a function of its id alone that any
//! client can compute in any language:
//!
//! ```text
//! h = FNV-1a, 32 bits, over the id's 16 bytes (big-endian, as the uuid is written)
//! h = h XOR (h >> 16)
//! partition = h mod count
//! ```
//!
//! (The fold makes every bit of the id count: FNV-1a's low bits depend only on the input's low
//! bits.) The golden values in the tests pin the function: changing it would move every ticket
//! of every cluster, so it never changes.
//!
//! A split appends the new ticket's events with its parent's in one atomic append, so the new
//! ticket must be in its parent's partition: [`Partitions::place`] turns a fresh id into one in a
//! given partition by choosing its last two bytes (random bits in a uuid v7 or v4).

use std::fmt;

use uuid::Uuid;

use crate::ids::TicketId;

/// The most partitions a cluster may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// One partition: `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(u16);

impl Partition {
    pub const fn index(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition count that is not in `1..=MAX_PARTITIONS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cluster has 1 to {MAX_PARTITIONS} partitions, not {0}")]
pub struct PartitionCountError(pub u64);

/// How many partitions a cluster has (1 for a single node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partitions(u16);

impl Partitions {
    /// One partition: a single node's log.
    pub const SINGLE: Partitions = Partitions(1);

    pub fn new(count: u64) -> Result<Self, PartitionCountError> {
        u16::try_from(count)
            .ok()
            .filter(|c| (1..=MAX_PARTITIONS).contains(c))
            .map(Self)
            .ok_or(PartitionCountError(count))
    }

    pub const fn count(self) -> u16 {
        self.0
    }

    /// The partition of a ticket, for life.
    pub fn of(self, id: TicketId) -> Partition {
        Partition((hash(id.as_uuid().as_bytes()) % u32::from(self.0)) as u16)
    }

    /// The partition a key names (the same hash as a ticket's, over the key's bytes): where a
    /// ticket opened without an id is placed, by its command id, so that a retry of the same
    /// command reaches the same partition and is answered from its log.
    pub fn of_key(self, key: &[u8]) -> Partition {
        Partition((hash(key) % u32::from(self.0)) as u16)
    }

    /// The partition numbered `index`, if there is one.
    pub fn get(self, index: u64) -> Option<Partition> {
        u16::try_from(index).ok().filter(|i| *i < self.0).map(Partition)
    }

    /// Every partition, in order.
    pub fn all(self) -> impl Iterator<Item = Partition> {
        (0..self.0).map(Partition)
    }

    /// `fresh` with its last two bytes chosen so that it is in `partition`: the first value of
    /// those bytes, counting up from what they were, that lands there. None only if none of the
    /// 65,536 does (never seen: each lands in a given partition with probability 1/count).
    pub fn place(self, fresh: Uuid, partition: Partition) -> Option<TicketId> {
        if partition.0 >= self.0 {
            return None;
        }
        let mut bytes = *fresh.as_bytes();
        let start = u16::from_be_bytes([bytes[14], bytes[15]]);
        (0..=u16::MAX).map(|step| start.wrapping_add(step)).find_map(|tail| {
            bytes[14..].copy_from_slice(&tail.to_be_bytes());
            let id = TicketId::from_uuid(Uuid::from_bytes(bytes));
            (self.of(id) == partition).then_some(id)
        })
    }
}

impl Default for Partitions {
    fn default() -> Self {
        Self::SINGLE
    }
}

/// FNV-1a (32 bits), folded.
fn hash(bytes: &[u8]) -> u32 {
    let h = fnv1a(bytes);
    h ^ (h >> 16)
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(text: &str) -> TicketId {
        TicketId::parse(text).unwrap()
    }

    /// Pinned values, also computed by an independent implementation (Python, in the ADR): a
    /// client in another language checks its own against these.
    #[test]
    fn the_partition_function_is_pinned() {
        let golden = [
            ("00000000-0000-0000-0000-000000000000", 0x6969_1905_u32),
            ("0190a5c4-7e1b-7c3d-9a2b-1c2d3e4f5a6b", 0x7295_ca2d),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", 0x3607_79f5),
            ("01935f2e-2b3c-7d4e-8f60-718293a4b5c6", 0xaff5_f628),
        ];
        let partitions: Vec<(u16, u16, u16)> = golden
            .iter()
            .map(|(text, fnv)| {
                assert_eq!(fnv1a(id(text).as_uuid().as_bytes()), *fnv, "FNV-1a of {text}");
                let of = |n| Partitions::new(n).unwrap().of(id(text)).index();
                (of(16), of(3), of(1024))
            })
            .collect();
        assert_eq!(partitions, vec![(12, 1, 108), (8, 1, 184), (2, 1, 1010), (13, 1, 477)]);
    }

    #[test]
    fn a_count_outside_one_to_the_maximum_is_refused() {
        assert_eq!(Partitions::new(0), Err(PartitionCountError(0)));
        assert_eq!(Partitions::new(1025), Err(PartitionCountError(1025)));
        assert_eq!(Partitions::new(70_000), Err(PartitionCountError(70_000)));
        assert_eq!(Partitions::new(1).map(Partitions::count), Ok(1));
        assert_eq!(Partitions::new(1024).map(Partitions::count), Ok(1024));
        assert_eq!(Partitions::new(16).unwrap().get(16), None);
        assert_eq!(Partitions::new(16).unwrap().all().count(), 16);
    }

    proptest! {
        /// A single node has one partition, and every ticket is in it.
        #[test]
        fn one_partition_holds_every_ticket(bytes in any::<[u8; 16]>()) {
            prop_assert_eq!(Partitions::SINGLE.of(TicketId::from_uuid(Uuid::from_bytes(bytes))).index(), 0);
        }

        /// A fresh id placed in a partition is there, differs from it only in its last two
        /// bytes, and keeps its uuid version and variant.
        #[test]
        fn a_placed_id_is_in_its_partition(count in 1u64..=1024, target in any::<u16>(), bytes in any::<[u8; 16]>()) {
            let partitions = Partitions::new(count).unwrap();
            let partition = partitions.get(u64::from(target) % count).unwrap();
            let fresh = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let placed = partitions.place(fresh, partition).unwrap();
            prop_assert_eq!(partitions.of(placed), partition);
            prop_assert_eq!(&placed.as_uuid().as_bytes()[..14], &fresh.as_bytes()[..14]);
            prop_assert_eq!(placed.as_uuid().get_version(), fresh.get_version());
            prop_assert_eq!(placed.as_uuid().get_variant(), fresh.get_variant());
        }

        /// A partition a count does not have is refused.
        #[test]
        fn no_id_is_placed_outside_the_count(count in 1u64..=1024, bytes in any::<[u8; 16]>()) {
            let partitions = Partitions::new(count).unwrap();
            prop_assert_eq!(partitions.place(Uuid::from_bytes(bytes), Partition(count as u16)), None);
        }
    }

    /// Random ids spread evenly: at 16 partitions, 64,000 ids give each partition within 10% of
    /// its share (a chi-square bound would be tighter; this catches a broken fold).
    #[test]
    fn random_ids_spread_evenly() {
        let partitions = Partitions::new(16).unwrap();
        let mut counts = [0u32; 16];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..64_000 {
            let mut bytes = [0u8; 16];
            for chunk in bytes.chunks_mut(8) {
                // splitmix64: a reproducible stream of random bytes.
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                chunk.copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
            }
            counts[usize::from(partitions.of(TicketId::from_uuid(Uuid::from_bytes(bytes))).index())] += 1;
        }
        for (p, n) in counts.iter().enumerate() {
            assert!((3_600..=4_400).contains(n), "partition {p} got {n} of 64,000");
        }
    }
}
