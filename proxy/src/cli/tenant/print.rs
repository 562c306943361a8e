//! How a binding, a change, the fleet's confirmation and a tenant's history are printed
//! (text, or JSON with `--json`).

use nexus_binding_store::{AuditEntry, Binding, BindingRecord};

use nexus_binding_store::redis_store::Confirmation;

pub(super) fn print_binding(b: &Binding, json: bool) {
    let r = b.to_record();
    if json {
        outln!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return;
    }
    outln!("{}  rev {}  {}", r.tenant_id, r.revision, routing(&r));
}

/// What a change did to a record, member by member (`plan team -> enterprise`), beside the
/// revision and time every change moves: the one-line summaries leave out the org, plan,
/// region and subscription, and an org change decides whose tokens are accepted.
pub(super) fn changed_members(old: &BindingRecord, new: &BindingRecord) -> Vec<String> {
    let as_map = |r: &BindingRecord| match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(old), as_map(new));
    let text = |v: Option<&serde_json::Value>| match v {
        None => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| !matches!(k.as_str(), "revision" | "updated_at"))
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| format!("{k} {} -> {}", text(old.get(k)), text(new.get(k))))
        .collect()
}

/// A record's status and where it routes, in one line: what `get`, `list` and `history`
/// show of it (a rebind of the API URL alone, or of the domains, shows too).
pub(super) fn routing(r: &BindingRecord) -> String {
    format!(
        "{}  {} -> {}{}{}",
        r.status,
        r.instance_id,
        r.instance_url,
        r.api_url
            .as_ref()
            .map(|a| format!("  api {a}"))
            .unwrap_or_default(),
        if r.domains.is_empty() {
            String::new()
        } else {
            format!("  domains {}", r.domains.join(","))
        },
    )
}

pub(super) fn print_confirmation(c: &Confirmation, json: bool) {
    if json {
        let doc = match c {
            Confirmation::Confirmed { id, revision } => {
                serde_json::json!({"confirmed": true, "history": id, "revision": revision})
            }
            Confirmation::NotNeeded { id, began } => {
                serde_json::json!({"confirmed": false, "history": id, "began": began})
            }
            Confirmation::NoHistory => serde_json::json!({"confirmed": false, "history": null}),
        };
        outln!("{doc}");
        return;
    }
    match c {
        Confirmation::Confirmed { id, revision } => outln!(
            "history {id}{} confirmed: replicas that kept the bindings of another history \
             rather than load it load Redis's table now, and unbind every tenant it does not hold",
            revision
                .map(|r| format!(" (at revision {r})"))
                .unwrap_or_default()
        ),
        Confirmation::NotNeeded { id, began } => {
            let how = match began.as_str() {
                "write" => "a write, and confirmed since",
                "new-history" => "a write with --start-new-history",
                "restore" => "a restore import",
                "before-ids" => "writes made before history ids were kept",
                _ => "a writer outside nexus-edge",
            };
            outln!("nothing to confirm: replicas follow Redis's history {id} as it is (begun by {how})");
        }
        Confirmation::NoHistory => outln!(
            "nothing to confirm: Redis names no history (no revision counter, or no write since \
             history ids were kept)"
        ),
    }
}

pub(super) fn print_history(entries: &[AuditEntry], json: bool) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(entries).unwrap_or_default()
        );
        return;
    }
    let show = |r: &Option<BindingRecord>| r.as_ref().map_or("-".to_owned(), routing);
    // Each value on its line: one written into Redis by hand could otherwise end the line and
    // forge an entry below it.
    use crate::cli::shown::one_line;
    for e in entries {
        outln!(
            "rev {}  {}  {}  {}{}\n    old: {}\n    new: {}",
            e.revision,
            one_line(&e.at),
            one_line(&e.actor),
            one_line(&e.op),
            e.reason
                .as_ref()
                .map(|r| format!("  ({})", one_line(r)))
                .unwrap_or_default(),
            one_line(&show(&e.old)),
            one_line(&show(&e.new)),
        );
        if let (Some(old), Some(new)) = (&e.old, &e.new) {
            let changed = changed_members(old, new);
            if !changed.is_empty() {
                outln!("    changed: {}", one_line(&changed.join(", ")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tenant::test_binding;

    #[test]
    fn history_names_every_member_a_change_moved() {
        let old = test_binding("acme", 3).to_record();
        let mut new = old.clone();
        new.revision = 4;
        new.identity_org_id = Some("org-evil".to_owned());
        new.plan = "enterprise".to_owned();
        new.domains = vec!["app.acme.test".to_owned()];
        assert_eq!(
            changed_members(&old, &new),
            [
                "domains - -> [\"app.acme.test\"]",
                "identity_org_id - -> org-evil",
                "plan team -> enterprise",
            ]
        );
        assert!(changed_members(&old, &old).is_empty());
    }
}
