//! The checks every admin change passes, whichever door it comes through: the `nexus-edge
//! tenant` commands or the admin API. A record, a rebind, an audit text refused by one is
//! refused by the other, in the same words.

use nexus_binding_store::{Binding, InstanceId, Mutation, UpstreamUrl};

/// Refuses a JSON document that repeats a member name in one of its objects: the store would
/// read the last value (`{"tenant_id": "dup", "tenant_id": "acme"}` replaced acme), while
/// whoever wrote or checked the file may read the first. As tokens and key sets are.
pub(crate) fn refuse_repeated_members(json: &[u8]) -> Result<(), String> {
    use crate::auth::strict_json::{parse_object, StrictError};
    match parse_object(json) {
        Err(StrictError::Duplicate) => Err(
            "an object in it repeats a member name, so which of its values is meant is unclear"
                .to_owned(),
        ),
        // Anything else is said by the reading that follows.
        _ => Ok(()),
    }
}

/// Refuses an `--actor` or `--reason` with a control character: the audit history prints
/// them as they are, so a line break would forge an entry and an escape sequence drive the
/// reader's terminal. And one longer than [`MAX_AUDIT_TEXT`]: it is kept in every entry
/// (up to 1,000 per tenant), and shown by every `history`.
pub(crate) fn printable(name: &str, value: Option<&str>) -> Result<(), String> {
    let bad = |c: &char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    match value {
        Some(v) if v.len() > MAX_AUDIT_TEXT => Err(format!(
            "{name} is {} bytes long; at most {MAX_AUDIT_TEXT} are kept in the audit log (name \
             a ticket or a document instead)",
            v.len()
        )),
        Some(v) if v.trim().is_empty() => {
            Err(format!("{name} is empty: say it, or leave the option out"))
        }
        Some(v) => match (
            v.chars().find(bad),
            v.chars().find(|c| crate::invisible::is_invisible(*c)),
        ) {
            (Some(c), _) => Err(format!("{name} holds the control character {c:?}")),
            // Shown by `history` as nothing, or turning the text after it around: an entry
            // that reads as another actor's, or says something else than it holds.
            (None, Some(c)) => Err(format!("{name} holds the invisible character {c:?}")),
            (None, None) => Ok(()),
        },
        None => Ok(()),
    }
}

/// The longest `--actor` or `--reason`, in bytes.
pub(crate) const MAX_AUDIT_TEXT: usize = 1024;

/// Refuses a binding's custom domains that the router would never route to its tenant: a
/// base domain itself, a tenant's subdomain (routed by name, not through the domain index),
/// or a name under another tenant's subdomain (that tenant's namespace). Said here, at write
/// time, instead of leaving a claim that only ever answers 404 and blocks the rightful owner.
pub(crate) fn check_domains(binding: &Binding, base_domains: &[String]) -> Result<(), String> {
    use crate::host::{resolve_host, HostTarget};
    let tenant = binding.tenant_id.as_str();
    for domain in &binding.domains {
        let why = match resolve_host(domain.as_str(), base_domains) {
            Ok(HostTarget::CustomDomain(_)) => continue,
            Ok(HostTarget::UnderTenant { tenant: owner, .. }) if owner.as_str() == tenant => {
                continue
            }
            Ok(HostTarget::UnderTenant { tenant: owner, .. }) => {
                format!("it is under tenant {}'s subdomain", owner.as_str())
            }
            Ok(HostTarget::Subdomain(owner)) => {
                format!(
                    "it is tenant {}'s subdomain, routed by name",
                    owner.as_str()
                )
            }
            Ok(HostTarget::Reserved) => "it is a base domain, no tenant's".to_owned(),
            Err(e) => e.to_string(),
        };
        return Err(format!("{tenant}: domain {domain}: {why}"));
    }
    Ok(())
}

/// `tenant rebind`'s change: the instance (and API URL) checked as the record's would be.
pub(crate) fn rebind(
    instance_id: &str,
    instance_url: &str,
    api_url: Option<&str>,
    clear_api_url: bool,
) -> Result<Mutation, String> {
    let instance_id = InstanceId::parse(instance_id).map_err(|e| e.to_string())?;
    let instance_url =
        UpstreamUrl::parse("instance_url", instance_url).map_err(|e| e.to_string())?;
    let api_url = match (api_url, clear_api_url) {
        (Some(a), _) => Some(Some(
            UpstreamUrl::parse("api_url", a).map_err(|e| e.to_string())?,
        )),
        (None, true) => Some(None),
        (None, false) => None,
    };
    Ok(Mutation::Rebind {
        instance_id,
        instance_url,
        api_url,
    })
}
