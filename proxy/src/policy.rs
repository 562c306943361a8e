//! What a tenant's status allows.
//!
//! One exhaustive `match` on [`TenantStatus`], with no catch-all arm: adding a state to the
//! binding model does not compile until someone decides here what the router does with it.

use nexus_binding_store::{Mode, TenantStatus};
use nexus_config::ModePaths;

use crate::path::under_prefix_as_routed;

/// A notice the app should show its users (sent as a response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingNotice {
    /// Payment failed; the tenant is still served.
    PastDue,
}

/// The status policy's verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusDecision {
    /// Serve the request, with an optional notice for the app.
    Serve {
        /// Notice to pass on.
        notice: Option<BillingNotice>,
    },
    /// Suspended tenant, path outside the recovery paths: reject (403).
    RecoveryOnly,
    /// Canceled tenant: 410.
    Gone,
    /// Still being provisioned: 503 with `Retry-After`.
    NotReady,
    /// Blocked or under an incident: 503.
    Unavailable,
}

/// Decides what `status` allows for the (already normalised) `path`.
pub fn status_decision(
    status: TenantStatus,
    path: &str,
    recovery_paths: &[String],
) -> StatusDecision {
    match status {
        TenantStatus::Trialing | TenantStatus::Active | TenantStatus::GracePeriod => {
            StatusDecision::Serve { notice: None }
        }
        TenantStatus::PastDue => StatusDecision::Serve {
            notice: Some(BillingNotice::PastDue),
        },
        TenantStatus::Suspended => {
            if under_prefix_as_routed(path, recovery_paths) {
                StatusDecision::Serve { notice: None }
            } else {
                StatusDecision::RecoveryOnly
            }
        }
        TenantStatus::Canceled => StatusDecision::Gone,
        TenantStatus::OrderReceived
        | TenantStatus::PaymentVerified
        | TenantStatus::QueuedForProvisioning
        | TenantStatus::Provisioning
        | TenantStatus::Validation
        | TenantStatus::AwaitingCustomerAction => StatusDecision::NotReady,
        TenantStatus::Blocked | TenantStatus::Incident => StatusDecision::Unavailable,
    }
}

/// The path prefixes a tenant's deployment mode refuses it (`[tenancy]
/// isolated_refused_paths`, `cooperative_refused_paths`): one exhaustive `match`, as for the
/// status, so a new mode is decided here before it compiles.
pub fn refused_paths(mode: Mode, paths: &ModePaths) -> &[String] {
    match mode {
        Mode::Isolated => &paths.isolated,
        Mode::Cooperative => &paths.cooperative,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery() -> Vec<String> {
        vec!["/billing".to_owned(), "/admin/recovery/".to_owned()]
    }

    #[test]
    fn every_status_has_its_decision() {
        use StatusDecision::*;
        for status in TenantStatus::ALL {
            let want = match status {
                TenantStatus::Trialing | TenantStatus::Active | TenantStatus::GracePeriod => {
                    Serve { notice: None }
                }
                TenantStatus::PastDue => Serve {
                    notice: Some(BillingNotice::PastDue),
                },
                TenantStatus::Suspended => RecoveryOnly,
                TenantStatus::Canceled => Gone,
                TenantStatus::Blocked | TenantStatus::Incident => Unavailable,
                _ => NotReady,
            };
            assert_eq!(
                status_decision(status, "/app", &recovery()),
                want,
                "{status}"
            );
        }
    }

    #[test]
    fn suspended_serves_only_recovery_paths() {
        let cases = [
            ("/billing", true),
            ("/billing/", true),
            ("/billing/invoices", true),
            ("/admin/recovery", true),
            ("/admin/recovery/reset", true),
            ("/billingx", false),
            ("/billin", false),
            ("/", false),
            ("/api/billing", false),
            ("/admin", false),
            ("/admin/recoveryx", false),
        ];
        for (path, served) in cases {
            let d = status_decision(TenantStatus::Suspended, path, &recovery());
            assert_eq!(
                d == StatusDecision::Serve { notice: None },
                served,
                "{path}"
            );
        }
    }

    #[test]
    fn traversal_is_decided_on_the_normalised_path() {
        for raw in [
            "/billing/../api",
            "/billing/../api/x",
            "/billing/./../api/x",
            "/billingx",
            "/billingx/../billingx",
            "//billing/..//api",
            "/billing/%2e%2e/api",
            "/billing/.%2E/api/x",
            "/admin/recovery/../../api",
        ] {
            let path = crate::path::normalize_path(raw).expect("normalises");
            assert_eq!(
                status_decision(TenantStatus::Suspended, &path, &recovery()),
                StatusDecision::RecoveryOnly,
                "{raw} -> {path}"
            );
        }
    }

    #[test]
    fn recovery_spellings_are_served_once_normalised() {
        for raw in [
            "/billing",
            "//billing//invoices",
            "/api/../billing/",
            "/%62illing/x",
        ] {
            let path = crate::path::normalize_path(raw).expect("normalises");
            assert_eq!(
                status_decision(TenantStatus::Suspended, &path, &recovery()),
                StatusDecision::Serve { notice: None },
                "{raw} -> {path}"
            );
        }
    }

    #[test]
    fn suspended_without_recovery_paths_serves_nothing() {
        for path in ["/", "/billing", "/admin/recovery"] {
            assert_eq!(
                status_decision(TenantStatus::Suspended, path, &[]),
                StatusDecision::RecoveryOnly,
                "{path}"
            );
        }
    }

    #[test]
    fn only_suspended_depends_on_the_path() {
        for status in TenantStatus::ALL {
            if status == TenantStatus::Suspended {
                continue;
            }
            let a = status_decision(status, "/billing", &recovery());
            let b = status_decision(status, "/api/x", &recovery());
            assert_eq!(a, b, "{status}");
        }
    }
}
