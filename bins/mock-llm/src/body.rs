//! The response body: pre-rendered segments, each sent after its own delay (tokio time), with
//! the request's stats guard inside so that a dropped body counts as cancelled.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::stats::RequestGuard;

/// The error a [`MockBody`] ends with on purpose (a truncated non-streamed answer): hyper then
/// closes the connection without completing the response.
#[derive(Debug, thiserror::Error)]
#[error("response truncated on purpose by fault-truncate")]
pub(crate) struct Truncated;

/// How long an aborting body waits after its last segment, so that the segment reaches the
/// client before the connection closes.
const ABORT_PAUSE: Duration = Duration::from_millis(10);

/// How the body ends after its last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Normally.
    Complete,
    /// With an error: the connection is closed mid-response.
    Abort,
}

/// A response body made of `(delay, bytes)` segments.
#[derive(Debug)]
pub(crate) struct MockBody {
    segments: std::vec::IntoIter<(Duration, Bytes)>,
    /// The segment waiting for `sleep`.
    waiting: Option<Bytes>,
    sleep: Option<Pin<Box<Sleep>>>,
    guard: Option<RequestGuard>,
    /// Chunked transfer (no exact size) even when everything is ready at once.
    streaming: bool,
    ending: Ending,
    /// Bytes still to send; exact when not streaming.
    remaining: u64,
    /// The pause before an abort has started.
    abort_armed: bool,
}

impl MockBody {
    /// A whole body sent at once.
    pub(crate) fn full(bytes: impl Into<Bytes>, guard: Option<RequestGuard>) -> Self {
        let bytes = bytes.into();
        Self::new(
            vec![(Duration::ZERO, bytes)],
            guard,
            false,
            Ending::Complete,
        )
    }

    pub(crate) fn new(
        segments: Vec<(Duration, Bytes)>,
        guard: Option<RequestGuard>,
        streaming: bool,
        ending: Ending,
    ) -> Self {
        let remaining = segments.iter().map(|(_, b)| b.len() as u64).sum();
        let mut body = Self {
            segments: segments.into_iter(),
            waiting: None,
            sleep: None,
            guard,
            streaming,
            ending,
            remaining,
            abort_armed: false,
        };
        if body.segments.len() == 0 && ending == Ending::Complete {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.finish();
        }
        // Dropping the guard now counts the request as completed at once, even if hyper keeps
        // the (finished) body around a little longer.
        self.guard = None;
    }

    fn emit(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, Truncated>>> {
        self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        if self.segments.len() == 0 && self.ending == Ending::Complete {
            self.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Truncated;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Truncated>>> {
        let this = self.get_mut();
        loop {
            if let Some(bytes) = this.waiting.take() {
                if let Some(sleep) = &mut this.sleep
                    && sleep.as_mut().poll(cx).is_pending()
                {
                    this.waiting = Some(bytes);
                    return Poll::Pending;
                }
                return this.emit(bytes);
            }
            match this.segments.next() {
                None => {
                    return match this.ending {
                        Ending::Complete => {
                            this.finish();
                            Poll::Ready(None)
                        }
                        Ending::Abort => {
                            // Pause first: hyper flushes what it has while the body is
                            // pending, and drops its buffer unsent when the body fails.
                            if !this.abort_armed {
                                this.abort_armed = true;
                                let deadline = Instant::now() + ABORT_PAUSE;
                                match &mut this.sleep {
                                    Some(sleep) => sleep.as_mut().reset(deadline),
                                    None => {
                                        this.sleep =
                                            Some(Box::pin(tokio::time::sleep_until(deadline)));
                                    }
                                }
                            }
                            if let Some(sleep) = &mut this.sleep {
                                ready!(sleep.as_mut().poll(cx));
                            }
                            this.finish();
                            Poll::Ready(Some(Err(Truncated)))
                        }
                    };
                }
                Some((delay, bytes)) if delay.is_zero() => return this.emit(bytes),
                Some((delay, bytes)) => {
                    let deadline = Instant::now() + delay;
                    match &mut this.sleep {
                        Some(sleep) => sleep.as_mut().reset(deadline),
                        None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.waiting = Some(bytes);
                    // Loop: poll the fresh timer so it registers the waker.
                    if let Some(sleep) = &mut this.sleep {
                        ready!(sleep.as_mut().poll(cx));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.segments.len() == 0 && self.ending == Ending::Complete
    }

    fn size_hint(&self) -> SizeHint {
        if self.streaming || self.ending == Ending::Abort {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.remaining)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counters;
    use http_body_util::BodyExt;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn segments_arrive_after_their_delays() {
        let counters = Arc::new(Counters::default());
        let guard = RequestGuard::new(Arc::clone(&counters));
        let mut body = MockBody::new(
            vec![
                (Duration::ZERO, Bytes::from_static(b"a")),
                (Duration::from_millis(100), Bytes::from_static(b"b")),
                (Duration::from_millis(50), Bytes::from_static(b"c")),
            ],
            Some(guard),
            true,
            Ending::Complete,
        );
        assert_eq!(body.size_hint().exact(), None);
        let start = Instant::now();
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            seen.push((data, start.elapsed()));
        }
        assert_eq!(
            seen,
            [
                (Bytes::from_static(b"a"), Duration::ZERO),
                (Bytes::from_static(b"b"), Duration::from_millis(100)),
                (Bytes::from_static(b"c"), Duration::from_millis(150)),
            ]
        );
        let stats = counters.snapshot();
        assert_eq!((stats.completed, stats.cancelled, stats.active), (1, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_midway_counts_as_cancelled() {
        let counters = Arc::new(Counters::default());
        let guard = RequestGuard::new(Arc::clone(&counters));
        let mut body = MockBody::new(
            vec![
                (Duration::ZERO, Bytes::from_static(b"a")),
                (Duration::from_secs(1), Bytes::from_static(b"b")),
            ],
            Some(guard),
            true,
            Ending::Complete,
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        drop(body);
        let stats = counters.snapshot();
        assert_eq!((stats.completed, stats.cancelled), (0, 1));
    }

    #[tokio::test]
    async fn full_bodies_have_an_exact_size_and_aborts_end_in_an_error() {
        let body = MockBody::full("hello", None);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
        assert!(MockBody::new(Vec::new(), None, false, Ending::Complete).is_end_stream());

        let mut cut = MockBody::new(
            vec![(Duration::ZERO, Bytes::from_static(b"{\"par"))],
            None,
            false,
            Ending::Abort,
        );
        assert_eq!(cut.size_hint().exact(), None);
        assert!(!cut.is_end_stream());
        assert!(cut.frame().await.unwrap().is_ok());
        assert!(cut.frame().await.unwrap().is_err());
    }
}
