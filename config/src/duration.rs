//! Duration text (`30s`, `1h 30m`, `500ms`) read by humantime, guarded against its one panic.
//!
//! humantime 2.4 panics (`overflow in Duration::new`) instead of returning an error when the
//! terms add up to exactly `u64::MAX` seconds plus a whole second of fractions, as in
//! `18446744073709551615s 500ms 500ms`: a config value, or a CLI flag, would abort the process.
//! A text whose terms could come near that total is refused before humantime reads it; every
//! duration anything here accepts is smaller by many orders of magnitude.

use std::time::Duration;

/// Seconds per unit, as humantime counts them; a unit below a second counts as one (an upper
/// bound is all that is needed), and an unknown one as the largest (humantime refuses it).
fn unit_seconds(unit: &str) -> u128 {
    match unit {
        "nanos" | "nsec" | "ns" | "usec" | "us" | "µs" | "millis" | "msec" | "ms" | "seconds"
        | "second" | "secs" | "sec" | "s" => 1,
        "minutes" | "minute" | "min" | "mins" | "m" => 60,
        "hours" | "hour" | "hr" | "hrs" | "h" => 3_600,
        "days" | "day" | "d" => 86_400,
        "weeks" | "week" | "wk" | "wks" | "w" => 604_800,
        "months" | "month" | "M" => 2_630_016,
        _ => 31_557_600, // years, and anything else
    }
}

/// An upper bound of the seconds `text` stands for: each term's whole number, plus one for
/// any fraction, times its unit's seconds.
fn seconds_bound(text: &str) -> u128 {
    let mut total: u128 = 0;
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        rest = &rest[start..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        // Twenty digits and more are past u64 whatever the unit: saturate, never overflow.
        let whole: u128 = rest[..digits].parse().unwrap_or(u128::from(u64::MAX));
        rest = &rest[digits..];
        let mut term = whole;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(fraction.len());
            rest = &fraction[digits..];
            term = term.saturating_add(1);
        }
        let unit_start = rest.trim_start();
        let unit_len = unit_start
            .find(|c: char| !(c.is_ascii_alphabetic() || c == 'µ'))
            .unwrap_or(unit_start.len());
        let unit = &unit_start[..unit_len];
        rest = &unit_start[unit_len..];
        total = total.saturating_add(term.saturating_mul(unit_seconds(unit)));
    }
    total
}

/// The error of a duration past what a `Duration` holds: humantime's own words for it, which
/// the check above uses too, so a reader can tell "too large" from "not a duration".
pub(crate) const TOO_LARGE: &str = "number is too large";

/// Reads a duration as humantime does (`30s`, `1h 30m`, `1.5h`, `500ms`; `M` is months, `m`
/// minutes), refusing one past `u64::MAX` seconds with an error instead of a panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if seconds_bound(text) >= u128::from(u64::MAX) {
        return Err(TOO_LARGE.to_owned());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_that_made_humantime_panic_are_refused() {
        for text in [
            "18446744073709551615s 1000000000ns",
            "18446744073709551615s 500ms 500ms",
            "18446744073709551614s 1s 500ms 500ms",
            "9223372036854775807s 9223372036854775808s 500ms 500ms",
            "18446744073709551615s",
            "584542046091y",
            "99999999999999999999999999999999999999999999999999s",
        ] {
            assert_eq!(
                parse_duration(text),
                Err("number is too large".to_owned()),
                "{text}"
            );
        }
    }

    #[test]
    fn ordinary_durations_read_as_humantime_reads_them() {
        for text in [
            "30s",
            "1h 30m",
            "1.5h",
            "500ms",
            "2 min",
            "1M",
            "3660days",
            "600000000000ns",
            "1µs",
            "0s",
        ] {
            assert_eq!(
                parse_duration(text),
                humantime::parse_duration(text).map_err(|e| e.to_string()),
                "{text}"
            );
        }
        for text in ["", "5", "5 parsecs", "s", "-1s", "1..5s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }
}
