//! A small incremental Server-Sent Events parser for following a build's
//! log (`GET /builds/{id}/logs?follow=true`): `log` events carry lines, the
//! stream ends with `end` (data = terminal status) or `error`.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` when the event named none (as in the SSE specification).
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// Feed it the response body in whatever chunks arrive; it yields complete
/// events. Lines may end in `\n`, `\r\n` or `\r`; a chunk may split a line or
/// a multi-byte character.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    /// A `\r` ended the previous chunk: a `\n` opening the next one belongs to it.
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut bytes = chunk;
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.after_cr = false;
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' | b'\r' => {
                    self.pending.extend_from_slice(&bytes[start..i]);
                    let line =
                        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
                    if let Some(e) = self.line(&line) {
                        out.push(e);
                    }
                    if bytes[i] == b'\r' {
                        if i + 1 == bytes.len() {
                            self.after_cr = true;
                        } else if bytes[i + 1] == b'\n' {
                            i += 1;
                        }
                    }
                    start = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        self.pending.extend_from_slice(&bytes[start..]);
        out
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            // An event without data is not dispatched (SSE specification).
            return data.map(|data| SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
                id: self.id.clone(),
            });
        }
        if line.starts_with(':') {
            return None; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" => self.id = Some(value.to_owned()),
            _ => {} // `retry` and unknown fields do not matter here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn log_and_end_events_as_axum_writes_them() {
        let mut p = SseParser::default();
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
            let mut p = SseParser::default();
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
        let mut p = SseParser::default();
        let got = p.push(b"data: a\ndata:b\ndata\n\nevent: ping\n\ndata: x: y\n\n");
        assert_eq!(
            got,
            [ev("message", "a\nb\n", None), ev("message", "x: y", None)]
        );
        // Nothing is dispatched before the blank line.
        assert!(p.push(b"event: log\ndata: partial\n").is_empty());
        assert_eq!(p.push(b"\n"), [ev("log", "partial", None)]);
    }
}
