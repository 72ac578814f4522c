//! Statement *shapes*: one cache key for texts that differ only in their
//! integer literals.
//!
//! Applications that inline literals (`WHERE aid = 48213`, pgbench `-M
//! simple`, most ORMs' simple-protocol mode) send a new text per statement, and
//! an exact-text cache never hits: every statement pays a full parse. A shape
//! is the text with every plain integer literal replaced by a marker byte
//! (NUL, which no statement text can contain), plus where those literals were.
//!
//! The shape is only a *key*; it decides nothing. Whether the texts of a shape
//! really share one result is proven with PostgreSQL's own parser when the
//! shape recurs (its second text; the first is cached by its exact text, so
//! ever-new texts cost one parse each): that text and a [`probe`] (the same
//! text with every such literal changed, digit by digit) are both processed,
//! and the shape is cached only when the results are identical (see
//! `InspectCache`). What the
//! lexer below recognises is therefore deliberately narrow; anything it is
//! unsure about makes the text shapeless, and a shapeless text is simply
//! cached by its exact bytes as before:
//!
//! - an *integer literal* here is a run of at most 9 ASCII digits (so it is an
//!   `int4` whatever the digits: never promoted to numeric, never out of
//!   range) with no identifier character, `$` or `.` on either side (`t1`,
//!   `$1`, `1.5`, `1e3`, `0x1F`, `1_000` are left alone);
//! - digits inside `'...'` strings and `"..."` identifiers are skipped;
//! - a text with a backslash (E'' strings, `standard_conforming_strings`),
//!   `$` (dollar quoting, parameters), a comment, an unterminated quote or a
//!   NUL has no shape.

use std::ops::Range;

/// What a cache knows of one shape (the same life cycle for the inspection
/// cache and the audit writer's normalization cache).
#[derive(Debug)]
pub enum ShapeState<T> {
    /// One text of the shape has been seen (and cached by its exact text).
    /// Proving a shape costs a second parse, worth it only for a shape that
    /// recurs: a workload of ever-new texts pays one parse each, as without
    /// shapes.
    SeenOnce,
    /// Proven the same for every text of the shape (the shape's second text
    /// and its [`probe`] gave identical results).
    Invariant(T),
    /// The result depends on the literals' values (`SET search_path = 1`) or
    /// the text did not parse: such texts are cached by exact text only.
    Varies,
}

/// Marks where an integer literal was in [`Shape::key`].
pub const MARKER: char = '\0';

/// Longest literal treated as an integer: 999,999,999 < 2^31.
const MAX_DIGITS: usize = 9;

/// A text's shape: the key, and the literals it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The text with each integer literal replaced by one [`MARKER`].
    pub key: String,
    /// Byte ranges of the literals in the original text, in order.
    pub literals: Vec<Range<usize>>,
}

impl Shape {
    /// The shape of `sql`, or `None` when it has no integer literal or the
    /// text is outside what this lexer handles with certainty.
    pub fn of(sql: &str) -> Option<Shape> {
        let literals = integer_literals(sql.as_bytes())?;
        if literals.is_empty() {
            return None;
        }
        let mut key = String::with_capacity(sql.len());
        let mut at = 0;
        for lit in &literals {
            key.push_str(&sql[at..lit.start]);
            key.push(MARKER);
            at = lit.end;
        }
        key.push_str(&sql[at..]);
        Some(Shape { key, literals })
    }

    /// `offset` in the original text, as an offset in [`Shape::key`]; `None`
    /// when it falls inside a literal.
    pub fn to_key_offset(&self, offset: usize) -> Option<usize> {
        let mut shift = 0;
        for lit in &self.literals {
            if offset <= lit.start {
                break;
            }
            if offset < lit.end {
                return None;
            }
            shift += lit.len() - 1;
        }
        Some(offset - shift)
    }

    /// An offset in [`Shape::key`] (not inside a marker), as an offset in
    /// the text this shape was taken from.
    pub fn from_key_offset(&self, key_offset: usize) -> usize {
        let mut shift = 0;
        for lit in &self.literals {
            // The marker of this literal sits at lit.start - shift in the key.
            if key_offset <= lit.start - shift {
                break;
            }
            shift += lit.len() - 1;
        }
        key_offset + shift
    }
}

/// `sql` with every integer literal of its shape changed in every digit
/// (same length, so every other offset is unchanged). Two texts of one shape
/// parse to trees that differ only in those constants' values; if `sql` and
/// its probe give the same result, nothing in the result depends on them.
pub fn probe(sql: &str, shape: &Shape) -> String {
    let mut bytes = sql.as_bytes().to_vec();
    for lit in &shape.literals {
        for b in &mut bytes[lit.clone()] {
            *b = if *b == b'9' { b'0' } else { *b + 1 };
        }
    }
    // Only ASCII digits were replaced by ASCII digits.
    String::from_utf8(bytes).unwrap_or_default()
}

/// Byte ranges of the integer literals of `sql`, or `None` when the text is
/// outside what this lexer handles (see the module docs).
fn integer_literals(sql: &[u8]) -> Option<Vec<Range<usize>>> {
    let mut literals = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b'\\' | b'$' | 0 => return None,
            b'-' if sql.get(i + 1) == Some(&b'-') => return None,
            b'/' if sql.get(i + 1) == Some(&b'*') => return None,
            q @ (b'\'' | b'"') => i = skip_quoted(sql, i, q)?,
            b'0'..=b'9' => {
                let start = i;
                while i < sql.len() && sql[i].is_ascii_digit() {
                    i += 1;
                }
                let before = start.checked_sub(1).map(|p| sql[p]);
                let after = sql.get(i).copied();
                let isolated =
                    !before.is_some_and(joins_number) && !after.is_some_and(joins_number);
                if isolated && i - start <= MAX_DIGITS {
                    literals.push(start..i);
                }
            }
            b if is_identifier_byte(b) => {
                // Skip the whole word, so digits inside it (`t1`) are never
                // looked at as a number.
                while i < sql.len() && (is_identifier_byte(sql[i]) || sql[i].is_ascii_digit()) {
                    if sql[i] == b'$' {
                        return None;
                    }
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Some(literals)
}

/// Index just past the quote closing the one at `open`; a doubled quote is
/// part of the content. `None` if it never closes.
fn skip_quoted(sql: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut i = open + 1;
    loop {
        match sql.get(i)? {
            b'\\' | 0 => return None,
            &b if b == quote => {
                if sql.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
}

/// Bytes that may start or continue a PostgreSQL identifier (plus `$`, which
/// may continue one): letters, `_`, and every non-ASCII byte.
fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b'$' || b >= 0x80
}

/// Bytes that, next to a digit run, make it part of something larger than an
/// integer literal (an identifier, a parameter, a decimal, an exponent...).
fn joins_number(b: u8) -> bool {
    is_identifier_byte(b) || b.is_ascii_digit() || b == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literals(sql: &str) -> Vec<&str> {
        Shape::of(sql)
            .map(|s| s.literals.iter().map(|r| &sql[r.clone()]).collect())
            .unwrap_or_default()
    }

    #[test]
    fn integer_literals_become_markers() {
        let s = Shape::of("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;").unwrap();
        assert_eq!(
            s.key,
            "SELECT abalance FROM pgbench_accounts WHERE aid = \0;"
        );
        let t = Shape::of("SELECT abalance FROM pgbench_accounts WHERE aid = 7;").unwrap();
        assert_eq!(s.key, t.key);
        assert_eq!(
            literals("SELECT 1, -2, (3)+4 LIMIT 10"),
            ["1", "2", "3", "4", "10"]
        );
    }

    #[test]
    fn digits_that_are_not_integer_literals_stay() {
        for sql in [
            "SELECT * FROM t1",
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 5.",
            "SELECT 1e3",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 1234567890",
            "SELECT x1y FROM \"t 1\"",
            "SELECT 'a 1 b', '2'",
            "SELECT 'it''s 3'",
            "SELECT \"col\"\"9\" FROM t",
            "SELECT é1",
        ] {
            assert!(literals(sql).is_empty(), "{sql}: {:?}", literals(sql));
        }
    }

    #[test]
    fn uncertain_texts_have_no_shape() {
        for sql in [
            "SELECT E'\\'' , 1",
            "SELECT 1 -- 2",
            "SELECT /* 2 */ 1",
            "SELECT $1, 2",
            "SELECT $$ 1 $$, 2",
            "SELECT a$b, 2",
            "SELECT 'open, 1",
            "SELECT \"open, 1",
        ] {
            assert!(Shape::of(sql).is_none(), "{sql}");
        }
        assert!(Shape::of("SELECT now()").is_none(), "no literal, no shape");
    }

    #[test]
    fn offsets_round_trip() {
        let sql = "SELECT 100; SELECT 2; SELECT 33";
        let s = Shape::of(sql).unwrap();
        assert_eq!(s.key, "SELECT \0; SELECT \0; SELECT \0");
        for (text_offset, key_offset) in [(0, 0), (11, 9), (21, 19)] {
            assert_eq!(s.to_key_offset(text_offset), Some(key_offset));
            assert_eq!(s.from_key_offset(key_offset), text_offset);
        }
        assert_eq!(s.to_key_offset(8), None, "inside a literal");
        let other = Shape::of("SELECT 1; SELECT 23456; SELECT 3").unwrap();
        assert_eq!(other.key, s.key);
        assert_eq!(other.from_key_offset(19), 23);
    }

    #[test]
    fn probe_changes_every_literal_digit_and_nothing_else() {
        let sql = "SELECT 109 FROM t1 WHERE a = 9 AND b = 'x 5'";
        let s = Shape::of(sql).unwrap();
        assert_eq!(
            probe(sql, &s),
            "SELECT 210 FROM t1 WHERE a = 0 AND b = 'x 5'"
        );
    }
}
