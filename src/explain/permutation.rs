//! Antithetic permutation sampling: the fallback for models too wide to enumerate and not
//! tree ensembles.
//!
//! For a permutation `π`, adding features of `x` one at a time (over the background, as in the
//! exact method) gives marginal contributions that telescope to `v(all) - v(∅)`, so the
//! average over any set of permutations adds up exactly: additivity holds by construction,
//! only the split between features is estimated. Each random permutation is paired with its
//! reverse (antithetic sampling), which cancels much of the variance. The permutations come
//! from a fixed seed, so the same request always gets the same answer.
//!
//! The sampling error is reported with the estimate: each antithetic pair's average
//! contribution is one independent draw of a feature's Shapley value, so the standard error of
//! the mean over the pairs bounds how far the estimate may sit from the exact value (within
//! two of them about 95% of the time when there are many pairs; with few the spread itself is
//! estimated roughly: a 95% interval at 5 pairs is ±2.8 of them).

use super::exact::{coalition_values, ModelFn};
use super::{Cancel, ExplainError};
use crate::model::Rows;

/// The fixed seed: explanations are reproducible run to run and server to server.
pub const SEED: u64 = 0x5EED_F0E5_5E2F_E00D;

/// Model evaluations per explained row: each permutation visits `M - 1` new coalitions (the
/// empty and full ones are known), each against every background row.
pub fn cost(n_features: usize, n_permutations: usize, n_background: usize) -> u64 {
    (n_permutations as u64)
        .saturating_mul(n_features.saturating_sub(1) as u64)
        .saturating_mul(n_background as u64)
}

/// `n` permutations of `0..m` (`n` even): `n / 2` seeded shuffles, each followed by its
/// reverse.
pub fn permutations(m: usize, n: usize, seed: u64) -> Vec<Vec<usize>> {
    assert!(
        n >= 2 && n.is_multiple_of(2),
        "antithetic sampling needs an even count"
    );
    let mut state = seed;
    let mut next = move || {
        // SplitMix64: small, fast, and good enough to pick permutations.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n / 2 {
        let mut p: Vec<usize> = (0..m).collect();
        for i in (1..m).rev() {
            // Fisher-Yates; the modulo bias is below 2^-50 for any realistic width.
            let j = (next() % (i as u64 + 1)) as usize;
            p.swap(i, j);
        }
        let reversed: Vec<usize> = p.iter().rev().copied().collect();
        out.push(p);
        out.push(reversed);
    }
    out
}

/// Sampled Shapley values and their sampling error.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Per feature, the mean contribution over every permutation.
    pub attributions: Vec<f64>,
    /// Per feature, the standard error of that mean over the antithetic pairs; `None` with a
    /// single pair, which gives no estimate of its spread.
    pub standard_errors: Option<Vec<f64>>,
}

/// Sampled Shapley values of `x` given `base = v(∅)` and `value = f(x)`; `permutations` come
/// in antithetic pairs, each next to its reverse (as [`permutations`] makes them).
#[allow(clippy::too_many_arguments)] // the same inputs as the exact method, plus the sample
pub fn explain(
    x: &[f32],
    background: &Rows,
    base: f64,
    value: f64,
    permutations: &[Vec<usize>],
    batch_rows: usize,
    model: &mut ModelFn<'_>,
    cancel: &Cancel,
) -> Result<Sampled, ExplainError> {
    let m = x.len();
    let inner = m.saturating_sub(1);
    let values = coalition_values(
        x,
        background,
        permutations.len() * inner,
        &mut |j, members| {
            let (p, k) = (j / inner, j % inner + 1);
            members.extend_from_slice(&permutations[p][..k]);
        },
        batch_rows,
        model,
        cancel,
    )?;
    let mut phi = vec![0.0; m];
    // Row `q`: pair `q`'s contributions, each permutation's half.
    let pairs = permutations.len() / 2;
    let mut pair_means = vec![0.0; pairs * m];
    for (p, perm) in permutations.iter().enumerate() {
        let mut previous = base;
        for (k, &feature) in perm.iter().enumerate() {
            let current = if k + 1 == m {
                value
            } else {
                values[p * inner + k]
            };
            phi[feature] += current - previous;
            pair_means[(p / 2) * m + feature] += (current - previous) / 2.0;
            previous = current;
        }
    }
    for v in &mut phi {
        *v /= permutations.len() as f64;
    }
    let standard_errors = (pairs >= 2).then(|| {
        (0..m)
            .map(|i| {
                let mean = pair_means.iter().skip(i).step_by(m).sum::<f64>() / pairs as f64;
                let squares: f64 = pair_means
                    .iter()
                    .skip(i)
                    .step_by(m)
                    .map(|c| (c - mean).powi(2))
                    .sum();
                (squares / (pairs - 1) as f64 / pairs as f64).sqrt()
            })
            .collect()
    });
    Ok(Sampled {
        attributions: phi,
        standard_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::exact;
    use crate::explain::tree::tests::Rng;

    #[test]
    fn permutations_are_seeded_antithetic_pairs() {
        let a = permutations(6, 8, SEED);
        assert_eq!(a, permutations(6, 8, SEED));
        assert_ne!(a, permutations(6, 8, SEED + 1));
        for pair in a.chunks(2) {
            let mut reversed = pair[0].clone();
            reversed.reverse();
            assert_eq!(pair[1], reversed);
            let mut sorted = pair[0].clone();
            sorted.sort();
            assert_eq!(sorted, (0..6).collect::<Vec<_>>());
        }
    }

    fn additive_with_interaction(row: &[f32]) -> f32 {
        row.iter().sum::<f32>() + row[0] * row[1]
    }

    #[test]
    fn adds_up_exactly_and_is_exact_for_additive_models() {
        let mut rng = Rng(9);
        let m = 20;
        let background = Rows::new((0..4 * m).map(|_| rng.grid()).collect(), m);
        let x: Vec<f32> = (0..m).map(|_| rng.grid()).collect();
        let f = additive_with_interaction;
        let mut model = |rows: &Rows| {
            Ok((0..rows.n_rows)
                .map(|i| f64::from(f(rows.row(i))))
                .collect::<Vec<_>>())
        };
        let base = (0..4).map(|b| f64::from(f(background.row(b)))).sum::<f64>() / 4.0;
        let value = f64::from(f(&x));
        let perms = permutations(m, 10, SEED);
        let sampled = explain(
            &x,
            &background,
            base,
            value,
            &perms,
            256,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        let (phi, errors) = (&sampled.attributions, sampled.standard_errors.unwrap());
        let sum: f64 = phi.iter().sum();
        assert!((base + sum - value).abs() < 1e-9);
        // Features 2.. enter additively: their Shapley value is exact whatever the order, and
        // every pair draws it exactly (no spread).
        let mean = |i: usize| (0..4).map(|b| f64::from(background.row(b)[i])).sum::<f64>() / 4.0;
        for i in 2..m {
            let expected = f64::from(x[i]) - mean(i);
            assert!((phi[i] - expected).abs() < 1e-6, "feature {i}: {}", phi[i]);
            assert!(errors[i] < 1e-6, "feature {i}: {}", errors[i]);
        }
        // Features 0 and 1 interact pairwise, and an antithetic pair is exact for that: each
        // pair sees 1 before 0 once and after once, so every pair draws the exact value.
        assert!(errors[0] < 1e-6 && errors[1] < 1e-6, "{errors:?}");
    }

    #[test]
    fn a_three_way_interaction_leaves_a_sampling_error() {
        // Unlike pairwise ones, a product of three features is not cancelled by antithetic
        // pairs: the pairs draw different values for those three, and the error says so.
        let f = |r: &[f32]| r.iter().sum::<f32>() + r[0] * r[1] * r[2];
        let background = Rows::new(
            vec![
                0.5, -1.0, 2.0, 0.0, 1.0, //
                -0.5, 1.5, 0.25, 1.0, 0.0, //
                2.0, 0.0, -1.5, -1.0, 2.0,
            ],
            5,
        );
        let x = [1.0f32, 2.0, 3.0, 0.5, -1.0];
        let mut model = |rows: &Rows| {
            Ok((0..rows.n_rows)
                .map(|i| f64::from(f(rows.row(i))))
                .collect::<Vec<_>>())
        };
        let base = (0..3).map(|b| f64::from(f(background.row(b)))).sum::<f64>() / 3.0;
        let sampled = explain(
            &x,
            &background,
            base,
            f64::from(f(&x)),
            &permutations(5, 10, SEED),
            64,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        let errors = sampled.standard_errors.unwrap();
        // A pair draws one of two values for each of the three: (c(∅) + c(both others)) / 2
        // when the pair has it first and last, (c(one) + c(the other)) / 2 when in the middle.
        // A feature never in the middle of the 5 pairs drawn (chance 13% each) shows no spread.
        assert!(
            errors[..3].iter().filter(|&&e| e > 1e-3).count() >= 2,
            "{errors:?}"
        );
        assert!((3..5).all(|i| errors[i] < 1e-9), "{errors:?}");
    }

    #[test]
    fn the_standard_error_is_that_of_the_pair_means() {
        // Contributions per pair, by hand: with 4 permutations (2 pairs) of 3 features over one
        // background row, pair q's contribution of i is the mean of its two permutations'.
        let background = Rows::new(vec![0.0, 0.0, 0.0], 3);
        let x = [1.0f32, 2.0, 3.0];
        let f = |r: &[f32]| r[0] * r[1] + r[2];
        let mut model = |rows: &Rows| {
            Ok((0..rows.n_rows)
                .map(|i| f64::from(f(rows.row(i))))
                .collect::<Vec<_>>())
        };
        let perms = vec![vec![0, 1, 2], vec![2, 1, 0], vec![1, 2, 0], vec![0, 2, 1]];
        let value = f64::from(f(&x));
        let sampled = explain(
            &x,
            &background,
            0.0,
            value,
            &perms,
            16,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        // Feature 0 adds 0 when first, 2 (= x1) when after feature 1: pair 0 gives (0 + 2) / 2,
        // pair 1 (2 + 0) / 2; feature 1 likewise; feature 2 always adds 3.
        assert_eq!(sampled.attributions, vec![1.0, 1.0, 3.0]);
        assert_eq!(sampled.standard_errors, Some(vec![0.0, 0.0, 0.0]));
        let one_pair = explain(
            &x,
            &background,
            0.0,
            value,
            &perms[..2],
            16,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(one_pair.standard_errors, None);
        // A second "pair" in which feature 0 always comes after feature 1.
        let uneven = vec![vec![0, 1, 2], vec![2, 1, 0], vec![1, 0, 2], vec![1, 2, 0]];
        let sampled = explain(
            &x,
            &background,
            0.0,
            value,
            &uneven,
            16,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        // Feature 0: pair 0 (0 + 2) / 2 = 1, pair 1 (2 + 2) / 2 = 2. Mean 1.5, sample variance
        // 0.5, standard error sqrt(0.5 / 2) = 0.5.
        assert_eq!(sampled.attributions[0], 1.5);
        assert_eq!(sampled.standard_errors.unwrap()[0], 0.5);
    }

    #[test]
    fn antithetic_pairs_are_exact_for_two_features() {
        // With two features, one permutation and its reverse are all the orders there are.
        let background = Rows::new(vec![0.0, 1.0, 2.0, -1.0], 2);
        let x = [1.5f32, 0.5];
        let f = additive_with_interaction;
        let mut model = |rows: &Rows| {
            Ok((0..rows.n_rows)
                .map(|i| f64::from(f(rows.row(i))))
                .collect::<Vec<_>>())
        };
        let base = (f64::from(f(background.row(0))) + f64::from(f(background.row(1)))) / 2.0;
        let value = f64::from(f(&x));
        let phi = explain(
            &x,
            &background,
            base,
            value,
            &permutations(2, 2, SEED),
            16,
            &mut model,
            &Cancel::default(),
        )
        .unwrap()
        .attributions;
        let exact = exact::explain(
            &x,
            &background,
            base,
            value,
            16,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        for (p, e) in phi.iter().zip(&exact) {
            assert!((p - e).abs() < 1e-12, "{phi:?} vs {exact:?}");
        }
    }

    #[test]
    fn cost_counts_new_coalitions_only() {
        assert_eq!(cost(30, 10, 100), 10 * 29 * 100);
        assert_eq!(cost(1, 10, 100), 0);
    }
}
