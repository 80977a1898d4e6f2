//! The daemon's stderr, collected line by line as it comes, for tests that
//! wait for a log line (a reload's, a connection's) or parse them all.

use std::io::{BufRead, BufReader};
use std::process::ChildStderr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::WAIT;

/// Lines read so far from a daemon's stderr (a reader thread in the test
/// process appends them).
pub struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Log {
    /// Starts collecting `stderr`'s lines.
    pub fn collect(stderr: ChildStderr) -> Log {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        Log {
            lines,
            reader: Some(reader),
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits up to [`WAIT`] for a line (after the first `skip`) that
    /// `matches`, and returns it with its index; fails naming `what` and
    /// showing every line otherwise.
    #[track_caller]
    pub fn wait_for(
        &self,
        skip: usize,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> (usize, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, l)) = lines
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .find(|(_, l)| matches(l))
                {
                    return (i, l.clone());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line {what} within {WAIT:?}; stderr:\n{}",
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits for the daemon's stderr to close (it exited) and returns every
    /// line.
    pub fn finish(mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.lines()
    }
}
