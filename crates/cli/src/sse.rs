//! Server-Sent Events of `GET /builds/{id}/logs?follow=true`: `sse-stream`
//! splits the body into field blocks; this adds the two dispatch rules it
//! leaves to clients (a block without data is not dispatched; the last
//! event id carries over, which is what a client resumes from).

use futures::{Stream, StreamExt, TryStream, future};
use sse_stream::{Sse, SseByteStream};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the event named none.
    pub event: String,
    pub data: String,
    /// The last event id seen on the stream so far.
    pub id: Option<String>,
}

/// The events of an SSE body; a body error is yielded once and ends it.
pub fn events<S>(body: S) -> impl Stream<Item = Result<SseEvent, sse_stream::Error>>
where
    S: TryStream,
    S::Ok: bytes::Buf,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let mut last_id = None;
    SseByteStream::new(body).filter_map(move |block| {
        future::ready(match block {
            Ok(block) => dispatch(block, &mut last_id).map(Ok),
            Err(e) => Some(Err(e)),
        })
    })
}

fn dispatch(block: Sse, last_id: &mut Option<String>) -> Option<SseEvent> {
    if block.id.is_some() {
        *last_id = block.id;
    }
    Some(SseEvent {
        event: block.event.unwrap_or_else(|| "message".to_owned()),
        data: block.data?,
        id: last_id.clone(),
    })
}
