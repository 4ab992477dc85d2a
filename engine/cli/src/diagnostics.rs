//! Rendering diagnostics: `error[CODE]: message`, `--> file:line:col`, the source
//! line with a caret, notes and `help:` lines (annotate-snippets).

use std::io::IsTerminal;

use annotate_snippets::{Level, Renderer, Snippet};
use engine_core::{Diagnostic, Severity, SourceMap, Span};
use serde_json::json;

fn range(map: &SourceMap, span: Span) -> std::ops::Range<usize> {
    let text = &map.get(span.file).text;
    let (mut s, mut e) = (span.start as usize, span.end as usize);
    if s >= text.len() {
        // Point at the last character rather than past the end.
        s = text.len().saturating_sub(1);
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        e = text.len();
    }
    if e <= s {
        e = text[s..].chars().next().map_or(s, |c| s + c.len_utf8());
        if text[s..e].contains('\n') {
            e = s;
        }
    }
    s..e
}

/// Render one diagnostic as text.
#[must_use]
pub fn render(map: &SourceMap, d: &Diagnostic, color: bool) -> String {
    let renderer = if color { Renderer::styled() } else { Renderer::plain() };
    let level = if d.severity == Severity::Error { Level::Error } else { Level::Warning };
    let code = d.code.0;
    let mut origins: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if let Some(p) = &d.primary {
        let f = map.get(p.span.file);
        origins.push(f.path.display().to_string());
        notes.extend(d.secondary.iter().filter(|s| s.span.file != p.span.file).map(|s| format!("{}: {}", map.location(s.span), s.text)));
    }
    let mut msg = level.title(&d.message).id(code);
    let mut snippet_opt = None;
    if let (Some(p), Some(origin)) = (&d.primary, origins.first()) {
        let f = map.get(p.span.file);
        let mut snippet = Snippet::source(&f.text).line_start(1).origin(origin).fold(true).annotation(level.span(range(map, p.span)).label(&p.text));
        for s in d.secondary.iter().filter(|s| s.span.file == p.span.file) {
            snippet = snippet.annotation(Level::Info.span(range(map, s.span)).label(&s.text));
        }
        snippet_opt = Some(snippet);
    }
    if let Some(s) = snippet_opt {
        msg = msg.snippet(s);
    }
    for n in &notes {
        msg = msg.footer(Level::Note.title(n));
    }
    for h in &d.help {
        msg = msg.footer(Level::Help.title(h));
    }
    let text = renderer.render(msg).to_string();
    text
}

/// Print diagnostics to stderr, errors first in file order, then a count line.
pub fn print_all(map: &SourceMap, diags: &[Diagnostic]) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for d in diags {
        eprintln!("{}\n", render(map, d, color));
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        eprintln!("error: {errors} problem{} found", if errors == 1 { "" } else { "s" });
    }
}

/// The diagnostics as JSON values.
#[must_use]
pub fn to_json(map: &SourceMap, diags: &[Diagnostic]) -> serde_json::Value {
    let loc = |s: Span| {
        let f = map.get(s.file);
        let lc = f.line_col(s.start as usize);
        json!({"file": f.path.display().to_string(), "line": lc.line, "column": lc.col, "start": s.start, "end": s.end})
    };
    serde_json::Value::Array(
        diags
            .iter()
            .map(|d| {
                json!({
                    "code": d.code.0,
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "message": d.message,
                    "location": d.primary.as_ref().map(|p| loc(p.span)),
                    "label": d.primary.as_ref().map(|p| p.text.clone()),
                    "notes": d.secondary.iter().map(|s| json!({"location": loc(s.span), "text": s.text})).collect::<Vec<_>>(),
                    "help": d.help,
                })
            })
            .collect(),
    )
}
