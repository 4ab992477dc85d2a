//! `docs/writing-a-connector.md` shows this crate in full: the listings there must be the
//! crate's own files, so the guide never drifts from code that compiles and passes its tests.

fn block_after(doc: &str, marker: &str, lang: &str) -> String {
    let at = doc.find(marker).unwrap_or_else(|| panic!("the guide no longer says {marker:?}"));
    let fence = format!("```{lang}\n");
    let start = doc[at..].find(&fence).expect("code block") + at + fence.len();
    let end = doc[start..].find("```").expect("end of code block") + start;
    doc[start..end].to_string()
}

#[test]
fn the_guide_shows_this_crate_as_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("../../docs/writing-a-connector.md")).unwrap();
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(block_after(&doc, "`connectors/lock/src/lib.rs`, in full:", "rust") == lib, "docs/writing-a-connector.md and connectors/lock/src/lib.rs differ");
    assert!(block_after(&doc, "`connectors/lock/Cargo.toml`", "toml") == manifest, "docs/writing-a-connector.md and connectors/lock/Cargo.toml differ");
}
