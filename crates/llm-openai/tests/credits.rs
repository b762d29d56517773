//! The OpenRouter credit monitor over real HTTP against the in-process mock's
//! `GET /v1/auth/key`, with the mock's credits changed at run time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_config::Secret;
use quorum_llm::ErrorKind;
use quorum_llm_openai::{
    CreditLevel, CreditMonitor, CreditMonitorConfig, CreditStatus, OpenAiConfig, OpenAiProvider,
};
use quorum_mock_llm::{CreditsConfig, MockConfig, MockServer};
use tokio::time::Instant;

fn provider(server: &MockServer, key: Option<&str>) -> OpenAiProvider {
    let mut config = OpenAiConfig::new(&format!("{}/v1", server.base_url())).unwrap();
    config.api_key = key.map(Secret::new);
    OpenAiProvider::new("mock-openrouter", &config).unwrap()
}

fn thresholds(interval: Duration) -> CreditMonitorConfig {
    CreditMonitorConfig {
        interval: interval.into(),
        warn_below: Some(2.0),
        alert_below: Some(1.0),
        ..CreditMonitorConfig::default()
    }
}

fn set_credits(server: &MockServer, credits: CreditsConfig) {
    let mut config = server.config();
    config.credits = credits;
    server.set_config(config).unwrap();
}

/// Polls `condition` until it holds or 10 s have passed.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An observer recording every status it is given.
fn recorder() -> (
    Arc<Mutex<Vec<CreditStatus>>>,
    impl Fn(&CreditStatus) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    (seen, move |status: &CreditStatus| {
        sink.lock().unwrap().push(status.clone());
    })
}

#[tokio::test]
async fn an_unlimited_key_is_unlimited() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    let monitor =
        CreditMonitor::new(provider(&server, None), thresholds(Duration::from_secs(60))).unwrap();
    let status = monitor.check().await.unwrap();
    assert_eq!(status.level, CreditLevel::Unlimited);
    assert_eq!(status.credits.limit, None);
    assert_eq!(status.credits.remaining, None);
    assert_eq!(status.credits.usage, 0.0);
    assert_eq!(status.credits.label.as_deref(), Some("mock"));
    assert_eq!(status.credits.is_free_tier, Some(false));
    assert_eq!(monitor.latest(), Some(status));
    server.shutdown().await;
}

#[tokio::test]
async fn levels_follow_the_mock_credits_and_only_changes_are_flagged() {
    let server = MockServer::start(MockConfig {
        credits: CreditsConfig::limited(10.0, 9.5),
        ..MockConfig::ephemeral()
    })
    .await
    .unwrap();
    let (seen, observer) = recorder();
    let monitor = CreditMonitor::new(provider(&server, None), thresholds(Duration::from_secs(60)))
        .unwrap()
        .on_status(observer);

    let alert = monitor.check().await.unwrap();
    assert_eq!(alert.level, CreditLevel::Alert);
    assert_eq!(alert.credits.remaining, Some(0.5));
    assert_eq!(alert.credits.limit, Some(10.0));
    // Same credits again: same level, not a change (so not logged again).
    assert!(!monitor.check().await.unwrap().changed());

    set_credits(&server, CreditsConfig::limited(10.0, 8.5));
    let warn = monitor.check().await.unwrap();
    assert_eq!(warn.level, CreditLevel::Warn);
    assert_eq!(warn.credits.remaining, Some(1.5));

    set_credits(&server, CreditsConfig::limited(10.0, 1.0));
    let ok = monitor.check().await.unwrap();
    assert_eq!(ok.level, CreditLevel::Ok);
    assert_eq!(ok.credits.remaining, Some(9.0));
    assert!(monitor.check().await.unwrap().previous == Some(CreditLevel::Ok));

    // The observer saw every check; exactly the level changes are flagged.
    let seen = seen.lock().unwrap().clone();
    let levels: Vec<(CreditLevel, bool)> = seen.iter().map(|s| (s.level, s.changed())).collect();
    assert_eq!(
        levels,
        [
            (CreditLevel::Alert, true),
            (CreditLevel::Alert, false),
            (CreditLevel::Warn, true),
            (CreditLevel::Ok, true),
            (CreditLevel::Ok, false),
        ]
    );
    assert_eq!(seen.iter().filter(|s| s.changed()).count(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn fraction_thresholds_use_the_reported_limit() {
    let server = MockServer::start(MockConfig {
        credits: CreditsConfig::limited(200.0, 170.0),
        ..MockConfig::ephemeral()
    })
    .await
    .unwrap();
    let config = CreditMonitorConfig {
        warn_below_fraction: Some(0.2),
        alert_below_fraction: Some(0.05),
        ..CreditMonitorConfig::default()
    };
    let monitor = CreditMonitor::new(provider(&server, None), config).unwrap();
    assert_eq!(monitor.check().await.unwrap().level, CreditLevel::Warn);
    set_credits(&server, CreditsConfig::limited(200.0, 195.0));
    assert_eq!(monitor.check().await.unwrap().level, CreditLevel::Alert);
    set_credits(&server, CreditsConfig::limited(200.0, 250.0));
    let spent = monitor.check().await.unwrap();
    assert_eq!(spent.credits.remaining, Some(0.0));
    assert_eq!(spent.level, CreditLevel::Alert);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_key_is_kept_as_the_last_error_and_the_loop_goes_on() {
    let server = MockServer::start(MockConfig {
        require_api_key: Some(Secret::new("sk-or-right")),
        credits: CreditsConfig::limited(10.0, 1.0),
        ..MockConfig::ephemeral()
    })
    .await
    .unwrap();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&errors);
    let monitor = CreditMonitor::new(
        provider(&server, Some("sk-or-wrong")),
        thresholds(Duration::from_millis(50)),
    )
    .unwrap()
    .on_error(move |e| sink.lock().unwrap().push(e.kind()));

    // One check: the 401 is returned, classified and recorded.
    let err = monitor.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert_eq!(err.status(), Some(401));
    let kept = monitor.last_error().unwrap();
    assert_eq!((kept.kind, kept.status), (ErrorKind::Auth, Some(401)));
    assert!(monitor.latest().is_none());

    // The running loop keeps checking through the failures...
    let handle = monitor.spawn();
    let watched = handle.monitor().clone();
    wait_until("three failures in a row", || {
        watched.consecutive_failures() >= 3
    })
    .await;
    assert!(errors.lock().unwrap().iter().all(|k| *k == ErrorKind::Auth));
    // ...and recovers once the key is accepted (here: the mock stops requiring one).
    let mut config = server.config();
    config.require_api_key = None;
    server.set_config(config).unwrap();
    wait_until("a successful check", || watched.latest().is_some()).await;
    assert_eq!(watched.latest().unwrap().level, CreditLevel::Ok);
    assert!(watched.last_error().is_none());
    assert_eq!(watched.consecutive_failures(), 0);
    handle.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_without_the_endpoint_is_an_error_not_a_panic() {
    let server = MockServer::start(MockConfig::ephemeral()).await.unwrap();
    // The Ollama-style root has no `auth/key`: a 404 from the mock.
    let config = OpenAiConfig::new(&server.base_url()).unwrap();
    let provider = OpenAiProvider::new("not-openrouter", &config).unwrap();
    let monitor = CreditMonitor::new(provider, CreditMonitorConfig::default()).unwrap();
    let err = monitor.check().await.unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert_eq!(monitor.last_error().unwrap().consecutive, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn spawned_monitor_sees_config_changes_and_shuts_down() {
    let server = MockServer::start(MockConfig {
        credits: CreditsConfig::limited(10.0, 9.5),
        ..MockConfig::ephemeral()
    })
    .await
    .unwrap();
    let (seen, observer) = recorder();
    let handle = CreditMonitor::new(
        provider(&server, None),
        thresholds(Duration::from_millis(50)),
    )
    .unwrap()
    .on_status(observer)
    .spawn();
    let monitor = handle.monitor().clone();
    wait_until("the first check", || monitor.latest().is_some()).await;
    assert_eq!(monitor.latest().unwrap().level, CreditLevel::Alert);

    set_credits(&server, CreditsConfig::limited(10.0, 8.5));
    wait_until("the warn level", || {
        monitor
            .latest()
            .is_some_and(|s| s.level == CreditLevel::Warn)
    })
    .await;
    set_credits(&server, CreditsConfig::limited(10.0, 1.0));
    wait_until("the ok level", || {
        monitor.latest().is_some_and(|s| s.level == CreditLevel::Ok)
    })
    .await;
    // Several checks per level, but one change each.
    let changes: Vec<CreditLevel> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.changed())
        .map(|s| s.level)
        .collect();
    assert_eq!(
        changes,
        [CreditLevel::Alert, CreditLevel::Warn, CreditLevel::Ok]
    );

    handle.shutdown().await;
    // Stopped: no request reaches the mock any more.
    let checks = monitor.checks();
    let requests = server.stats().requests;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(monitor.checks(), checks);
    assert_eq!(server.stats().requests, requests);
    server.shutdown().await;
}
