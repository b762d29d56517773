//! A simulated flaky LLM provider called through Quorum's whole resilience stack.
//!
//! Many concurrent clients send requests; each one waits for a bulkhead slot and a rate-limiter
//! token, then runs a retry loop (jittered backoff, retry budget, per-attempt timeout, deadline)
//! whose attempts go through a circuit breaker to the provider. The provider fails a configured
//! share of calls with retryable errors, a small share with permanent ones, and goes down
//! entirely for a window in the middle of the run: the breaker opens and sheds load, then probes
//! and closes once the provider is back. Every mechanism reports to one Prometheus observer.
//!
//! Configuration: the embedded defaults below, then `--config FILE`, then `QUORUM__…`
//! environment variables, then `--set key=value` (see `--help`).
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example reports on stdout and stderr"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use quorum_config::{Duration, Loader, ProcessEnv};
use quorum_metrics::{MetricsRegistry, exposition};
use quorum_resilience::prometheus::ResilienceMetrics;
use quorum_resilience::{
    BreakerConfig, BreakerError, Bulkhead, BulkheadConfig, CircuitBreaker, ErrorClassifier, Jitter,
    Observers, RandomSource as _, RateLimitConfig, RateLimiter, Retry, RetryBudget,
    RetryBudgetConfig, RetryError, RetryPolicy, Retryable, SlidingWindow, SplitMix64, Verdict,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

const DEFAULTS: &str = r#"
# Embedded defaults: a few seconds of load against a provider that is flaky, then down, then back.
requests: 3000
clients: 64
seed: 42
provider:
  latency: 5ms
  retryable_failure_rate: 0.3   # 503s, as an overloaded provider answers
  permanent_failure_rate: 0.01  # 400s: bad input, never retried, never opens the breaker
  outage_start: 1s              # from the start of the run, every call fails ...
  outage_length: 600ms          # ... for this long
retry:
  max_attempts: 4
  initial_delay: 10ms
  max_delay: 200ms
  multiplier: 2.0
  jitter: full
  attempt_timeout: 1s
  deadline: 5s
budget:
  retry_ratio: 0.2
  min_retries_per_sec: 20
  ttl: 10s
breaker:
  window_calls: 50
  failure_rate_threshold: 60.0
  minimum_calls: 20
  open_duration: 200ms
  half_open_probes: 3
limiter:
  per_second: 1000
  burst: 100
bulkhead:
  max_concurrent: 32
  max_waiting: 64
  wait_timeout: 2s
"#;

const HELP: &str = "\
quorum-example-resilient-call: a simulated flaky LLM provider behind retry, budget, breaker,
rate limiter and bulkhead; prints what happened and the resulting Prometheus metrics.

USAGE:
    quorum-example-resilient-call [--config FILE] [--set KEY=VALUE]... [--show-config] [--metrics]

OPTIONS:
    --config FILE      YAML file layered over the embedded defaults
    --set KEY=VALUE    override one value, e.g. --set requests=500 --set provider.latency=20ms
    --show-config      print the effective configuration and exit
    --metrics          also print the full Prometheus exposition
    -h, --help         print this help

Environment variables QUORUM__SECTION__KEY=value override the file (e.g. QUORUM__CLIENTS=8).
";

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    requests: u64,
    clients: usize,
    seed: u64,
    provider: ProviderConfig,
    retry: RetryConfig,
    budget: BudgetConfig,
    breaker: BreakerSection,
    limiter: LimiterConfig,
    bulkhead: BulkheadSection,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct ProviderConfig {
    latency: Duration,
    retryable_failure_rate: f64,
    permanent_failure_rate: f64,
    outage_start: Duration,
    outage_length: Duration,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum JitterConfig {
    None,
    #[default]
    Full,
    Equal,
    Decorrelated,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct RetryConfig {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f64,
    jitter: JitterConfig,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct BudgetConfig {
    retry_ratio: f64,
    min_retries_per_sec: u32,
    ttl: Duration,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct BreakerSection {
    window_calls: u32,
    failure_rate_threshold: f64,
    minimum_calls: u32,
    open_duration: Duration,
    half_open_probes: u32,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct LimiterConfig {
    per_second: u64,
    burst: u64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
struct BulkheadSection {
    max_concurrent: usize,
    max_waiting: usize,
    wait_timeout: Option<Duration>,
}

struct Args {
    config: Option<String>,
    sets: Vec<String>,
    show_config: bool,
    metrics: bool,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut args = Args {
        config: None,
        sets: Vec::new(),
        show_config: false,
        metrics: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "--config" => args.config = Some(it.next().context("--config needs a FILE")?),
            "--set" => args.sets.push(it.next().context("--set needs KEY=VALUE")?),
            "--show-config" => args.show_config = true,
            "--metrics" => args.metrics = true,
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(Some(args))
}

/// The simulated provider's errors, classified the way real provider errors are.
#[derive(Debug, thiserror::Error)]
enum ProviderError {
    #[error("provider overloaded (503)")]
    Overloaded,
    #[error("bad request (400)")]
    BadRequest,
}

impl Retryable for ProviderError {
    fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Overloaded)
    }
}

/// A provider that answers after `latency`, fails at the configured rates, and fails every call
/// during the outage window.
struct FlakyProvider {
    config: ProviderConfig,
    started: Instant,
    rng: SplitMix64,
    calls: AtomicU64,
}

impl FlakyProvider {
    async fn complete(&self) -> Result<&'static str, ProviderError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.config.latency.as_std()).await;
        let since_start = self.started.elapsed();
        let outage = self.config.outage_start.as_std()
            ..self.config.outage_start.as_std() + self.config.outage_length.as_std();
        if outage.contains(&since_start) {
            return Err(ProviderError::Overloaded);
        }
        let roll = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if roll < self.config.permanent_failure_rate {
            Err(ProviderError::BadRequest)
        } else if roll < self.config.permanent_failure_rate + self.config.retryable_failure_rate {
            Err(ProviderError::Overloaded)
        } else {
            Ok("an answer")
        }
    }
}

/// The stack every request goes through.
struct Stack {
    provider: FlakyProvider,
    retry: Retry,
    breaker: CircuitBreaker,
    limiter: RateLimiter,
    bulkhead: Bulkhead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Permanent,
    GaveUp,
    BudgetExhausted,
    BreakerOpen,
    Shed,
}

impl Stack {
    fn build(config: &Config, observers: &Observers) -> anyhow::Result<Self> {
        let r = &config.retry;
        let policy = RetryPolicy {
            max_attempts: r.max_attempts,
            initial_delay: r.initial_delay.as_std(),
            max_delay: r.max_delay.as_std(),
            multiplier: r.multiplier,
            jitter: match r.jitter {
                JitterConfig::None => Jitter::None,
                JitterConfig::Full => Jitter::Full,
                JitterConfig::Equal => Jitter::Equal,
                JitterConfig::Decorrelated => Jitter::Decorrelated,
            },
            attempt_timeout: r.attempt_timeout.map(Duration::as_std),
            deadline: r.deadline.map(Duration::as_std),
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::new(RetryBudgetConfig {
            ttl: config.budget.ttl.as_std(),
            min_retries_per_sec: config.budget.min_retries_per_sec,
            retry_ratio: config.budget.retry_ratio,
        })
        .context("budget")?;
        let retry = Retry::builder("provider", policy)
            .budget(budget)
            .observers(observers.clone())
            .seed(config.seed)
            .build()
            .context("retry")?;
        let b = &config.breaker;
        let breaker = CircuitBreaker::new(
            "provider",
            BreakerConfig {
                window: SlidingWindow::Count(b.window_calls),
                failure_rate_threshold: b.failure_rate_threshold,
                minimum_calls: b.minimum_calls,
                open_duration: b.open_duration.as_std(),
                half_open_probes: b.half_open_probes,
                ..BreakerConfig::default()
            },
        )
        .context("breaker")?
        .with_observers(observers.clone());
        let limiter = RateLimiter::new(
            "provider",
            RateLimitConfig::per_second(config.limiter.per_second)
                .with_capacity(config.limiter.burst),
        )
        .context("limiter")?
        .with_observers(observers.clone());
        let bulkhead = Bulkhead::new(
            "provider",
            BulkheadConfig {
                max_concurrent: config.bulkhead.max_concurrent,
                max_waiting: config.bulkhead.max_waiting,
                wait_timeout: config.bulkhead.wait_timeout.map(Duration::as_std),
            },
        )
        .context("bulkhead")?
        .with_observers(observers.clone());
        Ok(Stack {
            provider: FlakyProvider {
                config: config.provider.clone(),
                started: Instant::now(),
                rng: SplitMix64::new(config.seed ^ 0x9e37_79b9),
                calls: AtomicU64::new(0),
            },
            retry,
            breaker,
            limiter,
            bulkhead,
        })
    }

    async fn request(&self) -> Outcome {
        let Ok(_slot) = self.bulkhead.acquire().await else {
            return Outcome::Shed;
        };
        if self.limiter.acquire(1).await.is_err() {
            return Outcome::Shed;
        }
        // An open breaker is final for this request: failing fast is the point of opening it.
        let classify = |result: &Result<&'static str, BreakerError<ProviderError>>| match result {
            Ok(_) => Verdict::Success,
            Err(BreakerError::Inner(e)) if e.is_retryable() => Verdict::RETRYABLE,
            Err(_) => Verdict::Permanent,
        };
        let result = self
            .retry
            .run(
                |_attempt| {
                    self.breaker
                        .call(|| self.provider.complete(), &ErrorClassifier)
                },
                &classify,
            )
            .await;
        match result {
            Ok(_) => Outcome::Ok,
            Err(RetryError::BudgetExhausted { .. }) => Outcome::BudgetExhausted,
            Err(e) => match e.last_error() {
                Some(BreakerError::Open(_)) => Outcome::BreakerOpen,
                Some(BreakerError::Inner(ProviderError::BadRequest)) => Outcome::Permanent,
                _ => Outcome::GaveUp,
            },
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let mut loader = Loader::from_str("embedded defaults", DEFAULTS);
    if let Some(path) = &args.config {
        loader = loader.file(path);
    }
    let config: Config = loader
        .env(ProcessEnv, "QUORUM")
        .overrides(&args.sets)?
        .load()?;
    if args.show_config {
        print!("{}", quorum_config::dump(&config)?);
        return Ok(());
    }
    anyhow::ensure!(config.clients > 0, "clients: must be at least 1 (got 0)");

    let mut registry = MetricsRegistry::new();
    let metrics = ResilienceMetrics::register(registry.registry_mut());
    let registry = registry.into_shared();
    let observers = Observers::new(Arc::new(metrics));
    let stack = Arc::new(Stack::build(&config, &observers)?);

    println!(
        "{} requests from {} clients; provider: {} latency, {:.0}% retryable and {:.0}% permanent failures, down from {} for {}",
        config.requests,
        config.clients,
        config.provider.latency,
        config.provider.retryable_failure_rate * 100.0,
        config.provider.permanent_failure_rate * 100.0,
        config.provider.outage_start,
        config.provider.outage_length,
    );
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for _ in 0..config.clients {
        let (stack, next, total) = (stack.clone(), next.clone(), config.requests);
        clients.spawn(async move {
            let mut outcomes = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                outcomes.push(stack.request().await);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(config.requests as usize);
    while let Some(done) = clients.join_next().await {
        outcomes.extend(done?);
    }
    let elapsed = started.elapsed();

    let count = |o: Outcome| outcomes.iter().filter(|x| **x == o).count();
    let upstream = stack.provider.calls.load(Ordering::Relaxed);
    println!(
        "done in {:.2}s: {} ok, {} permanent (not retried), {} gave up, {} stopped by the retry budget, {} failed fast on the open breaker, {} shed by the bulkhead",
        elapsed.as_secs_f64(),
        count(Outcome::Ok),
        count(Outcome::Permanent),
        count(Outcome::GaveUp),
        count(Outcome::BudgetExhausted),
        count(Outcome::BreakerOpen),
        count(Outcome::Shed),
    );
    let text = registry.encode()?;
    let samples = exposition::parse(&text)?;
    let sum = |name: &str| -> f64 {
        samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    };
    let retries = sum("quorum_resilience_retries_total");
    println!(
        "upstream calls: {upstream} = {} first attempts + {retries} retries ({:.1}% extra load; the budget allows {:.0}% + {}/s); breaker now {}",
        upstream as f64 - retries,
        retries / (upstream as f64 - retries).max(1.0) * 100.0,
        config.budget.retry_ratio * 100.0,
        config.budget.min_retries_per_sec,
        stack.breaker.state().as_str(),
    );
    println!(
        "metrics: {} breaker transitions, {} calls rejected by the breaker, {} retries refused by the budget",
        sum("quorum_resilience_breaker_transitions_total"),
        sum("quorum_resilience_breaker_rejected_total"),
        sum("quorum_resilience_retry_budget_exhausted_total"),
    );
    if args.metrics {
        print!("{text}");
    }
    Ok(())
}
