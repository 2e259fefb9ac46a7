//! Server-Sent Events for following a build's log
//! (`GET /builds/{id}/logs?follow=true`): `log` events carry lines, the
//! stream ends with `end` (data = terminal status) or `error`.
//!
//! `sse-stream` splits the body into field blocks (any line ending, chunks
//! split anywhere, comments dropped); this module adds the two rules of the
//! SSE specification's dispatch step it leaves to clients: a block without
//! data is not dispatched, and the last event id carries over to later
//! events (what a client resumes from with `Last-Event-ID`).

use futures::{Stream, StreamExt, TryStream, future};
use sse_stream::{Sse, SseByteStream};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the event named none (as in the SSE specification).
    pub event: String,
    pub data: String,
    /// The last event id seen on the stream so far.
    pub id: Option<String>,
}

/// The events of an SSE body, given as byte chunks in whatever sizes arrive.
/// A decoding or body error is yielded once and ends the stream.
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::pin::Pin;

    use futures::FutureExt;
    use futures::channel::mpsc;

    use super::*;

    type Chunk = Result<Cursor<Vec<u8>>, std::io::Error>;

    /// Feeds chunks one at a time, like a body arriving over the network,
    /// and collects the events complete so far.
    struct Feed {
        tx: mpsc::UnboundedSender<Chunk>,
        events: Pin<Box<dyn Stream<Item = Result<SseEvent, sse_stream::Error>>>>,
    }

    impl Feed {
        fn new() -> Self {
            let (tx, rx) = mpsc::unbounded();
            Self {
                tx,
                events: Box::pin(events(rx)),
            }
        }

        fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
            self.tx
                .unbounded_send(Ok(Cursor::new(chunk.to_vec())))
                .unwrap();
            let mut out = Vec::new();
            while let Some(Some(event)) = self.events.next().now_or_never() {
                out.push(event.unwrap());
            }
            out
        }
    }

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn log_and_end_events_as_axum_writes_them() {
        let mut p = Feed::new();
        let got = p.push(
            b"event: log\ndata: [clone] Cloning\nid: 7\n\n: keep-alive\n\nevent: log\ndata: [build] STEP 1/2\nid: 8\n\nevent: end\ndata: succeeded\n\n",
        );
        assert_eq!(
            got,
            [
                ev("log", "[clone] Cloning", Some("7")),
                ev("log", "[build] STEP 1/2", Some("8")),
                ev("end", "succeeded", Some("8")),
            ]
        );
    }

    #[test]
    fn chunks_may_split_lines_crlf_and_characters() {
        let text =
            "event: log\r\ndata: caf\u{e9} \u{2713}\r\nid: 1\r\n\r\nevent: end\rdata: failed\r\r";
        let bytes = text.as_bytes();
        // Every split point, including inside the multi-byte characters and
        // between `\r` and `\n`.
        for cut in 0..bytes.len() {
            let mut p = Feed::new();
            let mut got = p.push(&bytes[..cut]);
            got.extend(p.push(&bytes[cut..]));
            assert_eq!(
                got,
                [
                    ev("log", "caf\u{e9} \u{2713}", Some("1")),
                    ev("end", "failed", Some("1"))
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn multi_line_data_unnamed_events_and_no_data() {
        let mut p = Feed::new();
        let got = p.push(b"data: a\ndata:b\ndata\n\nevent: ping\n\ndata: x: y\n\n");
        assert_eq!(
            got,
            [ev("message", "a\nb\n", None), ev("message", "x: y", None)]
        );
        // Nothing is dispatched before the blank line.
        assert!(p.push(b"event: log\ndata: partial\n").is_empty());
        assert_eq!(p.push(b"\n"), [ev("log", "partial", None)]);
    }

    #[test]
    fn an_id_without_data_still_moves_the_resume_point() {
        let mut p = Feed::new();
        let got = p.push(b"id: 41\n\ndata: next\n\n");
        assert_eq!(got, [ev("message", "next", Some("41"))]);
    }

    #[test]
    fn a_body_error_ends_the_events_with_that_error() {
        let (tx, rx) = mpsc::unbounded::<Chunk>();
        tx.unbounded_send(Ok(Cursor::new(b"data: one\n\n".to_vec())))
            .unwrap();
        tx.unbounded_send(Err(std::io::Error::other("reset")))
            .unwrap();
        drop(tx);
        let got: Vec<_> = futures::executor::block_on(events(rx).collect());
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap(), &ev("message", "one", None));
        assert!(got[1].is_err());
    }
}
