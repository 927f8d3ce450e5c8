//! Exact interventional Shapley values by enumerating every coalition, for any model.
//!
//! `v(S)` is the mean over background rows `b` of `f(x_S, b_rest)`, and
//! `phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! * (v(S+i) - v(S))`.
//! The `(2^M - 2) * |B|` model inputs (the empty and the full coalition are known: the
//! background mean and `f(x)`) are built straight into one reusable buffer and sent to the
//! model in large batches, never one call per coalition.

use super::{Cancel, ExplainError};
use crate::model::Rows;

/// The model as the explainers see it: one output (the explained column, widened exactly to
/// f64 whatever the model's float type) per input row.
pub type ModelFn<'a> = dyn FnMut(&Rows) -> Result<Vec<f64>, ExplainError> + 'a;

/// Model evaluations one exact explanation of a row costs: every coalition but the empty and
/// the full one, against every background row. Saturates instead of overflowing.
pub fn cost(n_features: usize, n_background: usize) -> u64 {
    if n_features >= 63 {
        return u64::MAX;
    }
    ((1u64 << n_features) - 2).saturating_mul(n_background as u64)
}

/// Exact Shapley values of `x` given `base = v(∅)` and `value = v(all) = f(x)`.
pub fn explain(
    x: &[f32],
    background: &Rows,
    base: f64,
    value: f64,
    batch_rows: usize,
    model: &mut ModelFn<'_>,
    cancel: &Cancel,
) -> Result<Vec<f64>, ExplainError> {
    let m = x.len();
    assert!(
        (1..63).contains(&m),
        "exact enumeration needs 1..63 features"
    );
    let full = (1usize << m) - 1;
    let inner = coalition_values(
        x,
        background,
        full.saturating_sub(1),
        &mut |j, members| {
            let mask = j + 1; // coalitions 1 ..= full-1
            members.extend((0..m).filter(|i| mask & (1 << i) != 0));
        },
        batch_rows,
        model,
        cancel,
    )?;
    let mut values = Vec::with_capacity(full + 1);
    values.push(base);
    values.extend(inner);
    values.push(value);
    Ok(shapley_from_values(&values, m))
}

/// `phi_i = sum_{S not containing i} w(|S|) (v(S+i) - v(S))` with `w(s) = 1 / (M * C(M-1, s))`;
/// `values` is indexed by the coalition's bitmask.
pub fn shapley_from_values(values: &[f64], m: usize) -> Vec<f64> {
    assert_eq!(values.len(), 1 << m);
    let weights: Vec<f64> = (0..m)
        .map(|s| 1.0 / (m as f64 * binomial(m - 1, s)))
        .collect();
    (0..m)
        .map(|i| {
            let bit = 1usize << i;
            let mut phi = 0.0;
            for s in 0..values.len() {
                if s & bit == 0 {
                    phi += weights[s.count_ones() as usize] * (values[s | bit] - values[s]);
                }
            }
            phi
        })
        .collect()
}

/// `v(S)` for `n` coalitions: `members(j, out)` appends coalition `j`'s features (taken from
/// `x`; the others come from each background row). Rows are built in batches of about
/// `batch_rows` (whole coalitions per batch) in one reused buffer; `cancel` is checked
/// between batches so an abandoned request stops within one batch.
pub fn coalition_values(
    x: &[f32],
    background: &Rows,
    n: usize,
    members: &mut dyn FnMut(usize, &mut Vec<usize>),
    batch_rows: usize,
    model: &mut ModelFn<'_>,
    cancel: &Cancel,
) -> Result<Vec<f64>, ExplainError> {
    let m = x.len();
    let n_background = background.n_rows;
    assert_eq!(background.n_cols, m);
    let per_batch = (batch_rows / n_background).max(1);
    let mut batch = Rows {
        data: Vec::with_capacity(per_batch.min(n) * n_background * m),
        n_rows: 0,
        n_cols: m,
    };
    let mut coalition = Vec::with_capacity(m);
    let mut values = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        cancel.check()?;
        let end = (start + per_batch).min(n);
        batch.data.clear();
        for j in start..end {
            coalition.clear();
            members(j, &mut coalition);
            for b in 0..n_background {
                let offset = batch.data.len();
                batch.data.extend_from_slice(background.row(b));
                for &i in &coalition {
                    batch.data[offset + i] = x[i];
                }
            }
        }
        batch.n_rows = (end - start) * n_background;
        let outputs = model(&batch)?;
        if outputs.len() != batch.n_rows {
            return Err(ExplainError::Model(format!(
                "{} rows gave {} outputs",
                batch.n_rows,
                outputs.len()
            )));
        }
        for chunk in outputs.chunks_exact(n_background) {
            let sum: f64 = chunk.iter().sum();
            values.push(sum / n_background as f64);
        }
        start = end;
    }
    Ok(values)
}

/// `n choose k` in f64.
pub(crate) fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::tree::tests::{brute_force_shapley, Rng};

    /// A nonlinear test model with interactions, evaluated in f32 like ONNX Runtime would.
    fn model(row: &[f32]) -> f32 {
        let mut y = 0.0f32;
        for (i, v) in row.iter().enumerate() {
            y += (i as f32 + 1.0) * v;
        }
        y + row[0] * row[row.len() - 1] + (row[1 % row.len()] * 2.0).tanh()
    }

    fn batch_model(calls: &mut usize) -> impl FnMut(&Rows) -> Result<Vec<f64>, ExplainError> + '_ {
        move |rows: &Rows| {
            *calls += 1;
            Ok((0..rows.n_rows)
                .map(|i| f64::from(model(rows.row(i))))
                .collect())
        }
    }

    #[test]
    fn matches_the_definition_and_adds_up() {
        let mut rng = Rng(1);
        for m in 1..=7 {
            let background = Rows::new((0..5 * m).map(|_| rng.grid()).collect(), m);
            let x: Vec<f32> = (0..m).map(|_| rng.grid()).collect();
            let base = (0..5)
                .map(|b| f64::from(model(background.row(b))))
                .sum::<f64>()
                / 5.0;
            let value = f64::from(model(&x));
            let mut calls = 0;
            let phi = explain(
                &x,
                &background,
                base,
                value,
                64,
                &mut batch_model(&mut calls),
                &Cancel::default(),
            )
            .unwrap();
            let expected = brute_force_shapley(m, |s| {
                (0..5)
                    .map(|b| {
                        let row: Vec<f32> = (0..m)
                            .map(|i| {
                                if s & (1 << i) != 0 {
                                    x[i]
                                } else {
                                    background.row(b)[i]
                                }
                            })
                            .collect();
                        f64::from(model(&row))
                    })
                    .sum::<f64>()
                    / 5.0
            });
            for (p, e) in phi.iter().zip(&expected) {
                assert!((p - e).abs() < 1e-9, "m={m}: {phi:?} vs {expected:?}");
            }
            let sum: f64 = phi.iter().sum();
            assert!((base + sum - value).abs() < 1e-9, "m={m}");
            // Batches of 64 rows hold 12 coalitions of 5 rows: never one call per coalition.
            let coalitions = (1usize << m) - 2;
            assert_eq!(calls, coalitions.div_ceil(12), "m={m}");
        }
    }

    #[test]
    fn a_linear_model_gets_its_textbook_attributions() {
        // f(x) = sum w_i x_i: phi_i = w_i (x_i - mean_b b_i).
        let w = [0.5f32, -2.0, 3.0, 1.25];
        let background = Rows::new(vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0], 4);
        let x = [2.0f32, 2.0, 2.0, 2.0];
        let f = |row: &[f32]| row.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>();
        let mut model = |rows: &Rows| {
            Ok((0..rows.n_rows)
                .map(|i| f64::from(f(rows.row(i))))
                .collect::<Vec<_>>())
        };
        let base = (f64::from(f(background.row(0))) + f64::from(f(background.row(1)))) / 2.0;
        let phi = explain(
            &x,
            &background,
            base,
            f64::from(f(&x)),
            1000,
            &mut model,
            &Cancel::default(),
        )
        .unwrap();
        let means = [0.0, 1.0, 2.0, 3.0];
        for i in 0..4 {
            let expected = f64::from(w[i]) * (f64::from(x[i]) - means[i]);
            assert!((phi[i] - expected).abs() < 1e-12, "{phi:?}");
        }
    }

    #[test]
    fn a_cancelled_request_stops_between_batches() {
        let cancel = Cancel::default();
        let background = Rows::new(vec![0.0; 8], 2);
        let mut calls = 0;
        let mut model = |rows: &Rows| {
            calls += 1;
            cancel.cancel();
            Ok(vec![0.0; rows.n_rows])
        };
        let result = coalition_values(
            &[1.0, 1.0],
            &background,
            10,
            &mut |_, members| members.push(0),
            4,
            &mut model,
            &cancel.clone(),
        );
        assert!(matches!(result, Err(ExplainError::Cancelled)));
        assert_eq!(calls, 1);
    }

    #[test]
    fn cost_counts_every_inner_coalition_against_every_background_row() {
        assert_eq!(cost(10, 100), 1022 * 100);
        assert_eq!(cost(1, 100), 0);
        assert_eq!(cost(70, 100), u64::MAX);
    }
}
