//! The configured certificate files and directories, read again at each reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::load::{parse_pem, read_file, LoadedCert};
use crate::{CertError, CertSet};

/// The certificate files the config names, directly or as the `*.pem` files of a directory,
/// with what each last gave.
#[derive(Debug)]
pub struct CertFiles {
    sources: Vec<PathBuf>,
    files: BTreeMap<PathBuf, FileState>,
}

/// What one file last gave.
#[derive(Debug, Default)]
struct FileState {
    /// The source (index in the config's list) that listed the file; `None` for a source's
    /// own entry, which says why it could not be listed.
    source: Option<usize>,
    /// The file's metadata when it was last read: unchanged, it is not read again (a
    /// directory may hold thousands of certificates, polled every few seconds).
    stamp: Option<nexus_config::files::Stamp>,
    /// The bytes last read: a file read again unchanged is not parsed again, nor reported
    /// again.
    bytes: Option<Vec<u8>>,
    /// The certificate the file last held that parsed: kept while the file is unreadable or
    /// holds one that does not.
    good: Option<Arc<LoadedCert>>,
    /// Why the file, as it is now, is not in use.
    refused: Option<CertError>,
}

/// What a reload found.
#[derive(Debug, Default)]
pub struct Reload {
    /// The certificates in use changed (one added, replaced or removed): build a new set.
    pub changed: bool,
    /// Problems not seen at the reload before: a file newly unreadable or refused, or
    /// refused anew for another reason. (One left as it is is not reported again.)
    pub new_problems: Vec<CertError>,
    /// Certificates newly taken, with the file each came from.
    pub loaded: Vec<Arc<LoadedCert>>,
}

impl CertFiles {
    /// Files and directories as the config lists them; nothing is read until
    /// [`CertFiles::reload`].
    pub fn new(sources: Vec<PathBuf>) -> Self {
        Self {
            sources,
            files: BTreeMap::new(),
        }
    }

    /// Reads every source again. A file that changed and parses replaces its certificate; one
    /// that does not parse, or cannot be read, keeps its last good one serving. A file gone
    /// from a directory that was read takes its certificate away; a source that cannot be
    /// read at all (a directory removed, a file listed by name that is missing), or a
    /// directory that gave certificates and now holds none, keeps every certificate it gave,
    /// since an unmounted volume is no instruction to stop serving.
    pub fn reload(&mut self) -> Reload {
        let mut out = Reload::default();
        // Each file listed, with the source (its index) that listed it first.
        let mut listed: BTreeMap<PathBuf, usize> = BTreeMap::new();
        let mut unreadable = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            let listing = list(source).and_then(|files| {
                // Emptied all at once: a volume unmounted from under its mount point, more
                // likely than every certificate withdrawn together.
                let gave = self
                    .files
                    .values()
                    .any(|f| f.source == Some(i) && f.good.is_some());
                if files.is_empty() && gave {
                    return Err(CertError::Read {
                        path: source.clone(),
                        reason: "holds no *.pem file any more; keeping the certificates it \
                                 held (to stop serving a directory's last certificate, take \
                                 the directory out of tls.certificates)"
                            .to_owned(),
                    });
                }
                Ok(files)
            });
            match listing {
                Ok(files) => {
                    for file in files {
                        listed.entry(file).or_insert(i);
                    }
                }
                Err(e) => {
                    let state = self.files.entry(source.clone()).or_default();
                    if state.refused.as_ref() != Some(&e) {
                        out.new_problems.push(e.clone());
                    }
                    state.refused = Some(e);
                    state.bytes = None;
                    unreadable.push(i);
                }
            }
        }
        // Files no longer listed, but those of a source that could not be listed (and that
        // source's own entry, which says why).
        let sources = &self.sources;
        let gone: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(p, _)| !listed.contains_key(*p))
            .filter(|(p, f)| {
                !f.source.is_some_and(|i| unreadable.contains(&i))
                    && !unreadable.iter().any(|&i| sources[i] == **p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for path in gone {
            if let Some(state) = self.files.remove(&path) {
                out.changed |= state.good.is_some();
            }
        }
        for (path, source) in listed {
            let state = self.files.entry(path.clone()).or_default();
            state.source = Some(source);
            let stamp = nexus_config::files::Stamp::of(&path);
            if stamp.is_some() && stamp == state.stamp && state.bytes.is_some() {
                continue;
            }
            // Kept only once old: a write within the same second could share a recent stamp.
            state.stamp = stamp.filter(|s| !s.recent());
            let refused = match read_file(&path) {
                Err(e) => Some(e),
                Ok(bytes) if state.bytes.as_ref() == Some(&bytes) => continue,
                Ok(bytes) => {
                    let parsed = parse_pem(&bytes, &path);
                    state.bytes = Some(bytes);
                    match parsed {
                        Ok(cert) => {
                            let cert = Arc::new(cert);
                            state.good = Some(Arc::clone(&cert));
                            out.loaded.push(cert);
                            out.changed = true;
                            None
                        }
                        Err(e) => Some(e),
                    }
                }
            };
            if let Some(e) = &refused {
                if state.refused.as_ref() != Some(e) {
                    out.new_problems.push(e.clone());
                }
                if matches!(e, CertError::Read { .. }) {
                    // Read again in full next time: it may come back as it was.
                    state.bytes = None;
                }
            }
            state.refused = refused;
        }
        out
    }

    /// The certificates in use, indexed.
    pub fn set(&self) -> CertSet {
        CertSet::build(self.files.values().filter_map(|s| s.good.as_deref()))
    }

    /// The files (or sources) not in use as they are now, with why.
    pub fn refused(&self) -> impl Iterator<Item = &CertError> {
        self.files.values().filter_map(|s| s.refused.as_ref())
    }
}

/// The certificate files of `source`: itself, when it is a file; its `*.pem` files (not
/// hidden ones, which editors and copies leave half written), in name order, when it is a
/// directory.
fn list(source: &Path) -> Result<Vec<PathBuf>, CertError> {
    let err = |e: std::io::Error| CertError::Read {
        path: source.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(source).map_err(err)?;
    if !meta.is_dir() {
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(source).map_err(err)? {
        let path = entry.map_err(err)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".pem") && !name.starts_with('.') {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
