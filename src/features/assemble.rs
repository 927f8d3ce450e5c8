//! One assembly step from per-(entity, feature) cells to the model's rows, whichever store gave
//! the cells: a missing entity, a NULL value or a bad answer is then the same error from every
//! backend.

use std::collections::BTreeMap;

use super::protocol::FieldStatus;
use super::FeatureError;
use crate::model::{ModelEntry, Rows};

/// One feature value of one entity, as a store gave it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell {
    /// A number.
    Value(f64),
    /// No value, and why (`NOT_FOUND` for every feature means the entity is unknown).
    Absent(FieldStatus),
    /// A value that is not a number (a string, a list): the store breaks the contract.
    Wrong(&'static str),
}

/// Builds the model's rows from per-(entity, feature) cells, whichever store produced them.
/// Unknown entities win over missing features in the error, so the client hears about the id
/// it can fix first; documented defaults fill NULL/missing/too-old values.
pub(super) fn assemble(
    entry: &ModelEntry,
    defaults: &BTreeMap<String, f64>,
    ids: &[String],
    origin: &str,
    mut cell: impl FnMut(usize, usize) -> Cell,
) -> Result<Rows, FeatureError> {
    let width = entry.feature_names.len();
    let mut data = Vec::with_capacity(ids.len() * width);
    let mut not_found = Vec::new();
    let mut first_problem: Option<FeatureError> = None;
    for (j, id) in ids.iter().enumerate() {
        let start = data.len();
        let mut every_feature_not_found = true;
        let mut problem = None;
        for (i, feature) in entry.feature_names.iter().enumerate() {
            let missing = |reason: String| FeatureError::FeatureMissing {
                entity: id.clone(),
                feature: feature.clone(),
                reason,
                origin: origin.to_owned(),
            };
            match cell(j, i) {
                Cell::Value(v) => {
                    every_feature_not_found = false;
                    let narrowed = v as f32;
                    if narrowed.is_finite() {
                        data.push(narrowed);
                    } else if let Some(&d) = defaults.get(feature) {
                        data.push(d as f32);
                    } else {
                        problem
                            .get_or_insert(missing(format!("is {v}, not a finite float32 number")));
                    }
                }
                Cell::Absent(status) => {
                    every_feature_not_found &= status == FieldStatus::NotFound;
                    if let Some(&d) = defaults.get(feature) {
                        data.push(d as f32);
                    } else {
                        problem.get_or_insert(missing(status_in_words(status)));
                    }
                }
                Cell::Wrong(kind) => {
                    return Err(FeatureError::StoreError(format!(
                        "feature '{feature}' of entity '{id}' is {kind}, not a number ({origin})"
                    )));
                }
            }
        }
        if every_feature_not_found {
            not_found.push(id.clone());
            data.truncate(start);
        } else if problem.is_some() && first_problem.is_none() {
            first_problem = problem;
        }
    }
    if !not_found.is_empty() {
        return Err(FeatureError::EntityNotFound {
            ids: not_found,
            origin: origin.to_owned(),
        });
    }
    if let Some(problem) = first_problem {
        return Err(problem);
    }
    Ok(Rows::new(data, width))
}

fn status_in_words(status: FieldStatus) -> String {
    match status {
        FieldStatus::NullValue | FieldStatus::Present => "is NULL (NULL_VALUE)".into(),
        FieldStatus::NotFound => "has no value (NOT_FOUND)".into(),
        FieldStatus::OutsideMaxAge => "is older than its max age (OUTSIDE_MAX_AGE)".into(),
        FieldStatus::Invalid => "is invalid (INVALID)".into(),
        FieldStatus::Unknown => "has no usable value (unknown status)".into(),
    }
}
