//! The tracker client's I/O: announcing to a torrent's trackers over HTTP(S) (`http`) and
//! UDP (`udp`), and the `Announcer` that walks the announce-list in BEP 12 order, remembers
//! what each tracker told us (tracker id, UDP connection id) and backs off from trackers
//! that fail (`schedule`, pure). Packets, URLs and reply parsing live in `tracker` (pure
//! core); this module owns the sockets and the waiting. It never spawns a task: the engine
//! calls `Announcer::announce` from its own task, when `next_announce_delay` says so.

pub mod http;
pub mod schedule;
pub mod udp;

pub use http::{announce_http, http_client, scrape_http, HttpConfig, HTTP_TIMEOUT, MAX_REDIRECTS};
pub use schedule::{
    backoff_delay, next_announce_delay, Backoff, LastRound, BACKOFF_BASE, BACKOFF_MAX,
};
pub use udp::{announce_udp, scrape_udp, UdpConfig, UDP_BASE_TIMEOUT, UDP_MAX_ATTEMPTS};

use crate::tracker::{AnnounceRequest, AnnounceResponse, Event, TrackerError, UdpConnectionCache};
use crate::types::{InfoHash, PeerId};
use rand::seq::SliceRandom;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Trackers kept from one torrent's announce-list; the rest are ignored. A failing round
/// tries each in turn, so this bounds how long one round can take.
pub const MAX_TRACKERS: usize = 50;
/// Peers asked for per announce: the usual tracker default, and more than the engine
/// connects to between two announces.
pub const DEFAULT_NUMWANT: u32 = 50;

/// What went wrong announcing, and to which tracker (the URL as the torrent lists it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    #[error("the torrent lists no tracker spate can use")]
    NoTrackers,
    #[error("tracker URL {url} uses a scheme spate does not speak (only http, https and udp)")]
    UnsupportedScheme { url: String },
    #[error("tracker URL {url} is invalid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not resolve the host of tracker {url}: {reason}")]
    Resolve { url: String, reason: String },
    #[error("tracker {url} did not answer within {:.1} s", waited.as_secs_f64())]
    Timeout { url: String, waited: Duration },
    #[error("HTTP request to tracker {url} failed: {reason}")]
    Http { url: String, reason: String },
    #[error("tracker {url} redirected us badly: {reason}")]
    Redirect { url: String, reason: String },
    #[error("tracker {url} answered with HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error(
        "tracker {url} sent a reply larger than {} bytes",
        crate::tracker::MAX_BODY_LEN
    )]
    BodyTooLarge { url: String },
    #[error("tracker {url} refused the request: {reason}")]
    Refused { url: String, reason: String },
    #[error("tracker {url} sent a reply spate cannot read: {source}")]
    BadReply { url: String, source: TrackerError },
    #[error("could not build a request for tracker {url}: {source}")]
    BadRequest { url: String, source: TrackerError },
    #[error("network error talking to tracker {url}: {reason}")]
    Io { url: String, reason: String },
    #[error("tracker {url} cannot be scraped: its path does not end in \"announce\"")]
    NoScrape { url: String },
    #[error("tracker {url} is left alone for another {} s after {failures} failure(s)", remaining.as_secs())]
    BackingOff {
        url: String,
        failures: u32,
        remaining: Duration,
    },
    #[error("could not set up the HTTP client: {reason}")]
    HttpClient { reason: String },
}

impl AnnounceError {
    /// The tracker the error is about, if it is about one.
    pub fn url(&self) -> Option<&str> {
        use AnnounceError::*;
        match self {
            NoTrackers | HttpClient { .. } => None,
            UnsupportedScheme { url }
            | InvalidUrl { url, .. }
            | Resolve { url, .. }
            | Timeout { url, .. }
            | Http { url, .. }
            | Redirect { url, .. }
            | Status { url, .. }
            | BodyTooLarge { url }
            | Refused { url, .. }
            | BadReply { url, .. }
            | BadRequest { url, .. }
            | Io { url, .. }
            | NoScrape { url }
            | BackingOff { url, .. } => Some(url),
        }
    }
}

/// Who we are to the trackers of one torrent, and how patient to be with UDP ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// The port our peer listener accepts connections on.
    pub port: u16,
    /// Random, fixed for the session, so a tracker knows us across address changes (BEP 7).
    pub key: u32,
    /// Peers asked for in regular and started/completed announces; `None` leaves it to the
    /// tracker. A stopped announce always asks for none.
    pub numwant: Option<u32>,
    /// Retransmission schedule for UDP trackers.
    pub udp: UdpConfig,
}

impl AnnounceConfig {
    /// The defaults for one torrent: a random key, `DEFAULT_NUMWANT`, BEP 15 timing.
    pub fn new(info_hash: InfoHash, peer_id: PeerId, port: u16) -> Self {
        AnnounceConfig {
            info_hash,
            peer_id,
            port,
            key: rand::random(),
            numwant: Some(DEFAULT_NUMWANT),
            udp: UdpConfig::default(),
        }
    }
}

/// Byte counts reported in an announce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes still missing; 0 announces us as a seed.
    pub left: u64,
}

/// What a successful announce brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceOutcome {
    pub peers: Vec<SocketAddr>,
    /// Until the next regular announce (already clamped by `tracker`).
    pub interval: Duration,
    /// Announces should not come closer together than this, if the tracker said so.
    pub min_interval: Option<Duration>,
    /// The tracker that answered, as listed.
    pub tracker: String,
    pub seeders: Option<u32>,
    pub leechers: Option<u32>,
    /// A "warning message" the tracker attached, for the user.
    pub warning: Option<String>,
}

/// The protocols we speak, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Udp,
    Unsupported,
}

fn scheme_of(url: &str) -> Scheme {
    let lower = |prefix: &str| {
        url.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    if lower("http://") || lower("https://") {
        Scheme::Http
    } else if lower("udp://") {
        Scheme::Udp
    } else {
        Scheme::Unsupported
    }
}

/// What we remember about one tracker between announces.
#[derive(Debug, Clone)]
struct Tracker {
    url: String,
    /// The "tracker id" it gave us; sent back until it gives another (BEP 3 practice keeps
    /// the old one when a reply has none).
    tracker_id: Option<Vec<u8>>,
    udp: UdpConnectionCache,
    backoff: Backoff,
    last_error: Option<AnnounceError>,
}

impl Tracker {
    fn new(url: String) -> Self {
        Tracker {
            url,
            tracker_id: None,
            udp: UdpConnectionCache::new(),
            backoff: Backoff::default(),
            last_error: None,
        }
    }
}

/// One tracker as the engine or a user interface sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerStatus<'a> {
    /// 0 is the first tier.
    pub tier: usize,
    pub url: &'a str,
    /// Failures in a row.
    pub failures: u32,
    /// When a regular announce may go to it again, if it is backing off.
    pub retry_at: Option<Instant>,
    /// Why the last attempt failed, until the next success.
    pub last_error: Option<&'a AnnounceError>,
}

/// Announces one torrent to its trackers in BEP 12 order: tier by tier, URL by URL, and a
/// tracker that answers moves to the front of its tier. Holds no task and no socket between
/// calls; `announce` may be dropped at any await (the tracker being tried then simply
/// counts neither as a success nor as a failure).
#[derive(Debug)]
pub struct Announcer {
    config: AnnounceConfig,
    http: reqwest::Client,
    tiers: Vec<Vec<Tracker>>,
    last_round: LastRound,
}

impl Announcer {
    /// An announcer for `tiers` (the announce-list, or one tier holding the single
    /// `announce` URL), with each tier shuffled once as BEP 12 asks. `http` is the shared
    /// client from `http_client`.
    pub fn new(config: AnnounceConfig, tiers: Vec<Vec<String>>, http: reqwest::Client) -> Self {
        let mut rng = rand::thread_rng();
        Self::build(config, tiers, http, |tier| tier.shuffle(&mut rng))
    }

    /// Like `new` but keeps the order given: for callers that have shuffled already, or
    /// that need a fixed order (tests, a user's explicit ranking).
    pub fn new_in_order(
        config: AnnounceConfig,
        tiers: Vec<Vec<String>>,
        http: reqwest::Client,
    ) -> Self {
        Self::build(config, tiers, http, |_| {})
    }

    /// Drops blank and repeated URLs and empty tiers, keeps at most `MAX_TRACKERS`, and
    /// orders each tier with `arrange`.
    fn build(
        config: AnnounceConfig,
        tiers: Vec<Vec<String>>,
        http: reqwest::Client,
        mut arrange: impl FnMut(&mut [Tracker]),
    ) -> Self {
        let mut seen = HashSet::new();
        let mut kept = Vec::new();
        for tier in tiers {
            let mut trackers: Vec<Tracker> = tier
                .into_iter()
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty() && seen.insert(url.clone()))
                .map(Tracker::new)
                .collect();
            let room = MAX_TRACKERS - kept.iter().map(Vec::len).sum::<usize>();
            trackers.truncate(room);
            if !trackers.is_empty() {
                arrange(&mut trackers);
                kept.push(trackers);
            }
        }
        Announcer {
            config,
            http,
            tiers: kept,
            last_round: LastRound::Never,
        }
    }

    /// The configuration the announcer was built with.
    pub fn config(&self) -> &AnnounceConfig {
        &self.config
    }

    /// Every tracker, in the order the next announce will try them.
    pub fn trackers(&self) -> impl Iterator<Item = TrackerStatus<'_>> {
        self.tiers.iter().enumerate().flat_map(|(tier, trackers)| {
            trackers.iter().map(move |t| TrackerStatus {
                tier,
                url: &t.url,
                failures: t.backoff.failures(),
                retry_at: t.backoff.retry_at(),
                last_error: t.last_error.as_ref(),
            })
        })
    }

    /// How long from `now` until the next regular announce: the tracker's interval after a
    /// success, the end of the first backoff after a failed round, zero before the first.
    pub fn next_announce_delay(&self, now: Instant) -> Duration {
        let earliest_retry = self
            .tiers
            .iter()
            .flatten()
            .map(|t| t.backoff.retry_at().unwrap_or(now))
            .min();
        next_announce_delay(self.last_round, earliest_retry, now)
    }

    /// Announces `event` with `stats` to the first tracker that answers, in BEP 12 order,
    /// and returns its peers. A regular announce (`Event::None`) skips trackers that are
    /// backing off; started, completed and stopped announces try every tracker, since a
    /// missed one changes what the tracker believes. If no tracker answers, the error is the
    /// last real failure (a skipped tracker's `BackingOff` only when nothing was tried).
    pub async fn announce(
        &mut self,
        event: Event,
        stats: TransferStats,
    ) -> Result<AnnounceOutcome, AnnounceError> {
        let mut failure: Option<AnnounceError> = None;
        let mut skipped: Option<AnnounceError> = None;
        for tier in 0..self.tiers.len() {
            for index in 0..self.tiers[tier].len() {
                let now = Instant::now();
                let tracker = &mut self.tiers[tier][index];
                if event == Event::None && !tracker.backoff.is_ready(now) {
                    skipped = Some(AnnounceError::BackingOff {
                        url: tracker.url.clone(),
                        failures: tracker.backoff.failures(),
                        remaining: tracker.backoff.remaining(now),
                    });
                    continue;
                }
                let request = build_request(&self.config, event, stats, tracker);
                let result = announce_to(&self.http, &self.config.udp, tracker, &request).await;
                match result {
                    Ok(response) => {
                        let outcome = on_tracker_answered(tracker, response);
                        self.promote(tier, index);
                        self.last_round = LastRound::Succeeded {
                            at: Instant::now(),
                            interval: outcome.interval,
                        };
                        return Ok(outcome);
                    }
                    Err(error) => {
                        tracker.backoff.record_failure(Instant::now());
                        tracker.last_error = Some(error.clone());
                        failure = Some(error);
                    }
                }
            }
        }
        self.last_round = LastRound::Failed;
        Err(failure.or(skipped).unwrap_or(AnnounceError::NoTrackers))
    }

    /// Moves the tracker at `index` of `tier` to the front of its tier, keeping the order
    /// of the others (BEP 12).
    fn promote(&mut self, tier: usize, index: usize) {
        self.tiers[tier][..=index].rotate_right(1);
    }
}

/// The request for one tracker: the torrent's identity, the byte counts, and the tracker's
/// own id if it gave us one.
fn build_request(
    config: &AnnounceConfig,
    event: Event,
    stats: TransferStats,
    tracker: &Tracker,
) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: config.info_hash,
        peer_id: config.peer_id,
        port: config.port,
        uploaded: stats.uploaded,
        downloaded: stats.downloaded,
        left: stats.left,
        event,
        // Leaving the swarm: peers would only be thrown away.
        numwant: if event == Event::Stopped {
            Some(0)
        } else {
            config.numwant
        },
        key: config.key,
        tracker_id: tracker.tracker_id.clone(),
    }
}

/// One announce to one tracker, by its scheme.
async fn announce_to(
    http: &reqwest::Client,
    udp: &UdpConfig,
    tracker: &mut Tracker,
    request: &AnnounceRequest,
) -> Result<AnnounceResponse, AnnounceError> {
    match scheme_of(&tracker.url) {
        Scheme::Http => announce_http(http, &tracker.url, request).await,
        Scheme::Udp => announce_udp(&tracker.url, request, &mut tracker.udp, udp).await,
        Scheme::Unsupported => Err(AnnounceError::UnsupportedScheme {
            url: tracker.url.clone(),
        }),
    }
}

/// Records a tracker's success and turns its reply into the outcome.
fn on_tracker_answered(tracker: &mut Tracker, response: AnnounceResponse) -> AnnounceOutcome {
    tracker.backoff.record_success();
    tracker.last_error = None;
    if response.tracker_id.is_some() {
        tracker.tracker_id = response.tracker_id;
    }
    AnnounceOutcome {
        peers: response.peers,
        interval: Duration::from_secs(response.interval.into()),
        min_interval: response.min_interval.map(|s| Duration::from_secs(s.into())),
        tracker: tracker.url.clone(),
        seeders: response.complete,
        leechers: response.incomplete,
        warning: response.warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnnounceConfig {
        AnnounceConfig::new(InfoHash([1; 20]), PeerId(*b"-SP0100-abcdefghijkl"), 6881)
    }

    fn tiers(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|tier| tier.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn order(a: &Announcer) -> Vec<(usize, String)> {
        a.trackers().map(|t| (t.tier, t.url.to_owned())).collect()
    }

    fn client() -> reqwest::Client {
        http_client(&HttpConfig::default()).unwrap()
    }

    #[test]
    fn blank_and_repeated_urls_and_empty_tiers_are_dropped() {
        let a = Announcer::new_in_order(
            config(),
            tiers(&[
                &["http://a/announce", " ", "udp://b:1"],
                &[],
                &["http://a/announce", "udp://c:2 "],
            ]),
            client(),
        );
        let want = [(0, "http://a/announce"), (0, "udp://b:1"), (1, "udp://c:2")];
        let want: Vec<_> = want.iter().map(|(t, u)| (*t, u.to_string())).collect();
        assert_eq!(order(&a), want);
    }

    #[test]
    fn at_most_max_trackers_are_kept() {
        let many: Vec<String> = (0..MAX_TRACKERS + 20)
            .map(|i| format!("udp://t{i}:1"))
            .collect();
        let a = Announcer::new_in_order(config(), vec![many.clone(), many], client());
        assert_eq!(a.trackers().count(), MAX_TRACKERS);
    }

    #[test]
    fn shuffling_stays_within_tiers_and_varies() {
        let list = tiers(&[&["u1", "u2", "u3", "u4"], &["v1", "v2"]]);
        let mut firsts = HashSet::new();
        let http = client();
        for _ in 0..200 {
            let a = Announcer::new(config(), list.clone(), http.clone());
            let got = order(&a);
            let tier0: HashSet<_> = got
                .iter()
                .filter(|(t, _)| *t == 0)
                .map(|(_, u)| u.clone())
                .collect();
            let tier1: HashSet<_> = got
                .iter()
                .filter(|(t, _)| *t == 1)
                .map(|(_, u)| u.clone())
                .collect();
            assert_eq!(tier0, list[0].iter().cloned().collect());
            assert_eq!(tier1, list[1].iter().cloned().collect());
            firsts.insert(got[0].1.clone());
        }
        assert_eq!(firsts.len(), 4, "each tier-0 URL comes first sometimes");
    }

    #[test]
    fn a_tracker_that_answers_moves_to_the_front_of_its_tier() {
        let mut a = Announcer::new_in_order(config(), tiers(&[&["a", "b", "c", "d"]]), client());
        a.promote(0, 2);
        let urls: Vec<_> = order(&a).into_iter().map(|(_, u)| u).collect();
        assert_eq!(urls, ["c", "a", "b", "d"]);
        a.promote(0, 0);
        let urls: Vec<_> = order(&a).into_iter().map(|(_, u)| u).collect();
        assert_eq!(urls, ["c", "a", "b", "d"]);
    }

    #[test]
    fn schemes_are_recognised_case_insensitively() {
        assert_eq!(scheme_of("http://a/announce"), Scheme::Http);
        assert_eq!(scheme_of("HTTPS://a/announce"), Scheme::Http);
        assert_eq!(scheme_of("udp://a:1"), Scheme::Udp);
        assert_eq!(scheme_of("wss://a/announce"), Scheme::Unsupported);
        assert_eq!(scheme_of("ud"), Scheme::Unsupported);
        assert_eq!(scheme_of("é"), Scheme::Unsupported);
    }

    #[test]
    fn requests_carry_identity_stats_and_tracker_id() {
        let mut t = Tracker::new("http://a/announce".into());
        t.tracker_id = Some(b"xyz".to_vec());
        let stats = TransferStats {
            uploaded: 1,
            downloaded: 2,
            left: 3,
        };
        let c = config();
        let r = build_request(&c, Event::Started, stats, &t);
        assert_eq!((r.uploaded, r.downloaded, r.left, r.port), (1, 2, 3, 6881));
        assert_eq!(
            (r.info_hash, r.key, r.event),
            (c.info_hash, c.key, Event::Started)
        );
        assert_eq!(r.numwant, Some(DEFAULT_NUMWANT));
        assert_eq!(r.tracker_id.as_deref(), Some(&b"xyz"[..]));
        assert_eq!(
            build_request(&c, Event::Stopped, stats, &t).numwant,
            Some(0)
        );
    }

    #[test]
    fn a_reply_without_tracker_id_keeps_the_old_one() {
        let mut t = Tracker::new("http://a/announce".into());
        t.backoff.record_failure(Instant::now());
        let reply = AnnounceResponse {
            interval: 900,
            min_interval: Some(60),
            tracker_id: Some(b"one".to_vec()),
            ..AnnounceResponse::default()
        };
        let outcome = on_tracker_answered(&mut t, reply);
        assert_eq!(outcome.interval, Duration::from_secs(900));
        assert_eq!(outcome.min_interval, Some(Duration::from_secs(60)));
        assert_eq!(t.backoff, Backoff::default());
        on_tracker_answered(&mut t, AnnounceResponse::default());
        assert_eq!(t.tracker_id.as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn errors_name_their_tracker() {
        let e = AnnounceError::Status {
            url: "http://t/announce".into(),
            status: 503,
        };
        assert_eq!(
            e.to_string(),
            "tracker http://t/announce answered with HTTP status 503"
        );
        assert_eq!(e.url(), Some("http://t/announce"));
        let e = AnnounceError::Timeout {
            url: "udp://t:1".into(),
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            e.to_string(),
            "tracker udp://t:1 did not answer within 1.5 s"
        );
        assert_eq!(AnnounceError::NoTrackers.url(), None);
    }
}
