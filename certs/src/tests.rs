//! Certificates made here (rcgen), read, indexed and reloaded as the listener would.

use std::path::Path;

use crate::{parse_pem, CertError, CertFiles, CertSet};

/// A self-signed certificate for `names` expiring in `year`, and its key, as PEM.
fn issue(names: &[&str], year: i32) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pem(names: &[&str], year: i32) -> String {
    let (cert, key) = issue(names, year);
    format!("{cert}{key}")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Which of `set`'s certificates a client asking for `name` gets, by its leaf's bytes.
fn served(set: &CertSet, name: &str) -> Option<Vec<u8>> {
    set.find(name).map(|k| k.cert[0].to_vec())
}

fn leaf(text: &str) -> Vec<u8> {
    parse_pem(text.as_bytes(), Path::new("t.pem"))
        .unwrap()
        .key
        .cert[0]
        .to_vec()
}

#[test]
fn a_file_holds_its_chain_and_its_key_in_either_order() {
    let (cert, key) = issue(&["acme.example.com", "*.acme.example.com"], 2040);
    for text in [format!("{cert}{key}"), format!("{key}{cert}")] {
        let loaded = parse_pem(text.as_bytes(), Path::new("a.pem")).unwrap();
        assert_eq!(
            loaded.names().collect::<Vec<_>>(),
            ["acme.example.com", "*.acme.example.com"]
        );
        assert_eq!(loaded.not_after, 2_208_988_800);
    }
}

/// Whether an error is the one a case expects.
type Is = fn(&CertError) -> bool;

#[test]
fn a_file_that_cannot_serve_is_refused_with_its_reason_and_name() {
    let p = Path::new("/etc/nexus/acme.pem");
    let (cert, key) = issue(&["acme.example.com"], 2040);
    let (_, other_key) = issue(&["acme.example.com"], 2040);
    let (no_dns, no_dns_key) = issue(&["10.0.0.1"], 2040);
    let cases: [(String, Is); 6] = [
        (cert.clone(), |e| {
            matches!(e, CertError::KeyCount { found: 0, .. })
        }),
        (format!("{cert}{key}{other_key}"), |e| {
            matches!(e, CertError::KeyCount { found: 2, .. })
        }),
        (key.clone(), |e| {
            matches!(e, CertError::NoCertificate { .. })
        }),
        (format!("{cert}{other_key}"), |e| {
            matches!(e, CertError::KeyMismatch { .. })
        }),
        (format!("{no_dns}{no_dns_key}"), |e| {
            matches!(e, CertError::NoNames { .. })
        }),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n".to_owned(),
            |e| matches!(e, CertError::Pem { .. }),
        ),
    ];
    for (text, is) in cases {
        let e = parse_pem(text.as_bytes(), p).unwrap_err();
        assert!(is(&e), "{e}");
        assert!(e.to_string().starts_with("/etc/nexus/acme.pem: "), "{e}");
    }
}

#[test]
fn a_name_gets_its_exact_certificate_before_a_wildcard_and_a_wildcard_covers_one_label() {
    let wild = pem(&["*.example.com"], 2040);
    let acme = pem(&["acme.example.com"], 2040);
    let loaded: Vec<_> = [&wild, &acme]
        .iter()
        .map(|t| parse_pem(t.as_bytes(), Path::new("x.pem")).unwrap())
        .collect();
    let set = CertSet::build(&loaded);
    assert_eq!(set.len(), 2);
    assert_eq!(served(&set, "acme.example.com"), Some(leaf(&acme)));
    assert_eq!(served(&set, "ACME.example.com."), Some(leaf(&acme)));
    assert_eq!(served(&set, "globex.example.com"), Some(leaf(&wild)));
    assert_eq!(served(&set, "example.com"), None);
    assert_eq!(served(&set, "a.b.example.com"), None);
    assert_eq!(served(&set, "acme.example.org"), None);
}

#[test]
fn where_two_certificates_cover_a_name_the_later_expiring_one_serves_it() {
    let old = pem(&["acme.example.com"], 2030);
    let renewed = pem(&["acme.example.com"], 2031);
    for order in [[&old, &renewed], [&renewed, &old]] {
        let loaded: Vec<_> = order
            .iter()
            .map(|t| parse_pem(t.as_bytes(), Path::new("x.pem")).unwrap())
            .collect();
        let set = CertSet::build(&loaded);
        assert_eq!(served(&set, "acme.example.com"), Some(leaf(&renewed)));
        // The old one serves nothing: neither counted nor its expiry shown.
        assert_eq!(set.len(), 1);
        assert_eq!(set.earliest_not_after(), Some(1_924_992_000));
    }
}

#[test]
fn a_certificate_not_valid_yet_serves_a_name_only_where_no_valid_one_does() {
    let staged = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["acme.example.com".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2040, 1, 1);
        params.not_after = rcgen::date_time_ymd(2041, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem())
    };
    let current = pem(&["acme.example.com"], 2035);
    let loaded: Vec<_> = [&staged, &current]
        .iter()
        .map(|t| parse_pem(t.as_bytes(), Path::new("x.pem")).unwrap())
        .collect();
    // 2030: the staged renewal is not valid yet; the set is to be built again when it is.
    let set = CertSet::build_at(&loaded, 1_893_456_000);
    assert_eq!(served(&set, "acme.example.com"), Some(leaf(&current)));
    assert_eq!(set.next_change(), Some(2_208_988_800));
    // 2040 and after: it is, and expires later.
    let set = CertSet::build_at(&loaded, 2_208_988_800);
    assert_eq!(served(&set, "acme.example.com"), Some(leaf(&staged)));
    // Alone, it serves even before its time (better than no certificate at all).
    let set = CertSet::build_at(&loaded[..1], 1_893_456_000);
    assert_eq!(served(&set, "acme.example.com"), Some(leaf(&staged)));
}

#[test]
fn a_reload_takes_changes_keeps_what_served_through_bad_files_and_reports_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let acme = pem(&["acme.example.com"], 2040);
    let globex = pem(&["globex.example.com"], 2040);
    write(d, "acme.pem", &acme);
    write(d, "globex.pem", &globex);
    write(d, "notes.txt", "not a certificate");
    write(d, ".acme.pem.tmp", "half written");
    let mut files = CertFiles::new(vec![d.to_path_buf()]);

    let first = files.reload();
    assert!(first.changed && first.new_problems.is_empty(), "{first:?}");
    assert_eq!(first.loaded.len(), 2);
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme)));

    // Unchanged: nothing to do.
    let again = files.reload();
    assert!(!again.changed && again.new_problems.is_empty() && again.loaded.is_empty());

    // Half written: the old certificate keeps serving, the problem is said once.
    write(d, "acme.pem", &acme[..acme.len() / 2]);
    let broken = files.reload();
    assert!(!broken.changed, "{broken:?}");
    assert_eq!(broken.new_problems.len(), 1, "{broken:?}");
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme)));
    assert_eq!(files.refused().count(), 1);
    assert!(files.reload().new_problems.is_empty());

    // Whole again, with a new certificate: it serves from now on.
    let acme2 = pem(&["acme.example.com"], 2041);
    write(d, "acme.pem", &acme2);
    let fixed = files.reload();
    assert!(fixed.changed && fixed.new_problems.is_empty());
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme2)));
    assert_eq!(files.refused().count(), 0);

    // Removed from the directory: no longer served.
    std::fs::remove_file(d.join("globex.pem")).unwrap();
    assert!(files.reload().changed);
    assert_eq!(served(&files.set(), "globex.example.com"), None);
    assert_eq!(files.set().len(), 1);

    // The directory itself gone (an unmounted volume): everything it gave keeps serving.
    let kept = d.with_extension("moved");
    std::fs::rename(d, &kept).unwrap();
    let missing = files.reload();
    assert!(!missing.changed);
    assert_eq!(missing.new_problems.len(), 1);
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme2)));
    std::fs::rename(&kept, d).unwrap();
    assert!(!files.reload().changed);
    assert_eq!(files.refused().count(), 0);

    // Emptied (a volume unmounted, its mount point left): the same.
    std::fs::rename(d.join("acme.pem"), kept.with_extension("aside")).unwrap();
    let emptied = files.reload();
    assert!(!emptied.changed);
    assert!(
        matches!(&emptied.new_problems[..], [CertError::Read { reason, .. }] if reason.contains("no *.pem")),
        "{emptied:?}"
    );
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme2)));
}

#[test]
fn a_file_listed_by_name_that_goes_missing_keeps_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.pem");
    let acme = pem(&["acme.example.com"], 2040);
    std::fs::write(&path, &acme).unwrap();
    let mut files = CertFiles::new(vec![path.clone()]);
    assert!(files.reload().changed);
    std::fs::remove_file(&path).unwrap();
    let r = files.reload();
    assert!(!r.changed);
    assert!(
        matches!(r.new_problems[..], [CertError::Read { .. }]),
        "{r:?}"
    );
    assert_eq!(served(&files.set(), "acme.example.com"), Some(leaf(&acme)));
}
