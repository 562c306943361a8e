//! Logging: `tracing` for our code, with Pingora's `log` records bridged into it.

use nexus_config::{LogFormat, LogSettings};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The most verbose `log` record (Pingora's, rustls's, redis's) the bridge takes, for a filter
/// whose most verbose level is `hint`. It is the filter's level, so that every `debug!` inside
/// Pingora is not built and handed to the filter on the hot path only to be dropped; but never
/// `trace`. A `log` macro builds its message before any filter sees it, and one of Pingora's
/// trace lines unwraps an instance's response header as UTF-8: with `trace` on for any
/// target, an instance's Latin-1 header would panic the request's task.
fn bridged_level(hint: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match hint {
        Some(l) if l == LevelFilter::OFF => log::LevelFilter::Off,
        Some(l) if l >= LevelFilter::DEBUG => log::LevelFilter::Debug,
        Some(l) if l >= LevelFilter::INFO => log::LevelFilter::Info,
        Some(l) if l >= LevelFilter::WARN => log::LevelFilter::Warn,
        Some(_) => log::LevelFilter::Error,
        None => log::LevelFilter::Debug,
    }
}

/// Pingora's `log` lines given another level than Pingora's: (level, target, message, the
/// level they get). One: `failed to acquire reusable stream` is logged as an error when a
/// pooled instance connection is still held by Pingora's idle watch as a request takes it
/// (`Arc::try_unwrap` fails in `pingora_core::connectors`); Pingora then opens a new
/// connection and the request goes on. An error line with no failure behind it wakes whoever
/// alerts on errors; at `debug` it is there for an investigation, and
/// `instance_connections_total{how="new"}` counts the connection.
const RELEVELLED: [(log::Level, &str, &str, log::Level); 1] = [(
    log::Level::Error,
    "pingora_core::connectors",
    "failed to acquire reusable stream",
    log::Level::Debug,
)];

/// The `log` bridge: passes every record to `L` (the `LogTracer`), those of [`RELEVELLED`] at
/// their new level. Matched by their format string, which has no arguments: a line Pingora
/// rewords keeps its own level.
struct Relevelled<L>(L);

impl<L: log::Log> log::Log for Relevelled<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let relevel = RELEVELLED.iter().find(|(from, target, message, _)| {
            record.level() == *from
                && record.target() == *target
                && record.args().as_str() == Some(*message)
        });
        match relevel {
            Some(&(_, _, _, to)) => self.0.log(
                &log::Record::builder()
                    .level(to)
                    .target(record.target())
                    .args(*record.args())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
            None => self.0.log(record),
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set and not empty, overrides the
/// configured filter. A filter [`check_filter`] refuses is passed over for the next (the
/// configured one, then `info`), and a warning says so: a bare word that is not a level names
/// a target, so `warning` would silence every line, errors included. Calling it twice is
/// harmless (the second call does nothing).
pub fn init(settings: &LogSettings) {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    // The first usable of RUST_LOG, the configured filter and `info`; each refused one is
    // said once the subscriber is up.
    let mut refused = Vec::new();
    let candidates = [
        ("RUST_LOG", env.as_deref()),
        ("log.filter", Some(&settings.filter)),
    ];
    let mut chosen = "info";
    for (source, filter) in candidates {
        let Some(filter) = filter else { continue };
        match check_filter(filter) {
            Ok(()) => {
                chosen = filter;
                break;
            }
            Err(e) => refused.push((source, filter.to_owned(), e)),
        }
    }
    let filter = EnvFilter::new(chosen);
    // Pingora logs through `log`; without the bridge its messages would vanish.
    let bridge = Relevelled(tracing_log::LogTracer::new());
    if log::set_boxed_logger(Box::new(bridge)).is_ok() {
        log::set_max_level(bridged_level(filter.max_level_hint()));
    }
    // Colour only for a person at a terminal: escape codes in a log file or a collector's
    // stream break every search for `field=value`.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match settings.format {
        LogFormat::Text => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json()),
    };
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(filter)
        .with(PingoraRequestLines(crate::log_budget::PingoraLines::new(
            settings.request_lines_per_second,
            crate::log_budget::not_logged_total(),
        )))
        .with(ClientReadFailures)
        .with(MessageDumps)
        .try_init();
    crate::panics::install();
    for (source, filter, e) in refused {
        // `check` reads the config file, not the environment.
        let also = if source == "RUST_LOG" {
            ""
        } else {
            "; `nexus-edge check` refuses it"
        };
        tracing::warn!(filter = %filter, error = %e, using = chosen,
            "{source} is not a usable filter, so it is not used{also}");
    }
}

/// Drops the error lines Pingora writes when a client's connection fails (and its warning
/// for a request body an instance stopped reading, see [`CLIENT_FAILURE_LINES`]): it closed
/// mid-header, its header missed `request_header_timeout` or went on past
/// `max_request_header_bytes`, or it went away before an answer could be written. Those are
/// the client's doing, not the router's; one line per connection would let anyone fill the
/// log, and the ops listener's line even carries the request's query.
/// `request_header_timeouts_total` and `request_headers_too_large_total` count the stream's.
struct ClientReadFailures;

/// Pingora's lines for a client's failure: (level, target, start of the message). The ops
/// listener's read failure (a request header that does not parse) carries the raw request in
/// its context: credentials, cookies, the query. One more is about an instance: the body it
/// stopped reading (a write timeout), a line per request outside the log allowance (an
/// instance that stalls uploads wrote hundreds a second); the request's failure, or its
/// early answer, is the router's to say (`fail_to_proxy`), within the allowance.
const CLIENT_FAILURE_LINES: [(Level, &str, &str); 5] = [
    (Level::ERROR, "pingora_proxy", "Fail to proxy: Downstream"),
    (
        Level::ERROR,
        "pingora_proxy",
        "failed to send error response to downstream",
    ),
    (
        Level::ERROR,
        "pingora_core::apps::http_app",
        "HTTP server fails to read from downstream",
    ),
    (
        Level::ERROR,
        "pingora_core::apps::http_app",
        "HTTP server fails to write to downstream",
    ),
    (
        Level::WARN,
        "pingora_proxy::proxy_h1",
        "send error, draining read buf",
    ),
];

impl<S: Subscriber> Layer<S> for ClientReadFailures {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // Bridged `log` records carry their own target in a field; this reads it back.
        use tracing_log::NormalizeEvent;
        let Some(meta) = event.normalized_metadata() else {
            return true;
        };
        let ours = |(level, target, _): &(Level, &str, &str)| {
            meta.level() == level && meta.target() == *target
        };
        if !CLIENT_FAILURE_LINES.iter().any(ours) {
            return true;
        }
        let mut message = Message(None);
        event.record(&mut message);
        !message.0.is_some_and(|m| {
            CLIENT_FAILURE_LINES
                .iter()
                .any(|line| ours(line) && m.starts_with(line.2))
        })
    }
}

/// Holds Pingora's warnings and errors about single requests to an allowance a second per
/// module (see [`crate::log_budget::PingoraLines`]): an instance that sends bytes past each
/// response's end made Pingora write a warning per request, at the clients' rate. It sits
/// inside the layers that drop lines outright, so those use none of the allowance.
struct PingoraRequestLines(crate::log_budget::PingoraLines);

impl<S: Subscriber> Layer<S> for PingoraRequestLines {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        use tracing_log::NormalizeEvent;
        let Some(meta) = event.normalized_metadata() else {
            return true;
        };
        // Bridged records only (the router's own lines have their allowances), warnings and
        // errors only (Pingora's debug lines are for a live investigation).
        !event.is_log() || *meta.level() > Level::WARN || self.0.admit(meta.target())
    }
}

/// Drops Pingora's `debug` and `trace` lines from the modules that handle requests and
/// responses: many print a message whole (a request header with its `Authorization` and
/// `Cookie`, an instance's response header with its `Set-Cookie`, body bytes). A token must
/// never reach a log, and debug logging is what an operator turns on while a problem is live,
/// so those lines are not passed on at any filter. Pingora's other debug lines (connects,
/// pools, services) still are, and its `info` and above from every module.
struct MessageDumps;

/// The Pingora modules whose debug and trace lines may print a message whole.
const MESSAGE_DUMP_TARGETS: [&str; 3] = [
    "pingora_proxy",
    "pingora_core::protocols::http",
    "pingora_core::apps",
];

impl<S: Subscriber> Layer<S> for MessageDumps {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        use tracing_log::NormalizeEvent;
        let Some(meta) = event.normalized_metadata() else {
            return true;
        };
        *meta.level() < Level::DEBUG
            || !MESSAGE_DUMP_TARGETS
                .iter()
                .any(|t| meta.target().starts_with(t))
    }
}

/// An event's `message` field, as text.
struct Message(Option<String>);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Whether `filter` is a filter `init` uses (`check` refuses one it does not): it parses,
/// and one of its directives is a bare level, the level of every target not named. Without
/// one, every line of every other target is dropped, errors included: `warning` (a target
/// named `warning`) or `nexus_edge=debug` alone would silence Pingora's errors.
pub fn check_filter(filter: &str) -> Result<(), String> {
    let directives = filter.split(',').filter(|d| !d.is_empty());
    // `tracing` reads a directive with blanks around it wrongly: " info" is a target, and
    // " nexus_edge=debug" names the target " nexus_edg". Told before `tracing`'s own parse,
    // whose refusal of `info, nexus_edge=debug` never mentions the blank.
    if let Some(d) = directives.clone().find(|d| d.trim() != *d) {
        return Err(format!(
            "{filter:?} has blanks around the directive {d:?}, which the log filter would read \
             as part of a target's name; write the directives without spaces (e.g. \
             \"warn,nexus_edge=debug\")"
        ));
    }
    EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    // The parse `tracing` itself applies to a directive without `=`: a name or a number.
    let mut directives = directives;
    if directives.any(|d| d.parse::<tracing::level_filters::LevelFilter>().is_ok()) {
        return Ok(());
    }
    Err(format!(
        "{filter:?} sets no level for every target (a bare word that is not a level names a \
         target), so every other line would be dropped, errors included; add one of off, \
         error, warn, info, debug, trace (e.g. \"warn,nexus_edge=debug\")"
    ))
}

/// A Pingora error as the router logs it. Pingora's own display includes, for an instance
/// response header that does not parse, that header's raw bytes (`buf: ...`, up to kilobytes),
/// which can hold the instance's `Set-Cookie`: here they are replaced by their length.
pub struct LoggedError<'a>(pub &'a pingora::Error);

impl std::fmt::Display for LoggedError<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut e = self.0;
        write!(f, "{} {}", e.esource.as_str(), e.etype.as_str())?;
        loop {
            if let Some(c) = &e.context {
                match c.as_str().strip_prefix("buf: ") {
                    Some(raw) => write!(
                        f,
                        " context: the instance's unparsable response header ({} bytes, not logged)",
                        raw.len()
                    )?,
                    None => write!(f, " context: {c}")?,
                }
            }
            let Some(cause) = &e.cause else {
                return Ok(());
            };
            match cause.downcast_ref::<Box<pingora::Error>>() {
                Some(inner) => {
                    write!(
                        f,
                        " cause: {} {}",
                        inner.esource.as_str(),
                        inner.etype.as_str()
                    )?;
                    e = &**inner;
                }
                None => return write!(f, " cause: {cause}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        bridged_level, check_filter, ClientReadFailures, LoggedError, MessageDumps,
        PingoraRequestLines, Relevelled,
    };
    use pingora_prometheus::prometheus;

    #[test]
    fn a_filter_must_set_a_level_for_every_target() {
        for ok in [
            "info",
            "WARN",
            "warn,nexus_edge=debug",
            "nexus_edge=debug,error",
            "3",
            "off",
            "info,",
        ] {
            assert_eq!(check_filter(ok), Ok(()), "{ok}");
        }
        // A typo of a level is a target name; a filter of targets alone drops everyone else's
        // lines; an empty filter drops every line.
        for silent in [
            "warning",
            "inf",
            "",
            "nexus_edge=debug",
            "pingora=info,nexus_edge",
        ] {
            let e = check_filter(silent).expect_err(silent);
            assert!(
                e.contains("sets no level for every target"),
                "{silent}: {e}"
            );
        }
        // Blanks make a level a target name, and misread a target's name.
        for blank in [
            "pingora=warn, info",
            " info",
            "info ",
            "info, nexus_edge",
            "info, nexus_edge=debug",
        ] {
            let e = check_filter(blank).expect_err(blank);
            assert!(e.contains("has blanks around"), "{blank}: {e}");
        }
        assert!(check_filter("info,,=x[bad").is_err());
        assert!(check_filter(" ").is_err());
    }
    use pingora::{Error, ErrorType};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// A log writer into memory.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.extend_from_slice(buf);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the log shows of `records` (Pingora's `log` lines: target, level, message) with
    /// `filter` in the subscriber. Its verdicts are `event_enabled`'s, which hold for the whole
    /// subscriber wherever the layer sits.
    fn logged(
        filter: impl tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
        records: &[(&str, log::Level, &str)],
    ) -> String {
        let out = Capture::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for &(target, level, message) in records {
                let _ = tracing_log::format_trace(
                    &log::Record::builder()
                        .args(format_args!("{message}"))
                        .target(target)
                        .level(level)
                        .build(),
                );
            }
        });
        let text = out.0.lock().map(|v| v.clone()).unwrap_or_default();
        String::from_utf8(text).unwrap_or_default()
    }

    /// The records a `log` logger was given: (level, target, message).
    #[derive(Default)]
    struct Records(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Records {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, r: &log::Record<'_>) {
            if let Ok(mut v) = self.0.lock() {
                v.push((r.level(), r.target().to_owned(), r.args().to_string()));
            }
        }

        fn flush(&self) {}
    }

    #[test]
    fn through_the_bridge_the_pool_race_shows_at_debug_only() {
        use log::Log;
        let seen = |filter: &str| {
            let out = Capture::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new(filter))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(move || writer.clone()),
                );
            tracing::subscriber::with_default(subscriber, || {
                let bridge = Relevelled(tracing_log::LogTracer::new());
                for message in [
                    format_args!("failed to acquire reusable stream"),
                    format_args!("connect refused"),
                ] {
                    bridge.log(
                        &log::Record::builder()
                            .level(log::Level::Error)
                            .target("pingora_core::connectors")
                            .args(message)
                            .build(),
                    );
                }
            });
            let text = out.0.lock().map(|v| v.clone()).unwrap_or_default();
            String::from_utf8(text).unwrap_or_default()
        };
        let info = seen("info");
        assert!(!info.contains("reusable stream"), "{info}");
        assert!(
            info.contains("ERROR") && info.contains("connect refused"),
            "{info}"
        );
        let debug = seen("debug");
        assert!(
            debug.contains("DEBUG") && debug.contains("failed to acquire reusable stream"),
            "{debug}"
        );
    }

    #[test]
    fn pingoras_benign_pool_race_is_a_debug_line_and_nothing_else_moves() {
        use log::Level::{Debug, Error, Warn};
        use log::Log;
        let bridge = Relevelled(Records::default());
        let race = "failed to acquire reusable stream";
        let conn = "pingora_core::connectors";
        let peer = "peer 10.0.0.1:80";
        for (level, target, args) in [
            (
                Error,
                conn,
                format_args!("failed to acquire reusable stream"),
            ),
            (
                Error,
                conn,
                format_args!("failed to acquire reusable stream: {peer}"),
            ),
            (
                Warn,
                conn,
                format_args!("failed to acquire reusable stream"),
            ),
            (
                Error,
                "pingora_proxy",
                format_args!("failed to acquire reusable stream"),
            ),
            (Error, conn, format_args!("connect refused")),
        ] {
            bridge.log(
                &log::Record::builder()
                    .level(level)
                    .target(target)
                    .args(args)
                    .build(),
            );
        }
        let seen = bridge.0 .0.lock().expect("records").clone();
        let seen: Vec<(log::Level, &str, &str)> = seen
            .iter()
            .map(|(l, t, m)| (*l, t.as_str(), m.as_str()))
            .collect();
        let reworded = format!("{race}: {peer}");
        assert_eq!(
            seen,
            [
                (Debug, conn, race),
                (Error, conn, reworded.as_str()),
                (Warn, conn, race),
                (Error, "pingora_proxy", race),
                (Error, conn, "connect refused"),
            ]
        );
    }

    #[test]
    fn pingoras_lines_for_a_failing_client_are_dropped_and_no_others() {
        let records = [
            ("pingora_proxy", log::Level::Error, "Fail to proxy: Downstream ReadError (dropped)"),
            ("pingora_proxy", log::Level::Error, "failed to send error response to downstream: reset (dropped)"),
            (
                "pingora_core::apps::http_app",
                log::Level::Error,
                "HTTP server fails to write to downstream: reset, GET /metrics?token=secret (dropped)",
            ),
            ("pingora_proxy", log::Level::Error, "Fail to proxy: Upstream ConnectRefused (kept)"),
            (
                "pingora_proxy::proxy_h1",
                log::Level::Warn,
                "send error, draining read buf: Upstream WriteTimedout (dropped)",
            ),
            ("pingora_proxy::proxy_h1", log::Level::Warn, "another warning (kept)"),
            ("pingora_core::server", log::Level::Info, "Server starting (kept)"),
            ("other", log::Level::Error, "Fail to proxy: Downstream, another target (kept)"),
        ];
        let text = logged(ClientReadFailures, &records);
        assert_eq!(text.matches("(kept)").count(), 4, "{text}");
        assert!(!text.contains("(dropped)"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn pingoras_warnings_about_single_requests_are_held_to_an_allowance_per_module() {
        use log::Level::{Error, Info, Warn};
        let body = "pingora_core::protocols::http::v1::body";
        let extra = "Peer sent more data than expected: extra 5 bytes (body)";
        let mut records = vec![(body, Warn, extra); 5];
        records.extend([("pingora_proxy::proxy_h1", Error, "Fail to proxy (proxy)"); 3]);
        records.extend([
            // No allowance: another level, Pingora's start-up, another crate.
            (body, Info, "info (free)"),
            ("pingora_core::server", Warn, "server (free)"),
            ("other", Warn, "other (free)"),
        ]);
        let counter = prometheus::IntCounter::new("t", "t").expect("counter");
        let lines = crate::log_budget::PingoraLines::new(2, Some(counter.clone()));
        let text = logged(PingoraRequestLines(lines), &records);
        assert_eq!(text.matches("(body)").count(), 2, "{text}");
        assert_eq!(text.matches("(proxy)").count(), 2, "{text}");
        assert_eq!(text.matches("(free)").count(), 3, "{text}");
        assert_eq!(counter.get(), 4);
    }

    #[test]
    fn the_bridge_takes_the_filters_level_but_never_trace() {
        use tracing::level_filters::LevelFilter;
        for (hint, bridged) in [
            (Some(LevelFilter::TRACE), log::LevelFilter::Debug),
            (None, log::LevelFilter::Debug),
            (Some(LevelFilter::DEBUG), log::LevelFilter::Debug),
            (Some(LevelFilter::INFO), log::LevelFilter::Info),
            (Some(LevelFilter::WARN), log::LevelFilter::Warn),
            (Some(LevelFilter::ERROR), log::LevelFilter::Error),
            (Some(LevelFilter::OFF), log::LevelFilter::Off),
        ] {
            assert_eq!(bridged_level(hint), bridged, "{hint:?}");
        }
    }

    #[test]
    fn pingoras_message_dumps_are_dropped_below_info_and_its_other_lines_kept() {
        use log::Level::{Debug, Error, Info, Trace, Warn};
        let records = [
            // The modules that print messages whole: debug and trace dropped...
            (
                "pingora_proxy",
                Debug,
                "Sending header to upstream Authorization: Bearer secret (dropped)",
            ),
            (
                "pingora_proxy::proxy_h1",
                Trace,
                "cookie: sid=secret (dropped)",
            ),
            (
                "pingora_core::protocols::http::v1::server",
                Trace,
                "set-cookie: secret (dropped)",
            ),
            (
                "pingora_core::protocols::http::v1::client",
                Debug,
                "req header secret (dropped)",
            ),
            ("pingora_core::apps::http_app", Debug, "secret (dropped)"),
            // ...info, warn and error kept.
            ("pingora_proxy", Info, "info (kept)"),
            ("pingora_proxy", Warn, "warn (kept)"),
            ("pingora_proxy", Error, "error (kept)"),
            (
                "pingora_core::protocols::http::v1::client",
                Warn,
                "warn (kept)",
            ),
            ("pingora_core::apps::http_app", Error, "error (kept)"),
            // Other modules' debug and trace lines kept.
            (
                "pingora_core::connectors::l4",
                Debug,
                "connected to new server (kept)",
            ),
            ("pingora_pool::connection", Trace, "pool (kept)"),
            ("nexus_edge::service", Debug, "ours (kept)"),
        ];
        let text = logged(MessageDumps, &records);
        assert_eq!(text.matches("(kept)").count(), 8, "{text}");
        assert!(!text.contains("(dropped)"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn an_instance_response_header_is_not_logged() {
        let e = Error::because(
            ErrorType::InvalidHTTPHeader,
            "buf: HTTP/1.1 200 OK\\r\\nset-cookie: sid=secret\\r\\nbad",
            Error::new(ErrorType::InvalidHTTPHeader),
        );
        let logged = LoggedError(&e).to_string();
        assert!(!logged.contains("secret"), "{logged}");
        assert!(logged.contains("InvalidHTTPHeader"), "{logged}");
        assert!(logged.contains("bytes, not logged"), "{logged}");
        // Other contexts are kept as they are.
        let e = Error::explain(ErrorType::ConnectTimedout, "connecting to 10.0.0.1:80");
        assert!(LoggedError(&e)
            .to_string()
            .contains("context: connecting to 10.0.0.1:80"));
    }
}
