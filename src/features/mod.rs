//! Entity ids in, model rows out: the feature-store lookup behind `{"entity_ids": [...]}`.
//!
//! The store is chosen once at start from `FEATURE_STORE_URI` ([`StoreUri`]): a Feast feature
//! server over HTTP ([`client`]), a snapshot read in-process ([`snapshot`]; the default serves
//! each model's own `snapshot.csv`, so `make run` answers entity ids with nothing else running),
//! or none. Which feature service or view, join key and defaults a model needs is the manifest's
//! `feature_store` block, never code. Every backend's answer goes through one assembly step
//! ([`assemble`]), so a missing entity, a NULL value or a bad answer is the same error whichever
//! store gave it.
//!
//! One file per concern: [`error`] (what can fail), [`uri`] (the flag), [`trace`] (the caller's
//! trace context, forwarded), [`store`] (the backends, health and the snapshot check),
//! [`cache`] (rows cached in front of a remote store), [`protocol`] (Feast's wire format).
//! [`rows_for`] is the one call the serving pipeline makes. The mock feature store that speaks
//! the same protocol is the `ferrum-feature-store` binary's own code, not the library's.
//!
//! May import `model`, `telemetry` and `input`; never `api`, `serving` or `config`.

mod assemble;
mod cache;
pub mod client;
pub mod error;
pub mod protocol;
pub mod snapshot;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod trace;
pub mod uri;

pub use cache::RowCache;
pub use client::{ClientOptions, FeastClient};
pub use error::FeatureError;
pub use store::{FeatureStore, StoreConfig};
pub use trace::TraceContext;
pub use uri::StoreUri;

use crate::input::RequestInput;
use crate::model::{LoadedModel, Rows};

/// Turns a request's input into the model's rows: inline rows pass through; entity ids are
/// looked up in `store` (one call for the whole batch). The plain function `/predict` and
/// `/explain` both call, so both answer an entity id identically.
pub async fn rows_for(
    store: &FeatureStore,
    input: RequestInput,
    model: &LoadedModel,
    trace: &TraceContext,
) -> Result<Rows, FeatureError> {
    match input {
        RequestInput::Rows(rows) => Ok(rows),
        RequestInput::EntityIds(ids) => store.lookup(&model.entry, &ids, trace).await,
    }
}
