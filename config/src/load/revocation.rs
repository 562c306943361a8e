//! `[revocation]`: where revoked tokens are listed (see `RevocationSettings`).

use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::NamedFiles;

/// The source is the file when one is named, else the Redis store when `[store]` is one
/// (it needs no setting of its own), else none.
pub(super) fn parse(
    root: &DeTable<'_>,
    d: &RevocationSettings,
    store: Option<&StoreSettings>,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<RevocationSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "revocation", p);
    named.revocations_file = s.path("file", base, p);
    let file = named.revocations_file.clone();
    let max_staleness = s
        .duration(
            "max_staleness",
            Duration::from_secs(5),
            Duration::from_secs(7 * 24 * 3600),
            p,
        )
        .unwrap_or(d.max_staleness);
    let poll_interval = s
        .duration(
            "poll_interval",
            Duration::from_millis(10),
            Duration::from_secs(3600),
            p,
        )
        .unwrap_or(d.poll_interval);
    let poll_at = s.raw("poll_interval").map(|v| v.span().start);
    s.finish(p);
    // A file looked at less often than the staleness bound would read stale between looks.
    if file.is_some() && p.list.len() == before && poll_interval >= max_staleness {
        p.push(
            "revocation.poll_interval",
            poll_at,
            "must be shorter than revocation.max_staleness: the file is looked at less often \
             than the list may grow stale",
        );
    }
    let source = match (file, store) {
        (Some(path), _) => RevocationSource::File(path),
        (None, Some(StoreSettings::Redis(_))) => RevocationSource::Store,
        (None, _) => d.source.clone(),
    };
    (p.list.len() == before).then_some(RevocationSettings {
        source,
        max_staleness,
        poll_interval,
    })
}
