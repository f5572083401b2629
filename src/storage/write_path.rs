//! Which path each write takes, the page cache or O_DIRECT, when the machine decides which is
//! faster. Measured on two 2-vCPU VMs, 2 GiB from one seeder, kernel 6.18, ext4: on one, direct
//! writes were 1.3-1.5x faster (filling new page-cache pages cost more CPU than its disk took:
//! `fio` buffered 329 MB/s, direct 1335 MB/s); on the other 1.3x slower (the page cache took
//! ~500 MB/s until about 1 GiB was dirty, its disk ~300 MB/s). So `WriteChooser` tries both,
//! keeps the one that moved bytes faster, and tries the other again every so often, since
//! the page cache slows down as it fills.
//!
//! "Faster" is bytes finished per second of wall time over a stretch, not per second each
//! write took: a buffered write finishes quickly by itself but spends CPU the receive and hash
//! paths needed (on the first VM the per-write measure chose the page cache for 45% of a
//! download that direct writes finished 1.3x sooner and with 0.6x the CPU). Pure: it is told
//! the time of each choice and each finished write, and never reads a clock or touches a file.

use std::time::Instant;

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

/// Bytes written on trial on the path not in use, each time it is tried: enough writes (64
/// or more, receive buffers being 1 MiB; ~0.1 s at 600 MB/s) that one slow write or a
/// drained backlog does not decide.
pub const TRIAL_BYTES: u64 = 64 << 20;
/// How many times the trial's bytes are written on the faster path before the other is tried
/// again: the trials cost at most an eighth of the slower path's extra time.
const STRETCH_PER_TRIAL: u64 = 8;
/// How much faster the page cache must have been to be chosen: direct writes cost less CPU
/// and leave less for the closing fsync, so a tie (a download the network paces) goes to them.
const BUFFERED_MARGIN: f64 = 1.2;

/// Alternates short trials of each path with long stretches on the faster one.
#[derive(Debug)]
pub struct WriteChooser {
    trial_bytes: u64,
    current: WritePath,
    /// Whether the current stretch is a trial.
    trial: bool,
    /// Bytes still to hand out before the current stretch ends.
    left: u64,
    /// Bytes per second of wall time, per path, from its latest stretch.
    rate: [Option<f64>; 2],
    /// What the current stretch's path finished since the stretch began.
    window: Window,
    /// Whether each path has had a stretch yet.
    tried: [bool; 2],
}

/// One stretch's measurement: from its first write handed out to its latest write finished.
#[derive(Debug, Default)]
struct Window {
    opened: Option<Instant>,
    bytes: u64,
    last: Option<Instant>,
}

impl Window {
    fn rate(&self) -> Option<f64> {
        let secs = self
            .last?
            .checked_duration_since(self.opened?)?
            .as_secs_f64();
        (self.bytes > 0 && secs > 0.0).then(|| self.bytes as f64 / secs)
    }
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
            window: Window::default(),
            tried: [true, false],
        }
    }

    /// The path for the next write, of `len` bytes, handed out at `now`.
    pub fn choose(&mut self, len: u64, now: Instant) -> WritePath {
        if self.left == 0 {
            self.end_stretch();
        }
        self.window.opened.get_or_insert(now);
        self.left = self.left.saturating_sub(len.max(1));
        self.current
    }

    /// A write of `bytes` on `path` finished at `now`. Writes on the path of an earlier
    /// stretch still finishing count for nothing.
    pub fn record(&mut self, path: WritePath, bytes: u64, now: Instant) {
        if path == self.current && self.window.opened.is_some() {
            self.window.bytes += bytes;
            self.window.last = Some(now);
        }
    }

    /// Bytes per second of wall time last measured on `path`.
    #[cfg(test)]
    pub fn rate(&self, path: WritePath) -> Option<f64> {
        self.rate[path.index()]
    }

    fn end_stretch(&mut self) {
        let i = self.current.index();
        if let Some(rate) = std::mem::take(&mut self.window).rate() {
            self.rate[i] = Some(rate);
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
        // After a trial, the faster path (one never measured counts as the slower), the
        // page cache only by a margin.
        let [buffered, direct] = self.rate.map(|r| r.unwrap_or(0.0));
        self.current = if buffered > direct * BUFFERED_MARGIN {
            WritePath::Buffered
        } else {
            WritePath::Direct
        };
        self.trial = false;
        self.left = self.trial_bytes * STRETCH_PER_TRIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    /// Writes `total` bytes in 1 MiB writes from `clock` on, each path moving `speed(path)`
    /// bytes per second, finishing each write before the next; returns the bytes per path.
    fn drive(
        chooser: &mut WriteChooser,
        clock: &mut Instant,
        total: u64,
        speed: impl Fn(WritePath) -> f64,
    ) -> [u64; 2] {
        let mut per_path = [0u64; 2];
        let mut written = 0;
        while written < total {
            let path = chooser.choose(MIB, *clock);
            *clock += Duration::from_secs_f64(MIB as f64 / speed(path));
            chooser.record(path, MIB, *clock);
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
            let [buffered, direct] = drive(&mut c, &mut Instant::now(), 1024 * MIB, |p| match p {
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
        let clock = &mut Instant::now();
        let before = drive(&mut c, clock, 1024 * MIB, |p| match p {
            WritePath::Buffered => 600e6,
            WritePath::Direct => 300e6,
        });
        let after = drive(&mut c, clock, 1024 * MIB, |p| match p {
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
    fn a_tie_goes_to_direct_writes() {
        // A download the network paces: both paths move bytes as fast as they arrive.
        let mut c = WriteChooser::new(8 * MIB);
        let [buffered, direct] = drive(&mut c, &mut Instant::now(), 1024 * MIB, |p| match p {
            WritePath::Buffered => 400e6,
            WritePath::Direct => 380e6,
        });
        assert!(
            direct > 7 * buffered,
            "{buffered} buffered, {direct} direct"
        );
    }

    #[test]
    fn a_stretch_without_completions_keeps_the_last_rate() {
        let mut c = WriteChooser::new(4 * MIB);
        let t0 = Instant::now();
        // Nothing finishes during the first trial: the chooser still moves on, unharmed.
        for _ in 0..4 {
            assert_eq!(c.choose(MIB, t0), WritePath::Buffered);
        }
        assert_eq!(c.choose(MIB, t0), WritePath::Direct);
        c.record(WritePath::Direct, 4 * MIB, t0 + Duration::from_millis(10));
        // A buffered write of the first trial finishing now counts for nothing.
        c.record(WritePath::Buffered, MIB, t0 + Duration::from_millis(11));
        for _ in 0..3 {
            c.choose(MIB, t0);
        }
        // The buffered trial measured nothing, so the measured direct path wins.
        assert_eq!(c.choose(MIB, t0), WritePath::Direct);
        assert!(c.rate(WritePath::Buffered).is_none());
        assert!(c.rate(WritePath::Direct).unwrap() > 1e8);
    }
}
