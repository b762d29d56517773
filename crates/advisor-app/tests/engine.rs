//! The job engine in-process against the mock LLM server over real HTTP: planning rules,
//! priority order, the queue bound, job timeouts and cancellation of pending jobs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a panic is the failure report"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quorum_advisor_app::config::{ModelEntry, ProviderEntry};
use quorum_advisor_app::engine::{AdviseRequest, Engine};
use quorum_advisor_app::events::EventHub;
use quorum_advisor_app::gateway::{Gateway, provider_registry};
use quorum_advisor_app::metrics::AdvisorMetrics;
use quorum_advisor_app::{AdvisorConfig, server};
use quorum_mock_llm::{Latency, MockConfig, MockServer, ModelConfig};
use quorum_store::{JobState, Store};
use serde_json::{Value, json};
use tokio::time::Instant;

async fn mock() -> MockServer {
    let mut config = MockConfig::ephemeral();
    let mut fast = ModelConfig::new("fast");
    fast.latency = Some(Latency::Fixed(quorum_config::Duration::from_millis(10)));
    let mut slow = ModelConfig::new("slow");
    slow.latency = Some(Latency::Fixed(quorum_config::Duration::from_millis(400)));
    config.models = vec![fast, slow];
    config.slow_delay = quorum_config::Duration::from_secs(30);
    MockServer::start(config).await.unwrap()
}

fn config(mock: &MockServer, dir: &tempfile::TempDir) -> AdvisorConfig {
    let mut c = AdvisorConfig::default();
    c.server.bind = "127.0.0.1:0".parse().unwrap();
    c.store.url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut settings = serde_json::Map::new();
    settings.insert("base_url".into(), json!(format!("{}/v1", mock.base_url())));
    c.providers = vec![ProviderEntry {
        name: "mock".into(),
        kind: "openai".into(),
        resilience: None,
        settings,
    }];
    let model = |id: Option<&str>, prompt: Option<&str>| ModelEntry {
        provider: "mock".into(),
        model: id.map(str::to_owned),
        system_prompt: prompt.map(str::to_owned),
        ..ModelEntry::default()
    };
    c.models = BTreeMap::from([
        ("fast".to_owned(), model(None, Some("configured prompt"))),
        ("slow".to_owned(), model(None, None)),
        ("sleepy".to_owned(), model(Some("fault-slow"), None)),
    ]);
    c.advisor.default_models = vec!["fast".into()];
    c
}

async fn engine(config: &AdvisorConfig) -> Engine {
    let mut registry = quorum_metrics::MetricsRegistry::new();
    let metrics = AdvisorMetrics::register(registry.registry_mut());
    let gateway = Gateway::build(
        config,
        &provider_registry(),
        &quorum_resilience::Observers::default(),
        metrics,
    )
    .unwrap();
    let store = Store::connect(&config.store.url, config.store.config.clone())
        .await
        .unwrap();
    Engine::new(
        store,
        Arc::new(gateway),
        EventHub::default(),
        config.engine.clone(),
        config.advisor.clone(),
    )
}

fn ask(question: &str, models: &[&str]) -> AdviseRequest {
    AdviseRequest {
        question: question.into(),
        models: Some(models.iter().map(|m| (*m).to_owned()).collect()),
        ..AdviseRequest::default()
    }
}

#[tokio::test]
async fn system_prompts_follow_their_precedence() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let c = config(&mock, &dir);
    let e = engine(&c).await;
    let prompt_of = |plan: &quorum_advisor_app::engine::AdvisePayload, m: &str| {
        plan.models
            .iter()
            .find(|p| p.name == m)
            .unwrap()
            .system_prompt
            .clone()
    };
    // Built-in, then configured per model.
    let plan = e.plan(&ask("q", &["fast", "slow"])).unwrap();
    assert_eq!(prompt_of(&plan, "fast"), "configured prompt");
    assert_eq!(prompt_of(&plan, "slow"), c.advisor.system_prompt);
    // The request's global prompt beats the configured one; its per-model prompt beats both.
    let mut r = ask("q", &["fast", "slow"]);
    r.system_prompt = Some("global".into());
    r.system_prompts = BTreeMap::from([("slow".to_owned(), "just for slow".to_owned())]);
    let plan = e.plan(&r).unwrap();
    assert_eq!(prompt_of(&plan, "fast"), "global");
    assert_eq!(prompt_of(&plan, "slow"), "just for slow");
    // No models named: the default set.
    let plan = e
        .plan(&AdviseRequest {
            question: "  padded  ".into(),
            ..AdviseRequest::default()
        })
        .unwrap();
    assert_eq!(plan.question, "padded");
    assert_eq!(plan.models.len(), 1);
    assert_eq!(plan.models[0].name, "fast");
}

#[tokio::test]
async fn bad_requests_name_their_field() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, &dir);
    c.advisor.max_models = 2;
    let e = engine(&c).await;
    let field = |r: AdviseRequest| {
        let err = e.plan(&r).unwrap_err();
        (err.status.as_u16(), err.field.unwrap_or_default())
    };
    assert_eq!(field(ask(" \n", &["fast"])), (400, "question".into()));
    assert_eq!(field(ask("q", &[])), (400, "models".into()));
    assert_eq!(
        field(ask("q", &["fast", "nope"])),
        (404, "models[1]".into())
    );
    assert_eq!(
        field(ask("q", &["fast", "fast"])),
        (400, "models[1]".into())
    );
    assert_eq!(
        field(ask("q", &["fast", "slow", "sleepy"])),
        (400, "models".into())
    );
    let mut r = ask("q", &["fast"]);
    r.system_prompts = BTreeMap::from([("slow".to_owned(), "x".to_owned())]);
    assert_eq!(field(r), (400, "system_prompts.slow".into()));
    let mut r = ask("q", &["fast"]);
    r.priority = 5000;
    assert_eq!(field(r), (400, "priority".into()));
    let unknown = e.plan(&ask("q", &["nope"])).unwrap_err();
    assert!(
        unknown.message.contains("known: fast, sleepy, slow"),
        "{}",
        unknown.message
    );
    // Nothing was persisted.
    let counts = e.store().count_jobs_by_state(None).await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 0);
}

async fn wait_state(e: &Engine, id: &str, want: JobState) -> quorum_store::Job {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job = e.store().get_job(id).await.unwrap().unwrap();
        if job.state == want {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is {} after 20 s, want {want}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_slot_runs_jobs_by_priority_then_age_and_the_queue_is_bounded() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, &dir);
    c.engine.max_concurrent_jobs = 1;
    c.engine.queue_capacity = 3;
    let e = engine(&c).await;
    e.recover().await.unwrap();
    e.start();
    // The single slot is busy with a slow job; then three wait.
    let blocker = e.submit(&ask("blocker", &["slow"]), None).await.unwrap();
    wait_state(&e, &blocker.id, JobState::Running).await;
    let low = e.submit(&ask("low", &["fast"]), None).await.unwrap();
    let old_high = e
        .submit(
            &AdviseRequest {
                priority: 10,
                ..ask("old high", &["fast"])
            },
            None,
        )
        .await
        .unwrap();
    let new_high = e
        .submit(
            &AdviseRequest {
                priority: 10,
                ..ask("new high", &["fast"])
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(e.pending(), 3);
    let full = e
        .submit(&ask("one too many", &["fast"]), None)
        .await
        .unwrap_err();
    assert_eq!((full.status.as_u16(), full.kind), (503, "queue_full"));
    assert!(full.retry_after.is_some());

    let mut started = Vec::new();
    for id in [&low.id, &old_high.id, &new_high.id] {
        let job = wait_state(&e, id, JobState::Completed).await;
        started.push((job.started_at.unwrap(), job.id.clone()));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(
        order,
        [old_high.id.as_str(), new_high.id.as_str(), low.id.as_str()]
    );
    assert_eq!(e.pending(), 0);
    e.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_job_past_its_timeout_ends_timed_out_keeping_the_answers_it_had() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, &dir);
    c.engine.job_timeout = quorum_config::Duration::from_millis(700);
    let e = engine(&c).await;
    e.start();
    let job = e
        .submit(&ask("q", &["fast", "sleepy"]), None)
        .await
        .unwrap();
    let done = wait_state(&e, &job.id, JobState::TimedOut).await;
    assert_eq!(done.error.unwrap().class, "timeout");
    let results = e.store().list_results(&job.id).await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].model, "fast");
    // The aborted upstream call is seen by the mock as a client that left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.stats().cancelled == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream call was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_pending_job_can_be_cancelled_and_a_finished_one_cannot() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, &dir);
    c.engine.max_concurrent_jobs = 1;
    let e = engine(&c).await;
    e.start();
    let blocker = e.submit(&ask("blocker", &["sleepy"]), None).await.unwrap();
    wait_state(&e, &blocker.id, JobState::Running).await;
    let waiting = e.submit(&ask("waiting", &["fast"]), None).await.unwrap();
    let mut sub = e.hub().subscribe(&waiting.id);
    let cancelled = e.cancel(&waiting.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(e.pending(), 0);
    // Its subscribers get the final event.
    let event = tokio::time::timeout(Duration::from_secs(5), sub.events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&*event, quorum_advisor_app::events::JobEvent::Terminal(t) if t.state == JobState::Cancelled)
    );
    let again = e.cancel(&waiting.id).await.unwrap_err();
    assert_eq!(
        (again.status.as_u16(), again.kind),
        (409, "already_finished")
    );
    let missing = e.cancel("no-such-job").await.unwrap_err();
    assert_eq!(missing.status.as_u16(), 404);
    // The running blocker is cancelled too, aborting its upstream call.
    e.cancel(&blocker.id).await.unwrap();
    wait_state(&e, &blocker.id, JobState::Cancelled).await;
    e.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_server_serves_models_and_shuts_down_cleanly() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(config(&mock, &dir), std::future::pending())
        .await
        .unwrap();
    let models: Value = reqwest::get(format!("http://{}/v1/models", running.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast", "sleepy", "slow"]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_that_waited_past_its_deadline_times_out_and_leaves_the_pool() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&mock, &dir);
    c.engine.max_concurrent_jobs = 1;
    c.engine.job_timeout = quorum_config::Duration::from_millis(200);
    let e = engine(&c).await;
    // Queued while no pool runs, then started after its deadline.
    let late = e.submit(&ask("late", &["fast"]), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.start();
    let late = wait_state(&e, &late.id, JobState::TimedOut).await;
    let error = late.error.unwrap();
    assert!(error.message.contains("before it could run"), "{error:?}");
    assert_eq!(mock.stats().requests, 0, "no model was asked");
    // The job left the pool: its slot serves the next job.
    let deadline = Instant::now() + Duration::from_secs(5);
    while e.pool_stats().running != 0 {
        assert!(Instant::now() < deadline, "{:?}", e.pool_stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = e.submit(&ask("next", &["fast"]), None).await.unwrap();
    wait_state(&e, &next.id, JobState::Completed).await;
    assert_eq!(e.pool_stats().running, 0);
    assert_eq!(e.pool_stats().pending, 0);
    e.shutdown(Duration::from_secs(5)).await;
}
