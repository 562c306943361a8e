//! A walker over the spanned TOML document that collects problems instead of stopping at the
//! first one. Each section reader knows its allowed keys, so unknown keys are reported with the
//! closest known one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeInteger, DeTable, DeValue};
use toml::Spanned;

use crate::error::Problem;

/// A TOML integer's value, in whatever radix it is written; `None` past `i64`.
fn integer_value(i: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok()
}

/// Collects problems and turns byte offsets into line numbers.
pub(crate) struct Problems<'t> {
    text: &'t str,
    /// Offset of every `\n` in `text`, found once: a file with many problems is not read
    /// again from its start for each.
    newlines: Vec<usize>,
    pub(crate) list: Vec<Problem>,
}

impl<'t> Problems<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Self {
            text,
            newlines: text
                .bytes()
                .enumerate()
                .filter_map(|(i, c)| (c == b'\n').then_some(i))
                .collect(),
            list: Vec::new(),
        }
    }

    /// The 1-based line of byte `offset`: one more than the newlines before it.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.newlines.partition_point(|&nl| nl < end) + 1
    }

    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        offset: Option<usize>,
        message: impl Into<String>,
    ) {
        let key = key.into();
        // Without an offset (a key that is missing, or a problem between keys): the line of
        // the key, or of the nearest enclosing table the file has.
        let line = offset
            .map(|o| self.line_of(o))
            .or_else(|| crate::load::key_line(self.text, &key));
        self.list.push(Problem {
            key,
            line,
            message: message.into(),
        });
    }
}

/// One `[section]` being read.
pub(crate) struct Section<'a, 'i> {
    pub(crate) name: &'static str,
    table: Option<&'a DeTable<'i>>,
    /// Offset of the section header, for "missing key" problems.
    at: Option<usize>,
    known: Vec<&'static str>,
}

impl<'a, 'i> Section<'a, 'i> {
    /// Opens `name` in the root table (absent section = all defaults). A section that is no
    /// table is a problem of its own: callers count their problems from before opening it.
    pub(crate) fn open(root: &'a DeTable<'i>, name: &'static str, p: &mut Problems<'_>) -> Self {
        Self::open_as(root, name, name, p)
    }

    /// Opens the nested table `k` of this section (e.g. `[store.sentinel]`) as a section of
    /// its own, reported under `full_name`.
    pub(crate) fn nested(
        &mut self,
        k: &'static str,
        full_name: &'static str,
        p: &mut Problems<'_>,
    ) -> Section<'a, 'i> {
        self.known.push(k);
        match self.table {
            Some(t) => Self::open_as(t, k, full_name, p),
            None => Section {
                name: full_name,
                table: None,
                at: None,
                known: Vec::new(),
            },
        }
    }

    fn open_as(root: &'a DeTable<'i>, key: &str, name: &'static str, p: &mut Problems<'_>) -> Self {
        let entry = root.iter().find(|(k, _)| k.get_ref().as_ref() == key);
        match entry {
            None => Self {
                name,
                table: None,
                at: None,
                known: Vec::new(),
            },
            Some((k, v)) => match v.get_ref() {
                DeValue::Table(t) => Self {
                    name,
                    table: Some(t),
                    at: Some(k.span().start),
                    known: Vec::new(),
                },
                other => {
                    p.push(
                        name,
                        Some(v.span().start),
                        format!("must be a table, found {}", other.type_str()),
                    );
                    Self {
                        name,
                        table: None,
                        at: Some(k.span().start),
                        known: Vec::new(),
                    }
                }
            },
        }
    }

    pub(crate) fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.name)
    }

    /// Raw spanned value of `k`, marking it as known.
    pub(crate) fn raw(&mut self, k: &'static str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.known.push(k);
        self.table?
            .iter()
            .find(|(key, _)| key.get_ref().as_ref() == k)
            .map(|(_, v)| v)
    }

    /// What `k` holds, given what its reader made of it (`read`): `read` when it parsed, the
    /// default when the file leaves it out of a section that is a table (or absent), nothing
    /// when the key or its section is wrong. For rules between keys of two sections, which
    /// hold whatever else is wrong in either.
    pub(crate) fn parsed_or_default<T>(
        &mut self,
        k: &'static str,
        read: Option<T>,
        default: T,
    ) -> Option<T> {
        let section_ok = self.table.is_some() || self.at.is_none();
        match read {
            Some(v) => Some(v),
            None if section_ok && self.raw(k).is_none() => Some(default),
            None => None,
        }
    }

    /// Whether the section exists in the file.
    pub(crate) fn present(&self) -> bool {
        self.table.is_some()
    }

    pub(crate) fn string(
        &mut self,
        k: &'static str,
        p: &mut Problems<'_>,
    ) -> Option<(String, usize)> {
        let v = self.raw(k)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.to_string(), v.span().start)),
            other => {
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!("must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// A string naming one of `choices` (`(name, value)`); `what` names the kind in the
    /// problem an unknown name gets (`"a log format"`).
    pub(crate) fn choice<T: Copy>(
        &mut self,
        k: &'static str,
        what: &str,
        choices: &[(&str, T)],
        p: &mut Problems<'_>,
    ) -> Option<T> {
        let (v, at) = self.string(k, p)?;
        let found = choices.iter().find(|(name, _)| *name == v).map(|&(_, t)| t);
        if found.is_none() {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            p.push(
                self.key(k),
                Some(at),
                format!("{v:?} is not {what}; expected {}", names.join(" or ")),
            );
        }
        found
    }

    pub(crate) fn required_string(
        &mut self,
        k: &'static str,
        p: &mut Problems<'_>,
    ) -> Option<(String, usize)> {
        let present = self.raw(k).is_some();
        if !present {
            p.push(self.key(k), self.at, "is required");
            return None;
        }
        self.string(k, p)
    }

    pub(crate) fn boolean(&mut self, k: &'static str, p: &mut Problems<'_>) -> Option<bool> {
        let v = self.raw(k)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!("must be true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(crate) fn integer(
        &mut self,
        k: &'static str,
        min: i64,
        max: i64,
        p: &mut Problems<'_>,
    ) -> Option<i64> {
        let v = self.raw(k)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => integer_value(i),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!("{n} is out of range ({min}..={max})"),
                );
                None
            }
            None => {
                let message = match v.get_ref() {
                    // Past `i64`: shown as written (a terminal-safe integer literal, with its radix).
                    DeValue::Integer(i)
                        if i.as_str()
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-')) =>
                    {
                        let prefix = match i.radix() {
                            16 => "0x",
                            8 => "0o",
                            2 => "0b",
                            _ => "",
                        };
                        format!("{prefix}{} is out of range ({min}..={max})", i.as_str())
                    }
                    DeValue::Integer(_) => format!("is out of range ({min}..={max})"),
                    other => format!("must be an integer, found {}", other.type_str()),
                };
                p.push(self.key(k), Some(v.span().start), message);
                None
            }
        }
    }

    /// A number, integer or float, within `min..=max`.
    pub(crate) fn number(
        &mut self,
        k: &'static str,
        min: f64,
        max: f64,
        p: &mut Problems<'_>,
    ) -> Option<f64> {
        let v = self.raw(k)?;
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => integer_value(i).map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            other => {
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!("must be a number, found {}", other.type_str()),
                );
                return None;
            }
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!("is out of range ({min}..={max})"),
                );
                None
            }
        }
    }

    pub(crate) fn duration(
        &mut self,
        k: &'static str,
        min: Duration,
        max: Duration,
        p: &mut Problems<'_>,
    ) -> Option<Duration> {
        // A bare number has no unit: said with the spellings that work (`10` meant as
        // seconds is `"10s"`; `500` may be meant as milliseconds), not only that a string
        // was expected.
        if let Some(v) = self.raw(k) {
            if let DeValue::Integer(n) = v.get_ref() {
                let n = n.to_string();
                let example = if n.bytes().all(|b| b.is_ascii_digit()) {
                    format!("{n}s\" or \"{n}ms")
                } else {
                    "30s".to_owned()
                };
                p.push(
                    self.key(k),
                    Some(v.span().start),
                    format!(
                        "must be a duration string with its unit, e.g. \"{example}\", found \
                         integer"
                    ),
                );
                return None;
            }
        }
        let (s, at) = self.string(k, p)?;
        match crate::parse_duration(&s) {
            Ok(d) if d >= min && d <= max => Some(d),
            // Past any clock is past `max` too.
            Err(e) if e == crate::duration::TOO_LARGE => {
                let range = format!("{} to {}", shown(min), shown(max));
                p.push(
                    self.key(k),
                    Some(at),
                    format!("{s:?} is out of range ({range})"),
                );
                None
            }
            Ok(_) => {
                p.push(
                    self.key(k),
                    Some(at),
                    format!(
                        "{s:?} is out of range ({} to {}){}",
                        shown(min),
                        shown(max),
                        // humantime reads `M` as months: `1M` meant as a minute is 30 days.
                        if s.contains('M') {
                            "; M is months, m minutes"
                        } else {
                            ""
                        }
                    ),
                );
                None
            }
            Err(_) => {
                p.push(
                    self.key(k),
                    Some(at),
                    format!("{s:?} is not a duration (e.g. \"30s\", \"500ms\", \"2m\")"),
                );
                None
            }
        }
    }

    /// A duration that must be whole seconds: for settings whose consumer counts seconds
    /// (Pingora's grace period, token times), where a fraction would be cut off unseen.
    pub(crate) fn whole_seconds(
        &mut self,
        k: &'static str,
        min: Duration,
        max: Duration,
        why: &str,
        p: &mut Problems<'_>,
    ) -> Option<Duration> {
        let at = self.raw(k).map(|v| v.span().start);
        let d = self.duration(k, min, max, p)?;
        if d.subsec_nanos() == 0 {
            return Some(d);
        }
        p.push(
            self.key(k),
            at,
            format!(
                "{} is not whole seconds ({why})",
                humantime::format_duration(d)
            ),
        );
        None
    }

    pub(crate) fn socket_addr(
        &mut self,
        k: &'static str,
        p: &mut Problems<'_>,
    ) -> Option<SocketAddr> {
        let (s, at) = self.string(k, p)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                p.push(
                    self.key(k),
                    Some(at),
                    format!("{s:?} is not an address (e.g. \"0.0.0.0:8080\")"),
                );
                None
            }
        }
    }

    pub(crate) fn path(
        &mut self,
        k: &'static str,
        base: &Path,
        p: &mut Problems<'_>,
    ) -> Option<PathBuf> {
        let (s, at) = self.string(k, p)?;
        if s.is_empty() {
            p.push(self.key(k), Some(at), "must not be empty");
            return None;
        }
        Some(base.join(s))
    }

    /// A list of strings, each checked and converted by `check` (which returns an error
    /// message); two entries that convert to the same value are a problem too.
    pub(crate) fn strings<T: Eq + std::hash::Hash + Clone>(
        &mut self,
        k: &'static str,
        p: &mut Problems<'_>,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Option<Vec<T>> {
        let v = self.raw(k)?;
        let DeValue::Array(items) = v.get_ref() else {
            p.push(
                self.key(k),
                Some(v.span().start),
                format!(
                    "must be a list of strings, found {}",
                    v.get_ref().type_str()
                ),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let key = format!("{}.{k}[{i}]", self.name);
            match item.get_ref() {
                DeValue::String(s) => match check(s) {
                    Ok(c) if !seen.insert(c.clone()) => {
                        // Not quoted when it may hold a password (a Sentinel's URL).
                        let message = if s.contains('@') {
                            "is listed twice".to_owned()
                        } else {
                            format!("{s:?} is listed twice")
                        };
                        p.push(key, Some(item.span().start), message);
                        ok = false;
                    }
                    Ok(c) => out.push(c),
                    Err(m) => {
                        p.push(key, Some(item.span().start), m);
                        ok = false;
                    }
                },
                other => {
                    p.push(
                        key,
                        Some(item.span().start),
                        format!("must be a string, found {}", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// Ends the section without judging the keys not read: for a section whose kind could
    /// not be told, where no key can be called unknown.
    pub(crate) fn finish_unjudged(self) {}

    /// Marks `keys` as known without reading them.
    pub(crate) fn allow(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    /// Reports every key of the section that no reader asked for.
    pub(crate) fn finish(self, p: &mut Problems<'_>) {
        let Some(t) = self.table else { return };
        for (k, _) in t.iter() {
            let name = k.get_ref().as_ref();
            if !self.known.contains(&name) {
                p.push(
                    format!("{}.{name}", self.name),
                    Some(k.span().start),
                    unknown_message(name, &self.known),
                );
            }
        }
    }
}

/// "unknown key" with the closest known key, if one is close.
pub(crate) fn unknown_message(name: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .min()
        .filter(|(d, k)| *d <= 2.max(k.len() / 3));
    match best {
        Some((_, k)) => format!("unknown key; did you mean `{k}`?"),
        None => {
            // Readers may ask for a key more than once (a section read in two passes).
            let mut names = known.to_vec();
            names.sort_unstable();
            names.dedup();
            format!("unknown key; expected one of: {}", names.join(", "))
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A bound of a duration range as the docs write it: one day as `24h`, more whole days in
/// days (`3660days`, where humantime writes `10years 7days 12h`, counting a year as 365.25
/// days), others as humantime writes them (`1h`, `500ms`).
fn shown(d: Duration) -> String {
    const DAY: u64 = 86_400;
    if d.subsec_nanos() == 0 && d.as_secs() >= DAY && d.as_secs().is_multiple_of(DAY) {
        match d.as_secs() / DAY {
            // As the example config writes it.
            1 => "24h".to_owned(),
            days => format!("{days}days"),
        }
    } else {
        humantime::format_duration(d).to_string()
    }
}
