//! The timing headers of inference responses (`/predict`, `/explain`, V2 `infer`), as TEI
//! sends them: `x-queue-time` (waiting for a thread and a model session) and `x-inference-time`
//! (ONNX Runtime's work), both in milliseconds. Fractional (three decimals, so microsecond
//! resolution), since a single-row inference takes a few microseconds.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

// Header names as `HeaderName` constants: inserting with a `&str` key copies a custom name into
// a new allocation on every insert.

/// Header: milliseconds spent in ONNX Runtime.
pub const X_INFERENCE_TIME: HeaderName = HeaderName::from_static("x-inference-time");
/// Header: milliseconds waited before inference started.
pub const X_QUEUE_TIME: HeaderName = HeaderName::from_static("x-queue-time");

/// Where one request's inference time went. Several inference calls in one request (as an
/// explanation makes) add up with [`InferenceTiming::add`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InferenceTiming {
    /// From submission until a thread and a session were available.
    pub queue: Duration,
    /// From holding a session until the outputs were copied out.
    pub inference: Duration,
}

impl InferenceTiming {
    /// Accumulates another call's timing.
    pub fn add(&mut self, other: InferenceTiming) {
        self.queue += other.queue;
        self.inference += other.inference;
    }

    /// Writes both headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(X_QUEUE_TIME, millis(self.queue));
        headers.insert(X_INFERENCE_TIME, millis(self.inference));
    }
}

fn millis(d: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1000.0))
        .expect("a decimal number is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_milliseconds_with_microsecond_resolution() {
        let mut timing = InferenceTiming {
            queue: Duration::from_micros(1500),
            inference: Duration::from_micros(42),
        };
        timing.add(InferenceTiming {
            queue: Duration::ZERO,
            inference: Duration::from_micros(8),
        });
        let mut headers = HeaderMap::new();
        timing.write_headers(&mut headers);
        assert_eq!(headers[&X_QUEUE_TIME], "1.500");
        assert_eq!(headers[&X_INFERENCE_TIME], "0.050");
    }
}
