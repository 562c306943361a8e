//! Key paths for TOML's own errors: which dotted key a "duplicate key" at a byte span is.

/// The key path and message for each of TOML's "duplicate key" errors, at `spans`: a key set
/// twice in its table (`server.threads`), a table declared twice (`[auth]`), or a table
/// header naming a key already set (`threads = 1`, then `[server.threads]`). The path is the
/// one the TOML parser reads there (see [`KeyPaths`]), whatever strings, inline tables or
/// dotted keys lie between the key and its table's header. One pass over the document for
/// them all: a pass each made a file of a few thousand repeated keys take minutes.
pub(super) fn duplicates_named(
    text: &str,
    spans: &[std::ops::Range<usize>],
) -> Vec<(String, String)> {
    let mut paths = KeyPaths::new(text, spans.iter().map(|s| s.start).collect());
    let tokens = toml_parser::Source::new(text).lex().into_vec();
    let mut guard = toml_parser::parser::RecursionGuard::new(&mut paths, 128);
    toml_parser::parser::parse_document(&tokens, &mut guard, &mut ());
    spans
        .iter()
        .map(|span| match paths.found.get(&span.start) {
            Some(Found::Table { path, again: true }) => {
                let message = format!("duplicate table: [{path}] twice; merge the two");
                (path.clone(), message)
            }
            Some(Found::Table { path, again: false }) => {
                let message = format!(
                    "[{path}] names a key already set above (to a value, or by dotted keys); \
                     set it in one place"
                );
                (path.clone(), message)
            }
            Some(Found::Key(key)) => (key.clone(), "duplicate key: set twice; keep one".to_owned()),
            None => (
                text.get(span.clone())
                    .unwrap_or("")
                    .trim_matches(['"', '\''])
                    .to_owned(),
                "duplicate key: set twice; keep one".to_owned(),
            ),
        })
        .collect()
}

/// A key TOML found set twice, by its path.
enum Found {
    /// In a `[table]` header: `again` when a header named that table before.
    Table { path: String, again: bool },
    /// A key set to a value.
    Key(String),
}

/// Follows the TOML parser's events to the keys that start at the bytes `targets`, and names
/// each by its dotted path (`auth.hmac_keys[1].kid`).
struct KeyPaths<'t> {
    text: &'t str,
    targets: std::collections::HashSet<usize>,
    /// The targets' paths, by where they start.
    found: std::collections::HashMap<usize, Found>,
    /// The paths `[table]` headers named so far.
    headers_seen: std::collections::HashSet<String>,
    /// The keys of the `[header]` being read.
    header: Option<Vec<String>>,
    /// How many `[[path]]` tables each path has had: the index of the next.
    array_tables: std::collections::HashMap<String, usize>,
    /// Tables and arrays open, innermost last; the first is the `[table]` of the last header.
    open: Vec<Open>,
}

enum Open {
    /// A table at `path`, with the keys of the dotted key being read, then the path of the
    /// value they name.
    Table {
        path: String,
        keys: Vec<String>,
        value: String,
    },
    /// An array at `path`, at its `index`th value.
    Array { path: String, index: usize },
}

fn join(path: &str, keys: &[String]) -> String {
    let keys = keys.join(".");
    match (path.is_empty(), keys.is_empty()) {
        (true, _) => keys,
        (_, true) => path.to_owned(),
        _ => format!("{path}.{keys}"),
    }
}

impl<'t> KeyPaths<'t> {
    fn new(text: &'t str, targets: std::collections::HashSet<usize>) -> Self {
        Self {
            text,
            targets,
            found: std::collections::HashMap::new(),
            headers_seen: std::collections::HashSet::new(),
            header: None,
            array_tables: std::collections::HashMap::new(),
            open: vec![Open::Table {
                path: String::new(),
                keys: Vec::new(),
                value: String::new(),
            }],
        }
    }

    /// The path of the value that begins now: the value of a key, or an array's next.
    fn value_path(&self) -> String {
        match self.open.last() {
            Some(Open::Table { value, .. }) => value.clone(),
            Some(Open::Array { path, index }) => format!("{path}[{index}]"),
            None => String::new(),
        }
    }

    fn header_open(&mut self) {
        self.header = Some(Vec::new());
    }

    /// A header read: its table is the one keys are in now. Each array of tables on its path
    /// is at the last table it has (`[[a]]`, `[[a.b]]`: `a[0].b[0]`).
    fn header_close(&mut self, array: bool) {
        let keys = self.header.take().unwrap_or_default();
        if !array {
            self.headers_seen.insert(join("", &keys));
        }
        let mut path = String::new();
        for (i, k) in keys.iter().enumerate() {
            path = join(&path, std::slice::from_ref(k));
            if array && i + 1 == keys.len() {
                let n = self.array_tables.entry(path.clone()).or_insert(0);
                path = format!("{path}[{n}]");
                *n += 1;
            } else if let Some(n) = self.array_tables.get(&path) {
                path = format!("{path}[{}]", n - 1);
            }
        }
        self.open = vec![Open::Table {
            path,
            keys: Vec::new(),
            value: String::new(),
        }];
    }

    fn close(&mut self) {
        if self.open.len() > 1 {
            self.open.pop();
        }
    }
}

impl toml_parser::parser::EventReceiver for KeyPaths<'_> {
    fn std_table_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_open();
    }

    fn std_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_close(false);
    }

    fn array_table_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_open();
    }

    fn array_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.header_close(true);
    }

    fn inline_table_open(
        &mut self,
        _: toml_parser::Span,
        _: &mut dyn toml_parser::ErrorSink,
    ) -> bool {
        let path = self.value_path();
        self.open.push(Open::Table {
            path,
            keys: Vec::new(),
            value: String::new(),
        });
        true
    }

    fn inline_table_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.close();
    }

    fn array_open(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) -> bool {
        let path = self.value_path();
        self.open.push(Open::Array { path, index: 0 });
        true
    }

    fn array_close(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        self.close();
    }

    fn simple_key(
        &mut self,
        span: toml_parser::Span,
        encoding: Option<toml_parser::decoder::Encoding>,
        _: &mut dyn toml_parser::ErrorSink,
    ) {
        let raw = self.text.get(span.start()..span.end()).unwrap_or("");
        let mut name = String::new();
        toml_parser::Raw::new_unchecked(raw, encoding, span).decode_key(&mut name, &mut ());
        let is_target = self.targets.contains(&span.start());
        if let Some(header) = &mut self.header {
            header.push(name);
            if is_target {
                let path = join("", header);
                let again = self.headers_seen.contains(&path);
                self.found
                    .insert(span.start(), Found::Table { path, again });
            }
        } else if let Some(Open::Table { path, keys, .. }) = self.open.last_mut() {
            keys.push(name);
            if is_target {
                self.found
                    .insert(span.start(), Found::Key(join(path, keys)));
            }
        }
    }

    fn key_val_sep(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        if let Some(Open::Table { path, keys, value }) = self.open.last_mut() {
            *value = join(path, keys);
            keys.clear();
        }
    }

    fn value_sep(&mut self, _: toml_parser::Span, _: &mut dyn toml_parser::ErrorSink) {
        if let Some(Open::Array { index, .. }) = self.open.last_mut() {
            *index += 1;
        }
    }
}
