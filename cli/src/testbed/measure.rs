//! Measuring what a move costs: watch a download's output file grow, and find the longest stall
//! after each move.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// At most this many growth points are kept (enough for hours at 20 ms sampling).
const MAX_SAMPLES: usize = 500_000;

/// The file had grown to `bytes` when first seen at `at` (since the watch started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    pub bytes: u64,
}

/// The longest time without progress after one move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// When the move happened.
    pub moved_at: Duration,
    /// The longest time the file did not grow, from the last growth before the move to the end
    /// of this move's window (the next move, or the end of the transfer).
    pub longest: Duration,
}

/// Samples a file's size in a background thread, keeping only the moments it grew.
pub struct Progress {
    start: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Start sampling `path` every `every` (a missing file counts as 0 bytes).
    pub fn watch(path: PathBuf, every: Duration) -> Progress {
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(vec![Sample {
            at: Duration::ZERO,
            bytes: 0,
        }]));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    record(&samples, start.elapsed(), bytes);
                    thread::sleep(every);
                }
            })
        };
        Progress {
            start,
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// Time since the watch started (use it to mark moves).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The size last seen.
    pub fn bytes(&self) -> u64 {
        self.samples.lock().last().map_or(0, |s| s.bytes)
    }

    /// Wait until at least `bytes` were seen; false if `timeout` passed first.
    pub fn wait_for_bytes(&self, bytes: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.bytes() < bytes {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The growth points so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().clone()
    }

    /// Stop sampling; the growth points seen.
    pub fn finish(mut self) -> Vec<Sample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.halt();
    }
}

fn record(samples: &Mutex<Vec<Sample>>, at: Duration, bytes: u64) {
    let mut samples = samples.lock();
    let grew = samples.last().is_none_or(|last| bytes > last.bytes);
    if grew && samples.len() < MAX_SAMPLES {
        samples.push(Sample { at, bytes });
    }
}

/// The longest stall after each move at `moves` (sorted), given the growth points `samples`
/// (sorted) of a transfer that ended at `end`.
///
/// For a move at `t` with the next move (or `end`) at `u`: the gaps between consecutive growth
/// points are examined from the last growth at or before `t` up to `u`; a gap still open at `u`
/// counts up to `u`. A transfer that had already completed (`total` bytes seen) before the move
/// stalls 0.
pub fn stalls(samples: &[Sample], moves: &[Duration], end: Duration, total: u64) -> Vec<Stall> {
    moves
        .iter()
        .enumerate()
        .map(|(i, &moved_at)| {
            let until = moves.get(i + 1).copied().unwrap_or(end).max(moved_at);
            Stall {
                moved_at,
                longest: longest_gap(samples, moved_at, until, total),
            }
        })
        .collect()
}

fn longest_gap(samples: &[Sample], from: Duration, until: Duration, total: u64) -> Duration {
    let before = samples.iter().rposition(|s| s.at <= from);
    let Some(first) = before else {
        return until - from;
    };
    if samples[first].bytes >= total {
        return Duration::ZERO;
    }
    let mut longest = Duration::ZERO;
    let mut last = samples[first].at;
    for sample in samples[first + 1..].iter().take_while(|s| s.at <= until) {
        longest = longest.max(sample.at - last);
        last = sample.at;
        if sample.bytes >= total {
            return longest;
        }
    }
    longest.max(until.saturating_sub(last))
}

/// The median of `values` (the lower middle for an even count); zero for none.
pub fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn samples(points: &[(u64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(at, bytes)| Sample { at: ms(at), bytes })
            .collect()
    }

    #[test]
    fn stall_after_a_move_spans_from_last_growth() {
        let s = samples(&[(0, 0), (100, 10), (120, 20), (900, 30), (920, 40)]);
        let stalls = stalls(&s, &[ms(130)], ms(1000), 100);
        assert_eq!(stalls[0].longest, ms(780));
    }

    #[test]
    fn each_move_gets_its_own_window() {
        let s = samples(&[(0, 0), (100, 1), (500, 2), (520, 3), (1500, 4), (1520, 5)]);
        let stalls = stalls(&s, &[ms(110), ms(600)], ms(2000), 100);
        assert_eq!(stalls[0].longest, ms(400)); // 100 -> 500, window ends at 600
        assert_eq!(stalls[1].longest, ms(980)); // 520 -> 1500
    }

    #[test]
    fn an_open_stall_counts_to_the_end() {
        let s = samples(&[(0, 0), (100, 1)]);
        assert_eq!(stalls(&s, &[ms(200)], ms(700), 100)[0].longest, ms(600));
    }

    #[test]
    fn a_finished_transfer_does_not_stall() {
        let s = samples(&[(0, 0), (100, 100)]);
        assert_eq!(stalls(&s, &[ms(200)], ms(700), 100)[0].longest, ms(0));
        let s = samples(&[(0, 0), (100, 50), (300, 100)]);
        assert_eq!(stalls(&s, &[ms(150)], ms(5000), 100)[0].longest, ms(200));
    }

    #[test]
    fn record_keeps_only_growth() {
        let m = Mutex::new(Vec::new());
        record(&m, ms(0), 0);
        record(&m, ms(20), 0);
        record(&m, ms(40), 5);
        record(&m, ms(60), 5);
        assert_eq!(*m.lock(), samples(&[(0, 0), (40, 5)]));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), ms(0));
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(3)]), ms(2));
    }

    #[test]
    fn progress_watches_a_growing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let progress = Progress::watch(path.clone(), ms(5));
        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(progress.wait_for_bytes(10, Duration::from_secs(5)));
        let seen = progress.finish();
        assert_eq!(seen.last().unwrap().bytes, 10);
    }
}
