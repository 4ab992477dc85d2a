//! Finding `${{ ... }}` in a string.

/// A piece of a scanned string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// An expression.
    Expr(ExprPart),
}

/// One `${{ ... }}` expression found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprPart {
    /// The expression text between the braces, trimmed.
    pub src: String,
    /// Byte offset of `src` in the scanned string.
    pub offset: usize,
    /// Byte offset of the `${{` in the scanned string.
    pub open: usize,
}

/// An expression that is not closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the `${{` that is not closed.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Whether a string holds an expression at all (cheap pre-check).
#[must_use]
pub fn is_template(s: &str) -> bool {
    s.contains("${{")
}

/// Split a string into literal text and expressions.
///
/// Quotes inside an expression are honoured, so `${{ "}}" }}` is one expression.
/// The delimiters and quotes are ASCII, so the scan compares bytes and only ever
/// cuts the string next to one of them: on a character boundary, whatever
/// non-ASCII text surrounds or fills an expression.
///
/// # Errors
/// When a `${{` has no matching `}}`, or an expression is empty.
pub fn scan(s: &str) -> Result<Vec<Part>, ScanError> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < s.len() {
        if bytes[i..].starts_with(b"${{") {
            let open = i;
            let inner_start = i + 3;
            let mut j = inner_start;
            let mut quote: Option<u8> = None;
            let mut close = None;
            while j < bytes.len() {
                let b = bytes[j];
                match quote {
                    Some(q) => {
                        if b == b'\\' {
                            j += 1;
                        } else if b == q {
                            quote = None;
                        }
                    }
                    None => {
                        if b == b'"' || b == b'\'' {
                            quote = Some(b);
                        } else if bytes[j..].starts_with(b"}}") {
                            close = Some(j);
                            break;
                        }
                    }
                }
                j += 1;
            }
            let Some(close) = close else {
                return Err(ScanError { offset: open, message: "expression is not closed: `${{` without `}}`".into() });
            };
            let raw = &s[inner_start..close];
            let lead = raw.len() - raw.trim_start().len();
            let src = raw.trim();
            if src.is_empty() {
                return Err(ScanError { offset: open, message: "empty expression `${{ }}`".into() });
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Expr(ExprPart { src: src.to_string(), offset: inner_start + lead, open }));
            i = close + 2;
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            lit.push(ch);
            i += ch.len_utf8();
        }
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! scan_ok {
        ($input:expr, [$($part:expr),*]) => {
            assert_eq!(scan($input).unwrap(), vec![$($part),*]);
        };
    }
    macro_rules! scan_err {
        ($input:expr, $offset:expr, $msg:literal) => {
            let e = scan($input).unwrap_err();
            assert_eq!(e.offset, $offset, "offset of {:?}", $input);
            assert!(e.message.contains($msg), "{}", e.message);
        };
    }
    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }
    fn ex(s: &str, offset: usize, open: usize) -> Part {
        Part::Expr(ExprPart { src: s.into(), offset, open })
    }

    #[test]
    fn scans() {
        scan_ok!("plain", [lit("plain")]);
        scan_ok!("${{ a }}", [ex("a", 4, 0)]);
        scan_ok!("x-${{a}}-y", [lit("x-"), ex("a", 5, 2), lit("-y")]);
        scan_ok!("${{ '}}' }}", [ex("'}}'", 4, 0)]);
        scan_ok!("é${{ b }}", [lit("é"), ex("b", 6, 2)]);
        scan_ok!("${{ a }}${{ b }}", [ex("a", 4, 0), ex("b", 12, 8)]);
    }

    #[test]
    fn errors() {
        scan_err!("abc ${{ a", 4, "not closed");
        scan_err!("${{   }}", 0, "empty");
        scan_err!("${{ 'x }}", 0, "not closed");
    }

    #[test]
    fn non_ascii_inside_expressions() {
        // `é` is 2 bytes, `→` 3: every offset below is a byte offset.
        scan_ok!("été → ${{ inputs.région }}", [lit("été → "), ex("inputs.région", 14, 10)]);
        scan_ok!("${{ '→}}' ~ x }}!", [ex("'→}}' ~ x", 4, 0), lit("!")]);
        scan_ok!("${{ \"é\\\"→\" }}", [ex("\"é\\\"→\"", 4, 0)]);
        scan_ok!("${{é}}→${{ü}}", [ex("é", 3, 0), lit("→"), ex("ü", 13, 10)]);
    }

    #[test]
    fn non_ascii_after_an_unclosed_expression() {
        scan_err!("${{ inputs.zone → été", 0, "not closed");
        scan_err!("→ ${{ 'é", 4, "not closed");
        scan_err!("${{ é }", 0, "not closed");
        scan_err!("a ${{ \\é", 2, "not closed");
        scan_err!("é${{   }}", 2, "empty");
    }
}
