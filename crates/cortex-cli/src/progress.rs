//! A one-line "still working" indicator for long waits (`cortex load`):
//! `loading MODEL … 3s`, rewritten in place by a ticker thread and erased
//! when the wait ends.
//!
//! Owns the ticker thread and the line on the terminal; whether to show it
//! at all (stderr is a terminal) is the caller's choice.

use std::io::Write;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Return to the start of the line and erase it.
const CLEAR_LINE: &str = "\r\x1b[2K";

/// A running indicator; dropping it (or [`Ticker::finish`]) stops the
/// thread and erases the line.
#[derive(Debug)]
pub struct Ticker {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Start writing `"{label} … {elapsed}"` to `out` now and every `every`.
    pub fn start(label: String, every: Duration, mut out: Box<dyn Write + Send>) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("cortex-ticker".into())
            .spawn(move || {
                loop {
                    let secs = started.elapsed().as_secs();
                    // A closed terminal is no reason to fail the command.
                    let _ = write!(out, "{CLEAR_LINE}{label} … {secs}s");
                    let _ = out.flush();
                    match stopped.recv_timeout(every) {
                        Err(RecvTimeoutError::Timeout) => continue,
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                let _ = write!(out, "{CLEAR_LINE}");
                let _ = out.flush();
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }

    /// Stop and erase the line; returns once it is erased, so what is
    /// printed next starts on a clean line.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn ticks_in_place_and_erases_the_line_at_the_end() {
        let buf = Shared::default();
        let t = Ticker::start(
            "loading m".into(),
            Duration::from_millis(5),
            Box::new(buf.clone()),
        );
        std::thread::sleep(Duration::from_millis(40));
        t.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("\r\x1b[2Kloading m … 0s"), "{text:?}");
        assert!(text.matches("loading m … ").count() >= 2, "{text:?}");
        assert!(text.ends_with(CLEAR_LINE), "{text:?}");
        assert!(!text.contains('\n'), "{text:?}");
    }

    #[test]
    fn dropping_stops_it_too() {
        let buf = Shared::default();
        drop(Ticker::start(
            "x".into(),
            Duration::from_secs(3600),
            Box::new(buf.clone()),
        ));
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, format!("{CLEAR_LINE}x … 0s{CLEAR_LINE}"));
    }
}
