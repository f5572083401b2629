//! Which path each write takes, the page cache or O_DIRECT, when the machine decides which is
//! faster. Measured on two 2-vCPU VMs, 2 GiB from one seeder, kernel 6.18, ext4: on one, direct
//! writes were 1.5x faster (filling new page-cache pages cost more CPU than its disk took:
//! `fio` buffered 329 MB/s, direct 1335 MB/s); on the other 1.3x slower (the page cache took
//! ~500 MB/s until about 1 GiB was dirty, its disk ~300 MB/s). So `WriteChooser` tries both,
//! keeps the one that served bytes faster, and tries the other again every so often, since
//! the page cache slows down as it fills. Pure: it is told each finished write's size and
//! service time and never touches a file.

use std::time::Duration;

/// Where a write's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    Buffered,
    Direct,
}

impl WritePath {
    fn index(self) -> usize {
        match self {
            WritePath::Buffered => 0,
            WritePath::Direct => 1,
        }
    }

    fn other(self) -> WritePath {
        match self {
            WritePath::Buffered => WritePath::Direct,
            WritePath::Direct => WritePath::Buffered,
        }
    }
}

/// Bytes written on trial on the path not in use, each time it is tried: enough writes
/// (~128 of 256 KiB) to average out one slow one.
pub const TRIAL_BYTES: u64 = 32 << 20;
/// How many times the trial's bytes are written on the faster path before the other is tried
/// again: the trials cost at most an eighth of the slower path's extra time.
const STRETCH_PER_TRIAL: u64 = 8;

/// Alternates short trials of each path with long stretches on the faster one.
#[derive(Debug)]
pub struct WriteChooser {
    trial_bytes: u64,
    current: WritePath,
    /// Whether the current stretch is a trial.
    trial: bool,
    /// Bytes still to hand out before the current stretch ends.
    left: u64,
    /// Bytes per second of service time, per path, from its latest stretch.
    rate: [Option<f64>; 2],
    /// Bytes and service time finished on each path since its rate was last taken.
    since: [(u64, Duration); 2],
    /// Whether each path has had a stretch yet.
    tried: [bool; 2],
}

impl WriteChooser {
    /// A chooser trying each path for `trial_bytes` at a time (`TRIAL_BYTES` in use).
    pub fn new(trial_bytes: u64) -> WriteChooser {
        WriteChooser {
            trial_bytes,
            current: WritePath::Buffered,
            trial: true,
            left: trial_bytes,
            rate: [None; 2],
            since: [(0, Duration::ZERO); 2],
            tried: [true, false],
        }
    }

    /// The path for the next write, of `len` bytes.
    pub fn choose(&mut self, len: u64) -> WritePath {
        if self.left == 0 {
            self.end_stretch();
        }
        self.left = self.left.saturating_sub(len.max(1));
        self.current
    }

    /// A write of `bytes` on `path` finished after `service` (from taking its write slot to
    /// its completion).
    pub fn record(&mut self, path: WritePath, bytes: u64, service: Duration) {
        let acc = &mut self.since[path.index()];
        acc.0 += bytes;
        acc.1 += service;
    }

    /// Bytes per second of service time last measured on `path`.
    #[cfg(test)]
    pub fn rate(&self, path: WritePath) -> Option<f64> {
        self.rate[path.index()]
    }

    fn end_stretch(&mut self) {
        let i = self.current.index();
        let (bytes, time) = self.since[i];
        if bytes > 0 && !time.is_zero() {
            self.rate[i] = Some(bytes as f64 / time.as_secs_f64());
            self.since[i] = (0, Duration::ZERO);
        }
        let other = self.current.other();
        if !self.trial || !self.tried[other.index()] {
            // A long stretch ended, or the other path was never tried: try the other.
            self.current = other;
            self.tried[other.index()] = true;
            self.trial = true;
            self.left = self.trial_bytes;
            return;
        }
        // After a trial, the faster path (one never measured counts as the slower).
        let here = self.rate[i].unwrap_or(0.0);
        let there = self.rate[other.index()].unwrap_or(0.0);
        if there > here {
            self.current = other;
        }
        self.trial = false;
        self.left = self.trial_bytes * STRETCH_PER_TRIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Writes `total` bytes in 1 MiB writes, each path serving at `speed(path)` bytes per
    /// second, finishing each write before the next; returns the bytes per path.
    fn drive(chooser: &mut WriteChooser, total: u64, speed: impl Fn(WritePath) -> f64) -> [u64; 2] {
        let mut per_path = [0u64; 2];
        let mut written = 0;
        while written < total {
            let path = chooser.choose(MIB);
            let secs = MIB as f64 / speed(path);
            chooser.record(path, MIB, Duration::from_secs_f64(secs));
            per_path[path.index()] += MIB;
            written += MIB;
        }
        per_path
    }

    #[test]
    fn settles_on_the_faster_path_and_keeps_trying_the_other() {
        // (buffered, direct) speeds: a slow page cache (new pages cost CPU), then a slow disk.
        for (buffered_speed, direct_speed) in [(300e6, 1200e6), (600e6, 300e6)] {
            let mut c = WriteChooser::new(8 * MIB);
            let [buffered, direct] = drive(&mut c, 1024 * MIB, |p| match p {
                WritePath::Buffered => buffered_speed,
                WritePath::Direct => direct_speed,
            });
            let (faster, slower) = if direct_speed > buffered_speed {
                (direct, buffered)
            } else {
                (buffered, direct)
            };
            assert!(faster > 7 * slower, "{buffered} buffered, {direct} direct");
            assert!(slower > 8 * MIB, "the slower path is tried again");
        }
    }

    #[test]
    fn moves_to_direct_once_the_page_cache_slows_down() {
        let mut c = WriteChooser::new(8 * MIB);
        let before = drive(&mut c, 1024 * MIB, |p| match p {
            WritePath::Buffered => 600e6,
            WritePath::Direct => 300e6,
        });
        let after = drive(&mut c, 1024 * MIB, |p| match p {
            WritePath::Buffered => 200e6,
            WritePath::Direct => 300e6,
        });
        assert!(
            before[0] > 7 * before[1],
            "buffered while the page cache is fast"
        );
        assert!(
            after[1] > 700 * MIB,
            "only {} MiB direct after the slowdown",
            after[1] / MIB
        );
    }

    #[test]
    fn a_stretch_without_completions_keeps_the_last_rate() {
        let mut c = WriteChooser::new(4 * MIB);
        // Nothing finishes during the first trial: the chooser still moves on, unharmed.
        for _ in 0..4 {
            assert_eq!(c.choose(MIB), WritePath::Buffered);
        }
        assert_eq!(c.choose(MIB), WritePath::Direct);
        c.record(WritePath::Direct, 4 * MIB, Duration::from_millis(10));
        for _ in 0..3 {
            c.choose(MIB);
        }
        // The buffered trial measured nothing, so the measured direct path wins.
        assert_eq!(c.choose(MIB), WritePath::Direct);
        assert!(c.rate(WritePath::Buffered).is_none());
        assert!(c.rate(WritePath::Direct).unwrap() > 1e8);
    }
}
