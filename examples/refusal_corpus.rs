//! Refusal corpus (issue #3): how much legitimate SQL from a real corpus does
//! pgward refuse, for a restricted identity, because it cannot parse it or
//! cannot see into it?
//!
//! Usage: `cargo run --release --example refusal_corpus -- <dir of .sql files> [--out DIR]`
//! (`scripts/corpus.sh` fetches PostgreSQL's regression SQL and runs this).
//!
//! Each `.sql` file is a psql script, so it is first reduced to what psql
//! would send to the server: psql meta-commands (a backslash outside quotes
//! and comments, to the end of the line) are dropped, the ones that send the
//! query buffer (`\g`, `\gset`, `\gexec`, ...) becoming a `;`, and the inline
//! data after `COPY ... FROM stdin;` / `\copy ... from stdin` (up to `\.`) is
//! dropped. Removed text is replaced by blank lines so line numbers still
//! match the file. The result is split with `pg_query::split_with_scanner`
//! (which tolerates invalid statements) and each statement goes through
//! `pgward::inspect::inspect` on its own, inside `catch_unwind`.
//!
//! Outcomes: understood (parsed, nothing opaque), opaque (parsed, some
//! `Opaque` present: refused), unparseable (inspect returned an error:
//! refused), panic (an inspector bug). Unparseable statements are re-parsed
//! with `pg_query::parse` to tell pgward-only failures (legitimate SQL
//! refused) from statements PostgreSQL's grammar itself rejects (the
//! regression suite tests error messages on purpose).
//!
//! Writes `report.md` and `statements.jsonl` (one line per statement) to the
//! output directory (default `target/corpus`) and prints the report.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgward::inspect::{self, Opaque};

const USAGE: &str = "usage: refusal_corpus <dir with .sql files> [--out DIR]";

fn main() {
    let mut dir = None;
    let mut out = PathBuf::from("target/corpus");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => match args.next() {
                Some(o) => out = PathBuf::from(o),
                None => fail(USAGE),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => fail(USAGE),
        }
    }
    let Some(dir) = dir else { fail(USAGE) };

    // Silence the default panic message (panics are caught and reported),
    // but remember it for the report.
    panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_owned()
        };
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{msg}{loc}"));
    }));

    // A big stack: the inspector walks the parse tree recursively, and a stack
    // overflow aborts (it cannot be caught like a panic).
    let worker = std::thread::Builder::new()
        .name("corpus".into())
        .stack_size(1 << 30)
        .spawn(move || run(&dir, &out));
    match worker.map(|h| h.join()) {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => fail(&e),
        Ok(Err(_)) => {
            let msg = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            fail(&format!(
                "the corpus run itself panicked: {}",
                msg.unwrap_or_default()
            ))
        }
        Err(e) => fail(&format!("cannot start worker thread: {e}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("refusal_corpus: {msg}");
    std::process::exit(2)
}

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs `f`, turning a panic into `Err(message)`.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        LAST_PANIC
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| "(no message)".to_owned())
    })
}

// ---------------------------------------------------------------------------
// A small lexer: just enough of PostgreSQL's to know whether a byte is SQL
// code or inside a comment, string, quoted identifier or dollar quote.

#[derive(Clone, Debug, PartialEq)]
enum Lex {
    Code,
    LineComment,
    Block(u32),
    Single { esc: bool },
    Double,
    Dollar(Vec<u8>),
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Length of a dollar-quote delimiter (`$$`, `$tag$`) starting at `b[i]`.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && is_ident_start(b[j]) {
        while j < b.len() && is_ident(b[j]) && b[j] != b'$' {
            j += 1;
        }
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1 - i)
}

/// Consumes the unit at `b[i]` in state `st`; returns how many bytes (>= 1).
fn lex_step(st: &mut Lex, b: &[u8], i: usize) -> usize {
    let c = b[i];
    let next = b.get(i + 1).copied();
    match st {
        Lex::Code => match c {
            b'-' if next == Some(b'-') => {
                *st = Lex::LineComment;
                2
            }
            b'/' if next == Some(b'*') => {
                *st = Lex::Block(1);
                2
            }
            b'\'' => {
                let esc =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2]));
                *st = Lex::Single { esc };
                1
            }
            b'"' => {
                *st = Lex::Double;
                1
            }
            b'$' if i == 0 || !is_ident(b[i - 1]) => match dollar_tag(b, i) {
                Some(n) => {
                    *st = Lex::Dollar(b[i..i + n].to_vec());
                    n
                }
                None => 1,
            },
            _ => 1,
        },
        Lex::LineComment => {
            if c == b'\n' {
                *st = Lex::Code;
            }
            1
        }
        Lex::Block(depth) => {
            if c == b'*' && next == Some(b'/') {
                if *depth <= 1 {
                    *st = Lex::Code;
                } else {
                    *depth -= 1;
                }
                2
            } else if c == b'/' && next == Some(b'*') {
                *depth += 1;
                2
            } else {
                1
            }
        }
        Lex::Single { esc } => {
            if *esc && c == b'\\' {
                if next.is_some() { 2 } else { 1 }
            } else if c == b'\'' {
                if next == Some(b'\'') {
                    2
                } else {
                    *st = Lex::Code;
                    1
                }
            } else {
                1
            }
        }
        Lex::Double => {
            if c == b'"' {
                if next == Some(b'"') {
                    2
                } else {
                    *st = Lex::Code;
                    1
                }
            } else {
                1
            }
        }
        Lex::Dollar(tag) => {
            if b[i..].starts_with(tag) {
                let n = tag.len();
                *st = Lex::Code;
                n
            } else {
                1
            }
        }
    }
}

/// The lower-cased words (identifier-like runs) of the SQL code in `s`,
/// skipping comments, strings and quoted identifiers.
fn code_words(s: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = Vec::new();
    let mut st = Lex::Code;
    let mut i = 0;
    while i < s.len() {
        let was_code = st == Lex::Code;
        let n = lex_step(&mut st, s, i);
        if was_code && st == Lex::Code && n == 1 && is_ident(s[i]) && s[i] != b'$' {
            cur.push(s[i].to_ascii_lowercase());
        } else if !cur.is_empty() {
            words.push(String::from_utf8_lossy(&cur).into_owned());
            cur.clear();
        }
        i += n;
    }
    if !cur.is_empty() {
        words.push(String::from_utf8_lossy(&cur).into_owned());
    }
    words
}

fn has_seq(words: &[String], a: &str, b: &str) -> bool {
    words.windows(2).any(|w| w[0] == a && w[1] == b)
}

/// psql variable references (`:name`, `:'name'`, `:"name"`) in SQL code:
/// psql substitutes them before sending, so the text as written is not what
/// the server (or pgward) sees. Returns the text with each reference replaced
/// by a placeholder of the same shape (`name`, `'name'`, `"name"`), or `None`
/// when there is none. Heuristic (`arr[lo:hi]` looks the same).
fn psql_vars_substituted(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut st = Lex::Code;
    let mut found = false;
    let mut i = 0;
    while i < b.len() {
        if st == Lex::Code && b[i] == b':' && b.get(i + 1) == Some(&b'{') {
            // `:{?name}`: is the variable defined.
            if let Some(close) = b[i..].iter().position(|&x| x == b'}') {
                found = true;
                out.extend_from_slice(b"true");
                i += close + 1;
                continue;
            }
        }
        if st == Lex::Code
            && b[i] == b':'
            && (i == 0 || b[i - 1] != b':')
            && b.get(i + 1)
                .is_some_and(|&c| is_ident_start(c) || c == b'\'' || c == b'"')
        {
            found = true;
            i += 1; // drop the colon; what follows lexes normally
            continue;
        }
        let n = lex_step(&mut st, b, i);
        out.extend_from_slice(&b[i..i + n]);
        i += n;
    }
    found.then(|| String::from_utf8_lossy(&out).into_owned())
}

// ---------------------------------------------------------------------------
// psql script → the query strings psql would send to the server.
//
// Statements are split the way psql's own lexer (psqlscan.l) splits them,
// not with `pg_query::split_with_scanner`: psql does not end a statement at a
// `;` inside parentheses or inside the `BEGIN ATOMIC ... END` body of
// CREATE FUNCTION/PROCEDURE, and `\;` puts a `;` into the buffer without
// sending it (a multi-statement query string). The scanner splitter ends
// statements at every `;` and so cuts SQL-standard function bodies into
// fragments that do not parse; it is still run, as a cross-check.

/// psql meta-commands that send the query buffer (end a statement).
const SEND_COMMANDS: &[&str] = &["g", "gx", "gset", "gexec", "gdesc", "crosstabview", "watch"];

#[derive(Default)]
struct Cleaned {
    sql: String,
    /// Query strings as psql would send them: (start, end) in `sql`, and
    /// whether standard_conforming_strings was off when it was sent.
    stmts: Vec<(usize, usize, bool)>,
    meta_lines: usize,
    copy_blocks: usize,
    copy_data_lines: usize,
    /// COPY FROM stdin statements with no data block after them (the server
    /// rejects them, as the test intends, so psql sends no data).
    copy_without_data: usize,
    /// Lines skipped in false `\if` branches.
    inactive_lines: usize,
    /// Query buffers discarded by `\r`.
    resets: usize,
}

/// Lines of a psql `\if` stack.
struct Cond {
    active: bool,
    taken: bool,
}

/// psql's ParseVariableBool; a variable (`:v`, `:{?v}`) is unknown here and
/// taken as true (the `\if :skip_test \quit \endif` guards are ignored: we
/// do not emulate `\quit`).
fn psql_bool(arg: &str) -> bool {
    let a = arg.trim().to_ascii_lowercase();
    if a.starts_with(':') {
        return true;
    }
    let prefix_of = |w: &str, min: usize| a.len() >= min && w.starts_with(a.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || a == "on" || a == "1" {
        true
    } else {
        // false/no/off/0, and invalid expressions (false for psql too).
        false
    }
}

/// A line that is surely SQL, not COPY data: another COPY FROM stdin, or a
/// line that starts with a common statement keyword and holds a `;`.
fn looks_like_sql(line: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "select", "insert", "update", "delete", "merge", "copy", "create", "drop", "alter", "set",
        "reset", "show", "begin", "commit", "rollback", "truncate", "grant", "revoke", "explain",
        "with", "values", "table", "analyze", "vacuum", "prepare", "execute",
    ];
    let lw = line.trim().to_ascii_lowercase();
    if (lw.starts_with("copy ") || lw.starts_with("\\copy "))
        && (lw.contains("from stdin") || lw.contains("from stdout"))
    {
        return true;
    }
    let first: String = lw
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect();
    let after = lw[first.len()..].chars().next();
    KEYWORDS.contains(&first.as_str())
        && matches!(after, None | Some(' ' | '\t' | ';' | '('))
        && lw.contains(';')
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&x| x == b'\n')
        .map_or(b.len(), |p| i + p)
}

/// `Some(true)` if the query string turns standard_conforming_strings off,
/// `Some(false)` if it turns it on or resets it (the default is on).
fn scs_setting(q: &[u8]) -> Option<bool> {
    let w = code_words(q);
    let pos = w.iter().position(|x| x == "standard_conforming_strings")?;
    match w.first().map(String::as_str) {
        Some("reset") => Some(false),
        Some("set") => {
            let v = w.get(pos + 1).filter(|v| *v != "to").or(w.get(pos + 2))?;
            Some(matches!(v.as_str(), "off" | "false" | "no" | "0"))
        }
        _ => None,
    }
}

/// How many COPY ... FROM STDIN (or FROM STDOUT, the same thing) a query
/// string holds (several with `\;`).
fn copy_stdin_count(q: &[u8]) -> usize {
    let mut n = 0;
    let mut st = Lex::Code;
    let (mut i, mut from) = (0, 0);
    while i <= q.len() {
        let end_here = i == q.len() || (st == Lex::Code && q[i] == b';');
        if end_here {
            let w = code_words(&q[from..i]);
            if w.first().is_some_and(|w| w == "copy")
                && (has_seq(&w, "from", "stdin") || has_seq(&w, "from", "stdout"))
            {
                n += 1;
            }
            from = i + 1;
            i += 1;
            continue;
        }
        i += lex_step(&mut st, q, i);
    }
    n
}

struct Psql<'a> {
    b: &'a [u8],
    i: usize,
    out: Vec<u8>,
    c: Cleaned,
    st: Lex,
    stmt_start: usize,
    paren: i32,
    ident_count: usize,
    idents: [u8; 4],
    begin_depth: i32,
    copy_pending: usize,
    conds: Vec<Cond>,
    /// `SET standard_conforming_strings = off` seen (psql then lexes
    /// backslashes in '...' as escapes, as the server does).
    scs_off: bool,
}

impl Psql<'_> {
    fn active(&self) -> bool {
        self.conds.iter().all(|c| c.active)
    }

    fn end_statement(&mut self) {
        let q = &self.out[self.stmt_start..];
        self.copy_pending += copy_stdin_count(q);
        self.c
            .stmts
            .push((self.stmt_start, self.out.len(), self.scs_off));
        if let Some(off) = scs_setting(q) {
            self.scs_off = off;
        }
        self.reset_buffer_state();
    }

    fn reset_buffer_state(&mut self) {
        self.stmt_start = self.out.len();
        self.paren = 0;
        self.ident_count = 0;
        self.idents = [0; 4];
        self.begin_depth = 0;
    }

    /// `\r`: drop the query buffer (keeping its newlines, for line numbers).
    fn discard_buffer(&mut self) {
        let nl = self.out[self.stmt_start..]
            .iter()
            .filter(|&&x| x == b'\n')
            .count();
        self.out.truncate(self.stmt_start);
        self.out.extend(std::iter::repeat_n(b'\n', nl));
        self.c.resets += 1;
        self.reset_buffer_state();
    }

    /// At a line start: skips the pending COPY data blocks, each up to its
    /// `\.` line. A block is assumed only when a `\.` line follows before
    /// any other COPY FROM stdin line (otherwise the COPY failed, by design
    /// of the test, and what follows is SQL).
    fn skip_copy_data(&mut self) {
        while self.copy_pending > 0 {
            self.copy_pending -= 1;
            let b = self.b;
            let mut j = self.i;
            let mut term = None;
            while j < b.len() {
                let e = line_end(b, j);
                let line = String::from_utf8_lossy(&b[j..e]);
                let t = line.trim();
                if t == "\\." {
                    term = Some(e);
                    break;
                }
                if looks_like_sql(t) {
                    break;
                }
                j = e + 1;
            }
            let Some(term_end) = term else {
                self.c.copy_without_data += 1;
                continue;
            };
            self.c.copy_blocks += 1;
            while self.i < b.len() && self.i <= term_end {
                let e = line_end(b, self.i);
                if e != term_end {
                    self.c.copy_data_lines += 1;
                }
                if e < b.len() {
                    self.out.push(b'\n');
                }
                self.i = e + 1;
            }
            self.i = self.i.min(b.len());
        }
    }

    /// A conditional meta-command; true if `cmd` was one.
    fn conditional(&mut self, cmd: &str, arg: &str) -> bool {
        match cmd {
            "if" => {
                let parent = self.active();
                let v = psql_bool(arg);
                self.conds.push(Cond {
                    active: parent && v,
                    taken: !parent || v,
                });
            }
            "elif" => {
                if let Some(top) = self.conds.last_mut() {
                    if top.taken {
                        top.active = false;
                    } else {
                        let v = psql_bool(arg);
                        top.active = v;
                        top.taken = v;
                    }
                }
            }
            "else" => {
                if let Some(top) = self.conds.last_mut() {
                    top.active = !top.taken;
                    top.taken = true;
                }
            }
            "endif" => {
                self.conds.pop();
            }
            _ => return false,
        }
        true
    }

    /// Meta-commands at `self.i` (a backslash in SQL code). As in psql, a
    /// command's arguments end at the end of the line, at an unquoted
    /// backslash (the next command), or at `\\`, after which SQL goes on.
    fn meta(&mut self) {
        let b = self.b;
        if b.get(self.i + 1) == Some(&b';') {
            // `\;`: a literal semicolon, the query string goes on.
            if self.active() {
                self.out.push(b';');
            }
            self.i += 2;
            return;
        }
        let eol = line_end(b, self.i);
        let mut j = self.i;
        loop {
            // b[j] is a backslash.
            j += 1;
            let name_start = j;
            while j < eol && !b[j].is_ascii_whitespace() && b[j] != b'\\' {
                j += 1;
            }
            let name = String::from_utf8_lossy(&b[name_start..j]).into_owned();
            if name.is_empty() && j < eol && b[j] == b'\\' {
                // `\\`: back to SQL on the same line.
                self.i = j + 1;
                return;
            }
            self.c.meta_lines += 1;
            let args_start = j;
            let mut next_cmd = false;
            if matches!(
                name.as_str(),
                "copy" | "!" | "ef" | "ev" | "sf" | "sv" | "h" | "help"
            ) {
                j = eol; // whole-line arguments
            } else {
                let mut quote: Option<u8> = None;
                while j < eol {
                    let c = b[j];
                    match quote {
                        Some(b'\'') if c == b'\\' => {
                            j += 2;
                            continue;
                        }
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if matches!(c, b'\'' | b'"' | b'`') => quote = Some(c),
                        None if c == b'\\' => {
                            next_cmd = true;
                            break;
                        }
                        None => {}
                    }
                    j += 1;
                }
                j = j.min(eol);
            }
            let args = String::from_utf8_lossy(&b[args_start..j]).into_owned();
            self.command(&name, &args);
            if !next_cmd {
                break;
            }
        }
        self.i = eol;
        if self.i < b.len() {
            self.out.push(b'\n');
            self.i += 1;
        }
        self.skip_copy_data();
    }

    /// One meta-command (name without the backslash).
    fn command(&mut self, name: &str, args: &str) {
        if self.conditional(name, args) || !self.active() {
            return;
        }
        if SEND_COMMANDS.contains(&name) {
            self.out.push(b';');
            self.end_statement();
        } else if name == "r" || name == "reset" {
            self.discard_buffer();
        } else if name == "copy" {
            let lw: Vec<String> = args
                .split_whitespace()
                .map(|w| w.to_ascii_lowercase())
                .collect();
            if has_seq(&lw, "from", "stdin") {
                self.copy_pending += 1;
            }
        }
    }

    /// psqlscan.l's heuristic for `BEGIN ATOMIC ... END` bodies.
    fn identifier(&mut self, w: &[u8]) {
        let lw = w.to_ascii_lowercase();
        if matches!(
            lw.as_slice(),
            b"create" | b"function" | b"procedure" | b"or" | b"replace"
        ) && self.ident_count < 4
        {
            self.idents[self.ident_count] = lw[0];
        }
        self.ident_count += 1;
        let id = self.idents;
        let in_create_fn = id[0] == b'c'
            && (id[1] == b'f'
                || id[1] == b'p'
                || (id[1] == b'o' && id[2] == b'r' && (id[3] == b'f' || id[3] == b'p')));
        if in_create_fn && self.paren == 0 {
            match lw.as_slice() {
                b"begin" => self.begin_depth += 1,
                b"case" if self.begin_depth >= 1 => self.begin_depth += 1,
                b"end" if self.begin_depth > 0 => self.begin_depth -= 1,
                _ => {}
            }
        }
    }

    fn run(mut self) -> Cleaned {
        let b = self.b;
        while self.i < b.len() {
            let i = self.i;
            let ch = b[i];
            if self.st == Lex::Code && ch == b'\\' {
                self.meta();
                continue;
            }
            if !self.active() {
                // False \if branch: lexed (to find the meta-commands) but dropped.
                let n = lex_step(&mut self.st, b, i);
                let nl = b[i..i + n].iter().filter(|&&x| x == b'\n').count();
                self.out.extend(std::iter::repeat_n(b'\n', nl));
                self.c.inactive_lines += nl;
                self.i += n;
                continue;
            }
            if self.st == Lex::Code {
                if is_ident_start(ch) && (i == 0 || !is_ident(b[i - 1])) {
                    let mut j = i;
                    while j < b.len() && is_ident(b[j]) {
                        j += 1;
                    }
                    // E'..', U&'..', B'..', X'..' prefixes lex as strings next.
                    self.identifier(&b[i..j]);
                    self.out.extend_from_slice(&b[i..j]);
                    self.i = j;
                    continue;
                }
                match ch {
                    b'(' => self.paren += 1,
                    b')' => self.paren = (self.paren - 1).max(0),
                    _ => {}
                }
            }
            let was_code = self.st == Lex::Code;
            let n = lex_step(&mut self.st, b, i);
            if self.scs_off && was_code && self.st == (Lex::Single { esc: false }) {
                self.st = Lex::Single { esc: true };
            }
            self.out.extend_from_slice(&b[i..i + n]);
            self.i += n;
            if was_code && ch == b';' && self.paren == 0 && self.begin_depth == 0 {
                self.end_statement();
            } else if ch == b'\n' && self.st == Lex::Code && self.copy_pending > 0 {
                self.skip_copy_data();
            }
        }
        if self.copy_pending > 0 {
            self.c.copy_without_data += self.copy_pending;
        }
        if self.stmt_start < self.out.len() {
            self.c
                .stmts
                .push((self.stmt_start, self.out.len(), self.scs_off));
        }
        let mut c = self.c;
        // Input was UTF-8 and only whole lines or ASCII pieces were removed.
        c.sql = String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        c
    }
}

fn clean_psql(input: &str) -> Cleaned {
    Psql {
        b: input.as_bytes(),
        i: 0,
        out: Vec::with_capacity(input.len()),
        c: Cleaned::default(),
        st: Lex::Code,
        stmt_start: 0,
        paren: 0,
        ident_count: 0,
        idents: [0; 4],
        begin_depth: 0,
        copy_pending: 0,
        conds: Vec::new(),
        scs_off: false,
    }
    .run()
}

/// Byte offset of the first SQL code in `s` (after blanks and comments).
fn code_start(s: &str) -> usize {
    let b = s.as_bytes();
    let mut st = Lex::Code;
    let mut i = 0;
    while i < b.len() {
        let comment = matches!(
            (b[i], b.get(i + 1)),
            (b'-', Some(b'-')) | (b'/', Some(b'*'))
        );
        if st == Lex::Code && !b[i].is_ascii_whitespace() && !comment {
            return i;
        }
        i += lex_step(&mut st, b, i);
    }
    b.len()
}

// ---------------------------------------------------------------------------
// Per statement.

#[derive(Debug)]
enum Outcome {
    Understood,
    Opaque(Vec<Opaque>),
    Unparseable {
        error: String,
        /// `pg_query::parse` (PostgreSQL's grammar) rejects it too.
        grammar_rejects: bool,
        /// Contains psql variable references (`:v`, `:'v'`).
        psql_vars: bool,
        /// With psql variables replaced by placeholders: "understood",
        /// "opaque" or "unparseable".
        after_vars: Option<&'static str>,
    },
    Panic(String),
}

struct Stmt {
    file: String,
    line: usize,
    text: String,
    /// pgward's kind, or for statements that did not parse the first keywords.
    kind: String,
    kind_guessed: bool,
    /// The query string held this many statements (normally 1; 0 = did not parse).
    infos: usize,
    /// Sent while standard_conforming_strings was off (pgward lexes as if on).
    scs_off: bool,
    outcome: Outcome,
}

/// Rough kind from the first keywords of a statement that did not parse.
fn guess_kind(text: &str) -> String {
    const MODIFIERS: &[&str] = &[
        "or",
        "replace",
        "temp",
        "temporary",
        "unique",
        "unlogged",
        "global",
        "local",
        "trusted",
        "procedural",
        "default",
        "constraint",
        "recursive",
        "if",
        "exists",
        "concurrently",
    ];
    /// Object types named by several words: (first, second, takes a third).
    const MULTI_WORD: &[(&str, &str, bool)] = &[
        ("materialized", "view", false),
        ("foreign", "table", false),
        ("foreign", "data", true),
        ("event", "trigger", false),
        ("text", "search", true),
        ("access", "method", false),
        ("user", "mapping", false),
        ("operator", "class", false),
        ("operator", "family", false),
        ("table", "space", false),
    ];
    let words = code_words(text.as_bytes());
    let Some(first) = words.first().map(String::as_str) else {
        return "(empty)".into();
    };
    let mut out = vec![first];
    if matches!(first, "create" | "alter" | "drop" | "comment") {
        let rest: Vec<&str> = words[1..]
            .iter()
            .map(String::as_str)
            .skip_while(|w| MODIFIERS.contains(w))
            .collect();
        if let Some(&w) = rest.first() {
            out.push(w);
            let w2 = rest.get(1).copied().unwrap_or("");
            if let Some(&(_, _, third)) = MULTI_WORD
                .iter()
                .find(|(a, b, _)| *a == w && *b == w2 && first != "comment")
            {
                out.push(w2);
                if third {
                    out.extend(rest.get(2).copied());
                }
            }
        }
    } else if matches!(first, "rollback" | "start")
        && matches!(words.get(1).map(String::as_str), Some("to" | "transaction"))
    {
        out.push(&words[1]);
    }
    out.join(" ").to_ascii_uppercase()
}

/// Inspects one query string; one `Stmt` per statement it holds (several
/// when psql's `\;` joined them), none when it holds only comments.
fn analyse(file: &str, line: usize, text: &str, scs_off: bool) -> Vec<Stmt> {
    let base = |kind: String, kind_guessed: bool, infos: usize, outcome: Outcome| Stmt {
        file: file.to_owned(),
        line,
        text: text.to_owned(),
        kind,
        kind_guessed,
        infos,
        scs_off,
        outcome,
    };
    match guarded(|| inspect::inspect(text)) {
        Err(msg) => vec![base(guess_kind(text), true, 0, Outcome::Panic(msg))],
        Ok(Ok(infos)) => {
            let n = infos.len();
            infos
                .into_iter()
                .map(|i| {
                    let outcome = if i.opaque.is_empty() {
                        Outcome::Understood
                    } else {
                        Outcome::Opaque(i.opaque)
                    };
                    base(i.kind, false, n, outcome)
                })
                .collect()
        }
        Ok(Err(e)) => {
            let kind = guess_kind(text);
            let grammar_rejects =
                match guarded(|| pg_query::parse(text, pg_query::ParserOptions::DEFAULT)) {
                    Ok(r) => r.is_err(),
                    Err(_) => true,
                };
            let subst = psql_vars_substituted(text);
            let after_vars = subst
                .as_deref()
                .map(|t| match guarded(|| inspect::inspect(t)) {
                    Ok(Ok(v)) if v.iter().any(|i| !i.opaque.is_empty()) => "opaque",
                    Ok(Ok(v)) if !v.is_empty() => "understood",
                    _ => "unparseable",
                });
            let outcome = Outcome::Unparseable {
                error: e.to_string(),
                grammar_rejects,
                psql_vars: subst.is_some(),
                after_vars,
            };
            vec![base(kind, true, 0, outcome)]
        }
    }
}

// ---------------------------------------------------------------------------

#[derive(Default)]
struct FileStats {
    files: usize,
    unreadable: Vec<String>,
    meta_lines: usize,
    copy_blocks: usize,
    copy_data_lines: usize,
    copy_without_data: usize,
    inactive_lines: usize,
    resets: usize,
    empty: usize,
    /// Cross-check: the same text split with `pg_query::split_with_scanner`.
    scanner_failed: Vec<String>,
    scanner_pieces: usize,
    scanner_unparseable: usize,
}

fn run(dir: &Path, out_dir: &Path) -> Result<(), String> {
    let t0 = Instant::now();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("no .sql files in {}", dir.display()));
    }

    let mut fs = FileStats::default();
    let mut stmts: Vec<Stmt> = Vec::new();
    let mut inspect_time = Duration::ZERO;
    for path in &paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let raw = match std::fs::read(path) {
            Ok(r) => r,
            Err(e) => {
                fs.unreadable.push(format!("{name}: {e}"));
                continue;
            }
        };
        fs.files += 1;
        let input = String::from_utf8_lossy(&raw);
        let cleaned = match guarded(|| clean_psql(&input)) {
            Ok(c) => c,
            Err(msg) => {
                fs.unreadable
                    .push(format!("{name}: preprocessing panicked: {msg}"));
                continue;
            }
        };
        fs.meta_lines += cleaned.meta_lines;
        fs.copy_blocks += cleaned.copy_blocks;
        fs.copy_data_lines += cleaned.copy_data_lines;
        fs.copy_without_data += cleaned.copy_without_data;
        fs.inactive_lines += cleaned.inactive_lines;
        fs.resets += cleaned.resets;
        let sql = cleaned.sql.as_str();

        let t = Instant::now();
        for &(from, to, scs_off) in &cleaned.stmts {
            let Some(piece) = sql.get(from..to) else {
                continue;
            };
            let off = from + code_start(piece);
            let text = sql[off..to].trim_end();
            if text.is_empty() || text == ";" {
                continue;
            }
            let line = 1 + sql.as_bytes()[..off]
                .iter()
                .filter(|&&c| c == b'\n')
                .count();
            let found = analyse(&name, line, text, scs_off);
            if found.is_empty() {
                fs.empty += 1;
            }
            stmts.extend(found);
        }
        inspect_time += t.elapsed();

        // Cross-check with pg_query's scanner-based splitter.
        match guarded(|| pg_query::split_with_scanner(sql)) {
            Ok(Ok(pieces)) => {
                for p in pieces {
                    if p.trim().is_empty() {
                        continue;
                    }
                    fs.scanner_pieces += 1;
                    if !matches!(guarded(|| inspect::inspect(p)), Ok(Ok(_))) {
                        fs.scanner_unparseable += 1;
                    }
                }
            }
            Ok(Err(e)) => fs.scanner_failed.push(format!("{name} ({e})")),
            Err(p) => fs.scanner_failed.push(format!("{name} (panic: {p})")),
        }
    }
    let elapsed = t0.elapsed();

    let report = render(dir, &fs, &stmts, elapsed, inspect_time);
    print!("{report}");
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let rp = out_dir.join("report.md");
    std::fs::write(&rp, &report).map_err(|e| format!("cannot write {}: {e}", rp.display()))?;
    let jp = out_dir.join("statements.jsonl");
    std::fs::write(&jp, jsonl(&stmts))
        .map_err(|e| format!("cannot write {}: {e}", jp.display()))?;
    eprintln!(
        "refusal_corpus: wrote {} and {}",
        rp.display(),
        jp.display()
    );
    Ok(())
}

fn jsonl(stmts: &[Stmt]) -> String {
    let mut out = String::new();
    for s in stmts {
        let (outcome, detail) = match &s.outcome {
            Outcome::Understood => ("understood", serde_json::Value::Null),
            Outcome::Opaque(o) => (
                "opaque",
                serde_json::Value::from(o.iter().map(|o| format!("{o:?}")).collect::<Vec<_>>()),
            ),
            Outcome::Unparseable {
                error,
                grammar_rejects,
                psql_vars,
                after_vars,
            } => (
                "unparseable",
                serde_json::json!({
                    "error": error,
                    "grammar_rejects": grammar_rejects,
                    "psql_vars": psql_vars,
                    "after_var_substitution": after_vars,
                }),
            ),
            Outcome::Panic(m) => ("panic", serde_json::Value::from(m.as_str())),
        };
        let v = serde_json::json!({
            "file": s.file, "line": s.line, "kind": s.kind, "kind_guessed": s.kind_guessed,
            "outcome": outcome, "detail": detail, "scs_off": s.scs_off,
            "statements_in_string": s.infos, "sql": s.text,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

#[derive(Default, Clone)]
struct Row {
    total: usize,
    understood: usize,
    opaque: usize,
    unparseable: usize,
    panics: usize,
    guessed_only: bool,
}

impl Row {
    fn refused(&self) -> usize {
        self.opaque + self.unparseable + self.panics
    }
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "-".into()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / d as f64)
    }
}

/// One-line, shortened SQL for tables.
fn short(sql: &str, max: usize) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let one = one.replace('|', "\\|").replace('`', "'");
    if one.chars().count() > max {
        format!("{}…", one.chars().take(max).collect::<String>())
    } else {
        one
    }
}

fn opaque_label(o: &Opaque) -> (&'static str, &str) {
    match o {
        Opaque::CodeBlock(s) => ("CodeBlock", s),
        Opaque::DynamicSql(s) => ("DynamicSql", s),
        Opaque::UnknownStatement(s) => ("UnknownStatement", s),
        Opaque::ExecutePrepared(s) => ("ExecutePrepared", s),
    }
}

fn render(
    dir: &Path,
    fs: &FileStats,
    stmts: &[Stmt],
    elapsed: Duration,
    inspect_time: Duration,
) -> String {
    let mut r = String::new();
    let known: BTreeSet<&str> = stmts
        .iter()
        .filter(|s| !s.kind_guessed)
        .map(|s| s.kind.as_str())
        .collect();
    // Row label: pgward's kind; a guessed kind joins the row of the same
    // name (or of its first word: pgward says just "DROP"), else gets a `~`.
    let label = |s: &Stmt| -> String {
        if !s.kind_guessed {
            return s.kind.clone();
        }
        if known.contains(s.kind.as_str()) {
            return s.kind.clone();
        }
        let first = s.kind.split(' ').next().unwrap_or("");
        if known.contains(first) {
            return first.to_owned();
        }
        format!("~{}", s.kind)
    };

    let mut rows: HashMap<String, Row> = HashMap::new();
    let mut tot = Row::default();
    for s in stmts {
        let row = rows.entry(label(s)).or_insert_with(|| Row {
            guessed_only: true,
            ..Row::default()
        });
        for x in [&mut *row, &mut tot] {
            x.total += 1;
            match &s.outcome {
                Outcome::Understood => x.understood += 1,
                Outcome::Opaque(_) => x.opaque += 1,
                Outcome::Unparseable { .. } => x.unparseable += 1,
                Outcome::Panic(_) => x.panics += 1,
            }
        }
        if !s.kind_guessed {
            row.guessed_only = false;
        }
    }

    let unparse: Vec<&Stmt> = stmts
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Unparseable { .. }))
        .collect();
    let grammar_ok: Vec<&Stmt> = unparse
        .iter()
        .copied()
        .filter(|s| {
            matches!(
                s.outcome,
                Outcome::Unparseable {
                    grammar_rejects: false,
                    ..
                }
            )
        })
        .collect();
    let vars: Vec<&Stmt> = unparse
        .iter()
        .copied()
        .filter(|s| {
            matches!(
                s.outcome,
                Outcome::Unparseable {
                    psql_vars: true,
                    ..
                }
            )
        })
        .collect();
    let vars_after = |what: &str| {
        vars.iter()
            .filter(|s| matches!(s.outcome, Outcome::Unparseable { after_vars: Some(w), .. } if w == what))
            .count()
    };
    let multi = stmts.iter().filter(|s| s.infos > 1).count();

    let _ = writeln!(r, "# pgward refusal corpus\n");
    let _ = writeln!(
        r,
        "Corpus: `{}` ({} .sql files). Each statement is inspected on its own with \
         `pgward::inspect::inspect`; a restricted identity is refused every statement that is \
         *opaque* (parsed, but some `Opaque` present) or *unparseable* (inspect error).\n",
        dir.display(),
        fs.files
    );
    let _ = writeln!(r, "## Totals\n");
    let _ = writeln!(r, "| | statements | share |\n|---|---:|---:|");
    let _ = writeln!(r, "| total | {} | 100% |", tot.total);
    let _ = writeln!(
        r,
        "| understood | {} | {} |",
        tot.understood,
        pct(tot.understood, tot.total)
    );
    let _ = writeln!(
        r,
        "| opaque (refused) | {} | {} |",
        tot.opaque,
        pct(tot.opaque, tot.total)
    );
    let _ = writeln!(
        r,
        "| unparseable (refused) | {} | {} |",
        tot.unparseable,
        pct(tot.unparseable, tot.total)
    );
    let _ = writeln!(
        r,
        "| inspect panicked | {} | {} |",
        tot.panics,
        pct(tot.panics, tot.total)
    );
    let _ = writeln!(
        r,
        "| **refused** | **{}** | **{}** |",
        tot.refused(),
        pct(tot.refused(), tot.total)
    );
    let legit_refused = tot.opaque + grammar_ok.len() + tot.panics;
    let parseable = tot.total - (unparse.len() - grammar_ok.len());
    let _ = writeln!(
        r,
        "\nLegitimate SQL only (excluding the {} statements PostgreSQL's own grammar, \
         `pg_query::parse`, rejects): **{} of {} refused ({})** = {} opaque + {} unparseable by pgward \
         although the grammar accepts them + {} panics.\n",
        unparse.len() - grammar_ok.len(),
        legit_refused,
        parseable,
        pct(legit_refused, parseable),
        tot.opaque,
        grammar_ok.len(),
        tot.panics
    );

    let _ = writeln!(r, "### Unparseable statements\n");
    let _ = writeln!(
        r,
        "- {} unparseable by pgward; **{} of them are also rejected by `pg_query::parse`** \
         (PostgreSQL's grammar): invalid SQL, mostly deliberate (the suite tests error messages). \
         pgward's `inspect` fails only where `pg_query::parse` fails, plus a missing parse tree.",
        unparse.len(),
        unparse.len() - grammar_ok.len()
    );
    let _ = writeln!(
        r,
        "- **{} accepted by the grammar but refused by pgward as unparseable** (legitimate SQL refused for unparseability).",
        grammar_ok.len()
    );
    let _ = writeln!(
        r,
        "- {} of the unparseable statements use psql variables (`:v`, `:'v'`, `:\"v\"`) that psql \
         substitutes before sending (an artifact of running the files outside psql). With each reference \
         replaced by a placeholder of the same shape (`v`, `'v'`, `\"v\"`), pgward finds {} understood, \
         {} opaque, {} still unparseable (mostly variables holding whole statements, e.g. `:qry;`).",
        vars.len(),
        vars_after("understood"),
        vars_after("opaque"),
        vars_after("unparseable")
    );
    let scs = unparse.iter().filter(|s| s.scs_off).count();
    if scs > 0 {
        let _ = writeln!(
            r,
            "- {scs} of the unparseable statements were sent while `standard_conforming_strings` was off \
             (backslash escapes in '...' literals): pgward, like `pg_query`, lexes them as if it were on \
             (and flags the SET that turns it off)."
        );
    }
    for s in &grammar_ok {
        let _ = writeln!(
            r,
            "  - accepted by grammar, refused by pgward: `{}:{}` `{}`",
            s.file,
            s.line,
            short(&s.text, 120)
        );
    }
    let mut errs: BTreeMap<String, usize> = BTreeMap::new();
    for s in &unparse {
        if let Outcome::Unparseable { error, .. } = &s.outcome {
            let e = error.trim_start_matches("syntax error: Invalid statement: ");
            let e = e.split(" at or near").next().unwrap_or(e).to_owned();

            *errs.entry(e).or_default() += 1;
        }
    }
    let mut errs: Vec<_> = errs.into_iter().collect();
    errs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let _ = writeln!(r, "\nMost common parse errors:\n");
    for (e, n) in errs.iter().take(10) {
        let _ = writeln!(r, "- {n} × {}", short(e, 100));
    }

    // Opaque breakdown.
    let mut by_variant: BTreeMap<&str, usize> = BTreeMap::new();
    let mut details: BTreeMap<(&str, String), (usize, &Stmt)> = BTreeMap::new();
    for s in stmts {
        if let Outcome::Opaque(os) = &s.outcome {
            let mut seen = BTreeSet::new();
            let mut seen_d = BTreeSet::new();
            for o in os {
                let (v, d) = opaque_label(o);
                if seen.insert(v) {
                    *by_variant.entry(v).or_default() += 1;
                }
                // Prepared-statement names are arbitrary; group them.
                let d = if v == "ExecutePrepared" {
                    "(any name)".to_owned()
                } else {
                    d.to_owned()
                };
                if seen_d.insert((v, d.clone())) {
                    details.entry((v, d)).or_insert((0, s)).0 += 1;
                }
            }
        }
    }
    let _ = writeln!(r, "\n## Opaque statements by reason\n");
    let _ = writeln!(
        r,
        "Statements with at least one `Opaque` of the kind (a statement may count under several).\n"
    );
    let _ = writeln!(r, "| Opaque variant | statements |\n|---|---:|");
    for v in [
        "CodeBlock",
        "DynamicSql",
        "UnknownStatement",
        "ExecutePrepared",
    ] {
        let _ = writeln!(r, "| {v} | {} |", by_variant.get(v).copied().unwrap_or(0));
    }
    for v in [
        "UnknownStatement",
        "CodeBlock",
        "DynamicSql",
        "ExecutePrepared",
    ] {
        let mut list: Vec<_> = details.iter().filter(|((vv, _), _)| *vv == v).collect();
        if list.is_empty() {
            continue;
        }
        list.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let title = if v == "UnknownStatement" {
            "UnknownStatement kinds (gaps in pgward's classifier; all of them)".to_owned()
        } else {
            format!("{v} detail")
        };
        let _ = writeln!(r, "\n### {title}\n");
        let _ = writeln!(r, "| {v} | statements | example |\n|---|---:|---|");
        for ((_, d), (n, ex)) in list {
            let _ = writeln!(
                r,
                "| {d} | {n} | `{}:{}` `{}` |",
                ex.file,
                ex.line,
                short(&ex.text, 90)
            );
        }
    }

    // Per-kind table.
    let mut rows: Vec<(String, Row)> = rows.into_iter().collect();
    rows.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(&b.0)));
    let _ = writeln!(r, "\n## Per statement kind\n");
    let _ = writeln!(
        r,
        "Kind = `StatementInfo.kind`. Unparseable statements have no kind: theirs is **guessed from \
         their first keywords**, and counted in the row of the same name; when no parsed statement \
         has that kind the row is marked `~` (guessed kind only). Sorted by total; every kind is listed.\n"
    );
    let _ = writeln!(
        r,
        "| kind | total | understood | opaque | unparseable (guessed kind) | panics | % refused |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for (k, row) in &rows {
        let _ = writeln!(
            r,
            "| {} | {} | {} | {} | {} | {} | {} |",
            k.replace('|', "\\|"),
            row.total,
            row.understood,
            row.opaque,
            row.unparseable,
            row.panics,
            pct(row.refused(), row.total)
        );
    }
    let _ = writeln!(
        r,
        "| **all** | **{}** | **{}** | **{}** | **{}** | **{}** | **{}** |",
        tot.total,
        tot.understood,
        tot.opaque,
        tot.unparseable,
        tot.panics,
        pct(tot.refused(), tot.total)
    );

    // Panics.
    let _ = writeln!(r, "\n## Inspector panics\n");
    let panics: Vec<&Stmt> = stmts
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Panic(_)))
        .collect();
    if panics.is_empty() {
        let _ = writeln!(r, "None: `inspect` did not panic on any statement.");
    }
    for s in panics {
        if let Outcome::Panic(m) = &s.outcome {
            let _ = writeln!(
                r,
                "- `{}:{}` panic: {}\n\n  ```sql\n  {}\n  ```",
                s.file,
                s.line,
                m,
                s.text.replace('\n', "\n  ")
            );
        }
    }

    // Method notes.
    let _ = writeln!(r, "\n## Method and corpus notes\n");
    let _ = writeln!(
        r,
        "- psql emulation: {} meta-commands removed (`\\g`-like ones end a statement, \
         `\\;` is a literal `;`, `\\r` discarded {} buffers); {} lines of SQL in false `\\if` branches dropped \
         (`\\if :variable` is taken as true); {} COPY FROM stdin data blocks removed ({} data lines); \
         {} COPY FROM stdin with no data block after them (failing on purpose) left as they are.",
        fs.meta_lines,
        fs.resets,
        fs.inactive_lines,
        fs.copy_blocks,
        fs.copy_data_lines,
        fs.copy_without_data
    );
    let _ = writeln!(
        r,
        "- Statements are split as psql splits them (no split at `;` inside parentheses or inside a \
         `BEGIN ATOMIC ... END` function body). Cross-check: `pg_query::split_with_scanner` on the same \
         text gives {} pieces, {} of which `inspect` rejects; not comparable one to one: it cuts \
         `BEGIN ATOMIC` bodies into unparseable fragments, splits `\\;` strings, silently drops invalid \
         tokens{}.",
        fs.scanner_pieces,
        fs.scanner_unparseable,
        if fs.scanner_failed.is_empty() {
            String::new()
        } else {
            format!(
                "; it fails outright on {} files: {}",
                fs.scanner_failed.len(),
                fs.scanner_failed.join(", ")
            )
        }
    );
    let _ = writeln!(
        r,
        "- Query strings with no statement (comments only): {}. Statements that came from multi-statement \
         query strings (psql `\\;`; each statement counted on its own): {}.",
        fs.empty, multi
    );
    if !fs.unreadable.is_empty() {
        let _ = writeln!(r, "- Files skipped: {}", fs.unreadable.join("; "));
    }
    let _ = writeln!(
        r,
        "- Statements that parse but fail at run time (missing objects, type errors: the suite tests those too) \
         cannot be told apart without a server; they count as legitimate here."
    );
    let _ = writeln!(
        r,
        "- Runtime: {:.2} s total, {:.2} s in inspect (plus re-parse of failures) ({:.1} µs per statement).",
        elapsed.as_secs_f64(),
        inspect_time.as_secs_f64(),
        if tot.total == 0 {
            0.0
        } else {
            inspect_time.as_secs_f64() * 1e6 / tot.total as f64
        }
    );
    r
}
