//! Does the token belong to the tenant the request is addressed to?
//!
//! Exact, byte-for-byte comparison: no case folding, no trimming, no Unicode normalisation. The
//! binding's tenant id is canonical, so a claim spelled any other way (`ACME`, `acme `, a
//! look-alike) never matches. Messages never contain claim values.

use nexus_binding_store::Binding;

/// Why a valid token may not be used on this tenant (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimMismatch {
    /// The token has no tenant claim (or it is not a string).
    #[error("token has no tenant claim")]
    MissingTenantClaim,
    /// The tenant claim names another tenant.
    #[error("token belongs to another tenant")]
    TenantMismatch,
    /// The binding requires an org and the token has no org claim.
    #[error("token has no org claim")]
    MissingOrgClaim,
    /// The org claim names another org.
    #[error("token belongs to another org")]
    OrgMismatch,
}

impl ClaimMismatch {
    /// Closed label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ClaimMismatch::MissingTenantClaim => "missing_tenant_claim",
            ClaimMismatch::TenantMismatch => "tenant_mismatch",
            ClaimMismatch::MissingOrgClaim => "missing_org_claim",
            ClaimMismatch::OrgMismatch => "org_mismatch",
        }
    }
}

/// Checks the token's tenant and org claims against the addressed tenant's binding.
pub fn check_claims(
    tenant_claim: Option<&str>,
    org_claim: Option<&str>,
    binding: &Binding,
) -> Result<(), ClaimMismatch> {
    let tenant = tenant_claim.ok_or(ClaimMismatch::MissingTenantClaim)?;
    if tenant.as_bytes() != binding.tenant_id.as_str().as_bytes() {
        return Err(ClaimMismatch::TenantMismatch);
    }
    if let Some(required) = &binding.identity_org_id {
        let org = org_claim.ok_or(ClaimMismatch::MissingOrgClaim)?;
        if org.as_bytes() != required.as_str().as_bytes() {
            return Err(ClaimMismatch::OrgMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(org: Option<&str>) -> Binding {
        crate::test_support::binding("http://127.0.0.1:1", org)
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table-driven test row is a tuple by design
    fn claim_table() {
        use ClaimMismatch::*;
        let with_org = binding(Some("org-1"));
        let no_org = binding(None);
        let cases: [(
            Option<&str>,
            Option<&str>,
            &Binding,
            Result<(), ClaimMismatch>,
        ); 14] = [
            (Some("acme"), Some("org-1"), &with_org, Ok(())),
            (Some("acme"), None, &no_org, Ok(())),
            (Some("acme"), Some("anything"), &no_org, Ok(())),
            (None, Some("org-1"), &with_org, Err(MissingTenantClaim)),
            (Some("ACME"), Some("org-1"), &with_org, Err(TenantMismatch)),
            (Some("acme "), Some("org-1"), &with_org, Err(TenantMismatch)),
            (Some(" acme"), Some("org-1"), &with_org, Err(TenantMismatch)),
            (
                Some("acm\u{0435}"),
                Some("org-1"),
                &with_org,
                Err(TenantMismatch),
            ),
            (
                Some("acme\0"),
                Some("org-1"),
                &with_org,
                Err(TenantMismatch),
            ),
            (
                Some("globex"),
                Some("org-1"),
                &with_org,
                Err(TenantMismatch),
            ),
            (Some(""), Some("org-1"), &with_org, Err(TenantMismatch)),
            (Some("acme"), None, &with_org, Err(MissingOrgClaim)),
            (Some("acme"), Some("ORG-1"), &with_org, Err(OrgMismatch)),
            (Some("acme"), Some("org-1 "), &with_org, Err(OrgMismatch)),
        ];
        for (tenant, org, b, want) in cases {
            assert_eq!(check_claims(tenant, org, b), want, "{tenant:?} {org:?}");
        }
    }

    #[test]
    fn messages_and_labels_carry_no_claim_values() {
        use ClaimMismatch::*;
        let b = binding(Some("org-1"));
        let all = [
            MissingTenantClaim,
            TenantMismatch,
            MissingOrgClaim,
            OrgMismatch,
        ];
        let mut labels: Vec<_> = all.iter().map(ClaimMismatch::label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
        for (tenant, org) in [("s3cret-tenant", "org-1"), ("acme", "s3cret-org")] {
            let e = check_claims(Some(tenant), Some(org), &b).expect_err("mismatch");
            let shown = format!("{e} {e:?} {}", e.label());
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn tenant_is_checked_before_org() {
        let b = binding(Some("org-1"));
        assert_eq!(
            check_claims(Some("globex"), None, &b),
            Err(ClaimMismatch::TenantMismatch)
        );
        assert_eq!(
            check_claims(None, None, &b),
            Err(ClaimMismatch::MissingTenantClaim)
        );
    }
}
