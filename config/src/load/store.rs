//! `[store]`: the file store or the Redis store, and the settings of each.

use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use crate::reader::{Problems, Section};
use crate::settings::*;

use super::names::{check_key_prefix, check_replica_id};
use super::redis::{redis_endpoint, redis_tls};
use super::NamedFiles;

/// Every key of `[store]`, of either kind.
const STORE_KEYS: &[&str] = &[
    "kind",
    "path",
    "poll_interval",
    "url",
    "key_prefix",
    "snapshot_path",
    "reconcile_interval",
    "heartbeat_interval",
    "replica_id",
    "sentinel",
    "tls",
];

pub(super) fn parse(
    root: &DeTable<'_>,
    base: &Path,
    named: &mut NamedFiles,
    p: &mut Problems<'_>,
) -> Option<StoreSettings> {
    let before = p.list.len();
    let mut s = Section::open(root, "store", p);
    if !s.present() {
        p.push("store", None, "is required ([store] with kind and path)");
        return None;
    }
    let kind = s.required_string("kind", p);
    let result = match kind.as_ref().map(|(k, at)| (k.as_str(), *at)) {
        Some(("file", _)) => {
            let path = match s.raw("path") {
                Some(_) => s.path("path", base, p),
                None => {
                    p.push("store.path", None, "is required for kind = \"file\"");
                    None
                }
            };
            named.bindings_file.clone_from(&path);
            let poll_interval = s
                .duration(
                    "poll_interval",
                    Duration::from_millis(10),
                    Duration::from_secs(3600),
                    p,
                )
                .unwrap_or(Duration::from_secs(1));
            path.map(|path| {
                StoreSettings::File(FileStoreSettings {
                    path: Some(path),
                    poll_interval,
                })
            })
        }
        Some(("redis", _)) => {
            let endpoint = redis_endpoint(&mut s, p);
            let tls = redis_tls(&mut s, base, endpoint.as_ref(), p);
            let key_prefix = match s.string("key_prefix", p) {
                None => Some("nexus".to_owned()),
                Some((v, at)) => match check_key_prefix(&v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        p.push("store.key_prefix", Some(at), e);
                        None
                    }
                },
            };
            let snapshot_path = s.path("snapshot_path", base, p);
            let reconcile_interval = s
                .duration(
                    "reconcile_interval",
                    Duration::from_secs(1),
                    Duration::from_secs(86_400),
                    p,
                )
                .unwrap_or(Duration::from_secs(300));
            let heartbeat_interval = s
                .duration(
                    "heartbeat_interval",
                    Duration::from_millis(10),
                    Duration::from_secs(60),
                    p,
                )
                .unwrap_or(Duration::from_secs(2));
            let replica_id = match s.string("replica_id", p) {
                None => None,
                Some((v, at)) => match check_replica_id(&v) {
                    Ok(()) => Some(v),
                    Err(e) => {
                        p.push("store.replica_id", Some(at), e);
                        None
                    }
                },
            };
            endpoint.zip(key_prefix).map(|(endpoint, key_prefix)| {
                StoreSettings::Redis(RedisStoreSettings {
                    endpoint,
                    tls,
                    key_prefix,
                    snapshot_path,
                    reconcile_interval,
                    heartbeat_interval,
                    replica_id,
                })
            })
        }
        Some((other, at)) => {
            p.push(
                "store.kind",
                Some(at),
                format!("unknown store kind {other:?}; expected \"file\" or \"redis\""),
            );
            s.finish_unjudged();
            return None;
        }
        // Which keys belong depends on the kind: without one, a key of either kind is not
        // called unknown, and any other is (`knid = "file"` is the likely reason it is
        // missing).
        None => {
            s.allow(STORE_KEYS);
            s.finish(p);
            return None;
        }
    };
    s.finish(p);
    result.filter(|_| p.list.len() == before)
}
