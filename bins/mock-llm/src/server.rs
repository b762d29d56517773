//! The listener: accepts connections (with `TCP_NODELAY`), serves each with hyper's HTTP/1.1
//! connection, resets a connection on request, and shuts down gracefully.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::MockError;
use crate::config::MockConfig;
use crate::service::{Shared, handle};
use crate::stats::Stats;

/// Lets a request handler close its own connection abruptly (`fault-reset`).
#[derive(Debug, Default)]
pub(crate) struct ConnControl {
    reset: AtomicBool,
    notify: Notify,
}

impl ConnControl {
    /// Asks the connection task to drop the connection with an RST.
    pub(crate) fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// The accepted socket; when dropped after a reset request it sets `SO_LINGER` to zero first,
/// so that closing sends an RST instead of a FIN.
struct ConnIo {
    stream: TcpStream,
    control: Arc<ConnControl>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.control.reset.load(Ordering::Acquire) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A running mock server. Dropping it stops accepting connections (without waiting);
/// [`shutdown`](Self::shutdown) stops it gracefully and waits.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Validates `config`, binds `config.bind` and starts serving in the background.
    ///
    /// # Errors
    ///
    /// [`MockError::InvalidConfig`] for a bad value, [`MockError::Bind`] when the address cannot
    /// be bound.
    pub async fn start(config: MockConfig) -> Result<Self, MockError> {
        config.validate()?;
        let bind = config.bind;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| MockError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MockError::Bind { addr: bind, source })?;
        let grace = config.shutdown_grace.as_std();
        let shared = Arc::new(Shared::new(config));
        shared.set_bound(addr);
        let (shutdown, signal) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), signal, grace));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The address actually bound (port 0 resolved).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, without a trailing slash; OpenAI clients append `/v1`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters, as `GET /admin/stats` reports them.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Zeroes the counters (like `POST /admin/reset`); `active` keeps counting requests still in
    /// flight.
    pub fn reset(&self) {
        self.shared.counters.reset();
    }

    /// The configuration in force (with the bound address).
    #[must_use]
    pub fn config(&self) -> MockConfig {
        self.shared.runtime().config.clone()
    }

    /// Replaces the configuration at run time, like `POST /admin/config` (the listening
    /// address cannot change; fault schedules restart and the generator is reseeded).
    ///
    /// # Errors
    ///
    /// [`MockError::InvalidConfig`]; the previous configuration stays in force.
    pub fn set_config(&self, config: MockConfig) -> Result<(), MockError> {
        self.shared.set_config(config)
    }

    /// Stops accepting, lets in-flight requests finish for up to
    /// [`MockConfig::shutdown_grace`], then closes the remaining connections and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            tracing::error!(error = %err, "mock server task failed");
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Resolves once shutdown is signalled (or the server handle is gone).
async fn stopped(signal: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = signal.wait_for(|stop| *stop).await;
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut signal: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let for_connections = signal.clone();
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut signal) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Without it, small chunked responses on reused connections stall on
                    // Nagle + delayed ACK (~40 ms each).
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(stream, Arc::clone(&shared), for_connections.clone()));
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "shutdown grace elapsed; closing connections"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut signal: watch::Receiver<bool>,
) {
    let control = Arc::new(ConnControl::default());
    let io = TokioIo::new(ConnIo {
        stream,
        control: Arc::clone(&control),
    });
    let service_control = Arc::clone(&control);
    let service =
        service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&service_control), req));
    let mut connection = pin!(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(io, service)
    );
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                return;
            }
            () = control.notify.notified() => return,
            () = stopped(&mut signal), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
