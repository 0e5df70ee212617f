//! Spanned YAML loading: turns `policy-config.yaml` text into a JSON value plus a map from
//! YAML paths (`policies.chain[0]`) to line/column, so every diagnostic can point at the
//! exact place in the file. Duplicate keys, alias bombs and pathological nesting are
//! reported here, before any typed deserialization happens.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::diagnostics::{Code, Diagnostic, Location};

/// Largest configuration file accepted (a config with 10,000 blocked terms is ~300 KiB).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest nesting accepted; the real schema is under 10 levels deep.
pub const MAX_DEPTH: usize = 64;
/// Upper bound on nodes materialised, counting alias expansions (defeats "billion laughs").
pub const MAX_NODES: usize = 2_000_000;

/// Where a path's key and value sit in the source file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSpan {
    pub key: Option<Location>,
    pub value: Location,
}

/// A parsed YAML document: the value and the location of every path in it.
#[derive(Debug, Clone, Default)]
pub struct SpannedDoc {
    pub value: Value,
    pub spans: HashMap<String, NodeSpan>,
}

impl SpannedDoc {
    /// The best location for a diagnostic at `path`: the key when the path names one,
    /// else the value, else the nearest ancestor that has a location.
    pub fn locate(&self, path: &str, prefer_key: bool) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(span) = self.spans.get(p) {
                return Some(if prefer_key {
                    span.key.unwrap_or(span.value)
                } else {
                    span.value
                });
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Parses YAML text. Returns the document, or every syntax-level diagnostic found.
/// Non-fatal problems (duplicate keys) are returned alongside the document.
pub fn parse(text: &str) -> Result<(SpannedDoc, Vec<Diagnostic>), Vec<Diagnostic>> {
    if text.len() > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::error(
            Code::InvalidDocument,
            "",
            format!("file is {} bytes; the limit is {} bytes", text.len(), MAX_FILE_BYTES),
        )]);
    }
    if text.trim().is_empty() {
        return Err(vec![
            Diagnostic::error(Code::InvalidDocument, "", "file is empty")
                .with_help("run `kt init` to write a starter policy-config.yaml"),
        ]);
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0usize;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                let m = e.marker();
                let message = if e.info().contains("recursion limit") {
                    "YAML nesting is too deep (recursion limit exceeded)".to_owned()
                } else {
                    format!("YAML syntax error: {}", e.info())
                };
                return Err(vec![Diagnostic::error(Code::YamlSyntax, "", message).at(Location {
                    line: m.line(),
                    column: m.col() + 1,
                })]);
            }
        };
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(vec![
                        Diagnostic::error(
                            Code::InvalidDocument,
                            "",
                            "file holds more than one YAML document (`---`)",
                        )
                        .at(loc(&span))
                        .with_help("keep one configuration per file; layer files with repeated --policy-config flags"),
                    ]);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
            other => {
                if let Err(d) = builder.event(other, span) {
                    return Err(vec![*d]);
                }
            }
        }
    }
    let Some(value) = builder.root.take() else {
        return Err(vec![Diagnostic::error(
            Code::InvalidDocument,
            "",
            "file holds no YAML document",
        )]);
    };
    Ok((
        SpannedDoc {
            value,
            spans: builder.spans,
        },
        builder.diagnostics,
    ))
}

fn loc(span: &Span) -> Location {
    Location {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

enum Frame {
    Seq {
        path: String,
        items: Vec<Value>,
    },
    Map {
        path: String,
        map: Map<String, Value>,
        pending_key: Option<(String, Location)>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    seq_anchors: Vec<usize>,
    root: Option<Value>,
    spans: HashMap<String, NodeSpan>,
    /// Anchored values with their node counts, so aliases are counted before cloning.
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
    diagnostics: Vec<Diagnostic>,
}

impl Builder {
    fn child_path(&self) -> Option<(String, Option<Location>)> {
        match self.stack.last() {
            None => Some((String::new(), None)),
            Some(Frame::Seq { path, items }) => Some((format!("{path}[{}]", items.len()), None)),
            Some(Frame::Map {
                path,
                pending_key: Some((k, kl)),
                ..
            }) => Some((
                if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                },
                Some(*kl),
            )),
            Some(Frame::Map { pending_key: None, .. }) => None,
        }
    }

    fn count(&mut self, n: usize, span: &Span) -> Result<(), Box<Diagnostic>> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Box::new(
                Diagnostic::error(
                    Code::InvalidDocument,
                    "",
                    format!("document expands to more than {MAX_NODES} nodes (alias expansion bomb?)"),
                )
                .at(loc(span)),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), Box<Diagnostic>> {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                // A scalar in key position becomes the pending key of the enclosing map.
                if let Some(Frame::Map { pending_key, .. }) = self.stack.last_mut()
                    && pending_key.is_none()
                {
                    *pending_key = Some((text.into_owned(), loc(&span)));
                    return Ok(());
                }
                self.count(1, &span)?;
                let tag = tag.map(|t| t.suffix.clone());
                let value = resolve_scalar(&text, style, tag.as_deref());
                if anchor != 0 {
                    self.anchors.insert(anchor, (value.clone(), 1));
                }
                self.push_value(value, &span)
            }
            Event::Alias(id) => {
                if let Some(Frame::Map { pending_key, .. }) = self.stack.last()
                    && pending_key.is_none()
                {
                    return Err(Box::new(
                        Diagnostic::error(Code::YamlSyntax, "", "aliases cannot be used as mapping keys")
                            .at(loc(&span)),
                    ));
                }
                let Some(&(_, n)) = self.anchors.get(&id) else {
                    return Err(Box::new(
                        Diagnostic::error(Code::YamlSyntax, "", "unknown alias").at(loc(&span)),
                    ));
                };
                self.count(n, &span)?;
                let value = self.anchors.get(&id).map(|(v, _)| v.clone()).unwrap_or_default();
                self.push_value(value, &span)
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let is_map = matches!(event, Event::MappingStart(..));
                let Some((path, key_loc)) = self.child_path() else {
                    return Err(Box::new(
                        Diagnostic::error(
                            Code::YamlSyntax,
                            "",
                            "complex mapping keys (a list or mapping used as a key) are not supported",
                        )
                        .at(loc(&span)),
                    ));
                };
                if self.stack.len() >= MAX_DEPTH {
                    return Err(Box::new(
                        Diagnostic::error(
                            Code::InvalidDocument,
                            &path,
                            format!("nesting deeper than {MAX_DEPTH} levels"),
                        )
                        .at(loc(&span)),
                    ));
                }
                self.count(1, &span)?;
                self.spans.insert(
                    path.clone(),
                    NodeSpan {
                        key: key_loc,
                        value: loc(&span),
                    },
                );
                if is_map {
                    self.stack.push(Frame::Map {
                        path,
                        map: Map::new(),
                        pending_key: None,
                        anchor,
                    });
                } else {
                    self.seq_anchors.push(anchor);
                    self.stack.push(Frame::Seq {
                        path,
                        items: Vec::new(),
                    });
                }
                Ok(())
            }
            Event::SequenceEnd => {
                let anchor = self.seq_anchors.pop().unwrap_or(0);
                if let Some(Frame::Seq { items, .. }) = self.stack.pop() {
                    let value = Value::Array(items);
                    if anchor != 0 {
                        let n = node_count(&value);
                        self.anchors.insert(anchor, (value.clone(), n));
                    }
                    self.attach(value);
                }
                Ok(())
            }
            Event::MappingEnd => {
                if let Some(Frame::Map { map, anchor, .. }) = self.stack.pop() {
                    let value = Value::Object(map);
                    if anchor != 0 {
                        let n = node_count(&value);
                        self.anchors.insert(anchor, (value.clone(), n));
                    }
                    self.attach(value);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Records the span of a scalar or alias value and attaches it to its parent.
    fn push_value(&mut self, value: Value, span: &Span) -> Result<(), Box<Diagnostic>> {
        if let Some((path, key_loc)) = self.child_path() {
            self.spans.insert(
                path,
                NodeSpan {
                    key: key_loc,
                    value: loc(span),
                },
            );
        }
        self.attach(value);
        Ok(())
    }

    fn attach(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map {
                path, map, pending_key, ..
            }) => {
                let Some((key, key_loc)) = pending_key.take() else {
                    return;
                };
                if map.contains_key(&key) {
                    let full = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.diagnostics.push(
                        Diagnostic::error(Code::YamlSyntax, &full, format!("duplicate key '{key}'"))
                            .at(key_loc)
                            .with_help("each key may appear once per mapping; the first value is kept"),
                    );
                    return;
                }
                map.insert(key, value);
            }
        }
    }
}

fn node_count(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(node_count).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(node_count).sum::<usize>(),
        _ => 1,
    }
}

/// YAML 1.2 core-schema resolution of a scalar. Quoted scalars and `!!str` stay strings.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Value {
    match tag {
        Some("str") => return Value::String(text.to_owned()),
        Some("null") => return Value::Null,
        Some("bool") | Some("int") | Some("float") => {
            return resolve_plain(text).unwrap_or_else(|| Value::String(text.to_owned()));
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    resolve_plain(text).unwrap_or_else(|| Value::String(text.to_owned()))
}

fn resolve_plain(text: &str) -> Option<Value> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinities; keep the text so a type error names it.
            return Some(Value::String(text.to_owned()));
        }
        _ => {}
    }
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(|n| Value::Number(n.into()));
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok().map(|n| Value::Number(n.into()));
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Some(Value::Number(n.into()));
        }
        if let Ok(n) = text.parse::<u64>() {
            return Some(Value::Number(n.into()));
        }
    }
    if is_yaml_float(digits) {
        return text.parse::<f64>().ok().and_then(Number::from_f64).map(Value::Number);
    }
    None
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_yaml_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let ok_mantissa = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && !(a.is_empty() && b.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let ok_exp = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit())
        }
    };
    ok_mantissa && ok_exp && (mantissa.contains('.') || exp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(text: &str) -> SpannedDoc {
        parse(text).expect("parses").0
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let d = doc("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: 0.1.0\ng: yes\nh: 0x1f\ni: -3\nj: 1e3\n");
        assert_eq!(
            d.value,
            json!({"a":1,"b":1.5,"c":true,"d":null,"e":"1","f":"0.1.0","g":"yes","h":31,"i":-3,"j":1000.0})
        );
    }

    #[test]
    fn records_key_and_value_locations() {
        let d = doc("pack:\n  name: x\npolicies:\n  chain:\n    - prompt-injection\n");
        let chain0 = d.spans["policies.chain[0]"];
        assert_eq!(chain0.value, Location { line: 5, column: 7 });
        assert_eq!(d.spans["pack.name"].key, Some(Location { line: 2, column: 3 }));
        assert_eq!(d.locate("policies.chain[0].nope", false), Some(chain0.value));
    }

    #[test]
    fn duplicate_keys_are_reported_with_position_and_first_value_kept() {
        let (d, diags) = parse("a: 1\nb: 2\na: 3\n").expect("parses");
        assert_eq!(d.value, json!({"a":1,"b":2}));
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, Code::YamlSyntax);
        assert_eq!(diags[0].location, Some(Location { line: 3, column: 1 }));
        assert!(diags[0].message.contains("duplicate key 'a'"));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let errs = parse("a: [1, 2\nb: 3\n").expect_err("invalid");
        assert_eq!(errs[0].code, Code::YamlSyntax);
        assert!(errs[0].location.is_some());
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let d = doc("base: &b {x: 1}\nother: *b\n");
        assert_eq!(d.value["other"], json!({"x":1}));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for name in "bcdefghij".chars() {
            bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = name;
        }
        let errs = parse(&bomb).expect_err("bomb refused");
        assert!(errs[0].message.contains("alias expansion"), "{}", errs[0].message);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let errs = parse(&text).expect_err("too deep");
        assert!(
            errs.iter()
                .any(|e| e.message.contains("nesting") || e.code == Code::YamlSyntax)
        );
    }

    #[test]
    fn empty_and_multi_document_files_are_refused() {
        assert!(parse("  \n\n").expect_err("empty")[0].message.contains("empty"));
        assert!(parse("# only a comment\n").is_err());
        assert!(
            parse("a: 1\n---\nb: 2\n").expect_err("two docs")[0]
                .message
                .contains("more than one")
        );
    }
}
