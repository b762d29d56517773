//! Prometheus metrics plumbing for Quorum: a registry handle the binary owns, `quorum_` naming,
//! shared histogram buckets, and the text exposition an HTTP handler serves.
//!
//! There is no global registry. The binary creates one [`MetricsRegistry`] at start-up, hands
//! `&mut Registry` to each crate's `Metrics::register` (each crate keeps its metric names and label
//! keys as constants in one place), then freezes it into a cheap-to-clone [`SharedRegistry`] whose
//! [`SharedRegistry::encode`] renders the exposition for `GET /metrics`.
//!
//! ```
//! use prometheus_client::metrics::counter::Counter;
//! use quorum_metrics::MetricsRegistry;
//!
//! let mut registry = MetricsRegistry::new();
//! let jobs = Counter::<u64>::default();
//! registry.registry_mut().register("jobs_submitted", "Jobs accepted", jobs.clone());
//! registry.register_build_info("advisor", "0.1.0");
//! let shared = registry.into_shared();
//!
//! jobs.inc();
//! let text = shared.encode().unwrap();
//! assert!(text.contains("quorum_jobs_submitted_total 1"));
//! assert!(text.contains(r#"quorum_build_info{component="advisor",version="0.1.0"} 1"#));
//! assert!(text.ends_with("# EOF\n"));
//! ```

use std::fmt;
use std::sync::Arc;

pub mod exposition;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// The prefix every Quorum metric carries (`quorum_…`).
pub const PREFIX: &str = "quorum";

/// The `Content-Type` of [`SharedRegistry::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Metric names owned by this crate.
pub mod names {
    /// `quorum_build_info{component, version} 1`.
    pub const BUILD_INFO: &str = "build_info";
}

/// Label keys owned by this crate.
pub mod labels {
    /// The Quorum component (`advisor`, `worker`, `autoscaler`, …).
    pub const COMPONENT: &str = "component";
    /// The component's version.
    pub const VERSION: &str = "version";
}

/// Histogram buckets, in seconds, for calls to LLM providers: 5 ms to 2 minutes.
pub const LLM_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Histogram buckets, in seconds, for fast in-process work and HTTP overhead: 50 µs to 1 s.
pub const FAST_LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Histogram buckets for token counts per call: 16 to 128k.
pub const TOKEN_BUCKETS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 131072.0,
];

/// The registry during start-up, while crates register their metric families.
///
/// Every family registered through [`MetricsRegistry::registry_mut`] is named `quorum_<name>`.
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    /// An empty registry whose metrics are prefixed with [`PREFIX`].
    pub fn new() -> Self {
        MetricsRegistry {
            registry: Registry::with_prefix(PREFIX),
        }
    }

    /// The underlying registry, for a crate's `Metrics::register(&mut Registry)`.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A sub-registry whose metrics are named `quorum_<prefix>_<name>`.
    pub fn sub_registry(&mut self, prefix: &str) -> &mut Registry {
        self.registry.sub_registry_with_prefix(prefix)
    }

    /// Registers `quorum_build_info{component, version}` with the value 1, so dashboards can tell
    /// which build is running.
    pub fn register_build_info(&mut self, component: &str, version: &str) {
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        family
            .get_or_create(&vec![
                (labels::COMPONENT.to_owned(), component.to_owned()),
                (labels::VERSION.to_owned(), version.to_owned()),
            ])
            .set(1);
        self.registry.register(
            names::BUILD_INFO,
            "Build of the running Quorum component",
            family,
        );
    }

    /// Ends registration: the returned handle only encodes, and clones share the registry.
    pub fn into_shared(self) -> SharedRegistry {
        SharedRegistry(Arc::new(self.registry))
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

/// The frozen registry, shared with the HTTP handler that serves `GET /metrics`.
#[derive(Clone)]
pub struct SharedRegistry(Arc<Registry>);

impl SharedRegistry {
    /// Renders every registered family as OpenMetrics text ([`CONTENT_TYPE`]).
    ///
    /// # Errors
    /// Returns [`EncodeError`] when a metric fails to encode (a label value that cannot be
    /// written, say).
    pub fn encode(&self) -> Result<String, EncodeError> {
        let mut out = String::with_capacity(4096);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Like [`SharedRegistry::encode`], appending to a buffer the caller reuses.
    ///
    /// # Errors
    /// Returns [`EncodeError`] when a metric fails to encode.
    pub fn encode_into(&self, out: &mut String) -> Result<(), EncodeError> {
        encode(out, &self.0).map_err(|_| EncodeError)
    }
}

impl fmt::Debug for SharedRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRegistry").finish_non_exhaustive()
    }
}

/// A metric family could not be encoded as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeError;

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to encode metrics as openmetrics text")
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn sub_registry_names_are_prefixed() {
        let mut registry = MetricsRegistry::new();
        let calls = Counter::<u64>::default();
        registry
            .sub_registry("llm")
            .register("calls", "LLM calls", calls.clone());
        calls.inc_by(3);
        let text = registry.into_shared().encode().unwrap();
        assert!(text.contains("# TYPE quorum_llm_calls counter"), "{text}");
        assert!(text.contains("quorum_llm_calls_total 3"), "{text}");
    }

    #[test]
    fn buckets_are_strictly_increasing() {
        for buckets in [LLM_LATENCY_BUCKETS, FAST_LATENCY_BUCKETS, TOKEN_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        }
    }

    #[test]
    fn histograms_use_the_shared_buckets() {
        let mut registry = MetricsRegistry::new();
        let h = Histogram::new(LLM_LATENCY_BUCKETS.iter().copied());
        registry
            .registry_mut()
            .register("llm_latency_seconds", "LLM latency", h.clone());
        h.observe(0.3);
        let text = registry.into_shared().encode().unwrap();
        assert!(
            text.contains(r#"quorum_llm_latency_seconds_bucket{le="0.5"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"quorum_llm_latency_seconds_bucket{le="0.25"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn clones_share_one_registry() {
        let mut registry = MetricsRegistry::new();
        let c = Counter::<u64>::default();
        registry.registry_mut().register("x", "x", c.clone());
        let a = registry.into_shared();
        let b = a.clone();
        c.inc();
        assert_eq!(a.encode().unwrap(), b.encode().unwrap());
    }
}
