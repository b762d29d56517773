//! Fan-out overhead: one question to five models that each answer in 50 ms, end to end over
//! HTTP (`POST /v1/advise` with `wait: true`: parse, persist the job, claim it, five concurrent
//! streamed calls, every result and progress event persisted, the job completed, the answer
//! rendered). The ideal is the slowest model's latency; the target is ≤ 55 ms at the median.
//! A direct call to one mock model is measured in the same run as the floor.
//!
//! `cargo bench -p quorum-advisor-app --bench fanout` (`FANOUT_RUNS=N` to change the 200 runs).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark binary: prints its report, panics on set-up failure"
)]

use std::time::Duration;

use quorum_advisor_app::config::{ModelEntry, ProviderEntry};
use quorum_advisor_app::engine::{AdviseRequest, Engine};
use quorum_advisor_app::events::{EventHub, JobEvent};
use quorum_advisor_app::gateway::{Gateway, provider_registry};
use quorum_advisor_app::metrics::AdvisorMetrics;
use quorum_advisor_app::{AdvisorConfig, server};
use quorum_mock_llm::{Latency, MockConfig, MockServer, ModelConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

const MODELS: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<44} n={:<4} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    );
}

fn main() {
    let runs: usize = std::env::var("FANOUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut mock = MockConfig::ephemeral();
        mock.models = MODELS.iter().map(|m| ModelConfig::new(*m)).collect();
        mock.latency = Latency::Fixed(quorum_config::Duration::from_millis(50));
        let mock = MockServer::start(mock).await.unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut config = AdvisorConfig::default();
        config.server.bind = "127.0.0.1:0".parse().unwrap();
        config.store.url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let mut settings = serde_json::Map::new();
        settings.insert("base_url".into(), json!(format!("{}/v1", mock.base_url())));
        config.providers = vec![ProviderEntry {
            name: "mock".into(),
            kind: "openai".into(),
            resilience: None,
            settings,
        }];
        config.models = MODELS
            .iter()
            .map(|m| {
                (
                    (*m).to_owned(),
                    ModelEntry {
                        provider: "mock".into(),
                        ..ModelEntry::default()
                    },
                )
            })
            .collect();
        config.advisor.default_models = MODELS.iter().map(|m| (*m).to_owned()).collect();
        let config_url = config.store.url.clone();
        let engine_config = config.clone();
        let running = server::start(config, std::future::pending()).await.unwrap();
        let base = format!("http://{}", running.addr());
        let client = reqwest::Client::new();

        let ask = |stream_tokens: bool| {
            let client = client.clone();
            let base = base.clone();
            async move {
                let t0 = Instant::now();
                let body = json!({"question": "Which database should we use?", "wait": true});
                let r = client
                    .post(format!("{base}/v1/advise"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "stream_tokens={stream_tokens}");
                let job: Value = r.json().await.unwrap();
                assert_eq!(job["state"], "completed");
                assert_eq!(job["results"].as_array().map(Vec::len), Some(5));
                t0.elapsed()
            }
        };
        let direct = || {
            let client = client.clone();
            let url = format!("{}/v1/chat/completions", mock.base_url());
            async move {
                let t0 = Instant::now();
                let body = json!({"model": "m1", "messages": [{"role": "user", "content": "Which database?"}]});
                let r = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                t0.elapsed()
            }
        };
        // Warm-up: connections, SQLite pages, allocator.
        for _ in 0..20 {
            ask(true).await;
            direct().await;
        }
        let mut floor = Vec::with_capacity(runs);
        let mut fanout = Vec::with_capacity(runs);
        for _ in 0..runs {
            floor.push(direct().await);
            fanout.push(ask(true).await);
        }
        println!("fan-out to 5 models at 50 ms, {runs} sequential jobs:");
        report("direct call to one mock model (floor)", floor);
        report("POST /v1/advise wait=true, 5 models", fanout);
        running.shutdown().await.unwrap();

        // Where the time goes: the same jobs on an in-process engine, timed at its events.
        let store = quorum_store::Store::connect(&config_url, quorum_store::StoreConfig::default())
            .await
            .unwrap();
        let mut registry = quorum_metrics::MetricsRegistry::new();
        let metrics = AdvisorMetrics::register(registry.registry_mut());
        let gateway = Gateway::build(
            &engine_config,
            &provider_registry(),
            &quorum_resilience::Observers::default(),
            metrics,
        )
        .unwrap();
        let engine = Engine::new(
            store,
            std::sync::Arc::new(gateway),
            EventHub::default(),
            engine_config.engine.clone(),
            engine_config.advisor.clone(),
        );
        engine.start();
        let request = AdviseRequest {
            question: "Which database should we use?".into(),
            ..AdviseRequest::default()
        };
        let mut submitted = Vec::new();
        let mut first_result = Vec::new();
        let mut last_result = Vec::new();
        let mut terminal = Vec::new();
        for i in 0..runs + 20 {
            let t0 = Instant::now();
            let job = engine.submit(&request, None).await.unwrap();
            let t_submit = t0.elapsed();
            let mut sub = engine.hub().subscribe(&job.id);
            let mut results = 0;
            let (mut t_first, mut t_last) = (Duration::ZERO, Duration::ZERO);
            loop {
                let event = sub.events.recv().await.unwrap();
                match &*event {
                    JobEvent::Result(_) => {
                        results += 1;
                        if results == 1 {
                            t_first = t0.elapsed();
                        }
                        if results == 5 {
                            t_last = t0.elapsed();
                        }
                    }
                    JobEvent::Terminal(_) => break,
                    _ => {}
                }
            }
            if i >= 20 {
                submitted.push(t_submit);
                first_result.push(t_first);
                last_result.push(t_last);
                terminal.push(t0.elapsed());
            }
        }
        println!("the same on an in-process engine (no HTTP), from submit:");
        report("job persisted (submit returns)", submitted);
        report("first answer broadcast", first_result);
        report("fifth answer broadcast (fan-out complete)", last_result);
        report("job completed (everything persisted)", terminal);
        engine.shutdown(Duration::from_secs(5)).await;
        mock.shutdown().await;
    });
}
