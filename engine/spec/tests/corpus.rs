//! A corpus of malformed workflow files, each with a snapshot of the diagnostics
//! the loader reports for it, and a few good files that must load cleanly.
//!
//! Fixtures live in `tests/fixtures/bad/<CODE>_<name>.yaml`: the code prefix is the
//! main code the file must produce. `tests/fixtures/sub/` holds helper files that
//! bad and good fixtures include as sub-workflows; they are not corpus entries.
//!
//! Update the snapshots with `INSTA_UPDATE=always cargo test -p engine-spec --test corpus`,
//! then read every changed `tests/snapshots/*.snap`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use engine_connector::fake::FakeConnector;
use engine_connector::Registry;
use engine_core::{Diagnostic, Label, Severity, SourceMap, Span};
use engine_spec::Loader;

fn registry() -> Registry {
    let mut registry = Registry::new();
    let connector = FakeConnector::default();
    registry.register(&connector);
    registry
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

/// Remove the machine-dependent part of paths from a message.
fn scrub(text: &str) -> String {
    let dir = fixtures_dir();
    let mut out = text.replace(&format!("{}/", dir.display()), "<fixtures>/");
    out = out.replace(&dir.display().to_string(), "<fixtures>");
    if let Ok(canon) = std::fs::canonicalize(&dir) {
        out = out.replace(&format!("{}/", canon.display()), "<fixtures>/");
    }
    out
}

/// `line:col` of a span, prefixed with the file name when the span lies in
/// another file than the one loaded (a sub-workflow).
fn position(sources: &SourceMap, main: &Path, span: Span) -> String {
    let location = sources.location(span);
    let file = &sources.get(span.file).path;
    let mut it = location.rsplitn(3, ':');
    let col = it.next().unwrap_or("?");
    let line = it.next().unwrap_or("?");
    if file == main {
        format!("{line}:{col}")
    } else {
        let name = file.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        format!("{name}:{line}:{col}")
    }
}

fn render_label(sources: &SourceMap, main: &Path, label: &Label) -> String {
    position(sources, main, label.span)
}

/// One line per diagnostic: `CODE line:col message`, then its secondary
/// labels and help lines, indented.
fn render(sources: &SourceMap, main: &Path, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let sev = match d.severity {
            Severity::Error => "",
            Severity::Warning => " (warning)",
        };
        let at = d.primary.as_ref().map_or_else(|| "-".to_string(), |p| render_label(sources, main, p));
        let _ = writeln!(out, "{}{sev} {at} {}", d.code, scrub(&d.message));
        if let Some(p) = &d.primary {
            if !p.text.is_empty() {
                let _ = writeln!(out, "  label: {}", scrub(&p.text));
            }
        }
        for s in &d.secondary {
            let _ = writeln!(out, "  note {} {}", render_label(sources, main, s), scrub(&s.text));
        }
        for h in &d.help {
            let _ = writeln!(out, "  help: {}", scrub(h));
        }
    }
    out
}

/// A diagnostic reported twice (same code, place and message), if any.
fn first_duplicate(diags: &[Diagnostic]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    diags
        .iter()
        .find(|d| !seen.insert((d.code, d.primary.as_ref().map(|p| (p.span.file, p.span.start, p.span.end)), d.message.clone())))
        .map(|d| format!("{} {}", d.code, d.message))
}

fn expected_code(path: &Path) -> String {
    let name = path.file_name().unwrap().to_string_lossy();
    let code = name.split('_').next().unwrap().to_string();
    assert!(
        code.len() == 6 && code.starts_with("WF") && code[2..].bytes().all(|b| b.is_ascii_digit()),
        "fixture {name} must be named <CODE>_<name>.yaml, e.g. WF0101_needs_typo.yaml"
    );
    code
}

#[test]
fn bad_workflows() {
    let registry = registry();
    // Problems are collected, not asserted at once, so that one run shows (and
    // writes the snapshot of) every fixture.
    let mut problems: Vec<String> = Vec::new();
    insta::glob!("fixtures/bad/*.yaml", |path| {
        let code = expected_code(path);
        let mut loader = Loader::new(&registry);
        let loaded = loader.load(path);
        let rendered = render(&loader.sources, path, &loader.diags);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if loaded.is_some() {
            problems.push(format!("{name} loaded although it is malformed; diagnostics:\n{rendered}"));
        }
        if !loader.diags.iter().any(|d| d.code.0 == code && d.is_error()) {
            problems.push(format!("{name} does not report {code}; diagnostics:\n{rendered}"));
        }
        // Every diagnostic of a file in the corpus is located.
        if !loader.diags.iter().all(|d| d.primary.is_some()) {
            problems.push(format!("{name} has a diagnostic without a location:\n{rendered}"));
        }
        if let Some(dup) = first_duplicate(&loader.diags) {
            problems.push(format!("{name} reports the same diagnostic twice: {dup}"));
        }
        insta::assert_snapshot!(rendered);
    });
    assert!(problems.is_empty(), "{} problem(s):\n\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn corpus_is_large_and_covers_the_codes() {
    let dir = fixtures_dir().join("bad");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 65, "the corpus has {} files", names.len());
    let covered: std::collections::BTreeSet<String> = names.iter().map(|n| expected_code(Path::new(n))).collect();
    for code in [
        "WF0002", "WF0003", "WF0004", "WF0005", "WF0100", "WF0101", "WF0102", "WF0103", "WF0104", "WF0105", "WF0106", "WF0107", "WF0108", "WF0109",
        "WF0110", "WF0111", "WF0120", "WF0121", "WF0122", "WF0123", "WF0124", "WF0130", "WF0140", "WF0141", "WF0142", "WF0143", "WF0144",
        "WF0145", "WF0146", "WF0147",
    ] {
        assert!(covered.contains(code), "no fixture for {code}");
    }
}

#[test]
fn good_workflows_load_without_diagnostics() {
    let registry = registry();
    let dir = fixtures_dir().join("good");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")).collect();
    paths.sort();
    assert!(paths.len() >= 3, "expected a few good fixtures");
    for path in paths {
        let mut loader = Loader::new(&registry);
        let loaded = loader.load(&path);
        let rendered = render(&loader.sources, &path, &loader.diags);
        assert!(loader.diags.is_empty(), "{} has diagnostics:\n{rendered}", path.display());
        let w = loaded.unwrap_or_else(|| panic!("{} did not load", path.display()));
        assert!(!w.steps.is_empty());
        assert_eq!(w.order.len(), w.steps.len(), "{}: every step is in the order", path.display());
    }
}
