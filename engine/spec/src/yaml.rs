//! YAML text -> a spanned node tree, reporting every duplicate key and
//! unsupported feature, on saphyr-parser (a maintained YAML 1.2 parser).
//!
//! Scalars are resolved with the YAML 1.2 core schema, so `on:` and `no` stay
//! strings and only `true`/`false` are booleans.

use std::collections::HashMap;

use engine_core::diagnostics::code;
use engine_core::{Diagnostic, FileId, SourceFile, Span};
use saphyr_parser::{Event, Parser, ScalarStyle, Span as YSpan};
use serde_json::{Map, Number, Value};

/// A YAML value with its location.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub kind: NodeKind,
    /// Where it is.
    pub span: Span,
}

/// The shapes a node can have.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A scalar, already resolved to JSON.
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in file order (duplicates removed).
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its location.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// Where a JSON value came from: its key (if in a mapping) and its value.
#[derive(Debug, Clone, Copy)]
pub struct Loc {
    /// The mapping key, if the value is a mapping entry.
    pub key: Option<Span>,
    /// The value.
    pub value: Span,
}

/// JSON pointer -> location, for every value of a document (a fast non-DoS-resistant
/// hash: the keys come from the user's own file).
pub type LocMap = HashMap<String, Loc, std::hash::BuildHasherDefault<rustc_hash::FxHasher>>;

struct Reader<'a> {
    file: &'a SourceFile,
    id: FileId,
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    diags: Vec<Diagnostic>,
    /// Last (char index, byte offset) converted: markers come in nearly increasing
    /// order, so converting from here keeps the whole parse linear.
    cursor: (usize, usize),
}

/// Parse a file into a node tree. `None` when the YAML does not parse at all;
/// the diagnostics say why (and list duplicate keys even when it does).
#[must_use]
pub fn parse(file: &SourceFile, id: FileId) -> (Option<Node>, Vec<Diagnostic>) {
    let mut r = Reader { file, id, parser: Parser::new_from_str(&file.text), anchors: HashMap::new(), diags: Vec::new(), cursor: (0, 0) };
    let node = r.document();
    (node, r.diags)
}

impl<'a> Reader<'a> {
    fn span(&mut self, s: YSpan) -> Span {
        let start = self.byte(s.start.index());
        let end = self.byte(s.end.index());
        Span::new(self.id, start, end.max(start))
    }

    /// Byte offset of a char index (saphyr's markers count characters).
    fn byte(&mut self, char_index: usize) -> usize {
        let text = &self.file.text;
        let (mut ci, mut bi) = self.cursor;
        if char_index < ci {
            (ci, bi) = (0, 0);
        }
        let n = char_index - ci;
        let rest = &text[bi..];
        let b = if rest.len() >= n && rest.as_bytes()[..n].is_ascii() {
            bi + n
        } else {
            rest.char_indices().nth(n).map_or(text.len(), |(i, _)| bi + i)
        };
        self.cursor = (char_index, b);
        b
    }

    fn next(&mut self) -> Option<(Event<'a>, YSpan)> {
        match self.parser.next_event()? {
            Ok(ev) => Some(ev),
            Err(e) => {
                let m = e.marker();
                let at = self.file.offset(m.line(), m.col() + 1);
                let end = self.file.text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                self.diags.push(
                    Diagnostic::error(code::YAML_SYNTAX, format!("invalid YAML: {}", e.info()), Span::new(self.id, at, end))
                        .help("check the indentation and the quotes on this line and the one before"),
                );
                None
            }
        }
    }

    fn document(&mut self) -> Option<Node> {
        let mut root = None;
        loop {
            let (ev, sp) = self.next()?;
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        let span = self.span(sp);
                        self.diags.push(Diagnostic::error(code::YAML_UNSUPPORTED, "a workflow file holds one YAML document", span)
                            .help("remove the `---` and everything after it, or split the file"));
                        return root;
                    }
                }
                Event::StreamEnd => {
                    return Some(root.unwrap_or_else(|| Node {
                        kind: NodeKind::Scalar(Value::Null),
                        span: Span::new(self.id, 0, 0),
                    }));
                }
                other => root = Some(self.node(other, sp)?),
            }
        }
    }

    fn node(&mut self, ev: Event<'a>, sp: YSpan) -> Option<Node> {
        let span = self.span(sp);
        Some(match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let value = match tag {
                    Some(t) if !t.is_yaml_core_schema() => {
                        self.diags.push(Diagnostic::error(code::YAML_UNSUPPORTED, format!("YAML tag `{}{}` is not supported", t.handle, t.suffix), span));
                        Value::String(text.to_string())
                    }
                    Some(t) => self.tagged(&text, &t.suffix, span),
                    None => resolve(&text, style),
                };
                let n = Node { kind: NodeKind::Scalar(value), span };
                self.anchor(anchor, &n);
                n
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => Node { kind: n.kind.clone(), span },
                None => {
                    self.diags.push(Diagnostic::error(code::YAML_SYNTAX, "alias to an unknown anchor", span));
                    Node { kind: NodeKind::Scalar(Value::Null), span }
                }
            },
            Event::SequenceStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "seq", span);
                let mut items = Vec::new();
                let end = loop {
                    let (ev, sp) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break self.span(sp);
                    }
                    items.push(self.node(ev, sp)?);
                };
                let n = Node { kind: NodeKind::Seq(items), span: Span::new(self.id, span.start as usize, (end.end as usize).max(span.end as usize)) };
                self.anchor(anchor, &n);
                n
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection_tag(tag.as_deref(), "map", span);
                let mut entries: Vec<(Key, Node)> = Vec::new();
                let mut seen: HashMap<String, Span> = HashMap::new();
                // What a merge key would bring in; reported, but kept so that the
                // checks after this one see the mapping as its author meant it.
                let mut merged: Vec<(Key, Node)> = Vec::new();
                let end = loop {
                    let (ev, sp) = self.next()?;
                    if ev == Event::MappingEnd {
                        break self.span(sp);
                    }
                    let is_merge = matches!(&ev, Event::Scalar(t, ScalarStyle::Plain, _, None) if t == "<<");
                    let key_node = self.node(ev, sp)?;
                    let (kev, ksp) = self.next()?;
                    let value = self.node(kev, ksp)?;
                    if is_merge {
                        self.diags.push(
                            Diagnostic::error(code::YAML_UNSUPPORTED, "YAML merge keys (`<<`) are not supported", key_node.span)
                                .help("write the keys out in this mapping; an alias (`*name`) can still stand for a whole value"),
                        );
                        let sources = match value.kind {
                            NodeKind::Seq(items) => items,
                            _ => vec![value],
                        };
                        for src in sources {
                            if let NodeKind::Map(es) = src.kind {
                                for (k, n) in es {
                                    if !merged.iter().any(|(m, _)| m.name == k.name) {
                                        merged.push((k, n));
                                    }
                                }
                            }
                        }
                        continue;
                    }
                    let name = match &key_node.kind {
                        NodeKind::Scalar(Value::String(s)) => s.clone(),
                        NodeKind::Scalar(Value::Null) => String::new(),
                        NodeKind::Scalar(v) => v.to_string(),
                        _ => {
                            self.diags.push(Diagnostic::error(code::YAML_UNSUPPORTED, "mapping keys must be plain strings", key_node.span));
                            continue;
                        }
                    };
                    if let Some(first) = seen.get(&name) {
                        self.diags.push(
                            Diagnostic::error(code::DUPLICATE_KEY, format!("duplicate key `{name}`"), key_node.span)
                                .label("defined again here")
                                .secondary(*first, "first defined here")
                                .help("YAML would silently keep only the last one; rename or merge the entries"),
                        );
                        continue;
                    }
                    seen.insert(name.clone(), key_node.span);
                    entries.push((Key { name, span: key_node.span }, value));
                };
                entries.extend(merged.into_iter().filter(|(k, _)| !seen.contains_key(&k.name)));
                let n = Node { kind: NodeKind::Map(entries), span: Span::new(self.id, span.start as usize, (end.end as usize).max(span.end as usize)) };
                self.anchor(anchor, &n);
                n
            }
            _ => Node { kind: NodeKind::Scalar(Value::Null), span },
        })
    }

    fn anchor(&mut self, id: usize, n: &Node) {
        if id != 0 {
            self.anchors.insert(id, n.clone());
        }
    }

    fn check_collection_tag(&mut self, tag: Option<&saphyr_parser::Tag>, expect: &str, span: Span) {
        if let Some(t) = tag {
            if !(t.is_yaml_core_schema() && t.suffix == expect) {
                self.diags.push(Diagnostic::error(code::YAML_UNSUPPORTED, format!("YAML tag `{}{}` is not supported", t.handle, t.suffix), span));
            }
        }
    }

    fn tagged(&mut self, text: &str, suffix: &str, span: Span) -> Value {
        let v = resolve(text, ScalarStyle::Plain);
        let ok = match suffix {
            "str" => return Value::String(text.to_string()),
            "int" => v.is_i64() || v.is_u64(),
            "float" => v.is_number(),
            "bool" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if !ok {
            self.diags.push(Diagnostic::error(code::YAML_UNSUPPORTED, format!("`{text}` is not a valid !!{suffix}"), span));
        }
        v
    }
}

/// Resolve a scalar with the YAML 1.2 core schema.
fn resolve(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => return Value::String(text.to_string()),
        _ => {}
    }
    let b = text.as_bytes();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits(unsigned) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
    }
    if let Some(h) = text.strip_prefix("0x") {
        if let Ok(i) = i64::from_str_radix(h, 16) {
            return Value::Number(i.into());
        }
    }
    if let Some(o) = text.strip_prefix("0o") {
        if let Ok(i) = i64::from_str_radix(o, 8) {
            return Value::Number(i.into());
        }
    }
    let looks_float = !b.is_empty()
        && unsigned.bytes().any(|c| c.is_ascii_digit())
        && unsigned.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'))
        && unsigned.as_bytes()[0] != b'e' && unsigned.as_bytes()[0] != b'E';
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(text.to_string())
}

/// Escape a key for a JSON pointer.
#[must_use]
pub fn pointer_escape(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains(['~', '/']) {
        std::borrow::Cow::Owned(key.replace('~', "~0").replace('/', "~1"))
    } else {
        std::borrow::Cow::Borrowed(key)
    }
}

impl Node {
    /// The node as JSON, filling `locs` with the location of every value.
    pub fn to_json(&self, pointer: &mut String, key: Option<Span>, locs: &mut LocMap) -> Value {
        locs.insert(pointer.clone(), Loc { key, value: self.span });
        match &self.kind {
            NodeKind::Scalar(v) => v.clone(),
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, n) in items.iter().enumerate() {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&i.to_string());
                    out.push(n.to_json(pointer, None, locs));
                    pointer.truncate(len);
                }
                Value::Array(out)
            }
            NodeKind::Map(entries) => {
                let mut out = Map::with_capacity(entries.len());
                for (k, n) in entries {
                    let len = pointer.len();
                    pointer.push('/');
                    pointer.push_str(&pointer_escape(&k.name));
                    out.insert(k.name.clone(), n.to_json(pointer, Some(k.span), locs));
                    pointer.truncate(len);
                }
                Value::Object(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine_core::SourceMap;

    fn load(text: &str) -> (SourceMap, Option<Node>, Vec<Diagnostic>) {
        let mut map = SourceMap::default();
        let id = map.add("t.yaml", text.to_string());
        let (n, d) = parse(map.get(id), id);
        (map, n, d)
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let (_, n, d) = load("a: 1\nb: on\nc: true\nd: '1'\ne: 1.5\nf: ~\ng: 0x10\nh: 1e3\ni: 2024-01-01\n");
        assert!(d.is_empty());
        let mut locs = LocMap::default();
        let v = n.unwrap().to_json(&mut String::new(), None, &mut locs);
        assert_eq!(v, serde_json::json!({"a": 1, "b": "on", "c": true, "d": "1", "e": 1.5, "f": null, "g": 16, "h": 1000.0, "i": "2024-01-01"}));
    }

    #[test]
    fn reports_every_duplicate_key_with_both_places() {
        let (map, _, d) = load("a: 1\nb: 2\na: 3\nsteps:\n  x: 1\n  x: 2\n");
        assert_eq!(d.len(), 2);
        assert_eq!(map.location(d[0].primary.as_ref().unwrap().span), "t.yaml:3:1");
        assert_eq!(map.location(d[0].secondary[0].span), "t.yaml:1:1");
        assert_eq!(map.location(d[1].primary.as_ref().unwrap().span), "t.yaml:6:3");
    }

    #[test]
    fn syntax_error_is_located() {
        let (map, n, d) = load("a: [1\nb: 2\n");
        assert!(n.is_none());
        assert_eq!(d[0].code, code::YAML_SYNTAX);
        assert_eq!(map.location(d[0].primary.as_ref().unwrap().span), "t.yaml:2:2");
    }

    #[test]
    fn spans_of_values_and_pointers() {
        let (map, n, _) = load("steps:\n  é:\n    uses: \"x.y\"\n");
        let mut locs = LocMap::default();
        n.unwrap().to_json(&mut String::new(), None, &mut locs);
        let l = locs["/steps/é/uses"];
        assert_eq!(map.location(l.value), "t.yaml:3:11");
        assert_eq!(map.snippet(l.value), "\"x.y\"");
        assert_eq!(map.location(l.key.unwrap()), "t.yaml:3:5");
    }

    #[test]
    fn merge_keys_are_reported_and_applied() {
        let (map, n, d) = load("a: &r {x: 1, y: 2}\nb:\n  <<: *r\n  y: 3\nc: {\"<<\": 1}\n");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, code::YAML_UNSUPPORTED);
        assert_eq!(map.location(d[0].primary.as_ref().unwrap().span), "t.yaml:3:3");
        let v = n.unwrap().to_json(&mut String::new(), None, &mut LocMap::default());
        assert_eq!(v["b"], serde_json::json!({"y": 3, "x": 1}));
        assert_eq!(v["c"], serde_json::json!({"<<": 1}));
    }

    #[test]
    fn anchors_and_aliases_copy_values() {
        let (_, n, d) = load("a: &r {x: 1}\nb: *r\n");
        assert!(d.is_empty());
        let v = n.unwrap().to_json(&mut String::new(), None, &mut LocMap::default());
        assert_eq!(v["b"], serde_json::json!({"x": 1}));
    }
}
