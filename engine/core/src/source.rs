//! Source files and byte-offset spans. Line and column are computed only when a
//! diagnostic is rendered, through [`SourceFile::line_col`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// The file the range belongs to.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span covering `start..end` in `file`.
    #[must_use]
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        let start = u32::try_from(start).unwrap_or(u32::MAX);
        let end = u32::try_from(end.max(start as usize)).unwrap_or(u32::MAX);
        Self { file, start, end }
    }

    /// A sub-span `offset..offset+len` relative to the start of this span.
    #[must_use]
    pub fn sub(self, offset: usize, len: usize) -> Self {
        let start = self.start as usize + offset;
        Self::new(self.file, start, start + len)
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// One-indexed line and column (column counted in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub col: usize,
}

/// One loaded source file.
#[derive(Debug)]
pub struct SourceFile {
    /// Path as the user gave it (used in `--> path:line:col`).
    pub path: PathBuf,
    /// Full text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Index a file's text.
    #[must_use]
    pub fn new(path: PathBuf, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { path, text, line_starts }
    }

    /// Line and column of a byte offset.
    #[must_use]
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        LineCol { line: line + 1, col }
    }

    /// Byte offset of a one-indexed line and a one-indexed character column.
    #[must_use]
    pub fn offset(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        rest.char_indices().nth(col.saturating_sub(1)).map_or(self.text.len(), |(i, _)| start + i)
    }

    /// Byte offset of a character index.
    #[must_use]
    pub fn char_to_byte(&self, char_index: usize) -> usize {
        self.text.char_indices().nth(char_index).map_or(self.text.len(), |(i, _)| i)
    }
}

/// All files loaded for one command (a workflow and its sub-workflows).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<Arc<SourceFile>>,
}

impl SourceMap {
    /// Add a file and return its id.
    pub fn add(&mut self, path: impl AsRef<Path>, text: String) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(Arc::new(SourceFile::new(path.as_ref().to_path_buf(), text)));
        id
    }

    /// The file behind an id.
    ///
    /// # Panics
    /// When the id was not made by this map.
    #[must_use]
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// `path:line:col` of the start of a span.
    #[must_use]
    pub fn location(&self, span: Span) -> String {
        let file = self.get(span.file);
        let lc = file.line_col(span.start as usize);
        format!("{}:{}:{}", file.path.display(), lc.line, lc.col)
    }

    /// The text a span covers.
    #[must_use]
    pub fn snippet(&self, span: Span) -> &str {
        let file = self.get(span.file);
        file.text.get(span.start as usize..span.end as usize).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("a.yaml".into(), "ab\nçd: x\n".into());
        assert_eq!(f.line_col(0), LineCol { line: 1, col: 1 });
        assert_eq!(f.line_col(3), LineCol { line: 2, col: 1 });
        // 'd' is after a two-byte character.
        assert_eq!(f.line_col(5), LineCol { line: 2, col: 2 });
        assert_eq!(f.offset(2, 2), 5);
        assert_eq!(f.offset(9, 1), f.text.len());
    }
}
