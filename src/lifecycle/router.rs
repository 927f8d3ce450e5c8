//! Where an unversioned request goes when a model's traffic is split across versions.
//!
//! The split is a fixed table of [`SLOTS`] slots, each owned by one version, in proportion to
//! the weights. A request with a routing key (the entity id, or `x-ferrum-routing-key`) takes
//! the slot a stable hash of the key names, so one key always sees one version while the
//! split is unchanged; a request without one takes the next slot of a golden-ratio (Weyl)
//! sequence over a shared counter, whose low discrepancy keeps each version's share of
//! answers within a fraction of a point of its weight after a few thousand requests.
//!
//! Changing the weights with [`SplitTable::reweighted`] keeps every slot whose version keeps
//! its share, so the keys that move are exactly the share that changed hands (a canary going
//! from 10% to 20% moves 10% of the keys, all of them to the canary).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LifecycleError, Version};

/// Slots in a split table: shares are set to 0.01 of a point.
pub const SLOTS: usize = 10_000;

/// Most versions one split may route to (slot owners are stored as one byte each).
pub const MAX_SPLIT_VERSIONS: usize = u8::MAX as usize;

/// The fractional part of the golden ratio in 64-bit fixed point: consecutive multiples of it
/// fill [0, 1) as evenly as any sequence can (Weyl, three-distance theorem).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A model's split of unversioned traffic: which version owns each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTable {
    /// The versions with a weight (including 0), ascending.
    versions: Vec<Version>,
    /// Each version's weight, as configured.
    weights: Vec<u32>,
    /// Per slot, the index in `versions` of its owner.
    slots: Vec<u8>,
}

impl SplitTable {
    /// The table for these weights (relative: 90/10 and 9/1 are the same split), laid out
    /// canonically: ascending versions own consecutive slot ranges. `field` names where the
    /// weights were read, for the error.
    pub fn new(
        weights: &BTreeMap<Version, u32>,
        field: &str,
    ) -> Result<SplitTable, LifecycleError> {
        let mut slots = Vec::with_capacity(SLOTS);
        for (index, quota) in quotas(weights, field)?.into_iter().enumerate() {
            slots.extend(std::iter::repeat_n(index as u8, quota));
        }
        Ok(SplitTable {
            versions: weights.keys().copied().collect(),
            weights: weights.values().copied().collect(),
            slots,
        })
    }

    /// The table for new weights that moves as few slots as possible from this one: each
    /// version keeps `min(old share, new share)` of its slots (those in its canonical range
    /// first), and only the freed slots change owner, going to their canonical owner when it
    /// still needs slots. For a split of two versions the result is the canonical table, so
    /// a restart after a live change routes every key as before.
    pub fn reweighted(
        &self,
        weights: &BTreeMap<Version, u32>,
        field: &str,
    ) -> Result<SplitTable, LifecycleError> {
        let canonical = SplitTable::new(weights, field)?;
        let quotas: Vec<usize> = canonical.shares().into_iter().map(|(_, n)| n).collect();
        let new_index: Vec<Option<u8>> = self
            .versions
            .iter()
            .map(|v| canonical.versions.binary_search(v).ok().map(|i| i as u8))
            .collect();
        let mut kept = vec![0usize; quotas.len()];
        let mut owner: Vec<Option<u8>> = vec![None; SLOTS];
        // Keep old slots: first those already where the canonical layout puts them.
        for in_canonical_range in [true, false] {
            for (slot, &old) in self.slots.iter().enumerate() {
                let Some(index) = new_index[old as usize] else {
                    continue;
                };
                let at_home = canonical.slots[slot] == index;
                if owner[slot].is_none()
                    && at_home == in_canonical_range
                    && kept[index as usize] < quotas[index as usize]
                {
                    owner[slot] = Some(index);
                    kept[index as usize] += 1;
                }
            }
        }
        // Hand out the freed slots: to their canonical owner if it needs them, else to
        // whichever version still does, in ascending order.
        for prefer_canonical in [true, false] {
            for (slot, owner) in owner.iter_mut().enumerate() {
                if owner.is_some() {
                    continue;
                }
                let wanted = if prefer_canonical {
                    let index = canonical.slots[slot];
                    (kept[index as usize] < quotas[index as usize]).then_some(index)
                } else {
                    (0..quotas.len())
                        .find(|&i| kept[i] < quotas[i])
                        .map(|i| i as u8)
                };
                if let Some(index) = wanted {
                    *owner = Some(index);
                    kept[index as usize] += 1;
                }
            }
        }
        Ok(SplitTable {
            slots: owner
                .into_iter()
                .map(|o| o.expect("quotas sum to SLOTS"))
                .collect(),
            ..canonical
        })
    }

    /// The version for one unversioned request: by the routing key's slot when there is a
    /// key, else by the next step of the shared counter's low-discrepancy sequence.
    pub fn pick(&self, routing_key: Option<&[u8]>, fallback_counter: &AtomicU64) -> Version {
        let point = match routing_key {
            Some(key) => stable_hash(key),
            None => fallback_counter
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(GOLDEN),
        };
        self.versions[self.slots[slot_of(point)] as usize]
    }

    /// Each version's share of unversioned traffic, in slots out of [`SLOTS`] (for `/health`
    /// and the change log line).
    pub fn shares(&self) -> Vec<(Version, usize)> {
        let mut counts = vec![0usize; self.versions.len()];
        for &slot in &self.slots {
            counts[slot as usize] += 1;
        }
        self.versions.iter().copied().zip(counts).collect()
    }

    /// The weights the table was built from.
    pub fn weights(&self) -> impl Iterator<Item = (Version, u32)> + '_ {
        self.versions
            .iter()
            .copied()
            .zip(self.weights.iter().copied())
    }

    /// Slots whose owner differs between two tables: how much traffic a change re-routes.
    pub fn moved_slots(&self, other: &SplitTable) -> usize {
        self.slots
            .iter()
            .zip(&other.slots)
            .filter(|(a, b)| self.versions[**a as usize] != other.versions[**b as usize])
            .count()
    }
}

/// Checks the weights and turns them into slot quotas summing to [`SLOTS`], in version order
/// (largest remainder, ties to the lower version).
fn quotas(weights: &BTreeMap<Version, u32>, field: &str) -> Result<Vec<usize>, LifecycleError> {
    if weights.len() > MAX_SPLIT_VERSIONS {
        return Err(LifecycleError::config(
            field,
            format!(
                "splits across {} versions; at most {MAX_SPLIT_VERSIONS}",
                weights.len()
            ),
        ));
    }
    let total: u64 = weights.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return Err(LifecycleError::config(
            field,
            "the weights sum to 0; give at least one version a positive weight",
        ));
    }
    let exact: Vec<(usize, u64)> = weights
        .values()
        .map(|w| {
            let scaled = u64::from(*w) * SLOTS as u64;
            ((scaled / total) as usize, scaled % total)
        })
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|(q, _)| *q).collect();
    let short = SLOTS - quotas.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(exact[i].1));
    for &i in by_remainder.iter().take(short) {
        quotas[i] += 1;
    }
    Ok(quotas)
}

/// FNV-1a over the key, then the splitmix64 finaliser so nearby keys land far apart. Written
/// out (not `std`'s hasher, whose output may change between Rust releases) because a key's
/// version must not change when the binary is rebuilt.
pub fn stable_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A 64-bit point in [0, 1) to its slot, without modulo bias.
fn slot_of(point: u64) -> usize {
    ((u128::from(point) * SLOTS as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(pairs: &[(u64, u32)]) -> BTreeMap<Version, u32> {
        pairs.iter().map(|&(v, w)| (Version(v), w)).collect()
    }

    fn table(pairs: &[(u64, u32)]) -> SplitTable {
        SplitTable::new(&weights(pairs), "split").unwrap()
    }

    /// Percentage of answers per version over `picks`.
    fn shares_of(picks: impl Iterator<Item = Version>) -> BTreeMap<Version, f64> {
        let mut counts: BTreeMap<Version, usize> = BTreeMap::new();
        let mut n = 0;
        for version in picks {
            *counts.entry(version).or_default() += 1;
            n += 1;
        }
        counts
            .into_iter()
            .map(|(v, c)| (v, 100.0 * c as f64 / n as f64))
            .collect()
    }

    fn random_keys(n: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|_| format!("entity-{}", rng.u64(..)).into_bytes())
            .collect()
    }

    #[test]
    fn weights_become_slot_quotas() {
        assert_eq!(
            table(&[(1, 90), (2, 10)]).shares(),
            [(Version(1), 9000), (Version(2), 1000)]
        );
        // Relative weights, largest remainder: 1/3 and 2/3 of 10,000.
        assert_eq!(
            table(&[(1, 1), (2, 2)]).shares(),
            [(Version(1), 3333), (Version(2), 6667)]
        );
        assert_eq!(
            table(&[(1, 0), (2, 5)]).shares(),
            [(Version(1), 0), (Version(2), 10_000)]
        );
        let error = SplitTable::new(&weights(&[(1, 0), (2, 0)]), "rollout.m.split").unwrap_err();
        assert_eq!(
            error.to_string(),
            "rollout.m.split: the weights sum to 0; give at least one version a positive weight"
        );
    }

    #[test]
    fn random_keys_land_within_3_points_of_the_weights() {
        let split = table(&[(1, 90), (2, 10)]);
        let counter = AtomicU64::new(0);
        let keys = random_keys(10_000, 7);
        let shares = shares_of(keys.iter().map(|k| split.pick(Some(k), &counter)));
        assert!((shares[&Version(1)] - 90.0).abs() <= 3.0, "{shares:?}");
        assert!((shares[&Version(2)] - 10.0).abs() <= 3.0, "{shares:?}");
        // Keyed picks do not advance the rotation.
        assert_eq!(counter.load(Ordering::Relaxed), 0);
        let three = table(&[(1, 50), (2, 30), (3, 20)]);
        let shares = shares_of(keys.iter().map(|k| three.pick(Some(k), &counter)));
        for (version, weight) in [(1, 50.0), (2, 30.0), (3, 20.0)] {
            assert!(
                (shares[&Version(version)] - weight).abs() <= 3.0,
                "{shares:?}"
            );
        }
    }

    #[test]
    fn one_key_always_sees_one_version() {
        let split = table(&[(1, 50), (2, 50)]);
        let counter = AtomicU64::new(0);
        for key in random_keys(500, 11) {
            let first = split.pick(Some(&key), &counter);
            for _ in 0..5 {
                assert_eq!(split.pick(Some(&key), &counter), first);
            }
            // A rebuilt identical table (e.g. after a restart) agrees.
            assert_eq!(table(&[(1, 50), (2, 50)]).pick(Some(&key), &counter), first);
        }
        // The hash is fixed, not seeded per process or Rust release: pinned values
        // (computed independently of this code, from the FNV-1a and splitmix64 definitions).
        assert_eq!(stable_hash(b"entity-1"), 0xb33a_5290_9bb1_a1e2);
        assert_eq!(stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
    }

    #[test]
    fn keyless_rotation_is_within_1_point_after_a_few_thousand_requests() {
        for pairs in [
            &[(1u64, 90u32), (2, 10)][..],
            &[(1, 97), (2, 3)][..],
            &[(1, 50), (2, 30), (3, 20)][..],
        ] {
            let split = table(pairs);
            // A reweighted table owns scattered slots, not ranges: the rotation still holds.
            let scattered = table(&[(1, 40), (2, 20), (3, 40)])
                .reweighted(&weights(pairs), "split")
                .unwrap();
            let counter = AtomicU64::new(0);
            let shares = shares_of((0..3_000).map(|_| scattered.pick(None, &counter)));
            for &(version, weight) in pairs {
                let share = shares.get(&Version(version)).copied().unwrap_or(0.0);
                assert!(
                    (share - weight as f64).abs() <= 1.0,
                    "{pairs:?}: {shares:?}"
                );
            }
            let counter = AtomicU64::new(0);
            for n in [2_000, 5_000] {
                let shares = shares_of((0..n).map(|_| split.pick(None, &counter)));
                for &(version, weight) in pairs {
                    let share = shares.get(&Version(version)).copied().unwrap_or(0.0);
                    assert!(
                        (share - weight as f64).abs() <= 1.0,
                        "{pairs:?} after {n}: {shares:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_weight_change_moves_only_the_share_that_changed_hands() {
        let keys = random_keys(10_000, 3);
        let counter = AtomicU64::new(0);
        // Two versions: 10% canary to 20% moves exactly 10% of the slots, all to the canary,
        // and lands on the canonical table.
        let canary10 = table(&[(1, 90), (2, 10)]);
        let canary20 = canary10
            .reweighted(&weights(&[(1, 80), (2, 20)]), "split")
            .unwrap();
        assert_eq!(canary10.moved_slots(&canary20), 1000);
        assert_eq!(canary20, table(&[(1, 80), (2, 20)]));
        for key in &keys {
            if canary10.pick(Some(key), &counter) == Version(2) {
                assert_eq!(canary20.pick(Some(key), &counter), Version(2));
            }
        }
        // And back: canonical again.
        let back = canary20
            .reweighted(&weights(&[(1, 90), (2, 10)]), "split")
            .unwrap();
        assert_eq!(back, canary10);

        // Three versions: the canonical layout would move 20% here; reweighting moves 10%.
        let before = table(&[(1, 40), (2, 20), (3, 40)]);
        let after_weights = weights(&[(1, 30), (2, 20), (3, 50)]);
        let canonical = SplitTable::new(&after_weights, "split").unwrap();
        let reweighted = before.reweighted(&after_weights, "split").unwrap();
        assert_eq!(before.moved_slots(&canonical), 2000);
        assert_eq!(before.moved_slots(&reweighted), 1000);
        assert_eq!(reweighted.shares(), canonical.shares());
        let moved_keys = keys
            .iter()
            .filter(|k| before.pick(Some(k), &counter) != reweighted.pick(Some(k), &counter))
            .count();
        assert!((800..=1200).contains(&moved_keys), "{moved_keys}");

        // Promotion: version 1 removed, version 2 takes everything.
        let promoted = canary10.reweighted(&weights(&[(2, 1)]), "split").unwrap();
        assert_eq!(promoted.shares(), [(Version(2), 10_000)]);
        assert_eq!(canary10.moved_slots(&promoted), 9000);
    }

    #[test]
    fn a_single_version_table_takes_everything() {
        let only = table(&[(4, 1)]);
        let counter = AtomicU64::new(0);
        assert_eq!(only.pick(None, &counter), Version(4));
        assert_eq!(only.pick(Some(b"k"), &counter), Version(4));
        assert_eq!(only.shares(), [(Version(4), SLOTS)]);
    }
}
