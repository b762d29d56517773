//! The provider trait, its embeddings capability, and helpers for chat streams.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};

use crate::error::LlmError;
use crate::types::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, ModelInfo, StreamFinal,
    StreamItem,
};

/// A stream of chat output: deltas, then exactly one terminal item (see [`StreamItem`]).
///
/// Dropping it aborts the upstream request.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<StreamItem, LlmError>> + Send + 'static>>;

/// An LLM provider: one configured endpoint (an OpenAI account, an Ollama server...).
///
/// Object-safe: providers are chosen at run time and used as `Arc<dyn Provider>`.
///
/// **Cancellation:** dropping a returned future or [`ChatStream`] must abort the upstream HTTP
/// request (close the connection), so a cancelled caller stops costing tokens. The conformance
/// suite checks it.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The configured instance name (`"openai-main"`), reported in responses.
    fn name(&self) -> &str;

    /// The provider kind (`"openai"`, `"ollama"`...), as its factory's
    /// [`ProviderFactory::kind`](crate::ProviderFactory::kind).
    fn kind(&self) -> &str;

    /// Asks for a complete answer.
    ///
    /// # Errors
    ///
    /// Any [`LlmError`], classified (rate limits, auth, context length, transport...).
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;

    /// Asks for a streamed answer.
    ///
    /// Errors before the first byte of the answer (an HTTP error status, a refused connection)
    /// are returned here; errors afterwards are the stream's terminal item.
    ///
    /// The default implementation calls [`Provider::chat`] and yields its whole content as one
    /// delta: providers that can stream override it.
    ///
    /// # Errors
    ///
    /// Any [`LlmError`] that happens before the stream starts.
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, LlmError> {
        let response = self.chat(request).await?;
        let mut items = Vec::with_capacity(2);
        if !response.content.is_empty() {
            items.push(Ok(StreamItem::Delta(response.content)));
        }
        items.push(Ok(StreamItem::Done(StreamFinal {
            finish_reason: response.finish_reason,
            usage: response.usage,
            timings: response.timings,
            provider: response.provider,
            model: response.model,
            rate_limit: response.rate_limit,
        })));
        Ok(Box::pin(futures_util::stream::iter(items)))
    }

    /// Lists the models this provider offers.
    ///
    /// # Errors
    ///
    /// Any [`LlmError`].
    async fn list_models(&self) -> Result<Vec<ModelInfo>, LlmError>;

    /// Checks that the provider is reachable and answering; by default by listing models.
    ///
    /// # Errors
    ///
    /// The [`LlmError`] that shows it is not.
    async fn health(&self) -> Result<(), LlmError> {
        self.list_models().await.map(|_| ())
    }

    /// The embeddings capability, if this provider has one.
    fn embeddings(&self) -> Option<&dyn Embeddings> {
        None
    }
}

/// The embeddings capability of a provider, reached through [`Provider::embeddings`].
#[async_trait]
pub trait Embeddings: Send + Sync {
    /// Embeds each input text.
    ///
    /// # Errors
    ///
    /// Any [`LlmError`].
    async fn embed(&self, request: &EmbeddingRequest) -> Result<EmbeddingResponse, LlmError>;
}

/// Wraps a stream so that it keeps the [`StreamItem`] invariant whatever the inner stream does:
/// empty deltas are dropped, nothing is yielded after the first terminal item (the inner stream
/// is dropped right then, releasing its connection), and an inner stream that ends without a
/// terminal item yields [`LlmError::StreamTruncated`].
pub fn guard_stream<S>(inner: S) -> ChatStream
where
    S: Stream<Item = Result<StreamItem, LlmError>> + Send + 'static,
{
    Box::pin(Guarded {
        inner: Some(Box::pin(inner)),
    })
}

struct Guarded {
    inner: Option<ChatStream>,
}

impl Stream for Guarded {
    type Item = Result<StreamItem, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(inner.as_mut().poll_next(cx)) {
                Some(Ok(StreamItem::Delta(text))) if text.is_empty() => {}
                Some(Ok(StreamItem::Delta(text))) => {
                    return Poll::Ready(Some(Ok(StreamItem::Delta(text))));
                }
                Some(terminal) => {
                    self.inner = None;
                    return Poll::Ready(Some(terminal));
                }
                None => {
                    self.inner = None;
                    return Poll::Ready(Some(Err(LlmError::stream_truncated(
                        "the stream ended without a final item",
                    ))));
                }
            }
        }
    }
}

/// Drains a chat stream into a [`ChatResponse`] (deltas concatenated, the rest from the final
/// item).
///
/// # Errors
///
/// The stream's terminal error, or [`LlmError::StreamTruncated`] if it ends without a final item.
pub async fn collect_stream(mut stream: ChatStream) -> Result<ChatResponse, LlmError> {
    let mut content = String::new();
    while let Some(item) = stream.next().await {
        match item? {
            StreamItem::Delta(text) => content.push_str(&text),
            StreamItem::Done(done) => {
                return Ok(ChatResponse {
                    content,
                    finish_reason: done.finish_reason,
                    usage: done.usage,
                    timings: done.timings,
                    provider: done.provider,
                    model: done.model,
                    rate_limit: done.rate_limit,
                });
            }
        }
    }
    Err(LlmError::stream_truncated(
        "the stream ended without a final item",
    ))
}

#[cfg(test)]
mod tests {
    use futures_util::stream;

    use super::*;
    use crate::error::ErrorKind;

    fn delta(text: &str) -> Result<StreamItem, LlmError> {
        Ok(StreamItem::Delta(text.to_owned()))
    }

    fn done() -> Result<StreamItem, LlmError> {
        Ok(StreamItem::Done(StreamFinal::default()))
    }

    #[tokio::test]
    async fn guard_stops_after_the_first_terminal_item() {
        let inner = stream::iter(vec![
            delta("a"),
            delta(""),
            delta("b"),
            done(),
            delta("late"),
        ]);
        let items: Vec<_> = guard_stream(inner).collect().await;
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Ok(StreamItem::Delta(t)) if t == "a"));
        assert!(matches!(&items[1], Ok(StreamItem::Delta(t)) if t == "b"));
        assert!(matches!(&items[2], Ok(StreamItem::Done(_))));
    }

    #[tokio::test]
    async fn guard_turns_a_silent_end_into_truncation() {
        let items: Vec<_> = guard_stream(stream::iter(vec![delta("a")])).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1].as_ref().unwrap_err().kind(),
            ErrorKind::StreamTruncated
        );
    }

    #[tokio::test]
    async fn guard_ends_after_an_error() {
        let inner = stream::iter(vec![delta("a"), Err(LlmError::Cancelled), done()]);
        let mut s = guard_stream(inner);
        assert!(s.next().await.unwrap().is_ok());
        assert!(matches!(s.next().await, Some(Err(LlmError::Cancelled))));
        assert!(s.next().await.is_none());
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn collect_concatenates_deltas() {
        let s = guard_stream(stream::iter(vec![delta("he"), delta("llo"), done()]));
        let response = collect_stream(s).await.unwrap();
        assert_eq!(response.content, "hello");
        let truncated = collect_stream(Box::pin(stream::iter(vec![delta("x")]))).await;
        assert_eq!(truncated.unwrap_err().kind(), ErrorKind::StreamTruncated);
    }
}
