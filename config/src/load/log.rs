//! `[log]`: format, filter, and the allowance of request lines per second.

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::NamedFiles;

pub(super) fn parse(
    root: &DeTable<'_>,
    d: &LogSettings,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<LogSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "log", p);
    let filter = s
        .string("filter", p)
        .map_or_else(|| d.filter.clone(), |(v, _)| v);
    named.log_filter = Some(filter.clone());
    let format = s
        .choice(
            "format",
            "a log format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            p,
        )
        .unwrap_or(d.format);
    let request_lines_per_second = s
        .integer("request_lines_per_second", 1, 1_000_000, p)
        .map_or(d.request_lines_per_second, |n| n as u32);
    s.finish(p);
    (p.list.len() == before).then_some(LogSettings {
        filter,
        format,
        request_lines_per_second,
    })
}
