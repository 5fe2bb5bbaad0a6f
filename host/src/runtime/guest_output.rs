//! What a guest writes to stdout and stderr. Plugin authors print (Rust's `println!`, a
//! panic message, Python's `print()` and the traceback of an uncaught exception), so every
//! complete line goes to the job's log as it is written, and the tail of stderr is kept to
//! explain a trap. Both are bounded, so a chatty or hostile guest can neither flood the log
//! nor make the host hold its output; writes never fail, so printing cannot make a guest panic.

use super::events::JobEvents;
use crate::model::LogLevel;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// How much of a guest's stderr the host keeps for the error of a failed call: the tail,
/// which is what explains a panic or an exception.
const STDERR_KEEP: usize = 16 * 1024;
/// The longest line that reaches the log; the rest of a longer one is cut.
pub(crate) const MAX_LINE_CHARS: usize = 2000;
/// How many lines one call may add to the log; more are counted, and the count logged.
pub(crate) const MAX_LINES_PER_CALL: usize = 500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
    fn level(self) -> LogLevel {
        match self {
            Stream::Stdout => LogLevel::Info,
            Stream::Stderr => LogLevel::Warning,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// One call's output, shared by its two streams (so they share the line budget).
#[derive(Clone, Default)]
pub(crate) struct GuestOutput {
    state: Arc<Mutex<OutputState>>,
}

#[derive(Default)]
struct OutputState {
    /// Where lines go: the job's events (`None` for calls made for no job, like describe).
    events: Option<Arc<dyn JobEvents>>,
    /// The line being written on each stream, up to [`MAX_LINE_CHARS`] bytes of it.
    partial: [Vec<u8>; 2],
    /// Whether the line being written on each stream was longer than what `partial` keeps.
    cut: [bool; 2],
    stderr_tail: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl GuestOutput {
    /// Output whose lines go to `events`.
    pub(crate) fn to_log(events: Option<Arc<dyn JobEvents>>) -> Self {
        GuestOutput {
            state: Arc::new(Mutex::new(OutputState {
                events,
                ..Default::default()
            })),
        }
    }

    /// The stream a guest writes `stream` to.
    pub(crate) fn stream(&self, stream: Stream) -> GuestStream {
        GuestStream {
            output: self.clone(),
            stream,
        }
    }

    /// The tail of what the guest wrote to stderr.
    pub(crate) fn stderr_text(&self) -> String {
        let state = self.state.lock().expect("guest output lock");
        String::from_utf8_lossy(&state.stderr_tail)
            .trim()
            .to_string()
    }

    /// The call ended: log the unfinished last lines, and how many lines were not kept.
    pub(crate) fn finish(&self) {
        let mut state = self.state.lock().expect("guest output lock");
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !state.partial[stream.index()].is_empty() || state.cut[stream.index()] {
                state.end_line(stream);
            }
        }
        if state.dropped > 0
            && let Some(events) = &state.events
        {
            events.log(
                LogLevel::Warning,
                format!(
                    "the plugin wrote {} more lines to stdout/stderr in this call than the {} kept",
                    state.dropped, MAX_LINES_PER_CALL
                ),
            );
            state.dropped = 0;
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.state.lock().expect("guest output lock");
        if stream == Stream::Stderr {
            let tail = &mut state.stderr_tail;
            tail.extend_from_slice(bytes);
            if tail.len() > STDERR_KEEP {
                let excess = tail.len() - STDERR_KEEP;
                tail.drain(..excess);
            }
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, ends_line) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            state.keep(stream, chunk);
            if ends_line {
                state.end_line(stream);
                rest = &rest[chunk.len() + 1..];
            } else {
                rest = &[];
            }
        }
    }
}

impl OutputState {
    fn keep(&mut self, stream: Stream, chunk: &[u8]) {
        let i = stream.index();
        // Bytes, not chars, bound the buffer; a line cut here is cut again by chars below.
        let room = (MAX_LINE_CHARS * 4).saturating_sub(self.partial[i].len());
        let taken = chunk.len().min(room);
        self.partial[i].extend_from_slice(&chunk[..taken]);
        self.cut[i] |= taken < chunk.len();
    }

    fn end_line(&mut self, stream: Stream) {
        let i = stream.index();
        let bytes = std::mem::take(&mut self.partial[i]);
        let mut cut = std::mem::take(&mut self.cut[i]);
        let Some(events) = self.events.clone() else {
            return;
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if self.logged >= MAX_LINES_PER_CALL {
            self.dropped += 1;
            return;
        }
        let mut line: String = text.chars().take(MAX_LINE_CHARS).collect();
        cut |= line.len() < text.len();
        if cut {
            line.push_str(" […line cut]");
        }
        self.logged += 1;
        events.log(stream.level(), format!("[{}] {line}", stream.name()));
    }
}

/// One of a call's two output streams, as WASI hands it to the guest.
#[derive(Clone)]
pub(crate) struct GuestStream {
    output: GuestOutput,
    stream: Stream,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RecordingEvents;

    fn output() -> (GuestOutput, Arc<RecordingEvents>) {
        let events = Arc::new(RecordingEvents::default());
        (GuestOutput::to_log(Some(events.clone())), events)
    }

    #[test]
    fn lines_reach_the_log_as_written_and_an_unfinished_one_at_the_end() {
        let (out, events) = output();
        out.write(Stream::Stdout, b"first\nsec");
        out.write(Stream::Stdout, b"ond\r\nthi");
        out.write(Stream::Stderr, b"oops\n");
        assert_eq!(
            events.log_lines(),
            ["[stdout] first", "[stdout] second", "[stderr] oops"]
        );
        out.finish();
        assert_eq!(events.log_lines().last().unwrap(), "[stdout] thi");
        assert_eq!(events.logs.lock().unwrap()[2].0, LogLevel::Warning);
        assert_eq!(out.stderr_text(), "oops");
    }

    #[test]
    fn long_lines_are_cut_and_lines_past_the_budget_are_counted() {
        let (out, events) = output();
        let long = "é".repeat(MAX_LINE_CHARS * 3);
        out.write(Stream::Stdout, format!("{long}\n").as_bytes());
        let lines = events.log_lines();
        assert!(lines[0].ends_with("[…line cut]"));
        assert!(lines[0].chars().count() < MAX_LINE_CHARS + 40);
        for i in 0..MAX_LINES_PER_CALL + 10 {
            out.write(Stream::Stderr, format!("line {i}\n").as_bytes());
        }
        out.finish();
        let lines = events.log_lines();
        assert_eq!(lines.len(), MAX_LINES_PER_CALL + 1);
        assert!(lines.last().unwrap().contains("11 more lines"), "{lines:?}");
    }

    #[test]
    fn the_stderr_tail_is_bounded() {
        let out = GuestOutput::to_log(None);
        for _ in 0..100 {
            out.write(Stream::Stderr, &[b'x'; 1024]);
        }
        out.write(Stream::Stderr, b"the end");
        let text = out.stderr_text();
        assert!(text.len() <= STDERR_KEEP && text.ends_with("the end"));
    }
}
