//! The server's log lines written off the request path. A request formats its log line (the
//! `tracing` layer does that in the request's task) and hands it to a bounded queue; one
//! background thread writes the queue to stdout in large chunks. The request never waits for
//! stdout: when the queue is full (the collector reading stdout has stalled), the line is
//! dropped and counted in `ferrum_log_lines_dropped_total` instead.
//!
//! [`LogWriterGuard::flush`] writes every line queued so far and flushes the sink; the server
//! calls it when it stops, so the last lines (the shutdown ones) are not lost.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use super::metrics;

/// Lines the queue holds: with a few hundred bytes a line, a few MB at most.
pub const LOG_QUEUE_LINES: usize = 8192;
/// The background thread's buffer: lines that arrive together are written in one call.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

enum Message {
    Line(Vec<u8>),
    /// Write everything before this, flush the sink, then answer.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` for the log layer: each write is one formatted line, queued.
#[derive(Clone)]
pub struct NonBlockingWriter {
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Flushes the queue on [`LogWriterGuard::flush`] (and when dropped).
#[must_use = "dropping the guard flushes the log queue; keep it until the last line"]
pub struct LogWriterGuard {
    queue: SyncSender<Message>,
}

/// A writer queueing up to `capacity` lines for a thread that writes them to `sink`.
pub fn non_blocking<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> io::Result<(NonBlockingWriter, LogWriterGuard)> {
    let (queue, lines) = mpsc::sync_channel(capacity);
    thread::Builder::new()
        .name("ferrum-log-writer".into())
        .spawn(move || write_lines(lines, sink))?;
    let writer = NonBlockingWriter {
        queue: queue.clone(),
        dropped: Arc::default(),
    };
    Ok((writer, LogWriterGuard { queue }))
}

impl NonBlockingWriter {
    /// Lines this writer dropped because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Write for &NonBlockingWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        match self.queue.try_send(Message::Line(line.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::record_log_line_dropped();
            }
            // The thread is gone (it cannot end while a writer exists; only by a panic in the
            // sink): say so where someone may still see it.
            Err(TrySendError::Disconnected(_)) => {
                return Err(io::Error::other("the log writer thread has stopped"))
            }
        }
        // Dropped or not, the line is dealt with: the caller must not retry it.
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for NonBlockingWriter {
    type Writer = &'a NonBlockingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl LogWriterGuard {
    /// Blocks until every line queued before the call is written and the sink flushed.
    pub fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// How long the background thread rests after writing what was queued. While it rests no one
/// waits on the queue, so a request queueing its line wakes nobody: under load the thread wakes
/// once per interval instead of once per line (a futex wake and two context switches a request:
/// resting raised single-row req/s per server core by ~40% at c=8 and ~8% at c=64, batching on).
/// Lines reach stdout at most this much later; at the queue's size that is far from filling it.
const WRITE_INTERVAL: Duration = Duration::from_millis(2);

/// The background thread: writes every waiting line in one call, then rests [`WRITE_INTERVAL`].
fn write_lines<W: Write>(lines: Receiver<Message>, sink: W) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, sink);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
        thread::sleep(WRITE_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A sink whose first write blocks until the test opens the gate, recording everything.
    #[derive(Clone, Default)]
    struct GatedSink {
        state: Arc<(Mutex<Gate>, Condvar)>,
    }

    #[derive(Default)]
    struct Gate {
        entered: bool,
        open: bool,
        written: Vec<u8>,
    }

    impl Write for GatedSink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (lock, changed) = &*self.state;
            let mut gate = lock.lock().unwrap();
            gate.entered = true;
            changed.notify_all();
            while !gate.open {
                gate = changed.wait(gate).unwrap();
            }
            gate.written.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl GatedSink {
        fn wait_entered(&self) {
            let (lock, changed) = &*self.state;
            let mut gate = lock.lock().unwrap();
            while !gate.entered {
                gate = changed.wait(gate).unwrap();
            }
        }
        fn open(&self) {
            let (lock, changed) = &*self.state;
            lock.lock().unwrap().open = true;
            changed.notify_all();
        }
        fn written(&self) -> String {
            String::from_utf8(self.state.0.lock().unwrap().written.clone()).unwrap()
        }
    }

    fn metric_value() -> f64 {
        metrics::render()
            .lines()
            .find_map(|l| l.strip_prefix("ferrum_log_lines_dropped_total "))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_and_flush_writes_the_rest_in_order() {
        let sink = GatedSink::default();
        let (writer, guard) = non_blocking(sink.clone(), 2).unwrap();
        let before = metric_value();
        let line = |text: &str| (&writer).write_all(text.as_bytes()).unwrap();
        line("a\n");
        // The thread took "a" and is stuck writing it: the queue is empty and holds two more.
        sink.wait_entered();
        line("b\n");
        line("c\n");
        line("d\n");
        line("e\n");
        line("f\n");
        assert_eq!(writer.dropped(), 3);
        assert_eq!(metric_value() - before, 3.0);
        sink.open();
        guard.flush();
        assert_eq!(sink.written(), "a\nb\nc\n");
        // After a flush the writer goes on working.
        line("g\n");
        guard.flush();
        assert_eq!(sink.written(), "a\nb\nc\ng\n");
        assert_eq!(writer.dropped(), 3);
    }

    #[test]
    fn lines_arrive_whole_and_in_order_without_waiting_for_a_flush() {
        let sink = GatedSink::default();
        sink.open();
        let (writer, _guard) = non_blocking(sink.clone(), LOG_QUEUE_LINES).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for i in 0..1000 {
            (&writer)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sink.written() != expected {
            assert!(std::time::Instant::now() < deadline, "{}", sink.written());
            thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(writer.dropped(), 0);
    }
}
