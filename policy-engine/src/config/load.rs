//! The loading pipeline shared by `kt policy lint`, `kt policy test`, the gateway and the
//! control plane: read → parse with spans → layer → structural check → typed → semantic
//! check. It never stops at the first problem it can report past.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::PolicyConfig;
use crate::diagnostics::{Code, Diagnostic, Location};
use crate::yaml::{self, NodeSpan};

/// One configuration text and the name to report it under.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// What loading produced: the typed config when there were no errors, and every finding.
#[derive(Debug, Clone, Default)]
pub struct LoadOutcome {
    pub config: Option<PolicyConfig>,
    /// The merged document as JSON (present whenever every file parsed).
    pub document: Option<Value>,
    pub diagnostics: Vec<Diagnostic>,
}

impl LoadOutcome {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Reads a file as configuration text, refusing unreadable, binary and non-UTF-8 files
/// with a diagnostic that names the file.
pub fn read_source(path: &Path) -> Result<Source, Box<Diagnostic>> {
    let name = path.display().to_string();
    let fail = |msg: String| {
        let mut d = Diagnostic::error(Code::InvalidDocument, "", msg);
        d.file = Some(name.clone());
        Box::new(d)
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read {name}: {e}")))?;
    if meta.is_dir() {
        return Err(fail(format!("{name} is a directory, not a configuration file")));
    }
    if meta.len() > yaml::MAX_FILE_BYTES as u64 {
        return Err(fail(format!(
            "{name} is {} bytes; the limit is {} bytes",
            meta.len(),
            yaml::MAX_FILE_BYTES
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {name}: {e}")))?;
    let text = decode(&bytes).map_err(|m| fail(format!("{name}: {m}")))?;
    Ok(Source { name, text })
}

fn decode(bytes: &[u8]) -> Result<String, String> {
    if let Some(pos) = memchr::memchr(0, bytes) {
        return Err(format!(
            "looks like a binary file (NUL byte at offset {pos}), not YAML text"
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        format!(
            "is not valid UTF-8 (first bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Reads and loads files in layering order.
pub fn load_files<P: AsRef<Path>>(paths: &[P]) -> LoadOutcome {
    let mut sources = Vec::with_capacity(paths.len());
    let mut diagnostics = Vec::new();
    for p in paths {
        match read_source(p.as_ref()) {
            Ok(s) => sources.push(s),
            Err(d) => diagnostics.push(*d),
        }
    }
    if !diagnostics.is_empty() {
        return LoadOutcome {
            diagnostics,
            ..LoadOutcome::default()
        };
    }
    load_sources(&sources)
}

/// Where each path of the merged document came from.
struct SpanIndex<'a> {
    files: Vec<&'a str>,
    spans: HashMap<String, (usize, NodeSpan)>,
}

impl SpanIndex<'_> {
    fn locate(&self, path: &str, prefer_key: bool) -> Option<(usize, Location)> {
        let mut p = path;
        loop {
            if let Some((file, span)) = self.spans.get(p) {
                let loc = if prefer_key {
                    span.key.unwrap_or(span.value)
                } else {
                    span.value
                };
                return Some((*file, loc));
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }

    fn attach(&self, mut d: Diagnostic) -> Diagnostic {
        let prefer_key = matches!(
            d.code,
            Code::UnknownKey | Code::UnknownPolicyKind | Code::KindNotEnforced | Code::UnreferencedPolicyBlock
        );
        let located = if d.path.is_empty() {
            Some((self.files.len() - 1, Location { line: 1, column: 1 }))
        } else {
            self.locate(&d.path, prefer_key)
        };
        if let Some((file, loc)) = located {
            if d.location.is_none() {
                d.location = Some(loc);
            }
            if d.file.is_none() {
                d.file = Some(self.files[file].to_owned());
            }
        }
        d
    }
}

/// Loads configuration texts in layering order (later layers win; see `merge`).
pub fn load_sources(sources: &[Source]) -> LoadOutcome {
    let mut diagnostics = Vec::new();
    let mut docs = Vec::with_capacity(sources.len());
    for src in sources {
        match yaml::parse(&src.text) {
            Ok((doc, diags)) => {
                diagnostics.extend(diags.into_iter().map(|mut d| {
                    d.file = Some(src.name.clone());
                    d
                }));
                docs.push(doc);
            }
            Err(diags) => diagnostics.extend(diags.into_iter().map(|mut d| {
                d.file = Some(src.name.clone());
                d
            })),
        }
    }
    if docs.len() != sources.len() {
        return LoadOutcome {
            diagnostics,
            ..LoadOutcome::default()
        };
    }
    let mut index = SpanIndex {
        files: sources.iter().map(|s| s.name.as_str()).collect(),
        spans: HashMap::new(),
    };
    let mut merged: Option<Value> = None;
    for (i, doc) in docs.into_iter().enumerate() {
        if !doc.value.is_object() {
            let mut d = Diagnostic::error(
                Code::WrongType,
                "",
                format!("document: expected mapping, found {}", kind_of(&doc.value)),
            )
            .with_help(
                "a policy-config.yaml is a mapping with at least `pack` and `policies`; run `kt init` for a starter",
            );
            d.file = Some(sources[i].name.clone());
            d.location = Some(Location { line: 1, column: 1 });
            diagnostics.push(d);
            continue;
        }
        index.spans.extend(doc.spans.into_iter().map(|(k, v)| (k, (i, v))));
        match &mut merged {
            None => merged = Some(doc.value),
            Some(m) => super::merge(m, doc.value),
        }
    }
    let Some(document) = merged.filter(|_| !diagnostics.iter().any(|d| d.code == Code::WrongType)) else {
        return LoadOutcome {
            diagnostics,
            ..LoadOutcome::default()
        };
    };

    let mut structural = Vec::new();
    super::schema::check(&document, &mut structural);
    let structural_errors = !structural.is_empty();
    diagnostics.extend(structural.into_iter().map(|d| index.attach(d)));
    if structural_errors {
        // The typed stage needs a structurally valid document; still run the checks that
        // only need the raw value so one run reports as much as possible.
        let mut semantic = Vec::new();
        super::validate::check_raw(&document, &mut semantic);
        diagnostics.extend(semantic.into_iter().map(|d| index.attach(d)));
        sort(&mut diagnostics, sources);
        return LoadOutcome {
            config: None,
            document: Some(document),
            diagnostics,
        };
    }

    let config: PolicyConfig = match serde_json::from_value(document.clone()) {
        Ok(c) => c,
        Err(e) => {
            diagnostics.push(index.attach(Diagnostic::error(
                Code::WrongType,
                "",
                format!("invalid configuration: {e}"),
            )));
            return LoadOutcome {
                config: None,
                document: Some(document),
                diagnostics,
            };
        }
    };
    let mut semantic = Vec::new();
    super::validate::check_raw(&document, &mut semantic);
    super::validate::check(&config, &mut semantic);
    diagnostics.extend(semantic.into_iter().map(|d| index.attach(d)));
    let ok = !diagnostics.iter().any(Diagnostic::is_error);
    sort(&mut diagnostics, sources);
    LoadOutcome {
        config: ok.then_some(config),
        document: Some(document),
        diagnostics,
    }
}

/// Orders findings as they appear: by file (layering order), then line and column.
fn sort(diagnostics: &mut [Diagnostic], sources: &[Source]) {
    diagnostics.sort_by_key(|d| {
        let file = d
            .file
            .as_ref()
            .and_then(|f| sources.iter().position(|s| &s.name == f))
            .unwrap_or(usize::MAX);
        let loc = d.location.map(|l| (l.line, l.column)).unwrap_or((usize::MAX, 0));
        (file, loc)
    });
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
