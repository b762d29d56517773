//! Start-up, serving and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use quorum_metrics::MetricsRegistry;
use quorum_resilience::Observers;
use quorum_resilience::prometheus::ResilienceMetrics;
use quorum_store::Store;
use quorum_store::metrics::StoreMetrics;
use tokio::sync::{oneshot, watch};

use crate::config::AdvisorConfig;
use crate::engine::Engine;
use crate::error::AdvisorError;
use crate::events::EventHub;
use crate::gateway::{Gateway, provider_registry};
use crate::http::{AppState, router};
use crate::metrics::AdvisorMetrics;

/// How often retention runs when the store configures any.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(300);

/// Checks the configuration fully without starting anything or calling the network: every
/// key ([`AdvisorConfig::problems`]) and every provider section (by building the providers).
///
/// # Errors
///
/// [`AdvisorError::Invalid`] listing every problem, or [`AdvisorError::Provider`].
pub fn check(config: &AdvisorConfig) -> Result<(), AdvisorError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(AdvisorError::Invalid(problems));
    }
    let mut registry = MetricsRegistry::new();
    let metrics = AdvisorMetrics::register(registry.registry_mut());
    Gateway::build(config, &provider_registry(), &Observers::default(), metrics)?;
    Ok(())
}

/// A started advisor: its address, and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), AdvisorError>>,
}

impl Running {
    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down gracefully (as on SIGTERM) and waits for the end.
    ///
    /// # Errors
    ///
    /// What stopped the server abnormally.
    pub async fn shutdown(mut self) -> Result<(), AdvisorError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends.
    ///
    /// # Errors
    ///
    /// What stopped the server abnormally.
    pub async fn wait(self) -> Result<(), AdvisorError> {
        match self.done.await {
            Ok(result) => result,
            Err(e) => Err(AdvisorError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Starts the advisor: opens the store, recovers jobs, binds and serves until
/// [`Running::shutdown`] (or the future `stop_on` completes).
///
/// # Errors
///
/// An invalid configuration, an unopenable store or an unbindable address.
pub async fn start(
    config: AdvisorConfig,
    stop_on: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, AdvisorError> {
    check(&config)?;
    let config = Arc::new(config);
    let mut registry = MetricsRegistry::new();
    registry.register_build_info("advisor", env!("CARGO_PKG_VERSION"));
    let resilience = ResilienceMetrics::register(registry.registry_mut());
    let metrics = AdvisorMetrics::register(registry.registry_mut());
    let store_metrics = StoreMetrics::register(registry.registry_mut());
    let observers = Observers::new(Arc::new(resilience));
    let gateway = Arc::new(Gateway::build(
        &config,
        &provider_registry(),
        &observers,
        metrics,
    )?);
    let store = Store::connect(&config.store.url, config.store.config.clone()).await?;
    let engine = Engine::new(
        store.clone(),
        gateway,
        EventHub::default(),
        config.engine.clone(),
        config.advisor.clone(),
    );
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .map_err(|source| AdvisorError::Bind {
            addr: config.server.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(AdvisorError::Serve)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let state = AppState::new(
        engine.clone(),
        registry.into_shared(),
        Arc::clone(&config),
        shutdown_rx.clone(),
    );
    let app = router(state.clone());
    tracing::info!("listening on http://{addr}");
    tracing::info!("effective settings: {}", config.summary());

    let cleanup = (config.store.config.retention != quorum_store::RetentionPolicy::keep_all())
        .then(|| {
            store.spawn_cleanup(
                config.store.config.retention.clone(),
                CLEANUP_INTERVAL,
                move |outcome| store_metrics.observe_cleanup(&outcome),
            )
        });

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let grace = config.server.shutdown_grace.as_std();
    let mut http_stop = shutdown_rx.clone();
    let listener = listener.tap_io(|tcp| {
        // Streamed answers stall on Nagle + delayed ACK without this.
        let _ = tcp.set_nodelay(true);
    });
    // Serve at once: probes answer (and the API says 503 `starting`) during recovery.
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let server_abort = server.abort_handle();
    let recovered = match engine.recover().await {
        Ok(n) => n,
        Err(e) => {
            server_abort.abort();
            store.close().await;
            return Err(e.into());
        }
    };
    engine.start();
    state.set_started();
    tracing::info!(resumed_jobs = recovered, "advisor started");

    let done = tokio::spawn(async move {
        tokio::select! {
            _ = stop_rx => {}
            () = stop_on => {}
        }
        tracing::info!(grace = ?grace, "shutting down: no new work; running jobs may finish");
        // Stop accepting connections and end open streams with a final event.
        let _ = shutdown_tx.send(true);
        let released = engine.shutdown(grace).await;
        let served = match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(AdvisorError::Serve(e)),
            Ok(Err(e)) => Err(AdvisorError::Serve(std::io::Error::other(e))),
            Err(_) => {
                tracing::warn!("connections still open after 5s; closing them");
                server_abort.abort();
                Ok(())
            }
        };
        if let Some(cleanup) = cleanup {
            cleanup.shutdown().await;
        }
        store.close().await;
        tracing::info!(released_jobs = released, "advisor stopped");
        served
    });
    Ok(Running {
        addr,
        stop: Some(stop_tx),
        done,
    })
}

/// Runs the advisor until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
///
/// As [`start`], or what stopped the server abnormally.
pub async fn run(config: AdvisorConfig) -> Result<(), AdvisorError> {
    start(config, shutdown_signal()).await?.wait().await
}

/// Runs the advisor on this thread until SIGINT or SIGTERM, on the runtime `server.threads`
/// asks for: one thread is a single-threaded event loop (everything on the calling thread);
/// more is tokio's work-stealing runtime with that many workers. What a binary's `main`
/// calls.
///
/// # Errors
///
/// As [`run`] ([`AdvisorError::Invalid`] before any thread starts); [`AdvisorError::Serve`]
/// when the runtime cannot be built.
pub fn run_blocking(config: AdvisorConfig) -> Result<(), AdvisorError> {
    // Checked before the runtime starts its threads: a bad `server.threads` is a config error.
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(AdvisorError::Invalid(problems));
    }
    let threads = config.server.threads();
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .map_err(AdvisorError::Serve)?
        .block_on(run(config))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_thread_count_is_a_config_error_before_any_thread_starts() {
        let mut config = AdvisorConfig::default();
        config.server.threads = 100_000;
        let Err(AdvisorError::Invalid(problems)) = run_blocking(config) else {
            panic!("expected a configuration error");
        };
        assert_eq!(problems[0].field, "server.threads");
    }
}
