//! A hasher for the heartbeat table's agent ids. The table is looked up once per heartbeat
//! and once per agent on every monitor pass (100,000 agents: half a million lookups a second),
//! where std's SipHash — built to resist keys chosen by an attacker — was the largest cost in a
//! profile of the leader. Agent ids are small integers the state machine assigns in sequence,
//! not chosen by a client, so one multiplication (Fibonacci hashing) spreads them well enough.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// 2^64 / φ, odd: multiplying by it scatters consecutive ids over the high bits, and keeps
/// the low bits distinct for distinct ids.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; any other input still hashes deterministically.
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(FIBONACCI);
    }
}

pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
pub type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_hash_apart_and_maps_work() {
        let hash = |id: u64| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish()
        };
        assert_ne!(hash(1), hash(2));
        assert_ne!(hash(1) >> 57, hash(2) >> 57, "the high bits differ too");
        let mut map = IdMap::default();
        for id in 0..1_000u64 {
            map.insert(id, id * 2);
        }
        assert_eq!(map.len(), 1_000);
        assert_eq!(map.get(&999), Some(&1_998));
    }
}
