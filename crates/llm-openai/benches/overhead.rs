//! The per-call overhead of [`ResilientProvider`] and [`Router`] over a raw provider call.
//!
//! Two backends: an in-memory provider (pure overhead, no I/O) and the OpenAI-compatible
//! provider against the mock LLM server with zero latency (overhead relative to a real HTTP
//! round trip on loopback). For each, the same request is sent through the raw provider, the
//! resilient wrapper (default config plus request and token limits high enough never to wait),
//! and a one-step router over the wrapper. Prints p50 and mean per call and the difference to
//! raw. Run with `cargo bench -p quorum-llm-openai --bench overhead` (`-- --quick` for fewer calls).
#![allow(clippy::print_stdout, reason = "a benchmark prints its table")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quorum_llm::{
    ChatRequest, ChatResponse, LlmError, ModelInfo, Provider, ResilienceConfig, ResilientProvider,
    RouteStep, Router, Usage,
};
use quorum_llm_openai::{OpenAiConfig, OpenAiProvider};
use quorum_mock_llm::{MockConfig, MockServer};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Dyn = Arc<dyn Provider>;

/// Answers at once with a fixed response.
struct InMemory;

#[async_trait]
impl Provider for InMemory {
    fn name(&self) -> &str {
        "memory"
    }

    fn kind(&self) -> &str {
        "memory"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        Ok(ChatResponse {
            content: "ok".to_owned(),
            usage: Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 2,
            }),
            provider: "memory".to_owned(),
            model: request.model.clone(),
            ..ChatResponse::default()
        })
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError> {
        Ok(Vec::new())
    }
}

struct Stats {
    p50: Duration,
    mean: Duration,
}

/// Times `n` calls (after `n / 10` warm-up calls) one by one.
async fn measure(
    provider: &dyn Provider,
    request: &ChatRequest,
    n: u32,
) -> Result<Stats, BoxError> {
    for _ in 0..n / 10 {
        provider.chat(request).await?;
    }
    let mut samples = Vec::with_capacity(n as usize);
    let all = Instant::now();
    for _ in 0..n {
        let start = Instant::now();
        provider.chat(request).await?;
        samples.push(start.elapsed());
    }
    let mean = all.elapsed() / n;
    samples.sort_unstable();
    Ok(Stats {
        p50: samples[samples.len() / 2],
        mean,
    })
}

fn wrap(provider: Dyn) -> Result<(Dyn, Dyn), BoxError> {
    let mut config = ResilienceConfig::default();
    // Limits on (so their cost is measured) but far above what the benchmark sends.
    config.rate_limit.requests_per_minute = Some(1_000_000_000);
    config.rate_limit.tokens_per_minute = Some(10_000_000_000);
    let resilient: Arc<dyn Provider> = Arc::new(ResilientProvider::new(provider, &config)?);
    let router: Arc<dyn Provider> = Arc::new(
        Router::builder("bench")
            .route(
                "bench",
                vec![RouteStep::new(resilient.clone(), "mock-small")],
            )
            .build()?,
    );
    Ok((resilient, router))
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

fn row(backend: &str, layer: &str, stats: &Stats, raw: &Stats) {
    let unit = |ns: f64| {
        if ns.abs() >= 10_000.0 {
            format!("{:.1} µs", ns / 1000.0)
        } else {
            format!("{ns:.0} ns")
        }
    };
    println!(
        "| {backend:<9} | {layer:<18} | {:>10} | {:>10} | {:>10} | {:>10} |",
        unit(nanos(stats.p50)),
        unit(nanos(stats.mean)),
        unit(nanos(stats.p50) - nanos(raw.p50)),
        unit(nanos(stats.mean) - nanos(raw.mean)),
    );
}

async fn bench(backend: &str, raw: Arc<dyn Provider>, n: u32) -> Result<(), BoxError> {
    let (resilient, router) = wrap(raw.clone())?;
    let direct = ChatRequest::user("mock-small", "what is the overhead?");
    let routed = ChatRequest::user("bench", "what is the overhead?");
    // Interleave rounds so that drift on a shared machine hits every layer alike.
    let mut best: [Option<Stats>; 3] = [None, None, None];
    for _ in 0..3 {
        let rounds = [
            measure(raw.as_ref(), &direct, n).await?,
            measure(resilient.as_ref(), &direct, n).await?,
            measure(router.as_ref(), &routed, n).await?,
        ];
        for (slot, stats) in best.iter_mut().zip(rounds) {
            if slot.as_ref().is_none_or(|b| stats.mean < b.mean) {
                *slot = Some(stats);
            }
        }
    }
    let [Some(raw_s), Some(res_s), Some(route_s)] = best else {
        return Err("no measurement".into());
    };
    row(backend, "raw provider", &raw_s, &raw_s);
    row(backend, "resilient", &res_s, &raw_s);
    row(backend, "router(resilient)", &route_s, &raw_s);
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (memory_n, http_n) = if quick {
        (20_000, 500)
    } else {
        (200_000, 3_000)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        println!("per-call latency, best of 3 interleaved rounds ({memory_n} in-memory / {http_n} HTTP calls each)");
        println!("| backend   | layer              |        p50 |       mean |   Δp50 raw |  Δmean raw |");
        println!("|-----------|--------------------|-----------:|-----------:|-----------:|-----------:|");
        bench("in-memory", Arc::new(InMemory), memory_n).await?;
        let server = MockServer::start(MockConfig::ephemeral()).await?;
        let config = OpenAiConfig::new(&format!("{}/v1", server.base_url()))?;
        let http: Arc<dyn Provider> = Arc::new(OpenAiProvider::new("mock", &config)?);
        bench("mock HTTP", http, http_n).await?;
        server.shutdown().await;
        Ok::<_, BoxError>(())
    })
}
