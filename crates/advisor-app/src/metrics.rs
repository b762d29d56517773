//! The advisor's Prometheus metrics (names without the registry's `quorum_` prefix; counters
//! get `_total` on export). Resilience metrics (retries, breaker state, rate-limited calls)
//! come from [`quorum_resilience::prometheus::ResilienceMetrics`], store retention from
//! [`quorum_store::StoreMetrics`].

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use quorum_metrics::{FAST_LATENCY_BUCKETS, LLM_LATENCY_BUCKETS};
use quorum_store::JobState;

/// Metric names.
pub mod names {
    /// HTTP request duration, labels `route`, `method`, `status`.
    pub const HTTP_DURATION: &str = "http_request_duration_seconds";
    /// Requests being handled.
    pub const HTTP_ACTIVE: &str = "http_requests_active";
    /// Open SSE streams.
    pub const STREAMS_ACTIVE: &str = "sse_streams_active";
    /// Jobs by state (from the store, refreshed at each scrape).
    pub const JOBS: &str = "advisor_jobs";
    /// Jobs running in this instance.
    pub const JOBS_RUNNING: &str = "advisor_jobs_running";
    /// Pending jobs (the queue depth).
    pub const QUEUE_DEPTH: &str = "advisor_queue_depth";
    /// Job duration from claim to end, label `state`.
    pub const JOB_DURATION: &str = "advisor_job_duration_seconds";
    /// LLM calls, labels `provider`, `model`, `outcome` (`ok` or the error class).
    pub const LLM_CALLS: &str = "llm_calls";
    /// LLM call latency to the full answer, labels `provider`, `model`.
    pub const LLM_LATENCY: &str = "llm_latency_seconds";
    /// Time to the first streamed token, labels `provider`, `model`.
    pub const LLM_TTFT: &str = "llm_time_to_first_token_seconds";
    /// Tokens, labels `provider`, `model`, `kind` (`prompt` or `completion`).
    pub const LLM_TOKENS: &str = "llm_tokens";
    /// Answers that came from a fallback, label `model` (the one asked).
    pub const LLM_FALLBACKS: &str = "llm_fallbacks";
    /// Latency the advisor adds on top of the provider, label `route`.
    pub const OVERHEAD: &str = "advisor_overhead_seconds";
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    model: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    provider: String,
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn fast() -> Histogram {
    Histogram::new(FAST_LATENCY_BUCKETS.iter().copied())
}

fn slow() -> Histogram {
    Histogram::new(LLM_LATENCY_BUCKETS.iter().copied())
}

/// The advisor's metric families. Cheap to clone (clones update the same families).
#[derive(Debug, Clone)]
pub struct AdvisorMetrics {
    http_duration: Hist<HttpLabels>,
    http_active: Gauge,
    streams_active: Gauge,
    jobs: Family<StateLabels, Gauge>,
    jobs_running: Gauge,
    queue_depth: Gauge,
    job_duration: Hist<StateLabels>,
    llm_calls: Family<CallLabels, Counter>,
    llm_latency: Hist<ModelLabels>,
    llm_ttft: Hist<ModelLabels>,
    llm_tokens: Family<TokenLabels, Counter>,
    llm_fallbacks: Family<FallbackLabels, Counter>,
    overhead: Hist<RouteLabels>,
}

impl AdvisorMetrics {
    /// Registers every family in `registry` and returns the handle.
    pub fn register(registry: &mut Registry) -> Self {
        let m = AdvisorMetrics {
            http_duration: Family::new_with_constructor(fast_or_slow_http),
            http_active: Gauge::default(),
            streams_active: Gauge::default(),
            jobs: Family::default(),
            jobs_running: Gauge::default(),
            queue_depth: Gauge::default(),
            job_duration: Family::new_with_constructor(slow),
            llm_calls: Family::default(),
            llm_latency: Family::new_with_constructor(slow),
            llm_ttft: Family::new_with_constructor(slow),
            llm_tokens: Family::default(),
            llm_fallbacks: Family::default(),
            overhead: Family::new_with_constructor(fast),
        };
        registry.register(
            names::HTTP_DURATION,
            "HTTP request duration by route, method and status (streams: to the headers)",
            m.http_duration.clone(),
        );
        registry.register(
            names::HTTP_ACTIVE,
            "HTTP requests being handled",
            m.http_active.clone(),
        );
        registry.register(
            names::STREAMS_ACTIVE,
            "Open server-sent event streams",
            m.streams_active.clone(),
        );
        registry.register(names::JOBS, "Jobs by state", m.jobs.clone());
        registry.register(
            names::JOBS_RUNNING,
            "Jobs running in this instance",
            m.jobs_running.clone(),
        );
        registry.register(
            names::QUEUE_DEPTH,
            "Jobs waiting to run",
            m.queue_depth.clone(),
        );
        registry.register(
            names::JOB_DURATION,
            "Job duration from start to end, by final state",
            m.job_duration.clone(),
        );
        registry.register(
            names::LLM_CALLS,
            "Model calls by provider, model and outcome",
            m.llm_calls.clone(),
        );
        registry.register(
            names::LLM_LATENCY,
            "Model call latency to the complete answer",
            m.llm_latency.clone(),
        );
        registry.register(
            names::LLM_TTFT,
            "Time to the first streamed token",
            m.llm_ttft.clone(),
        );
        registry.register(
            names::LLM_TOKENS,
            "Tokens by provider, model and kind",
            m.llm_tokens.clone(),
        );
        registry.register(
            names::LLM_FALLBACKS,
            "Answers served by a fallback model, by the model asked",
            m.llm_fallbacks.clone(),
        );
        registry.register(
            names::OVERHEAD,
            "Latency the advisor adds on top of the provider, by route",
            m.overhead.clone(),
        );
        m
    }

    /// Records one HTTP request.
    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_duration
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The active-requests gauge.
    #[must_use]
    pub fn http_active(&self) -> &Gauge {
        &self.http_active
    }

    /// The open-streams gauge.
    #[must_use]
    pub fn streams_active(&self) -> &Gauge {
        &self.streams_active
    }

    /// Sets the jobs-by-state gauges.
    pub fn set_job_counts(&self, counts: &std::collections::BTreeMap<JobState, u64>) {
        for (state, n) in counts {
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// The running-jobs gauge.
    #[must_use]
    pub fn jobs_running(&self) -> &Gauge {
        &self.jobs_running
    }

    /// The queue-depth gauge.
    #[must_use]
    pub fn queue_depth(&self) -> &Gauge {
        &self.queue_depth
    }

    /// Records a finished job.
    pub fn observe_job(&self, state: JobState, elapsed: Duration) {
        self.job_duration
            .get_or_create(&StateLabels {
                state: state.as_str(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one model call: its outcome (`ok` or the error class), and on success its
    /// latency, time to first token and tokens.
    pub fn observe_call(&self, call: &CallRecord<'_>) {
        self.llm_calls
            .get_or_create(&CallLabels {
                provider: call.provider.to_owned(),
                model: call.model.to_owned(),
                outcome: call.outcome,
            })
            .inc();
        let labels = ModelLabels {
            provider: call.provider.to_owned(),
            model: call.model.to_owned(),
        };
        if let Some(latency) = call.latency {
            self.llm_latency
                .get_or_create(&labels)
                .observe(latency.as_secs_f64());
        }
        if let Some(ttft) = call.time_to_first_token {
            self.llm_ttft
                .get_or_create(&labels)
                .observe(ttft.as_secs_f64());
        }
        if let Some((prompt, completion)) = call.tokens {
            for (kind, n) in [("prompt", prompt), ("completion", completion)] {
                self.llm_tokens
                    .get_or_create(&TokenLabels {
                        provider: call.provider.to_owned(),
                        model: call.model.to_owned(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        if call.fell_back {
            self.llm_fallbacks
                .get_or_create(&FallbackLabels {
                    model: call.model.to_owned(),
                })
                .inc();
        }
    }

    /// Records the latency the advisor added on `route`.
    pub fn observe_overhead(&self, route: &'static str, added: Duration) {
        self.overhead
            .get_or_create(&RouteLabels { route })
            .observe(added.as_secs_f64());
    }
}

fn fast_or_slow_http() -> Histogram {
    // Requests range from sub-millisecond reads to minute-long model calls.
    Histogram::new(
        FAST_LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(LLM_LATENCY_BUCKETS.iter().copied().filter(|b| *b > 1.0)),
    )
}

/// One model call, for [`AdvisorMetrics::observe_call`].
#[derive(Debug, Clone, Copy)]
pub struct CallRecord<'a> {
    /// The provider that answered (or `none`).
    pub provider: &'a str,
    /// The model asked (the configured name).
    pub model: &'a str,
    /// `ok` or the error class.
    pub outcome: &'static str,
    /// Time to the complete answer.
    pub latency: Option<Duration>,
    /// Time to the first token of a stream.
    pub time_to_first_token: Option<Duration>,
    /// Prompt and completion tokens.
    pub tokens: Option<(u64, u64)>,
    /// Whether a fallback answered.
    pub fell_back: bool,
}
