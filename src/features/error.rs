//! Why an entity-id lookup failed: [`FeatureError`], one variant per thing the client or the
//! operator can act on, and [`FeatureError::kind`], the short label metrics count them by.
//! May import only `model` and `telemetry`; the API maps it to statuses, not this module.

/// Why an entity-id lookup failed. Each maps to one HTTP status and stable code in the API
/// (`crate::api::ApiError`), and each message names the entity, feature or store at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeatureError {
    /// No store is configured (`FEATURE_STORE_URI=none`), or the model's manifest entry names
    /// no `feature_store`: the client must send `instances`.
    #[error("entity lookups are off: {0}; send 'instances' instead")]
    Disabled(String),
    /// The store has no row for these entities (every feature `NOT_FOUND`).
    #[error("{} not found in {origin}", quote_ids(.ids))]
    EntityNotFound {
        /// The unknown ids, in request order.
        ids: Vec<String>,
        /// The feature service, view or snapshot that was asked.
        origin: String,
    },
    /// The entity exists but a feature has no usable value (NULL, not found, too old, not
    /// finite) and the manifest documents no default for it.
    #[error("entity '{entity}': feature '{feature}' {reason} in {origin}, and the manifest documents no default for it")]
    FeatureMissing {
        /// The entity whose value is missing.
        entity: String,
        /// The feature without a value.
        feature: String,
        /// What the store said, in words (e.g. "is NULL").
        reason: String,
        /// The feature service, view or snapshot that was asked.
        origin: String,
    },
    /// The store could not be reached (connection refused or reset, DNS, 503), after retries.
    #[error("the feature store at {uri} is unavailable: {reason}")]
    Unavailable {
        /// The store's address.
        uri: String,
        /// The last failure, in words.
        reason: String,
    },
    /// The store did not answer within the lookup's time budget.
    #[error("the feature store at {uri} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The store's address.
        uri: String,
        /// `--feature-store-timeout-ms`.
        timeout_ms: u64,
    },
    /// The store answered, but not with something usable: an error status, malformed JSON, a
    /// response of the wrong shape, or without a column the model needs.
    #[error("the feature store's answer cannot be used: {0}")]
    StoreError(String),
}

fn quote_ids(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut quoted: Vec<String> = ids.iter().take(SHOWN).map(|i| format!("'{i}'")).collect();
    if ids.len() > SHOWN {
        quoted.push(format!("and {} more", ids.len() - SHOWN));
    }
    let noun = if ids.len() == 1 { "entity" } else { "entities" };
    format!("{noun} {}", quoted.join(", "))
}

impl FeatureError {
    /// A short, stable label for the failure (the `kind` of
    /// `ferrum_feature_store_errors_total`), so metrics need not know this enum.
    pub fn kind(&self) -> &'static str {
        match self {
            FeatureError::Disabled(_) => "disabled",
            FeatureError::EntityNotFound { .. } => "entity_not_found",
            FeatureError::FeatureMissing { .. } => "feature_missing",
            FeatureError::Unavailable { .. } => "unavailable",
            FeatureError::Timeout { .. } => "timeout",
            FeatureError::StoreError(_) => "bad_answer",
        }
    }
}
