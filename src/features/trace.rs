//! The W3C trace context (`traceparent`, `tracestate`) of the request being served, read from
//! its headers and checked, so the feature-store client can forward it and the store's spans
//! join the caller's trace.

use axum::http::HeaderMap;

/// The W3C trace context of the request being served, forwarded to the feature store so its
/// spans join the caller's trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// A valid incoming `traceparent` header.
    pub traceparent: Option<String>,
    /// The incoming `tracestate`, forwarded only alongside a valid `traceparent`.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Takes `traceparent` (and `tracestate`) from request headers; an invalid `traceparent`
    /// is dropped, as the W3C spec asks, rather than forwarded.
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        };
        let traceparent = header("traceparent").filter(|v| valid_traceparent(v));
        let tracestate = traceparent
            .as_ref()
            .and(header("tracestate"))
            .filter(|v| !v.is_empty() && v.len() <= 512);
        TraceContext {
            traceparent,
            tracestate,
        }
    }
}

/// `version-traceid-parentid-flags`, lowercase hex, non-zero ids, version `ff` forbidden;
/// version `00` has exactly these four fields, later versions may append more.
fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if parts.len() < 4 || !hex(parts[0], 2) || parts[0] == "ff" {
        return false;
    }
    if parts[0] == "00" && parts.len() != 4 {
        return false;
    }
    hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_traceparents_are_forwarded() {
        let context = |tp: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", tp.parse().unwrap());
            headers.insert("tracestate", "vendor=1".parse().unwrap());
            TraceContext::from_headers(&headers)
        };
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(
            context(good),
            TraceContext {
                traceparent: Some(good.into()),
                tracestate: Some("vendor=1".into())
            }
        );
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(context(bad), TraceContext::default(), "{bad}");
        }
        // A later version may carry more fields.
        let future = "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz";
        assert_eq!(context(future).traceparent.as_deref(), Some(future));
        assert_eq!(
            TraceContext::from_headers(&HeaderMap::new()),
            TraceContext::default()
        );
    }
}
