//! Loading a set of binding records (a bindings file, a snapshot, a full reconcile).
//!
//! Each record is validated on its own: a bad record is refused and named (position, tenant,
//! every field problem) and the others load. Only a document that is not a bindings document
//! at all is an error for the whole set.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldErrors;
use crate::json::{is_array_text, shown_name, without_bom, Checked};
use crate::model::{Binding, BindingRecord, Interner, TenantId};
use crate::table::BindingTable;

/// Format tag of a bindings file.
pub const BINDINGS_FORMAT: &str = "nexus-edge.bindings/v1";

/// The largest bindings document read whole (a file store's file, one given to `check` or
/// `tenant import`, a replica's snapshot): far past a million bindings, and a bound on what
/// one file can make a process allocate. Past it the file is refused unread.
pub const MAX_BINDINGS_FILE_BYTES: u64 = 1 << 30;

/// One refused record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProblem {
    /// Position in the document.
    pub index: usize,
    /// Tenant id, when it could be read.
    pub tenant: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = brief(&self.message);
        match &self.tenant {
            Some(t) => write!(
                f,
                "record {} (tenant {:?}): {message}",
                self.index,
                brief(t)
            ),
            None => write!(f, "record {}: {message}", self.index),
        }
    }
}

/// A refusal's text for a log line, cut short: a field error quotes the value, and a record
/// (in a file, or in Redis) can hold megabytes. Long enough for every field error of a
/// record with a few (each quotes at most 80 characters of its value).
pub(crate) fn brief(problem: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 1000;
    if problem.len() <= MAX {
        return problem.into();
    }
    let mut end = MAX;
    while !problem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &problem[..end], problem.len()).into()
}

/// The outcome of reading a document: the valid bindings and the refused records.
#[derive(Debug, Default)]
pub struct ParsedRecords {
    /// Valid bindings.
    pub bindings: Vec<Arc<Binding>>,
    /// Refused records, named.
    pub problems: Vec<RecordProblem>,
    /// The document's top-level `revision`: the highest a file store's writer has issued.
    /// Only a file written by `nexus-edge tenant ...` has one.
    pub revision: Option<u64>,
    /// The document's top-level `history`: the id of the Redis store history an export was
    /// taken from. Revisions of two histories cannot be compared (a restore counts again from
    /// its snapshot), so an import checks it against the store's.
    pub history: Option<String>,
}

impl RecordProblem {
    /// The tenant the refused record is surely about: its `tenant_id` read as a canonical id.
    /// `None` for a record that could be any tenant's (no id, or one not canonical).
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.tenant.as_deref().and_then(|t| TenantId::parse(t).ok())
    }
}

/// A bindings document's top-level keys: [`Document`]'s fields. Any other key is refused,
/// as in the config (a misspelt `"revison"` must not pass unseen), by this module's reader
/// and by the file store's writer alike.
pub const DOCUMENT_KEYS: [&str; 4] = ["format", "revision", "history", "bindings"];

/// The file layout: `{"format": "nexus-edge.bindings/v1", "bindings": [...]}`. A file store's
/// own file also carries `"revision"`, the highest it has issued (not needed to read it); an
/// export of a Redis store carries `"history"`, the id of the store's history its revisions
/// count in (see [`ParsedRecords::history`]). Its fields are [`DOCUMENT_KEYS`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<String>,
    bindings: Vec<Checked>,
}

/// Validates one JSON value as a binding record.
pub fn parse_record(value: &Value) -> Result<Binding, (Option<String>, String)> {
    parse_record_with(value, &mut Interner::default())
}

/// Like [`parse_record`], sharing equal URLs and ids across a load through `interner`.
pub fn parse_record_with(
    value: &Value,
    interner: &mut Interner,
) -> Result<Binding, (Option<String>, String)> {
    let kind = match value {
        Value::Object(_) => None,
        Value::Null => Some("null"),
        Value::Bool(_) => Some("a boolean"),
        Value::Number(_) => Some("a number"),
        Value::String(_) => Some("a string"),
        Value::Array(_) => Some("an array"),
    };
    if let Some(kind) = kind {
        return Err((
            None,
            format!("a binding record is a JSON object, not {kind}"),
        ));
    }
    let tenant = value
        .get("tenant_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Every missing member at once: the reader would otherwise learn them one refusal at a
    // time.
    let missing: Vec<&str> = REQUIRED_MEMBERS
        .into_iter()
        .filter(|m| value.get(m).is_none())
        .collect();
    if !missing.is_empty() {
        // A misspelt member is often why one is missing: both are named.
        let unknown: Vec<&str> = value
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .map(String::as_str)
            .filter(|k| !REQUIRED_MEMBERS.contains(k) && !OPTIONAL_MEMBERS.contains(k))
            .collect();
        let unknown = if unknown.is_empty() {
            String::new()
        } else {
            format!("; unknown member(s) {}", unknown.join(", "))
        };
        return Err((
            tenant,
            format!("missing member(s) {}{unknown}", missing.join(", ")),
        ));
    }
    // Every member of the wrong type, and every unknown one, at once and by name: serde's
    // reader stops at the first, and names no member ("invalid type: integer `5`, expected a
    // string").
    let wrong: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| member_problem(name, v))
        .collect();
    if !wrong.is_empty() {
        return Err((tenant, wrong.join("; ")));
    }
    let record: BindingRecord =
        serde_json::from_value(value.clone()).map_err(|e| (tenant.clone(), e.to_string()))?;
    Binding::from_record_with(&record, interner)
        .map_err(|errs| (tenant, FieldErrors(&errs).to_string()))
}

/// What is wrong with a record's member `name` as JSON, before its value is read: unknown,
/// or of a type its field cannot hold. `None` when its type is right.
fn member_problem(name: &str, value: &Value) -> Option<String> {
    let (ok, wanted) = match name {
        _ if REQUIRED_MEMBERS.contains(&name) => (value.is_string(), "a string"),
        "domains" => (
            value
                .as_array()
                .is_some_and(|all| all.iter().all(Value::is_string)),
            "a list of domain names",
        ),
        "revision" => (value.as_u64().is_some(), "a whole number from 0"),
        // The other optional members are text, left out or `null` (the member lists' test
        // parses a record with every member set).
        // `null` here would drop the org check: left out for none.
        "identity_org_id" => (
            value.is_string(),
            "a string (left out when the tenant has no org)",
        ),
        _ if OPTIONAL_MEMBERS.contains(&name) => (value.is_string() || value.is_null(), "a string"),
        _ => return Some(format!("unknown member {}", shown_name(name))),
    };
    let found = match value {
        Value::Array(all) => match all.iter().find(|v| !v.is_string()) {
            Some(v) => format!("a list holding {}", json_kind(v)),
            None => "a list".to_owned(),
        },
        v => json_kind(v),
    };
    (!ok).then(|| format!("{name}: must be {wanted}, not {found}"))
}

/// A JSON value as a refusal names it: a number or boolean as it is, anything else by its
/// kind (a string or a list can be megabytes).
fn json_kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The members every binding record must have (the others may be left out).
const REQUIRED_MEMBERS: [&str; 7] = [
    "tenant_id",
    "subscription_id",
    "instance_id",
    "instance_url",
    "status",
    "plan",
    "region",
];

/// The members a binding record may leave out.
const OPTIONAL_MEMBERS: [&str; 6] = [
    "api_url",
    "identity_org_id",
    "domains",
    "revision",
    "updated_at",
    "mode",
];

/// Parses a bindings document. `Err` means the document as a whole is unusable.
pub fn parse_records(json: &[u8]) -> Result<ParsedRecords, String> {
    let not_one = |why: &dyn fmt::Display| {
        format!("not a bindings document ({{\"format\": \"{BINDINGS_FORMAT}\", \"bindings\": [...]}}): {why}")
    };
    let json = without_bom(json);
    if is_array_text(json) {
        return Err(not_one(&"the document is a JSON array, not an object"));
    }
    let doc: Document = serde_json::from_slice(json).map_err(|e| not_one(&e))?;
    if doc.format != BINDINGS_FORMAT {
        return Err(format!(
            "format is {:?}, expected {BINDINGS_FORMAT:?}",
            doc.format
        ));
    }
    let mut out = ParsedRecords {
        revision: doc.revision,
        history: doc.history,
        ..ParsedRecords::default()
    };
    let mut interner = Interner::default();
    let mut good = Vec::with_capacity(doc.bindings.len());
    for (index, record) in doc.bindings.iter().enumerate() {
        if let Some(name) = record.repeated.first() {
            // Which tenant a repeated `tenant_id` names is the very doubt: none.
            let tenant = (!record.repeated.iter().any(|n| n == "tenant_id"))
                .then(|| record.value.get("tenant_id").and_then(Value::as_str))
                .flatten();
            out.problems.push(RecordProblem {
                index,
                tenant: tenant.map(str::to_owned),
                message: format!(
                    "member name {} appears twice in one object, so which of its values is \
                     meant is unclear",
                    shown_name(name)
                ),
            });
            continue;
        }
        match parse_record_with(&record.value, &mut interner) {
            Ok(b) => good.push((index, Arc::new(b))),
            Err((tenant, message)) => out.problems.push(RecordProblem {
                index,
                tenant,
                message,
            }),
        }
    }
    // A tenant listed twice has no one record to trust: every one of its records is refused.
    let mut at: HashMap<TenantId, Vec<usize>> = HashMap::new();
    for (index, b) in &good {
        at.entry(b.tenant_id.clone()).or_default().push(*index);
    }
    for p in &out.problems {
        if let Some(t) = p.tenant_id() {
            at.entry(t).or_default().push(p.index);
        }
    }
    at.retain(|_, places| places.len() > 1);
    for (index, b) in good {
        match at.get(&b.tenant_id) {
            None => out.bindings.push(b),
            Some(places) => out.problems.push(RecordProblem {
                index,
                tenant: Some(b.tenant_id.to_string()),
                message: format!("tenant listed more than once (records {places:?})"),
            }),
        }
    }
    out.problems.sort_by_key(|p| p.index);
    Ok(out)
}

/// Owned copies of `bindings`, sorted by tenant id: what `tenant list` shows for any store.
pub fn sorted_by_tenant(bindings: &[Arc<Binding>]) -> Vec<Binding> {
    let mut out: Vec<Binding> = bindings.iter().map(|b| b.as_ref().clone()).collect();
    out.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    out
}

/// Serialises bindings as a bindings document (sorted by tenant, pretty-printed), naming the
/// store `history` they were read from when there is one (a Redis store's export).
pub fn to_document<'a>(
    bindings: impl IntoIterator<Item = &'a Binding>,
    history: Option<&str>,
) -> String {
    let mut records: Vec<BindingRecord> = bindings.into_iter().map(Binding::to_record).collect();
    records.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    let mut doc = serde_json::json!({ "format": BINDINGS_FORMAT, "bindings": records });
    if let Some(history) = history {
        doc["history"] = serde_json::json!(history);
    }
    format!("{doc:#}\n")
}

/// Custom domains that more than one loaded record claims, with their claimants. Admin
/// writes never make one (they refuse the second claim); an outside writer, or a file given
/// to `tenant import`, can.
pub fn contested_domains(bindings: &[Arc<Binding>]) -> Vec<(String, Vec<TenantId>)> {
    let mut claims: std::collections::BTreeMap<&str, Vec<TenantId>> = Default::default();
    for b in bindings {
        for d in &b.domains {
            claims
                .entry(d.as_str())
                .or_default()
                .push(b.tenant_id.clone());
        }
    }
    claims
        .into_iter()
        .filter(|(_, tenants)| tenants.len() > 1)
        .map(|(d, tenants)| (d.to_owned(), tenants))
        .collect()
}

/// What a store's domain index says of the custom domains looked up in it: the tenant it
/// gives each (`None`: no tenant). Every write through the schema keeps the index, so it
/// outranks a served binding put back for a refused record, which may be an old snapshot's.
pub(crate) type DomainIndex = HashMap<String, Option<String>>;

/// Whether settling logs what it decides. A store that settles again once it has asked its
/// index about more domains settles its earlier passes quietly: their verdicts may be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdicts {
    /// Each refused claim and each trimmed binding is logged.
    Logged,
    /// Nothing is logged.
    Quiet,
}

/// `b`, a served binding put back for a refused record, without the custom domains `index`
/// gives another tenant or none; `b` itself when it keeps all, or when the store has no
/// index. A domain not looked up (a later round's, or a lookup that failed) is kept, as before
/// the index was asked. Without this a replica started from an old snapshot would
/// hand a tenant whose record is damaged a domain it has released since.
pub(crate) fn confirmed_by_index(
    b: Arc<Binding>,
    index: Option<&DomainIndex>,
    origin: &str,
    verdicts: Verdicts,
) -> Arc<Binding> {
    let Some(index) = index else { return b };
    let given = |d: &str| {
        index
            .get(d)
            .is_none_or(|o| o.as_deref() == Some(b.tenant_id.as_str()))
    };
    if b.domains.iter().all(|d| given(d.as_str())) {
        return b;
    }
    let mut trimmed = b.as_ref().clone();
    trimmed.domains.retain(|d| given(d.as_str()));
    let dropped: Vec<&str> = b
        .domains
        .iter()
        .map(|d| d.as_str())
        .filter(|d| !given(d))
        .collect();
    if verdicts == Verdicts::Logged {
        tracing::warn!(store = origin, tenant = %b.tenant_id, domains = ?dropped,
            "the tenant's last good binding is kept without custom domains the domain index no longer gives it");
    }
    Arc::new(trimmed)
}

/// The records of `loaded` that did not end up in `table`: refused while settling contested
/// domains or by the table build (the table holds the very `Arc`s it took).
pub(crate) fn not_taken<'a>(
    loaded: &'a [Arc<Binding>],
    table: &'a BindingTable,
) -> impl Iterator<Item = &'a Arc<Binding>> + 'a {
    loaded.iter().filter(|b| {
        !table
            .get(b.tenant_id.as_str())
            .is_some_and(|t| Arc::ptr_eq(t, b))
    })
}

/// Settles domains claimed twice (see [`contested_domains`]) without handing one to a
/// newcomer or unbinding a tenant by revision order: the tenant that holds it in the served
/// table keeps it while its record holds it too; else the one the store's domain index names
/// (`index`, as far as it was asked; a store without one passes none); else the
/// served holder even with its record refused; else nobody. A served binding kept for a
/// refused record may be an old snapshot's, so the index, which every write through the
/// schema keeps, outranks it. Every other claimant's record is refused: that tenant keeps its
/// served binding, or stays unbound, as with any refused record. `origin` names the store in
/// the log. (The index owner does not win where its own record loses another domain in the
/// same round: its served binding, put back instead, does not hold this one.)
///
/// A served binding put back for a refused record can claim a domain again: B's old record
/// still holds the domain C's new one now claims. So settling goes on, round by round, until
/// no domain is claimed twice. A put-back binding that loses a domain is kept without it: its
/// tenant stays bound, and a domain its last good record held does not outrank the record
/// that holds it now. Each round puts back or trims at least one binding, so it ends.
///
/// `put_back` names the tenants whose binding in `bindings` is a served one put back for a
/// refused record. A store with a domain index passes what it says of the contested domains
/// and of those of every binding that may be put back (see [`confirmed_by_index`]); a domain
/// it was not asked about has no owner and is kept by a put-back binding.
pub(crate) fn settle_contested(
    bindings: Vec<Arc<Binding>>,
    contested: &[(String, Vec<TenantId>)],
    served: Option<&BindingTable>,
    mut put_back: HashSet<TenantId>,
    index: Option<&DomainIndex>,
    origin: &str,
    verdicts: Verdicts,
) -> (Vec<Arc<Binding>>, HashSet<TenantId>) {
    // `put_back` grows with every tenant put back here: those lose domains rather than come
    // back whole. It is returned, so a caller can ask its index about their domains and
    // settle again.
    let round = Round {
        served,
        index,
        origin,
        verdicts,
    };
    let mut kept = round.settle(bindings, contested, &mut put_back);
    // The bound only guards the argument above; a table built from what is left refuses any
    // claim still doubled, as before.
    for _ in 0..kept.len() {
        let again = contested_domains(&kept);
        if again.is_empty() {
            break;
        }
        kept = round.settle(kept, &again, &mut put_back);
    }
    (kept, put_back)
}

/// One contested domain in a round: the domain, its claimants, the winner and the put-back
/// holder to fall back on.
type Contest<'a> = (&'a str, &'a [TenantId], Option<&'a str>, Option<&'a str>);

/// What every round of [`settle_contested`] decides by.
struct Round<'a> {
    served: Option<&'a BindingTable>,
    index: Option<&'a DomainIndex>,
    origin: &'a str,
    verdicts: Verdicts,
}

impl Round<'_> {
    /// One round of [`settle_contested`].
    fn settle(
        &self,
        bindings: Vec<Arc<Binding>>,
        contested: &[(String, Vec<TenantId>)],
        put_back: &mut HashSet<TenantId>,
    ) -> Vec<Arc<Binding>> {
        let Round {
            served,
            index,
            origin,
            verdicts,
        } = *self;
        let logged = verdicts == Verdicts::Logged;
        // Who keeps each domain, and the put-back holder to fall back on.
        let mut decided: Vec<Contest<'_>> = Vec::new();
        for (domain, claimants) in contested {
            let holder = served
                .and_then(|t| t.tenant_for_domain(domain))
                .filter(|t| claimants.contains(t));
            let owner = index
                .and_then(|i| i.get(domain.as_str()))
                .and_then(|o| o.as_deref())
                .filter(|o| claimants.iter().any(|c| c.as_str() == *o));
            let winner = match holder {
                Some(h) if !put_back.contains(h) => Some(h.as_str()),
                _ => owner.or(holder.map(TenantId::as_str)),
            };
            let fallback = holder
                .filter(|h| put_back.contains(*h))
                .map(TenantId::as_str);
            decided.push((domain, claimants, winner, fallback));
        }
        // A winner that loses another domain this round has its record replaced by its served
        // binding, which does not hold this domain (the holder does): the domain stays with its
        // put-back holder then, rather than go dark.
        let replaced: HashSet<&str> = decided
            .iter()
            .flat_map(|(_, claimants, winner, _)| {
                claimants
                    .iter()
                    .filter(|c| !put_back.contains(*c))
                    .map(TenantId::as_str)
                    .filter(move |c| Some(*c) != *winner)
            })
            .collect();
        // Each losing tenant, with the domains it lost; and those that lost one to a winner.
        let mut losers: BTreeMap<&TenantId, Vec<&str>> = BTreeMap::new();
        let mut outclaimed: HashSet<&TenantId> = HashSet::new();
        for (domain, claimants, winner, fallback) in decided {
            let winner = match winner {
                Some(w) if replaced.contains(w) => fallback,
                w => w,
            };
            if winner.is_none() && served.is_none() && logged {
                tracing::warn!(
                    store = origin,
                    domain = %domain,
                    tenants = ?claimants.iter().map(TenantId::as_str).collect::<Vec<_>>(),
                    "custom domain claimed by more than one record, and no table is served yet to tell which holds it: each tenant is served without it, and it reaches nobody until one record lets it go"
                );
            }
            for c in claimants.iter().filter(|c| Some(c.as_str()) != winner) {
                if winner.is_some() {
                    outclaimed.insert(c);
                }
                if winner.is_none() && served.is_none() {
                    losers.entry(c).or_default().push(domain);
                    continue;
                }
                if logged && crate::record_lines::admit() {
                    tracing::warn!(
                        store = origin,
                        domain = %domain,
                        tenant = %c,
                        kept_by = winner.unwrap_or("nobody"),
                        "binding record refused: its custom domain is claimed by another record too; the tenant keeps its last good binding"
                    );
                }
                losers.entry(c).or_default().push(domain);
            }
        }
        let mut kept = Vec::with_capacity(bindings.len());
        let mut back = Vec::new();
        for b in bindings {
            let Some(lost) = losers.get(&b.tenant_id) else {
                kept.push(b);
                continue;
            };
            if put_back.contains(&b.tenant_id) {
                // Already the tenant's served binding: kept, without the domains it lost.
                let mut trimmed = b.as_ref().clone();
                trimmed.domains.retain(|d| !lost.contains(&d.as_str()));
                if logged {
                    tracing::warn!(store = origin, tenant = %b.tenant_id, domains = ?lost,
                        "the tenant's last good binding is kept without custom domains another record holds now");
                }
                back.push(Arc::new(trimmed));
            } else if let Some(old) = served.and_then(|t| t.get(b.tenant_id.as_str())) {
                put_back.insert(b.tenant_id.clone());
                back.push(confirmed_by_index(Arc::clone(old), index, origin, verdicts));
            } else if served.is_none() && !outclaimed.contains(&b.tenant_id) {
                // The first load, and no claimant of these domains can be told from the
                // others: with no binding to keep, refusing them all would leave every
                // claimant unbound, so a restart would turn one bad edit into an outage for
                // the tenant that rightly holds the domain. Each is served without them.
                let mut trimmed = b.as_ref().clone();
                trimmed.domains.retain(|d| !lost.contains(&d.as_str()));
                back.push(Arc::new(trimmed));
            }
        }
        kept.extend(back);
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_missing_members_names_them_all_at_once() {
        let value = serde_json::json!({
            "tenant_id": "acme", "instance_id": "i", "instance_url": "http://10.0.0.1/",
            "status": "active",
        });
        let (tenant, message) = parse_record(&value).unwrap_err();
        assert_eq!(tenant.as_deref(), Some("acme"));
        assert_eq!(message, "missing member(s) subscription_id, plan, region");
        // A misspelt member is named beside the one it leaves missing.
        let mut typo = value.clone();
        typo["regoin"] = serde_json::json!("eu");
        let (_, message) = parse_record(&typo).unwrap_err();
        assert_eq!(
            message,
            "missing member(s) subscription_id, plan, region; unknown member(s) regoin"
        );
    }

    #[test]
    fn the_member_lists_are_the_record_s_own() {
        // Every member a record can hold, each set: the lists must name exactly those.
        let mut record = crate::model::test_binding("acme", 3, &["a.example.test"]).to_record();
        record.api_url = Some("http://10.0.0.2/".to_owned());
        record.identity_org_id = Some("org".to_owned());
        record.updated_at = Some("2026-01-01T00:00:00Z".to_owned());
        record.mode = Some("cooperative".to_owned());
        let value = serde_json::to_value(&record).unwrap();
        // And every member of its type passes the check of types.
        assert!(parse_record(&value).is_ok(), "{value}");
        let mut members: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        let mut listed: Vec<&str> = REQUIRED_MEMBERS
            .iter()
            .chain(OPTIONAL_MEMBERS.iter())
            .copied()
            .collect();
        listed.sort_unstable();
        assert_eq!(members, listed);
    }

    #[test]
    fn at_the_first_load_a_domain_no_one_can_be_told_to_hold_goes_to_none_and_its_claimants_stay() {
        use crate::model::test_binding;
        // Nothing served yet (a restart): x and y both claim d1, and no index says whose it
        // is. Refusing both left both unbound; each is served without d1 instead. w, which
        // loses d2 to the owner the index names, is refused as before.
        let bindings = vec![
            test_binding("x", 1, &["d1.example.test", "x.example.test"]),
            test_binding("y", 2, &["d1.example.test"]),
            test_binding("v", 3, &["d2.example.test"]),
            test_binding("w", 4, &["d2.example.test"]),
        ];
        let contested = contested_domains(&bindings);
        let index = DomainIndex::from([("d2.example.test".to_owned(), Some("v".to_owned()))]);
        for index in [None, Some(&index)] {
            let (kept, _) = settle_contested(
                bindings.clone(),
                &contested,
                None,
                HashSet::new(),
                index,
                "test",
                Verdicts::Logged,
            );
            let (table, refused) = BindingTable::from_bindings(kept);
            assert!(refused.is_empty(), "{refused:?}");
            let owner = |d: &str| table.tenant_for_domain(d).map(TenantId::as_str);
            assert_eq!(owner("d1.example.test"), None);
            assert_eq!(owner("x.example.test"), Some("x"));
            assert!(table.get("x").is_some() && table.get("y").is_some());
            if index.is_some() {
                assert_eq!(owner("d2.example.test"), Some("v"));
                assert!(table.get("w").is_none(), "outclaimed: refused");
            } else {
                assert_eq!(owner("d2.example.test"), None);
                assert!(table.get("v").is_some() && table.get("w").is_some());
            }
        }
    }

    #[test]
    fn a_domain_stays_with_its_put_back_holder_when_the_index_owner_is_refused_too() {
        use crate::model::test_binding;
        // Served: x holds d1 (an old snapshot), z holds d2. x's record is refused (put back);
        // the index names y for d1, but y's record also claims z's d2 and is refused for it:
        // y goes back to its served binding, without d1, so d1 stays x's.
        let (x, z, y) = (
            test_binding("x", 1, &["d1.example.test"]),
            test_binding("z", 1, &["d2.example.test"]),
            test_binding("y", 1, &[]),
        );
        let (served, _) = BindingTable::from_bindings(vec![x.clone(), z, y]);
        let bindings = vec![
            x,
            test_binding("y", 5, &["d1.example.test", "d2.example.test"]),
            test_binding("z", 2, &["d2.example.test"]),
        ];
        let contested = contested_domains(&bindings);
        let index: DomainIndex = contested
            .iter()
            .map(|(d, _)| {
                let owner = if d.starts_with("d1") { "y" } else { "z" };
                (d.clone(), Some(owner.to_owned()))
            })
            .collect();
        let put_back = HashSet::from([TenantId::parse("x").unwrap()]);
        let (kept, _) = settle_contested(
            bindings,
            &contested,
            Some(&served),
            put_back,
            Some(&index),
            "test",
            Verdicts::Logged,
        );
        let (table, refused) = BindingTable::from_bindings(kept);
        assert!(refused.is_empty(), "{refused:?}");
        let owner = |d: &str| table.tenant_for_domain(d).map(TenantId::as_str);
        assert_eq!(owner("d1.example.test"), Some("x"));
        assert_eq!(owner("d2.example.test"), Some("z"));
        assert_eq!(table.get("y").map(|b| b.revision.get()), Some(1));
    }

    #[test]
    fn a_put_back_binding_loses_a_moved_domain_to_the_record_the_index_names() {
        use crate::model::test_binding;
        // x's old binding holds d1, which the index and y's valid record now give y.
        let x = test_binding("x", 1, &["d1.example.test", "d3.example.test"]);
        let (served, _) = BindingTable::from_bindings(vec![x.clone()]);
        let bindings = vec![x, test_binding("y", 5, &["d1.example.test"])];
        let contested = contested_domains(&bindings);
        let index = DomainIndex::from([("d1.example.test".to_owned(), Some("y".to_owned()))]);
        let (kept, _) = settle_contested(
            bindings,
            &contested,
            Some(&served),
            HashSet::from([TenantId::parse("x").unwrap()]),
            Some(&index),
            "test",
            Verdicts::Logged,
        );
        let (table, refused) = BindingTable::from_bindings(kept);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            table
                .tenant_for_domain("d1.example.test")
                .map(TenantId::as_str),
            Some("y")
        );
        let x = table.get("x").expect("x stays bound");
        assert_eq!(x.domains.len(), 1, "kept without d1");
        assert_eq!(
            table
                .tenant_for_domain("d3.example.test")
                .map(TenantId::as_str),
            Some("x")
        );
    }

    fn rec(tenant: &str) -> Value {
        serde_json::json!({
            "tenant_id": tenant, "subscription_id": "s", "instance_id": "i",
            "instance_url": "http://10.0.0.1:8080", "status": "active", "plan": "team", "region": "eu"
        })
    }

    #[test]
    fn good_and_bad_records() {
        let mut bad_url = rec("bad");
        bad_url["instance_url"] = serde_json::json!("ftp://x");
        bad_url["status"] = serde_json::json!("dormant");
        let mut unknown_field = rec("typo");
        unknown_field["instance_ur1"] = serde_json::json!("http://x");
        let doc = serde_json::json!({
            "format": BINDINGS_FORMAT,
            "bindings": [rec("acme"), bad_url, unknown_field, 17, rec("globex")]
        });
        let parsed = parse_records(doc.to_string().as_bytes()).expect("document");
        let tenants: Vec<&str> = parsed
            .bindings
            .iter()
            .map(|b| b.tenant_id.as_str())
            .collect();
        assert_eq!(tenants, ["acme", "globex"]);
        assert_eq!(parsed.problems.len(), 3);
        let p = &parsed.problems[0];
        assert_eq!((p.index, p.tenant.as_deref()), (1, Some("bad")));
        assert!(
            p.message.contains("instance_url") && p.message.contains("status"),
            "{p}"
        );
        assert!(
            parsed.problems[1].message.contains("instance_ur1"),
            "{}",
            parsed.problems[1]
        );
        assert_eq!(parsed.problems[2].tenant, None);
        assert_eq!(
            parsed.problems[2].message,
            "a binding record is a JSON object, not a number"
        );
    }

    #[test]
    fn a_tenant_listed_twice_is_refused_everywhere() {
        let mut bad = rec("acme");
        bad["status"] = serde_json::json!("zombie");
        let doc = serde_json::json!({
            "format": BINDINGS_FORMAT,
            "revision": 7,
            "bindings": [rec("acme"), rec("globex"), rec("acme"), rec("initech"), bad, rec("initech")]
        });
        let parsed = parse_records(doc.to_string().as_bytes()).expect("document");
        assert_eq!(parsed.revision, Some(7));
        let tenants: Vec<&str> = parsed
            .bindings
            .iter()
            .map(|b| b.tenant_id.as_str())
            .collect();
        assert_eq!(tenants, ["globex"]);
        let problems: Vec<(usize, Option<&str>)> = parsed
            .problems
            .iter()
            .map(|p| (p.index, p.tenant.as_deref()))
            .collect();
        assert_eq!(
            problems,
            [
                (0, Some("acme")),
                (2, Some("acme")),
                (3, Some("initech")),
                (4, Some("acme")),
                (5, Some("initech"))
            ]
        );
        assert!(
            parsed.problems[0].message.contains("records [0, 2, 4]"),
            "{}",
            parsed.problems[0]
        );
    }

    #[test]
    fn a_record_repeating_tenant_id_after_another_name_names_no_tenant() {
        let doc = br#"{"format":"nexus-edge.bindings/v1","bindings":[{"tenant_id":"initech",
            "plan":"pro","plan":"pro","tenant_id":"globex"}]}"#;
        let parsed = parse_records(doc).unwrap_or_default();
        assert_eq!(parsed.problems.len(), 1);
        assert_eq!(parsed.problems[0].tenant, None, "{}", parsed.problems[0]);
        assert!(parsed.problems[0].message.contains("\"plan\""));
    }

    #[test]
    fn a_json_array_is_neither_a_bindings_document_nor_a_record() {
        // serde's derived readers take an array for a struct, its elements as the fields in
        // order: this document loaded, its record with it.
        let record = r#"{"tenant_id":"acme","subscription_id":"s","instance_id":"i",
            "instance_url":"http://10.0.0.1","status":"active","plan":"team","region":"eu"}"#;
        for doc in [
            format!(r#"["nexus-edge.bindings/v1", null, null, [{record}]]"#),
            format!("\u{feff} \n[\"nexus-edge.bindings/v1\", null, null, [{record}]]"),
        ] {
            let e = parse_records(doc.as_bytes()).expect_err("an array");
            assert!(
                e.contains("the document is a JSON array, not an object"),
                "{e}"
            );
        }
        let doc = format!(r#" {{"format":"nexus-edge.bindings/v1","bindings":[{record}]}}"#);
        assert_eq!(
            parse_records(doc.as_bytes())
                .expect("object")
                .bindings
                .len(),
            1
        );
    }

    #[test]
    fn every_member_of_the_wrong_type_or_unknown_is_named_at_once() {
        let value = serde_json::json!({
            "tenant_id": "acme", "subscription_id": "s", "instance_id": "i",
            "instance_url": "http://10.0.0.1", "status": 5, "plan": "team", "region": "eu",
            "domains": "shop.example.test", "revision": -1, "mode": null, "extra": true,
        });
        let (tenant, message) = parse_record(&value).unwrap_err();
        assert_eq!(tenant.as_deref(), Some("acme"));
        assert_eq!(
            message,
            "domains: must be a list of domain names, not a string; unknown member \"extra\"; \
             revision: must be a whole number from 0, not -1; status: must be a string, not 5"
        );
        let mut listed = value.clone();
        listed["status"] = serde_json::json!("active");
        listed["domains"] = serde_json::json!(["shop.example.test", 7]);
        listed["revision"] = serde_json::json!(3);
        listed.as_object_mut().expect("object").remove("extra");
        let (_, message) = parse_record(&listed).unwrap_err();
        assert_eq!(
            message,
            "domains: must be a list of domain names, not a list holding 7"
        );
        // A null org is no "none": it would drop the tenant's org check (a template's missing
        // variable). Other optional members may be null.
        let mut null_org = listed.clone();
        null_org["domains"] = serde_json::json!([]);
        null_org["identity_org_id"] = Value::Null;
        null_org["api_url"] = Value::Null;
        let (_, message) = parse_record(&null_org).unwrap_err();
        assert_eq!(
            message,
            "identity_org_id: must be a string (left out when the tenant has no org), not null"
        );
        // Values of the right type are checked together as before, every problem said.
        listed["domains"] = serde_json::json!([]);
        listed["status"] = serde_json::json!("frozen");
        listed["plan"] = serde_json::json!("gold");
        let doc = serde_json::json!({"format": BINDINGS_FORMAT, "bindings": [listed]});
        let parsed = parse_records(doc.to_string().as_bytes()).expect("document");
        let said = parsed.problems[0].to_string();
        assert!(
            said.contains("unknown status \"frozen\"") && said.contains("plan: "),
            "{said}"
        );
    }

    #[test]
    fn a_refusal_quoting_a_huge_value_is_cut_short() {
        let name = "x".repeat(200_000);
        let doc = format!(
            r#"{{"format":"nexus-edge.bindings/v1","bindings":[{{"tenant_id":"{name}","{name}":1}}]}}"#
        );
        let parsed = parse_records(doc.as_bytes()).unwrap_or_default();
        let said = parsed.problems[0].to_string();
        assert!(said.len() < 2_500, "{} bytes", said.len());
        assert!(said.contains("bytes in all"), "{said}");
    }

    #[test]
    fn whole_document_errors() {
        assert!(parse_records(b"not json").is_err());
        assert!(parse_records(b"[]").is_err());
        assert!(parse_records(br#"{"format":"other/v9","bindings":[]}"#).is_err());
        let typo =
            parse_records(br#"{"format":"nexus-edge.bindings/v1","revison":3,"bindings":[]}"#)
                .err()
                .unwrap_or_default();
        assert!(typo.contains("unknown field `revison`"), "{typo}");
        // The key list the file store's writer checks is this reader's.
        let doc = serde_json::to_value(Document {
            format: BINDINGS_FORMAT.to_owned(),
            revision: Some(1),
            history: Some("h".to_owned()),
            bindings: Vec::new(),
        })
        .unwrap_or_default();
        let keys: Vec<&str> = doc
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), DOCUMENT_KEYS.len());
        assert!(keys.iter().all(|k| DOCUMENT_KEYS.contains(k)), "{keys:?}");
    }

    #[test]
    fn round_trip() {
        let doc =
            serde_json::json!({ "format": BINDINGS_FORMAT, "bindings": [rec("b"), rec("a")] });
        let parsed = parse_records(doc.to_string().as_bytes()).expect("doc");
        let text = to_document(parsed.bindings.iter().map(|b| b.as_ref()), None);
        let again = parse_records(text.as_bytes()).expect("doc");
        assert_eq!(again.bindings.len(), 2);
        assert_eq!(again.bindings[0].tenant_id.as_str(), "a");
    }

    #[test]
    fn a_put_back_binding_keeps_only_the_domains_the_index_gives_its_tenant() {
        use crate::model::test_binding;
        let x = test_binding(
            "x",
            1,
            &["d1.example.test", "d2.example.test", "d3.example.test"],
        );
        let index: DomainIndex = [
            ("d1.example.test", Some("x")),
            ("d2.example.test", None),
            ("d3.example.test", Some("y")),
        ]
        .into_iter()
        .map(|(d, o)| (d.to_owned(), o.map(str::to_owned)))
        .collect();
        let kept = confirmed_by_index(Arc::clone(&x), Some(&index), "test", Verdicts::Logged);
        let kept: Vec<&str> = kept.domains.iter().map(|d| d.as_str()).collect();
        assert_eq!(kept, ["d1.example.test"]);
        // A domain not looked up is kept.
        let mut partial = index.clone();
        partial.remove("d2.example.test");
        let kept = confirmed_by_index(Arc::clone(&x), Some(&partial), "test", Verdicts::Logged);
        let kept: Vec<&str> = kept.domains.iter().map(|d| d.as_str()).collect();
        assert_eq!(kept, ["d1.example.test", "d2.example.test"]);
        // Without an index (a file), the binding stays as it was.
        assert!(Arc::ptr_eq(
            &confirmed_by_index(Arc::clone(&x), None, "test", Verdicts::Logged),
            &x
        ));
        // Kept whole, it is the same binding.
        let all: DomainIndex = x
            .domains
            .iter()
            .map(|d| (d.as_str().to_owned(), Some("x".to_owned())))
            .collect();
        assert!(Arc::ptr_eq(
            &confirmed_by_index(Arc::clone(&x), Some(&all), "test", Verdicts::Logged),
            &x
        ));
    }

    #[test]
    fn a_later_round_s_loser_keeps_the_served_domains_no_one_looked_up() {
        use crate::model::test_binding;
        // Round 1 settles d1 (a keeps it; b's served binding, with d2, comes back); round 2
        // settles d2 (b keeps it; c's served binding comes back). The index was asked only
        // about the first round's domains: in this pass c keeps d4, which nobody looked up
        // (the Redis store then asks about it and settles again).
        let (served, _) = BindingTable::from_bindings(vec![
            test_binding("a", 1, &["d1.example.test"]),
            test_binding("b", 1, &["d2.example.test"]),
            test_binding("c", 1, &["d4.example.test"]),
        ]);
        let bindings = vec![
            test_binding("a", 2, &["d1.example.test"]),
            test_binding("b", 2, &["d1.example.test", "d3.example.test"]),
            test_binding("c", 2, &["d2.example.test", "d4.example.test"]),
        ];
        let contested = contested_domains(&bindings);
        let index: DomainIndex = [("d1.example.test", "a"), ("d2.example.test", "b")]
            .into_iter()
            .map(|(d, o)| (d.to_owned(), Some(o.to_owned())))
            .collect();
        let (kept, back) = settle_contested(
            bindings,
            &contested,
            Some(&served),
            HashSet::new(),
            Some(&index),
            "test",
            Verdicts::Logged,
        );
        // The tenants put back are returned: a store asks its index about their domains.
        assert!(back.contains(&TenantId::parse("c").unwrap()));
        let (table, _) = BindingTable::from_bindings(kept);
        let owner = |d: &str| table.tenant_for_domain(d).map(TenantId::as_str);
        assert_eq!(owner("d1.example.test"), Some("a"));
        assert_eq!(owner("d2.example.test"), Some("b"));
        assert_eq!(owner("d4.example.test"), Some("c"));
    }
}
