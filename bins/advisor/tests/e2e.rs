//! End-to-end tests of the `quorum-advisor` binary: each test starts its own in-process mock
//! LLM server and its own advisor process (own configuration, own SQLite database in a temp
//! dir) and talks to it over HTTP like a client would — advice (sync, async, SSE with resume),
//! cancel, crash recovery, faults and fallbacks, the OpenAI-compatible gateway, metrics, input
//! validation, graceful shutdown, the stream cap, the `config` commands and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a panic is the failure report"
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    Advisor, CHUNKS, Event, Sse, WAIT, advisor_config, delete, eventually, get, post,
    result_models, start_mock, wait_job,
};
use quorum_metrics::exposition;
use quorum_mock_llm::expected_answer;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::process::Command;

const QUESTION: &str = "Which sorting algorithm suits nearly sorted data best?";

fn answer(question: &str) -> String {
    expected_answer(question, CHUNKS)
}

fn is_terminal(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("completed" | "failed" | "cancelled" | "timed_out")
    )
}

/// Parses an SSE id `P.R`.
fn cursor(id: &str) -> (i64, u32) {
    let (p, r) = id
        .split_once('.')
        .unwrap_or_else(|| panic!("event id {id:?} is not P.R"));
    (p.parse().unwrap(), r.parse().unwrap())
}

/// Checks one successful result of the job view or of a `result` event.
fn assert_answered(result: &Value, model: &str, question: &str) {
    assert_eq!(result["model"], model, "{result:#}");
    assert_eq!(result["provider"], "mock", "{result:#}");
    assert_eq!(
        result["content"].as_str(),
        Some(answer(question).as_str()),
        "{result:#}"
    );
    assert!(result.get("error").is_none(), "{result:#}");
    let usage = &result["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
        "{result:#}"
    );
    assert_eq!(usage["completion_tokens"].as_u64(), Some(CHUNKS as u64));
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["prompt_tokens"].as_u64().unwrap() + CHUNKS as u64)
    );
    assert!(result["latency_ms"].is_u64(), "{result:#}");
}

/// `POST /v1/advise` with `wait: true` on the default models: 200, completed, the three answers
/// in completion order (fast, mid, slow). Returns the job id.
async fn sync_flow(client: &Client, advisor: &Advisor) -> String {
    let reply = post(
        client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "wait": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = &reply.body;
    let id = job["id"].as_str().expect("job id").to_owned();
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(job["question"], QUESTION);
    assert_eq!(job["models"], json!(["fast", "mid", "slow"]));
    assert_eq!(job["attempts"], 1, "{job:#}");
    assert!(job["started_at"].is_string() && job["finished_at"].is_string());
    assert!(job.get("error").is_none(), "{job:#}");
    assert_eq!(
        job["summary"],
        json!({"models": 3, "answered": 3, "failed": 0})
    );
    assert_eq!(result_models(job), ["fast", "mid", "slow"], "{job:#}");
    for (i, (r, model)) in job["results"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["fast", "mid", "slow"])
        .enumerate()
    {
        assert_eq!(r["index"], i + 1, "{r:#}");
        assert_answered(r, model, QUESTION);
    }
    assert_eq!(job["progress"]["percent"], 100.0, "{job:#}");
    assert_eq!(
        job["progress"]["models"]["states"],
        json!({"fast": "done", "mid": "done", "slow": "done"})
    );
    assert_eq!(job["links"]["self"], format!("/v1/jobs/{id}"));
    assert_eq!(
        reply.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    id
}

async fn list_ids(client: &Client, advisor: &Advisor, query: &str) -> Vec<String> {
    let reply = get(client, &advisor.url(&format!("/v1/jobs{query}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["jobs"]
        .as_array()
        .expect("jobs array")
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Async flow: 202 + Location, then polling until completed; the lists filter by state.
async fn async_flow(client: &Client, advisor: &Advisor, sync_id: &str) {
    let reply = post(
        client,
        &advisor.url("/v1/advise"),
        &json!({"question": "async?", "models": ["mid", "fast"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let location = reply.header("location").expect("Location").to_owned();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(reply.body["state"], "pending", "{:#}", reply.body);
    assert_eq!(reply.body["results"], json!([]));

    let job = wait_job(client, advisor, &id, "completed", |j| {
        j["state"] == "completed"
    })
    .await;
    let via_location = get(client, &advisor.url(&location)).await;
    assert_eq!(via_location.body["id"], id.as_str());
    assert_eq!(result_models(&job), ["fast", "mid"], "{job:#}");
    for r in job["results"].as_array().unwrap() {
        assert_answered(r, r["model"].as_str().unwrap(), "async?");
    }

    let completed = list_ids(client, advisor, "?state=completed").await;
    assert!(completed.contains(&id), "{completed:?}");
    assert!(completed.contains(&sync_id.to_owned()), "{completed:?}");
    assert_eq!(completed[0], id, "newest first: {completed:?}");
    assert!(list_ids(client, advisor, "?state=pending").await.is_empty());
    // Paging: one per page, the cursor leads to the other.
    let page = get(client, &advisor.url("/v1/jobs?state=completed&limit=1")).await;
    assert_eq!(page.body["jobs"].as_array().unwrap().len(), 1);
    let next = page.body["next_cursor"].as_str().expect("next_cursor");
    let page2 = get(
        client,
        &advisor.url(&format!("/v1/jobs?state=completed&limit=1&cursor={next}")),
    )
    .await;
    assert_eq!(page2.body["jobs"][0]["id"], sync_id, "{:#}", page2.body);
}

/// System prompt precedence, seen through the mock's prompt-token estimate (characters of all
/// messages / 4, rounded up): per-model request prompt > request prompt > configured model
/// prompt (`slow` has a 40-character one); and `max_tokens` caps the answer.
async fn prompt_precedence(client: &Client, advisor: &Advisor) {
    let q = "Why?";
    let tokens = |chars: usize| chars.div_ceil(4) as u64;
    let reply = post(
        client,
        &advisor.url("/v1/advise"),
        &json!({"question": q, "models": ["fast", "mid"], "system_prompt": "G".repeat(100),
                "system_prompts": {"mid": "M".repeat(20)}, "max_tokens": 4, "wait": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let results = reply.body["results"].as_array().unwrap();
    let by_model = |m: &str| results.iter().find(|r| r["model"] == m).unwrap().clone();
    assert_eq!(
        by_model("fast")["usage"]["prompt_tokens"],
        tokens(100 + q.len())
    );
    assert_eq!(
        by_model("mid")["usage"]["prompt_tokens"],
        tokens(20 + q.len())
    );
    for r in results {
        assert_eq!(r["usage"]["completion_tokens"], 4, "{r:#}");
        let capped: String = quorum_mock_llm::answer_chunks(q, CHUNKS)[..4].concat();
        assert_eq!(r["content"], capped.as_str(), "{r:#}");
    }
    let reply = post(
        client,
        &advisor.url("/v1/advise"),
        &json!({"question": q, "models": ["slow"], "wait": true}),
    )
    .await;
    assert_eq!(
        reply.body["results"][0]["usage"]["prompt_tokens"],
        tokens(40 + q.len()),
        "the configured prompt of `slow`: {:#}",
        reply.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advise_sync_and_async() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"models": {"slow": {"system_prompt": "S".repeat(40)}}}),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();

    let sync_id = sync_flow(&client, &advisor).await;
    async_flow(&client, &advisor, &sync_id).await;
    prompt_precedence(&client, &advisor).await;

    let missing = get(&client, &advisor.url("/v1/jobs/no-such-job")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["error"]["type"], "not_found");
    // Each model was asked exactly once per job.
    let stats = mock.stats();
    assert_eq!(stats.by_model.get("fast"), Some(&3), "{stats:?}");
    assert_eq!(stats.by_model.get("mid"), Some(&3), "{stats:?}");
    assert_eq!(stats.by_model.get("slow"), Some(&2), "{stats:?}");
}

/// Checks the ids of a stream's events: every event but tokens and comments has one; ids never
/// go back; progress seqs and result indexes are never repeated.
fn check_ids(events: &[Event]) {
    let mut last = (0, 0);
    let mut progress = BTreeSet::new();
    let mut results = BTreeSet::new();
    for e in events {
        match e.event.as_str() {
            "token" => assert!(e.id.is_none(), "{e:?}"),
            _ => {
                let id = e.id.as_deref().unwrap_or_else(|| panic!("no id: {e:?}"));
                let c = cursor(id);
                assert!(c.0 >= last.0 && c.1 >= last.1, "id went back: {e:?}");
                last = c;
                match e.event.as_str() {
                    "progress" => {
                        let seq = e.json()["seq"].as_i64().unwrap();
                        assert_eq!(seq, c.0, "{e:?}");
                        assert!(progress.insert(seq), "progress {seq} twice");
                    }
                    "result" => {
                        let index = e.json()["index"].as_u64().unwrap();
                        assert_eq!(index, u64::from(c.1), "{e:?}");
                        assert!(results.insert(index), "result {index} twice");
                    }
                    _ => {}
                }
            }
        }
    }
}

fn with_id(events: &[Event]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .filter(|e| e.id.is_some())
        .map(|e| (e.id.clone().unwrap(), e.event.clone(), e.json()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_order_tokens_failure_and_resume() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let events_url = advisor.url(&format!("/v1/jobs/{id}/events"));
    let live = Sse::open(&client, &events_url, None)
        .await
        .read_to_end()
        .await;

    check_ids(&live);
    let last = live.last().expect("some events");
    assert_eq!(last.event, "done", "{live:#?}");
    assert_eq!(
        last.json(),
        json!({"job_id": id, "state": "completed", "results": 3})
    );
    let results: Vec<Value> = live
        .iter()
        .filter(|e| e.event == "result")
        .map(Event::json)
        .collect();
    let models: Vec<&str> = results
        .iter()
        .map(|r| r["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["fast", "mid", "slow"], "{live:#?}");
    for r in &results {
        assert_answered(r, r["model"].as_str().unwrap(), QUESTION);
    }
    // Tokens: `slow` starts answering ~600 ms after the subscription, so all its tokens are
    // seen, each before its result, and together they are its answer.
    let slow_result_at = live
        .iter()
        .position(|e| e.event == "result" && e.json()["model"] == "slow")
        .unwrap();
    let slow_tokens: Vec<(usize, String)> = live
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == "token" && e.json()["model"] == "slow")
        .map(|(i, e)| (i, e.json()["text"].as_str().unwrap().to_owned()))
        .collect();
    assert!(!slow_tokens.is_empty(), "no token events: {live:#?}");
    assert!(slow_tokens.iter().all(|(i, _)| *i < slow_result_at));
    let text: String = slow_tokens.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text, answer(QUESTION));
    let progress: Vec<Value> = live
        .iter()
        .filter(|e| e.event == "progress")
        .map(Event::json)
        .collect();
    assert!(progress.len() >= 4, "start + one per model: {progress:#?}");
    assert_eq!(progress.last().unwrap()["percent"], 100.0);

    // Resume from the middle: exactly the id'd events after it, nothing twice, nothing lost.
    let ided = with_id(&live);
    assert!(ided.len() >= 7, "{ided:#?}");
    for k in [ided.len() / 2, 0, ided.len() - 2] {
        let from = &ided[k].0;
        let replay = Sse::open(&client, &events_url, Some(from))
            .await
            .read_to_end()
            .await;
        assert!(
            replay.iter().all(|e| e.event != "token"),
            "tokens are not replayed"
        );
        assert_eq!(
            with_id(&replay),
            ided[k + 1..].to_vec(),
            "resume from Last-Event-ID {from}"
        );
    }
    // From the start (0.0) the stored history is the whole id'd stream.
    let all = Sse::open(&client, &events_url, Some("0.0"))
        .await
        .read_to_end()
        .await;
    assert_eq!(with_id(&all), ided);
    let bad = client
        .get(&events_url)
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // A job whose only model fails ends with an `error` event in state failed.
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": "doomed", "models": ["dead"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let failed_id = reply.body["id"].as_str().unwrap().to_owned();
    let failed = Sse::open(
        &client,
        &advisor.url(&format!("/v1/jobs/{failed_id}/events")),
        None,
    )
    .await
    .read_to_end()
    .await;
    check_ids(&failed);
    let last = failed.last().unwrap();
    assert_eq!(last.event, "error", "{failed:#?}");
    let data = last.json();
    assert_eq!(data["state"], "failed", "{data:#}");
    assert_eq!(data["error"]["class"], "all_models_failed", "{data:#}");
    let result = failed
        .iter()
        .find(|e| e.event == "result")
        .expect("a result event")
        .json();
    assert_eq!(result["model"], "dead");
    assert_eq!(result["error"]["class"], "server", "{result:#}");
    assert!(result.get("content").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_aborts_the_upstream_call() {
    let mock = start_mock(json!({"slow_delay": "30s"})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["sleepy", "fast"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(
        &client,
        &advisor.url(&format!("/v1/jobs/{id}/events")),
        None,
    )
    .await;
    let seen = sse
        .until(|e| e.event == "result" && e.json()["model"] == "fast")
        .await;
    assert!(seen.iter().all(|e| e.event != "done" && e.event != "error"));
    assert!(
        eventually(WAIT, || async { mock.stats().active == 1 }).await,
        "sleepy never reached the mock: {:?}",
        mock.stats()
    );

    let cancelled = delete(&client, &advisor.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["state"], "cancelled", "{:#}", cancelled.body);

    // The stream ends promptly with the cancellation.
    let mut tail = Vec::new();
    loop {
        match sse.next_within(Duration::from_secs(5)).await {
            Ok(Some(e)) if e.is_comment() => {}
            Ok(Some(e)) => tail.push(e),
            Ok(None) => break,
            Err(()) => panic!("the stream did not end within 5s of the cancel: {tail:#?}"),
        }
    }
    let last = tail.last().expect("a final event");
    assert_eq!(last.event, "error", "{tail:#?}");
    assert_eq!(last.json()["state"], "cancelled", "{tail:#?}");
    assert_eq!(last.json()["results"], 1);

    // The upstream call was aborted: the mock saw its client leave.
    let aborted = eventually(Duration::from_secs(5), || async {
        let s = mock.stats();
        s.cancelled >= 1 && s.active == 0
    })
    .await;
    assert!(aborted, "upstream call not aborted: {:?}", mock.stats());

    let job = get(&client, &advisor.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(job.body["state"], "cancelled");
    assert_eq!(result_models(&job.body), ["fast"]);
    assert_eq!(job.body["error"]["class"], "cancelled");
    let again = delete(&client, &advisor.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(again.body["error"]["type"], "already_finished");
    let unknown = delete(&client, &advisor.url("/v1/jobs/nope")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["type"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_resumes_without_asking_again() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(dir.path(), &mock.base_url(), json!({}));
    let mut first = Advisor::start(&config).await;
    let client = Client::new();

    let reply = post(
        &client,
        &first.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["fast", "slowish"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(&client, &first.url(&format!("/v1/jobs/{id}/events")), None).await;
    let before_crash = sse
        .until(|e| e.event == "result" && e.json()["model"] == "fast")
        .await;
    let job = wait_job(&client, &first, &id, "fast recorded", |j| {
        result_models(j) == ["fast"]
    })
    .await;
    assert_eq!(job["state"], "running", "{job:#}");
    first.kill9().await;
    drop(first);
    let last_id = before_crash
        .iter()
        .rev()
        .find_map(|e| e.id.clone())
        .expect("an id'd event");

    let second = Advisor::start(&config).await;
    // The client resumes on the new process from its last id: the rest, nothing twice.
    let after_crash = Sse::open(
        &client,
        &second.url(&format!("/v1/jobs/{id}/events")),
        Some(&last_id),
    )
    .await
    .read_to_end()
    .await;
    let mut whole: Vec<Event> = before_crash.clone();
    whole.extend(after_crash.iter().cloned());
    check_ids(&whole);
    let results: Vec<Value> = whole
        .iter()
        .filter(|e| e.event == "result")
        .map(Event::json)
        .collect();
    assert_eq!(
        results
            .iter()
            .map(|r| r["model"].clone())
            .collect::<Vec<_>>(),
        ["fast", "slowish"],
        "{whole:#?}"
    );
    let last = after_crash.last().unwrap();
    assert_eq!(last.event, "done", "{after_crash:#?}");
    assert_eq!(last.json()["results"], 2);
    assert!(
        after_crash.iter().any(|e| e.event == "progress"
            && e.json()["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("resuming"))),
        "{after_crash:#?}"
    );
    let job = wait_job(&client, &second, &id, "a terminal state", is_terminal).await;
    assert_eq!(job["state"], "completed", "{job:#}");
    assert_eq!(result_models(&job), ["fast", "slowish"], "{job:#}");
    for r in job["results"].as_array().unwrap() {
        assert_answered(r, r["model"].as_str().unwrap(), QUESTION);
    }
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job:#}");
    let stats = mock.stats();
    assert_eq!(
        stats.by_model.get("fast"),
        Some(&1),
        "fast asked again: {stats:?}"
    );
    assert_eq!(stats.by_model.get("slowish"), Some(&2), "{stats:?}");
    assert!(stats.cancelled >= 1, "the killed call: {stats:?}");
    assert!(second.log_text().contains("took back jobs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_fall_back() {
    // Only `fault-flaky-N` draws from the mock's seeded generator and its calls are sequential
    // (retries), so the sequence of 503s is fixed by the seed.
    let mock = start_mock(json!({"seed": 42})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["flaky", "broken"], "wait": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = &reply.body;
    assert_eq!(job["state"], "completed", "{job:#}");
    let results = job["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{job:#}");
    let flaky = results.iter().find(|r| r["model"] == "flaky").unwrap();
    assert_answered(flaky, "flaky", QUESTION);
    let broken = results.iter().find(|r| r["model"] == "broken").unwrap();
    assert_answered(broken, "broken", QUESTION);
    assert_eq!(broken["fallback"]["model"], "fast", "{broken:#}");
    assert_eq!(broken["fallback"]["provider"], "mock", "{broken:#}");
    let skipped = broken["fallback"]["skipped"].as_array().unwrap();
    assert!(
        skipped.len() == 1 && skipped[0].as_str().unwrap().contains("fault-500"),
        "{broken:#}"
    );
    // broken: 4 attempts (retry.max_attempts) on fault-500, then the fallback.
    let stats = mock.stats();
    assert_eq!(stats.by_model.get("fault-500"), Some(&4), "{stats:?}");
    assert_eq!(stats.by_model.get("fast"), Some(&1), "{stats:?}");

    // Flaky through the gateway: each call makes up to 4 attempts; a call answers 200, or 503
    // `overloaded` once all 4 attempts failed. Some calls must succeed only after a retry.
    // (Few calls: past 20 attempts with >= 50 % failures the model's breaker would open.)
    let mut retried_ok = 0;
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        let before = mock.stats().by_model["fault-flaky-50"];
        let r = post(
            &client,
            &advisor.url("/v1/chat/completions"),
            &json!({"model": "flaky", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
        let attempts = mock.stats().by_model["fault-flaky-50"] - before;
        outcomes.push((r.status.as_u16(), attempts));
        match r.status {
            StatusCode::OK => {
                assert!((1..=4).contains(&attempts), "{outcomes:?}");
                assert_eq!(r.header("x-quorum-model"), Some("fault-flaky-50"));
                if attempts > 1 {
                    retried_ok += 1;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE if r.body["error"]["type"] == "breaker_open" => {
                assert_eq!(attempts, 0, "an open breaker calls nobody: {outcomes:?}");
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(attempts, 4, "gave up before max_attempts: {outcomes:?}");
                assert_eq!(r.body["error"]["type"], "overloaded", "{}", r.text);
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    eprintln!("flaky gateway calls (status, attempts): {outcomes:?}");
    assert!(
        retried_ok >= 1,
        "no call succeeded after a retry: {outcomes:?}"
    );

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": "doomed", "models": ["dead"], "wait": true}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let job = &reply.body;
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["class"], "all_models_failed", "{job:#}");
    let r = &job["results"][0];
    assert_eq!(r["model"], "dead");
    assert_eq!(r["provider"], "none");
    assert_eq!(r["error"]["class"], "server", "{r:#}");
    assert!(r.get("content").is_none(), "{r:#}");
    assert_eq!(mock.stats().by_model.get("fault-500"), Some(&8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_gateway_plain_streamed_fallback_unknown() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();
    let url = advisor.url("/v1/chat/completions");
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]);

    let plain = post(
        &client,
        &url,
        &json!({"model": "fast", "messages": messages}),
    )
    .await;
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
    assert_eq!(plain.header("x-quorum-model"), Some("fast"));
    assert_eq!(plain.header("x-quorum-provider"), Some("mock"));
    let body = &plain.body;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "fast");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_owned();
    assert!(!content.is_empty());
    assert_eq!(content, answer(QUESTION));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], CHUNKS);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let response = client
        .post(&url)
        .json(
            &json!({"model": "fast", "messages": messages, "stream": true,
                      "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-quorum-model"].to_str().unwrap(),
        "fast"
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let frames = Sse::new(response).read_to_end().await;
    let last = frames.last().expect("frames");
    assert_eq!(last.data, "[DONE]", "{frames:#?}");
    assert!(
        frames
            .iter()
            .all(|f| f.event == "message" && f.id.is_none())
    );
    let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(Event::json).collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content, "{chunks:#?}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop"),
        "{chunks:#?}"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["usage"]["completion_tokens"] == CHUNKS),
        "include_usage: {chunks:#?}"
    );

    // `broken` (fault-500) is answered by its fallback `fast`, plain and streamed.
    let fallback = post(
        &client,
        &url,
        &json!({"model": "broken", "messages": messages}),
    )
    .await;
    assert_eq!(fallback.status, StatusCode::OK, "{}", fallback.text);
    assert_eq!(fallback.header("x-quorum-model"), Some("fast"));
    assert_eq!(fallback.body["choices"][0]["message"]["content"], content);
    let response = client
        .post(&url)
        .json(&json!({"model": "broken", "messages": messages, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-quorum-model"].to_str().unwrap(),
        "fast"
    );
    let frames = Sse::new(response).read_to_end().await;
    assert_eq!(frames.last().unwrap().data, "[DONE]");

    let unknown = post(
        &client,
        &url,
        &json!({"model": "gpt-9", "messages": messages}),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let error = &unknown.body["error"];
    assert_eq!(error["type"], "not_found", "{error:#}");
    let known: Vec<&str> = error["known_models"]
        .as_array()
        .expect("known_models")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        known.contains(&"fast") && known.contains(&"broken"),
        "{known:?}"
    );

    // A model whose every attempt fails: the error class as the type, 502.
    let dead = post(
        &client,
        &url,
        &json!({"model": "dead", "messages": messages}),
    )
    .await;
    assert_eq!(dead.status, StatusCode::BAD_GATEWAY, "{}", dead.text);
    assert_eq!(dead.body["error"]["type"], "server", "{}", dead.text);

    // A client that gives up aborts the upstream call.
    let gave_up = client
        .post(&url)
        .timeout(Duration::from_millis(500))
        .json(&json!({"model": "sleepy", "messages": messages}))
        .send()
        .await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = mock.stats();
            s.cancelled >= 1 && s.active == 0
        })
        .await,
        "the upstream call outlived its client: {:?}",
        mock.stats()
    );

    let models = get(&client, &advisor.url("/v1/models")).await;
    assert_eq!(models.status, StatusCode::OK);
    let ids: BTreeSet<&str> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "broken", "dead", "fast", "flaky", "mid", "sleepy", "slow", "slowish"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_and_count_calls() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();

    let r = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["fast"], "wait": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = post(
        &client,
        &advisor.url("/v1/chat/completions"),
        &json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = post(
        &client,
        &advisor.url("/v1/chat/completions"),
        &json!({"model": "broken", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let reply = get(&client, &advisor.url("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let samples = exposition::parse(&reply.text)
        .unwrap_or_else(|e| panic!("invalid exposition ({e:?}):\n{}", reply.text));
    let calls = exposition::value(
        &samples,
        "quorum_llm_calls_total",
        &[("provider", "mock"), ("model", "fast"), ("outcome", "ok")],
    );
    assert!(calls.is_some_and(|v| v >= 2.0), "{calls:?}\n{}", reply.text);
    let advise_requests = samples.iter().find(|s| {
        s.name.starts_with("quorum_http_request_duration_seconds")
            && s.labels.get("route").map(String::as_str) == Some("/v1/advise")
            && s.labels.get("method").map(String::as_str) == Some("POST")
            && s.labels.get("status").map(String::as_str) == Some("200")
    });
    assert!(advise_requests.is_some(), "{}", reply.text);
    assert_eq!(
        exposition::value(
            &samples,
            "quorum_http_request_duration_seconds_count",
            &[("route", "/v1/advise")]
        ),
        Some(1.0)
    );
    assert_eq!(
        exposition::value(&samples, "quorum_advisor_jobs", &[("state", "completed")]),
        Some(1.0),
        "{}",
        reply.text
    );
    assert!(
        exposition::value(
            &samples,
            "quorum_advisor_overhead_seconds_count",
            &[("route", "/v1/chat/completions")]
        )
        .is_some_and(|v| v >= 1.0),
        "{}",
        reply.text
    );
    assert_eq!(
        exposition::value(
            &samples,
            "quorum_llm_calls_total",
            &[("provider", "mock"), ("model", "broken"), ("outcome", "ok")]
        ),
        Some(1.0),
        "{}",
        reply.text
    );
    assert_eq!(
        exposition::value(
            &samples,
            "quorum_llm_fallbacks_total",
            &[("model", "broken")]
        ),
        Some(1.0),
        "{}",
        reply.text
    );
    // broken: 4 attempts on fault-500 = 3 retries. (docs/advisor.md calls this family
    // `quorum_retries_total`; it is exposed as `quorum_resilience_retries_total`.)
    assert_eq!(
        exposition::value(
            &samples,
            "quorum_resilience_retries_total",
            &[("name", "mock")]
        ),
        Some(3.0),
        "{}",
        reply.text
    );
    assert_eq!(
        exposition::value(&samples, "quorum_sse_streams_active", &[]),
        Some(0.0)
    );
    assert!(
        samples
            .iter()
            .any(|s| s.name.starts_with("quorum_build_info")),
        "{}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_and_persists_nothing() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({
            "server": {"body_limit": "2KiB"},
            "advisor": {"max_models": 2, "default_models": ["fast", "mid"]},
        }),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();
    let advise = advisor.url("/v1/advise");

    // (body, status, type, field)
    let big = "x".repeat(10 * 1024);
    let cases: Vec<(String, StatusCode, &str, Option<&str>)> = vec![
        (
            r#"{"question": "#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            "not json".into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("body"),
        ),
        (
            String::new(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("body"),
        ),
        (
            r#"{"question": 5}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("question"),
        ),
        (
            r#"{"question": "   "}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("question"),
        ),
        (
            r#"{"models": ["fast"]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            r#"{"question": "q", "models": ["fast", "nope"]}"#.into(),
            StatusCode::NOT_FOUND,
            "not_found",
            Some("models[1]"),
        ),
        (
            r#"{"question": "q", "models": ["fast", "mid", "slow"]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("models"),
        ),
        (
            r#"{"question": "q", "models": ["fast", "fast"]}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("models[1]"),
        ),
        (
            r#"{"question": "q", "models": []}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("models"),
        ),
        (
            r#"{"question": "q", "bogus": 1}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            None,
        ),
        (
            r#"{"question": "q", "priority": 5000}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("priority"),
        ),
        (
            r#"{"question": "q", "temperature": 9}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("temperature"),
        ),
        (
            r#"{"question": "q", "max_tokens": 0}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            r#"{"question": "q", "wait": -1}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("wait"),
        ),
        (
            r#"{"question": "q", "system_prompts": {"slow": "x"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("system_prompts.slow"),
        ),
        (
            format!(r#"{{"question": "{big}"}}"#),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
    ];
    for (body, status, kind, field) in &cases {
        let response = client
            .post(&advise)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {body:.60}: {e}"));
        let reply = common::Reply::from(response).await;
        let what = format!("body {body:.60} -> {} {}", reply.status, reply.text);
        assert_eq!(reply.status, *status, "{what}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let error = &reply.body["error"];
        assert_eq!(error["type"], *kind, "{what}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        if let Some(field) = field {
            assert_eq!(error["field"], *field, "{what}");
        }
        if *status == StatusCode::NOT_FOUND {
            let known = error["known_models"].as_array().expect("known_models");
            assert!(known.iter().any(|m| m == "fast"), "{what}");
        }
    }

    // The gateway and the other endpoints answer in the same way.
    let others: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            client
                .post(advisor.url("/v1/chat/completions"))
                .body("{\"model\": "),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client
                .post(advisor.url("/v1/chat/completions"))
                .body(format!(
                    r#"{{"model": "fast", "messages": [{{"role": "user", "content": "{big}"}}]}}"#
                )),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            client
                .post(advisor.url("/v1/chat/completions"))
                .body(r#"{"model": "fast", "messages": []}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client.get(advisor.url("/v1/jobs?limit=0")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client.get(advisor.url("/v1/jobs?state=bogus")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client.get(advisor.url("/v1/jobs?cursor=zzz")),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            client.get(advisor.url("/v1/jobs/nope/events")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            client.get(advisor.url("/v1/advise")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            client.get(advisor.url("/v2/nothing")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (request, status, kind) in others {
        let reply = common::Reply::from(request.send().await.unwrap()).await;
        assert_eq!(reply.status, status, "{}", reply.text);
        assert_eq!(reply.body["error"]["type"], kind, "{}", reply.text);
    }

    let listed = get(&client, &advisor.url("/v1/jobs")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["jobs"], json!([]), "nothing persisted");
    let status = get(&client, &advisor.url("/v1/admin/status")).await;
    assert_eq!(status.body["pool"]["pending"], 0, "{:#}", status.body);
    // (The status call's provider health check is the mock's only request: no model call.)
    let stats = mock.stats();
    assert!(stats.by_model.is_empty(), "a model was asked: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_streams_and_resumes_jobs() {
    let mock = start_mock(json!({"slow_delay": "30s"})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"server": {"shutdown_grace": "1s"}}),
    );
    let mut first = Advisor::start(&config).await;
    let client = Client::new();

    let reply = post(
        &client,
        &first.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["sleepy"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(&client, &first.url(&format!("/v1/jobs/{id}/events")), None).await;
    sse.until(|e| e.event == "progress").await;
    assert!(
        eventually(WAIT, || async { mock.stats().active == 1 }).await,
        "sleepy never reached the mock"
    );

    // A client waiting for the job (wait: true) when SIGTERM arrives.
    let waiter = {
        let client = client.clone();
        let url = first.url("/v1/advise");
        tokio::spawn(async move {
            client
                .post(&url)
                .json(&json!({"question": "waiting", "models": ["sleepy"], "wait": true}))
                .send()
                .await
        })
    };
    assert!(
        eventually(WAIT, || async { mock.stats().active == 2 }).await,
        "the waiter's job never reached the mock"
    );

    first.sigterm().await;
    let end = sse.until(|e| e.event == "error").await;
    let data = end.last().unwrap().json();
    assert_eq!(data["type"], "shutting_down", "{data:#}");
    assert!(data["resume_with_last_event_id"].is_string(), "{data:#}");
    assert_eq!(
        sse.next().await,
        None,
        "the stream ends after the final event"
    );

    let status = first
        .wait_exit(Duration::from_secs(1 + 10))
        .await
        .expect("exited within shutdown_grace + 10s");
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        first.log_text()
    );
    // The waiting client got an answer (the job as it was), not a dropped connection.
    let waited = waiter.await.unwrap().expect("an answer before the exit");
    assert_eq!(waited.status(), StatusCode::ACCEPTED);
    let waited: Value = waited.json().await.unwrap();
    assert!(!is_terminal(&waited), "{waited:#}");
    let waited_id = waited["id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = mock.stats();
            s.active == 0 && s.cancelled >= 2
        })
        .await,
        "the released calls were not aborted: {:?}",
        mock.stats()
    );
    drop(first);

    let second = Advisor::start(&config).await;
    let job = wait_job(&client, &second, &id, "running again", |j| {
        j["state"] == "running"
    })
    .await;
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job:#}");
    wait_job(&client, &second, &waited_id, "running again", |j| {
        j["state"] == "running"
    })
    .await;
    assert!(
        eventually(WAIT, || async {
            mock.stats().by_model.get("fault-slow") == Some(&4)
        })
        .await,
        "sleepy not asked again: {:?}",
        mock.stats()
    );
    for job in [&id, &waited_id] {
        let cancelled = delete(&client, &second.url(&format!("/v1/jobs/{job}"))).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
        assert_eq!(cancelled.body["state"], "cancelled");
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            mock.stats().active == 0
        })
        .await
    );
}

async fn open_streams(client: &Client, advisor: &Advisor) -> u64 {
    let status = get(client, &advisor.url("/v1/admin/status")).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text);
    assert_eq!(status.body["streams"]["max"], 2);
    status.body["streams"]["open"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_cap_and_release_on_disconnect() {
    let mock = start_mock(json!({"slow_delay": "30s"})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"server": {"max_streams": 2}}),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["sleepy"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let url = advisor.url(&format!("/v1/jobs/{id}/events"));
    let one = Sse::open(&Client::new(), &url, None).await;
    let mut two = Sse::open(&Client::new(), &url, None).await;
    assert_eq!(open_streams(&client, &advisor).await, 2);

    let third = get(&client, &url).await;
    assert_eq!(
        third.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        third.text
    );
    let retry_after: u64 = third
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    assert_eq!(third.body["error"]["type"], "too_many_streams");

    drop(one);
    // The server notices the client left and frees its slot (allow 1.5 s for a loaded machine).
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut open = 2;
    while tokio::time::Instant::now() < deadline {
        open = open_streams(&client, &advisor).await;
        if open == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        open, 1,
        "streams.open still {open} 1.5s after a client left"
    );
    // The freed slot can be used again; the other stream is still live.
    let _three = Sse::open(&client, &url, None).await;
    let cancelled = delete(&client, &advisor.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let tail = two.read_to_end().await;
    assert_eq!(tail.last().unwrap().json()["state"], "cancelled");
}

async fn cli(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_quorum-advisor"))
        .args(args)
        .output()
        .await
        .expect("run quorum-advisor");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_config_validate_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let good = advisor_config(dir.path(), "http://127.0.0.1:9", json!({}));
    let good = good.to_str().unwrap();
    let (code, stdout, stderr) = cli(&["config", "validate", "--config", good]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("configuration ok"), "{stdout}");

    let bad_dir = tempfile::tempdir().unwrap();
    let bad = advisor_config(
        bad_dir.path(),
        "http://127.0.0.1:9",
        json!({
            "engine": {"max_concurrent_jobs": 0},
            "advisor": {"default_models": ["fast", "ghost"]},
        }),
    );
    let (code, stdout, stderr) =
        cli(&["config", "validate", "--config", bad.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("engine.max_concurrent_jobs"), "{stderr}");
    assert!(stderr.contains("advisor.default_models[1]"), "{stderr}");
    assert!(stderr.contains("ghost"), "{stderr}");

    let (code, _, stderr) = cli(&[
        "config",
        "validate",
        "--config",
        good,
        "--set",
        "engine.max_concurent_jobs=3",
    ])
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("max_concurent_jobs"), "{stderr}");

    let secret_dir = tempfile::tempdir().unwrap();
    let secret = advisor_config(
        secret_dir.path(),
        "http://127.0.0.1:9",
        json!({"providers": [{"name": "mock", "kind": "openai",
                               "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret"}]}),
    );
    let (code, stdout, stderr) =
        cli(&["config", "show", "--config", secret.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("sk-secret"), "{stdout}");
    assert!(!stderr.contains("sk-secret"), "{stderr}");
    assert!(stdout.contains("fault-500"), "the rest is shown: {stdout}");
}

/// Drops the test's PostgreSQL schema when the test ends, passed or not.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    #[allow(
        clippy::print_stderr,
        reason = "a schema left behind is worth a note in the test output"
    )]
    fn drop(&mut self) {
        let dropped = std::process::Command::new("psql")
            .arg(&self.url)
            .arg("-qc")
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .output();
        match dropped {
            Ok(out) if out.status.success() => {}
            other => eprintln!("NOTE: could not drop schema {}: {other:?}", self.schema),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sync_flow() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        assert!(
            std::env::var("QUORUM_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "DATABASE_URL is not set but QUORUM_REQUIRE_SERVICES=1"
        );
        eprintln!("SKIPPED: DATABASE_URL not set (postgres_sync_flow)");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("adv_e2e_{}_{nanos}", std::process::id());
    let _cleanup = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"store": {"url": url, "schema": schema}}),
    );
    let mut advisor = Advisor::start(&config).await;
    let client = Client::new();
    let sync_id = sync_flow(&client, &advisor).await;
    async_flow(&client, &advisor, &sync_id).await;
    advisor.kill9().await;
    drop(advisor);
    // `_cleanup` drops the schema, also when an assertion failed.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();
    for path in ["/livez", "/readyz", "/startupz"] {
        let r = get(&client, &advisor.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    }
    let status = get(&client, &advisor.url("/v1/admin/status")).await;
    assert_eq!(status.status, StatusCode::OK);
    let s = &status.body;
    for key in [
        "jobs",
        "pool",
        "streams",
        "breakers",
        "limiters",
        "database",
        "providers",
        "uptime_seconds",
    ] {
        assert!(s.get(key).is_some(), "{key} missing: {s:#}");
    }
    assert_eq!(s["streams"]["open"], 0);
    assert_eq!(s["providers"]["mock"], "ok", "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_lifetime_heartbeat_and_live_resume() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"server": {"stream_lifetime": "1s", "heartbeat": "200ms"}}),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();

    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["fast", "slowish"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let url = advisor.url(&format!("/v1/jobs/{id}/events"));
    // Reconnect whenever a stream expires, each time from the id it said to resume with,
    // until the job's final event: together, every id'd event exactly once.
    let mut all: Vec<Event> = Vec::new();
    let mut resume: Option<String> = None;
    let mut expired = 0;
    let mut comments = 0;
    loop {
        let mut sse = Sse::open(&client, &url, resume.as_deref()).await;
        let mut frames = Vec::new();
        while let Some(e) = sse.next().await {
            if e.is_comment() {
                assert_eq!(e.data, "keep-alive");
                comments += 1;
            } else {
                frames.push(e);
            }
        }
        let last = frames.last().cloned().expect("a final event");
        all.extend(frames.into_iter().filter(|e| e.event != "token"));
        if last.event == "error" && last.json()["type"] == "stream_expired" {
            expired += 1;
            let data = last.json();
            assert_eq!(data["resume_with_last_event_id"], last.id.clone().unwrap());
            resume = last.id.clone();
            // The expiry notice is not part of the job's history.
            all.pop();
            assert!(expired < 20, "never finished: {all:#?}");
            continue;
        }
        assert_eq!(last.event, "done", "{all:#?}");
        break;
    }
    assert!(
        expired >= 2,
        "slowish takes 3 s, streams live 1 s: {expired}"
    );
    assert!(comments >= 2, "heartbeats every 200 ms: {comments}");
    check_ids(&all);
    let stored = Sse::open(&client, &url, Some("0.0"))
        .await
        .read_to_end()
        .await;
    assert_eq!(
        with_id(&all),
        with_id(&stored),
        "live pieces joined up = the stored history"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_priority_pending_cancel_and_queue_full() {
    let mock = start_mock(json!({"slow_delay": "30s"})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"engine": {"max_concurrent_jobs": 1, "queue_capacity": 2}}),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();
    let submit = |models: Value, priority: i32| {
        let client = &client;
        let url = advisor.url("/v1/advise");
        async move {
            post(
                client,
                &url,
                &json!({"question": QUESTION, "models": models, "priority": priority}),
            )
            .await
        }
    };

    let blocker = submit(json!(["sleepy"]), 0).await;
    let blocker = blocker.body["id"].as_str().unwrap().to_owned();
    wait_job(&client, &advisor, &blocker, "running", |j| {
        j["state"] == "running"
    })
    .await;

    let low = submit(json!(["fast"]), -5).await;
    assert_eq!(low.status, StatusCode::ACCEPTED);
    let low = low.body["id"].as_str().unwrap().to_owned();
    let high = submit(json!(["mid"]), 5).await;
    assert_eq!(high.status, StatusCode::ACCEPTED);
    let high = high.body["id"].as_str().unwrap().to_owned();
    let full = submit(json!(["fast"]), 0).await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.text
    );
    assert_eq!(full.body["error"]["type"], "queue_full");
    assert!(full.header("retry-after").is_some());

    // Cancelling a pending job frees its place in the queue and ends its stream.
    let mut low_events = Sse::open(
        &client,
        &advisor.url(&format!("/v1/jobs/{low}/events")),
        None,
    )
    .await;
    let cancelled = delete(&client, &advisor.url(&format!("/v1/jobs/{low}"))).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    assert_eq!(cancelled.body["state"], "cancelled");
    let tail = low_events.read_to_end().await;
    let last = tail.last().expect("a final event");
    assert_eq!(
        (last.event.as_str(), last.json()["state"].clone()),
        ("error", json!("cancelled"))
    );
    let low2 = submit(json!(["fast"]), -5).await;
    assert_eq!(low2.status, StatusCode::ACCEPTED, "{}", low2.text);
    let low2 = low2.body["id"].as_str().unwrap().to_owned();

    let cancelled = delete(&client, &advisor.url(&format!("/v1/jobs/{blocker}"))).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let high_job = wait_job(&client, &advisor, &high, "completed", |j| {
        j["state"] == "completed"
    })
    .await;
    let low_job = wait_job(&client, &advisor, &low2, "completed", |j| {
        j["state"] == "completed"
    })
    .await;
    // One at a time, higher priority first.
    assert!(
        low_job["started_at"].as_str().unwrap() >= high_job["finished_at"].as_str().unwrap(),
        "high: {high_job:#}\nlow: {low_job:#}"
    );
    let low_first = get(&client, &advisor.url(&format!("/v1/jobs/{low}"))).await;
    assert_eq!(
        low_first.body["results"],
        json!([]),
        "a cancelled pending job never ran"
    );
    assert_eq!(mock.stats().by_model.get("fast"), Some(&1));

    let status = get(&client, &advisor.url("/v1/admin/status")).await;
    let pool = &status.body["pool"];
    assert_eq!(pool["pending"], 0, "{pool:#}");
    assert_eq!(pool["running"], 0, "{pool:#}");
    assert_eq!(pool["max_concurrent_jobs"], 1);
    let jobs = &status.body["jobs"];
    assert_eq!(jobs["completed"], 2, "{jobs:#}");
    assert_eq!(jobs["cancelled"], 2, "{jobs:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_keeps_answers_and_aborts_calls() {
    let mock = start_mock(json!({"slow_delay": "30s"})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"engine": {"job_timeout": "1500ms"}}),
    );
    let advisor = Advisor::start(&config).await;
    let client = Client::new();

    // A short wait answers 202 with the job as it is then.
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["sleepy", "fast"], "wait": 0.5}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["state"], "running", "{:#}", reply.body);
    let so_far = result_models(&reply.body);
    assert!(so_far.is_empty() || so_far == ["fast"], "{:#}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();

    let job = wait_job(&client, &advisor, &id, "a terminal state", is_terminal).await;
    assert_eq!(job["state"], "timed_out", "{job:#}");
    assert_eq!(job["error"]["class"], "timeout", "{job:#}");
    assert_eq!(result_models(&job), ["fast"], "the answers so far are kept");
    let events = Sse::open(
        &client,
        &advisor.url(&format!("/v1/jobs/{id}/events")),
        None,
    )
    .await
    .read_to_end()
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.json()["state"], "timed_out");
    assert!(
        eventually(Duration::from_secs(5), || async {
            let s = mock.stats();
            s.active == 0 && s.cancelled >= 1
        })
        .await,
        "sleepy's call not aborted: {:?}",
        mock.stats()
    );

    // A job whose deadline passes while the advisor is down fails at the next start.
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["sleepy"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    wait_job(&client, &advisor, &id, "running", |j| {
        j["state"] == "running"
    })
    .await;
    let mut advisor = advisor;
    advisor.kill9().await;
    drop(advisor);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let advisor = Advisor::start(&config).await;
    let job = get(&client, &advisor.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(job.body["state"], "failed", "{:#}", job.body);
    assert_eq!(
        job.body["error"]["class"], "deadline_passed",
        "{:#}",
        job.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_within_grace() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let config = advisor_config(
        dir.path(),
        &mock.base_url(),
        json!({"server": {"shutdown_grace": "15s"}}),
    );
    let mut first = Advisor::start(&config).await;
    let client = Client::new();
    let reply = post(
        &client,
        &first.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["slowish"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    wait_job(&client, &first, &id, "running", |j| j["state"] == "running").await;
    first.sigterm().await;
    let status = first
        .wait_exit(WAIT)
        .await
        .expect("exits once the job finished");
    assert!(status.success(), "{status}:\n{}", first.log_text());
    drop(first);

    let second = Advisor::start(&config).await;
    let job = get(&client, &second.url(&format!("/v1/jobs/{id}"))).await;
    assert_eq!(job.body["state"], "completed", "{:#}", job.body);
    assert_eq!(result_models(&job.body), ["slowish"]);
    assert_eq!(job.body["attempts"], 1);
    assert_eq!(mock.stats().by_model.get("slowish"), Some(&1));
}

/// Tokens are "live only", but a client subscribed before a model starts answering should see
/// that model's tokens. They are lost when the job's event channel was dropped while the job
/// ran (a `wait` that timed out, or an SSE client that disconnected, with no result yet) and a
/// new subscriber came: the running model calls keep sending tokens into the old channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_subscribers_after_an_earlier_listener_left() {
    let mock = start_mock(json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let advisor = Advisor::start(&advisor_config(dir.path(), &mock.base_url(), json!({}))).await;
    let client = Client::new();

    // Baseline: a subscriber from the start sees slowish's 16 tokens.
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["slowish"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let url = advisor.url(&format!("/v1/jobs/{id}/events"));
    let events = Sse::open(&client, &url, None).await.read_to_end().await;
    let baseline = events.iter().filter(|e| e.event == "token").count();
    assert_eq!(baseline, CHUNKS, "{events:#?}");

    // 1. A `wait` that ends before the first answer, then a subscriber (~2.7 s before
    //    slowish starts streaming).
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["slowish"], "wait": 0.2}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let events = Sse::open(
        &client,
        &advisor.url(&format!("/v1/jobs/{id}/events")),
        None,
    )
    .await
    .read_to_end()
    .await;
    assert_eq!(events.last().unwrap().event, "done");
    let after_wait = events.iter().filter(|e| e.event == "token").count();

    // 2. An SSE client that reconnects (with its Last-Event-ID) before the first answer.
    let reply = post(
        &client,
        &advisor.url("/v1/advise"),
        &json!({"question": QUESTION, "models": ["slowish"]}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_owned();
    let url = advisor.url(&format!("/v1/jobs/{id}/events"));
    let mut first = Sse::open(&client, &url, None).await;
    let seen = first.until(|e| e.event == "progress").await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last_id = seen.last().unwrap().id.clone().unwrap();
    let events = Sse::open(&client, &url, Some(&last_id))
        .await
        .read_to_end()
        .await;
    assert_eq!(events.last().unwrap().event, "done");
    let after_reconnect = events.iter().filter(|e| e.event == "token").count();

    assert_eq!(
        (after_wait, after_reconnect),
        (CHUNKS, CHUNKS),
        "token events seen (after a timed-out wait, after a reconnect); each subscriber was \
         connected ~2.5 s before slowish streamed its {CHUNKS} tokens"
    );
}
