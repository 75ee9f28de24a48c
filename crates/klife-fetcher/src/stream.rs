//! Results as they arrive: [`FetchStream`].

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::error::FetchError;
use crate::record::{Fetched, TopicPartitionOffset};

/// One result of a multi-partition fetch: the target and what came of it.
pub type FetchResult = (TopicPartitionOffset, Result<Fetched, FetchError>);

/// The results of [`Fetcher::fetch_stream`](crate::Fetcher::fetch_stream), in the
/// order they arrive; it ends after the last. Read it with [`recv`](Self::recv) or as
/// a [`Stream`](futures_core::Stream). Dropping it abandons the fetches not yet
/// answered.
#[derive(Debug)]
pub struct FetchStream {
    rx: mpsc::UnboundedReceiver<FetchResult>,
    remaining: usize,
}

impl FetchStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<FetchResult>, remaining: usize) -> Self {
        FetchStream { rx, remaining }
    }

    /// The next result, or `None` once every fetch has answered.
    pub async fn recv(&mut self) -> Option<FetchResult> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// How many fetches have not answered yet.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<FetchResult>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(r)) => {
                self.remaining -= 1;
                Poll::Ready(Some(r))
            }
            // Every sender is gone with answers missing: the fetcher was dropped.
            Poll::Ready(None) => {
                self.remaining = 0;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_core::Stream for FetchStream {
    type Item = FetchResult;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}
