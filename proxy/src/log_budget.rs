//! How many lines a second the router writes about single requests it refuses or fails.
//!
//! Every refused request used to write an `info` line: anyone sending bad requests at wire
//! speed wrote megabytes of log a second (disk, a collector's bill, the lines that matter
//! buried). Each reason now has its own allowance of `[log] request_lines_per_second`, so a
//! flood of one kind (unknown hosts, say) does not hide another (a tenant's instance
//! failing). Lines past it are counted, not written: `requests_total` still counts every
//! request, `log_lines_not_logged_total` counts what was left out, and the next line of that
//! reason says how many of its kind were skipped before it (`not_logged`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pingora_prometheus::prometheus;

use crate::errors::RejectReason;

/// One kind of line's allowance: a one-second window and the lines written in it, plus the
/// lines skipped since the last one written.
#[derive(Debug, Default)]
struct LineBudget {
    /// The window's second (since [`Allowances::epoch`]) in the high 32 bits, lines written
    /// in it in the low 32: one word, so one compare-and-swap moves both.
    window: AtomicU64,
    /// Lines skipped since the last one written.
    skipped: AtomicU64,
}

impl LineBudget {
    /// Whether a line may be written in second `now` with `per_second` allowed: `Some` with
    /// the lines skipped since the last one written, or `None` (counted as skipped).
    fn admit(&self, now: u32, per_second: u32) -> Option<u64> {
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (second, used) = ((current >> 32) as u32, current as u32);
            // A request that began a moment before another may log after it: its older
            // second counts in the newer window instead of starting an old one again.
            let next = if now > second {
                (u64::from(now) << 32) | 1
            } else if used < per_second {
                current + 1
            } else {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.skipped.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

/// `log_lines_not_logged_total`, one counter for the process: the request lines' allowances
/// and Pingora's ([`PingoraLines`], installed with the log subscriber before any metrics
/// exist) count into it. (`None` only if its fixed, valid name were ever refused.)
pub fn not_logged_total() -> Option<prometheus::IntCounter> {
    static COUNTER: std::sync::OnceLock<Option<prometheus::IntCounter>> =
        std::sync::OnceLock::new();
    COUNTER
        .get_or_init(|| {
            prometheus::IntCounter::new(
                "log_lines_not_logged_total",
                "Lines about single refused or failed requests left out of the log past \
                 log.request_lines_per_second, the router's and Pingora's (every request is \
                 still counted in requests_total)",
            )
            .ok()
        })
        .clone()
}

/// The Pingora modules whose warnings and errors are about single requests: a client's or an
/// instance's misstep (`Peer sent more data than expected`, data on an idle pooled
/// connection, a failed connect) writes one per request, at whatever rate a client sends or
/// an instance misbehaves. Each module has an allowance of `request_lines_per_second`, like
/// each reason of the router's own lines; Pingora's start-up and shutdown lines have none.
const PINGORA_REQUEST_TARGETS: [&str; 5] = [
    "pingora_proxy",
    "pingora_core::protocols",
    "pingora_core::connectors",
    "pingora_core::apps",
    "pingora_pool",
];

/// The allowances of Pingora's own lines about single requests (see
/// `PINGORA_REQUEST_TARGETS`). Lines past one are counted in [`not_logged_total`]; Pingora
/// writes them, so they cannot carry a `not_logged` field.
#[derive(Debug)]
pub struct PingoraLines(Allowances);

impl PingoraLines {
    /// Allowances of `per_second` lines per module; `skipped_total` counts lines left out.
    pub fn new(per_second: u32, skipped_total: Option<prometheus::IntCounter>) -> Self {
        Self(Allowances::new(
            per_second,
            PINGORA_REQUEST_TARGETS.len(),
            skipped_total,
        ))
    }

    /// Whether a warning or error line of Pingora's from `target` may be written now (lines
    /// of targets without an allowance always may).
    pub fn admit(&self, target: &str) -> bool {
        self.admit_at(target, Instant::now())
    }

    fn admit_at(&self, target: &str, now: Instant) -> bool {
        let Some(index) = PINGORA_REQUEST_TARGETS
            .iter()
            .position(|t| target.starts_with(t))
        else {
            return true;
        };
        self.0.admit(index, now).is_some()
    }
}

/// `per_second` lines a second for each of a number of kinds of line, and the counter of
/// lines they leave out: the allowances of the router's request lines and of Pingora's.
#[derive(Debug)]
struct Allowances {
    per_second: u32,
    epoch: Instant,
    lines: Box<[LineBudget]>,
    skipped_total: Option<prometheus::IntCounter>,
}

impl Allowances {
    fn new(per_second: u32, kinds: usize, skipped_total: Option<prometheus::IntCounter>) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            lines: (0..kinds).map(|_| LineBudget::default()).collect(),
            skipped_total,
        }
    }

    /// Whether a line of kind `kind` may be written at `now`: `Some(n)` with the `n` lines of
    /// its kind skipped since the last one written, or `None` (counted as skipped).
    fn admit(&self, kind: usize, now: Instant) -> Option<u64> {
        let second =
            u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX);
        let admitted = self.lines[kind].admit(second, self.per_second);
        if let (None, Some(skipped)) = (admitted, &self.skipped_total) {
            skipped.inc();
        }
        admitted
    }
}

/// A line about one request, by what it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestLine {
    /// The request was refused, or failed to be forwarded, for this reason.
    Reason(&'static str),
    /// A connect to one of an instance's addresses failed and another is tried.
    ConnectRetry,
    /// A request is sent again after its instance connection failed (a pooled one broke).
    UpstreamRetry,
    /// An instance's `Set-Cookie` that would reach other tenants' hosts was not passed on.
    SharedCookie,
    /// The router closed a tunnel whose tenant is no longer routed as it was opened.
    TunnelClosed,
    /// A request header that never became a request the router saw.
    Header(HeaderRefusal),
}

/// A request header refused before the router saw a request: by the client stream
/// ([`crate::connections`]) or by Pingora itself. Each has its own allowance: a slowloris
/// flood of 408s does not hide a scanner's 400s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderRefusal {
    /// Not complete within `[server] request_header_timeout` (408).
    Timeout,
    /// Going on past `[server] max_request_header_bytes` (431).
    TooLarge,
    /// Refused by Pingora's parser (400).
    Unparsable,
    /// A `CONNECT`, which Pingora refuses (405).
    Connect,
    /// Still arriving when a shutdown's wait for headers in progress ended (503).
    ShuttingDown,
}

impl HeaderRefusal {
    /// Every refusal, in the order of the variants.
    const ALL: [HeaderRefusal; 5] = [
        HeaderRefusal::Timeout,
        HeaderRefusal::TooLarge,
        HeaderRefusal::Unparsable,
        HeaderRefusal::Connect,
        HeaderRefusal::ShuttingDown,
    ];

    /// Closed log label: the `requests_total` outcome or metric that counts it too.
    pub fn label(self) -> &'static str {
        match self {
            HeaderRefusal::Timeout => "header_timeout",
            HeaderRefusal::TooLarge => "header_too_large",
            HeaderRefusal::Unparsable => "unparsable_request",
            HeaderRefusal::Connect => "connect_refused",
            HeaderRefusal::ShuttingDown => "shutting_down",
        }
    }

    /// The status the client was answered with.
    pub fn status(self) -> u16 {
        match self {
            HeaderRefusal::Timeout => 408,
            HeaderRefusal::TooLarge => 431,
            HeaderRefusal::Unparsable => 400,
            HeaderRefusal::Connect => 405,
            HeaderRefusal::ShuttingDown => 503,
        }
    }
}

/// The allowances of every kind of request line.
#[derive(Debug)]
pub struct LogBudgets {
    /// One per [`RejectReason::LABELS`], then [`RequestLine::ConnectRetry`],
    /// [`RequestLine::UpstreamRetry`], [`RequestLine::SharedCookie`],
    /// [`RequestLine::TunnelClosed`], one per [`HeaderRefusal`], and a label not in `LABELS`.
    allowances: Allowances,
}

impl LogBudgets {
    /// Allowances of `per_second` lines per kind; `skipped_total` counts lines left out.
    pub fn new(per_second: u32, skipped_total: prometheus::IntCounter) -> Self {
        Self {
            allowances: Allowances::new(per_second, Self::FALLBACK + 1, Some(skipped_total)),
        }
    }

    /// Runs `write` if `line`'s allowance admits a line now, with the lines of its kind left
    /// out since the last one written (`None` when there were none): the `not_logged` field
    /// of the line it writes. Counted by when the line is written, not when its request
    /// began: requests begun over many seconds that fail at one moment (an instance that
    /// stalls every upload it holds) would each open their own second's window.
    pub fn write(&self, line: RequestLine, write: impl FnOnce(Option<u64>)) {
        if let Some(skipped) = self.admit(line, Instant::now()) {
            write((skipped > 0).then_some(skipped));
        }
    }

    /// The allowance of a reason label not in `LABELS` (none is: a test of `errors` says so).
    const FALLBACK: usize = RejectReason::LABELS.len() + 4 + HeaderRefusal::ALL.len();

    /// Whether a line about `line` may be written at `now`: `Some(n)` with the `n` lines of
    /// its kind skipped since the last one written (to log with it), or `None`.
    fn admit(&self, line: RequestLine, now: Instant) -> Option<u64> {
        let index = match line {
            RequestLine::Reason(label) => RejectReason::LABELS
                .iter()
                .position(|l| *l == label)
                // Every label is in LABELS (a test of `errors` says so); one that were not
                // would get the last slot, shared with no other kind.
                .unwrap_or(Self::FALLBACK),
            RequestLine::ConnectRetry => RejectReason::LABELS.len(),
            RequestLine::UpstreamRetry => RejectReason::LABELS.len() + 1,
            RequestLine::SharedCookie => RejectReason::LABELS.len() + 2,
            RequestLine::TunnelClosed => RejectReason::LABELS.len() + 3,
            // `ALL` lists the variants in their order.
            RequestLine::Header(refusal) => RejectReason::LABELS.len() + 4 + refusal as usize,
        };
        self.allowances.admit(index, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_window_admits_its_allowance_then_counts_the_rest() {
        // (second, lines asked for, admitted, what the first admitted line reports skipped)
        let steps: [(u32, u32, u32, u64); 5] = [
            (0, 5, 3, 0),
            (0, 2, 0, 0),
            // A new second: its first line carries the 4 skipped in second 0.
            (1, 4, 3, 4),
            // An older second (a request that began earlier) counts in the newer window.
            (0, 1, 0, 0),
            (7, 1, 1, 2),
        ];
        let budget = LineBudget::default();
        for (second, asked, admitted, reported) in steps {
            let got: Vec<u64> = (0..asked).filter_map(|_| budget.admit(second, 3)).collect();
            assert_eq!(got.len() as u32, admitted, "second {second}");
            if let Some(first) = got.first() {
                assert_eq!(*first, reported, "second {second}");
                assert!(got[1..].iter().all(|n| *n == 0), "{got:?}");
            }
        }
    }

    #[test]
    fn each_reason_has_its_own_allowance_and_skips_are_counted() {
        let counter = prometheus::IntCounter::new("t", "t").unwrap();
        let budgets = LogBudgets::new(2, counter.clone());
        let now = budgets.allowances.epoch;
        let unknown = RequestLine::Reason(RejectReason::UnknownTenant.label());
        let invalid = RequestLine::Reason(RejectReason::MissingToken.label());
        let admitted = |line| {
            (0..5)
                .filter(|_| budgets.admit(line, now).is_some())
                .count()
        };
        assert_eq!(admitted(unknown), 2);
        // A flood of one reason leaves another's lines alone.
        assert_eq!(admitted(invalid), 2);
        assert_eq!(admitted(RequestLine::ConnectRetry), 2);
        assert_eq!(admitted(RequestLine::UpstreamRetry), 2);
        assert_eq!(admitted(RequestLine::SharedCookie), 2);
        assert_eq!(admitted(RequestLine::TunnelClosed), 2);
        for refusal in HeaderRefusal::ALL {
            assert_eq!(admitted(RequestLine::Header(refusal)), 2, "{refusal:?}");
        }
        assert_eq!(counter.get(), 33);
        let later = now + Duration::from_secs(1);
        assert_eq!(budgets.admit(unknown, later), Some(3));
    }

    #[test]
    fn concurrent_writers_never_exceed_the_allowance() {
        let budget = LineBudget::default();
        // (lines admitted, skips they reported) per thread.
        let (admitted, reported) = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let budget = &budget;
                    s.spawn(move || {
                        let got: Vec<u64> =
                            (0..10_000).filter_map(|_| budget.admit(9, 100)).collect();
                        (got.len(), got.iter().sum::<u64>())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |(a, r), (n, s)| (a + n, r + s))
        });
        assert_eq!(admitted, 100);
        // Every skipped line is reported once, by a line written after it was skipped: an
        // admitted line of the same window may report skips made while it was admitted.
        let last = budget.admit(10, 100).expect("a new window");
        assert_eq!(reported + last, 39_900);
    }
}
