//! The optional TTL cache of looked-up rows in front of a remote store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A small TTL cache of looked-up rows, per model version and entity: a hot entity asked many
/// times a second costs one store call per TTL. Off unless `--feature-store-cache-ttl-ms` > 0,
/// because a cached row can be up to one TTL older than the store's.
pub struct RowCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, CachedRow>>,
}

/// (model `name@version`, entity id).
type CacheKey = (String, String);

/// When a row was fetched, and the row in model feature order.
type CachedRow = (Instant, Arc<[f32]>);

impl RowCache {
    /// An empty cache holding rows for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> RowCache {
        RowCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh row, if cached.
    pub fn get(&self, model: &str, id: &str) -> Option<Arc<[f32]>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (at, row) = entries.get(&(model.to_owned(), id.to_owned()))?;
        (at.elapsed() < self.ttl).then(|| Arc::clone(row))
    }

    /// Stores a row; when full, drops expired rows first, then everything (a burst of new
    /// ids must not grow memory without bound).
    pub fn put(&self, model: &str, id: &str, row: &[f32]) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            (model.to_owned(), id.to_owned()),
            (Instant::now(), row.into()),
        );
    }

    pub(super) fn describe(&self) -> Value {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        json!({"ttl_ms": self.ttl.as_millis() as u64, "entries": entries.len(), "capacity": self.capacity})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_expires_and_stays_bounded() {
        let cache = RowCache::new(Duration::from_millis(30), 2);
        cache.put("m@1", "a", &[1.0]);
        cache.put("m@1", "b", &[2.0]);
        assert_eq!(cache.get("m@1", "a").as_deref(), Some(&[1.0][..]));
        assert_eq!(cache.get("m@2", "a"), None);
        cache.put("m@1", "c", &[3.0]);
        assert!(cache.entries.lock().unwrap().len() <= 2);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get("m@1", "c"), None);
    }
}
