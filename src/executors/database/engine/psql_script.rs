//! Reads a plain SQL script the way psql will, to refuse one that holds psql meta-commands
//! (`\! …` runs a shell, `\o`/`\w` write files, `\copy … program`, `\i`, `\gexec`, `\set`, …)
//! before psql reads it.
//!
//! psql takes a backslash as the start of a meta-command anywhere outside a quoted string, a
//! quoted identifier, a dollar-quoted body, a comment or COPY … FROM stdin data, on any line
//! and in the middle of one (`SELECT 1; \! id`). So this is a lexer with psql's states
//! (`src/fe_utils/psqlscan.l` of PostgreSQL 14 to 19), fed the decompressed script in chunks
//! of any size and holding only its state, never the script. It also follows where psql sends
//! each statement (at a `;` outside parentheses and outside a `CREATE FUNCTION … BEGIN ATOMIC`
//! body), because after a `COPY … FROM stdin;` psql reads raw data lines up to a line `\.`.
//!
//! The only backslash lines let through are the ones pg_dump (13.22, 14.19, 15.14, 16.10, 17.6
//! and later) writes into plain dumps: `\restrict KEY` before any SQL and the matching
//! `\unrestrict KEY` at the very end. They are left out of the output, so what psql receives
//! holds no backslash command at all.
//!
//! Two things a script can change while it runs alter how psql splits what follows:
//! `standard_conforming_strings` (whether `'…\'…'` ends at the backslash-quote) and an
//! unsafe `client_encoding` such as SJIS or BIG5, under which psql takes the byte after any
//! byte ≥ 0x80 as part of one character (a quote or a newline included). Both were tried
//! against psql 15: a `\!` hidden that way ran. No static reading can follow them, so:
//! - when psql enforces `\restrict` (the caller sends it first), psql itself refuses any
//!   meta-command this reading misses, and the scanner reads with pg_dump's own settings;
//! - with an older psql the scanner alone protects, so it also refuses what depends on those
//!   settings: a quoted string with a backslash right before a quote, and any byte ≥ 0x80
//!   outside COPY data ([`Problem::NeedsRestrict`]).
//!
//! Constructs that psql versions read differently, or that pg_dump never writes and that would
//! make the reading uncertain (a NUL byte, a byte-order mark, `1abc$$`, text after a
//! `COPY … FROM stdin;` on its line, a COPY inside a multi-statement body), are refused in
//! both cases ([`Problem::Unclear`]).
//!
//! psql also expands `:name` variables and lexes their values; the only ones set are psql's
//! own and runbot's `ON_ERROR_STOP` (`\set` and `\gset` are refused), so a script cannot
//! smuggle a backslash through one.

use std::fmt;

/// The longest backslash line kept to decide whether it is pg_dump's `\restrict`/`\unrestrict`.
const MAX_META_LINE: usize = 300;
/// The longest dollar-quote tag followed; pg_dump's are a few characters.
const MAX_TAG: usize = 256;
/// The longest meta-command name shown in a refusal.
const MAX_NAME: usize = 12;

/// Why a script is refused, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A psql meta-command; its name without the backslash, clipped, never its arguments
    /// (they may hold a password).
    MetaCommand(String),
    /// Text psql may read differently from this scanner; says why.
    Unclear(&'static str),
    /// Text whose reading depends on settings the script itself can change: safe only when
    /// psql enforces `\restrict`.
    NeedsRestrict(&'static str),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::MetaCommand(name) => write!(
                f,
                "line {} holds the psql meta-command `\\{name}`",
                self.line
            ),
            Problem::Unclear(why) | Problem::NeedsRestrict(why) => {
                write!(f, "line {}: {why}", self.line)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `E'…'`: backslash escapes in every psql version and setting.
    Escape,
    /// `'…'`, `N'…'`, `B'…'`, `X'…'`, `U&'…'`: no escapes while standard_conforming_strings
    /// is on (pg_dump's setting), escapes when it is off.
    Plain,
}

/// The unquoted token being read in [`State::Sql`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    None,
    /// An identifier or keyword: its first bytes, lowercased, and its length.
    Ident {
        head: [u8; 10],
        len: usize,
    },
    /// A number, or a `$1` parameter; `glued` once letters follow it (`1abc`), which psql
    /// versions split differently.
    Number {
        glued: bool,
    },
    /// `:name`, a psql variable (not an identifier; a `$` after it starts a new token).
    Var,
}

/// A byte that may end the token before it and is decided by the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    /// `-`: a `--` comment or an operator.
    Dash,
    /// `/`: a `/*` comment or an operator.
    Slash,
    /// `:`: `::`, `:=` or a psql variable.
    Colon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Sql,
    LineComment,
    BlockComment {
        depth: u32,
        star: bool,
        slash: bool,
    },
    Str {
        kind: Kind,
        /// Backslashes just before this byte.
        run: u32,
    },
    /// A quote inside a string: doubled, or the end.
    StrQuote {
        kind: Kind,
    },
    /// After a string: whitespace and comments with a newline, then a quote, continue it.
    AfterStr {
        kind: Kind,
        newline: bool,
        comment: bool,
        dash: bool,
    },
    QuotedIdent,
    QuotedIdentQuote,
    /// `$` then a tag being read: a dollar quote opens at the next `$`.
    DollarOpen {
        tag: Vec<u8>,
    },
    /// Inside `$tag$…`; `close` is how far a `$tag$` candidate has matched, if one is open.
    Dollar {
        tag: Vec<u8>,
        close: Option<(usize, bool)>,
    },
    /// A backslash and what follows on its line, held back from the output until decided.
    Meta {
        buf: Vec<u8>,
        /// Alone at the start of a line, before which psql's query buffer was empty.
        whole_line: bool,
    },
    /// After `COPY … FROM stdin;`: the rest of the line, then data.
    CopyRest,
    /// COPY data: raw lines up to `\.`.
    Data(DataPos),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPos {
    LineStart,
    Backslash,
    BackslashDot,
    BackslashDotCr,
    InLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyStep {
    /// Not a COPY statement (or not one that reads data from psql).
    No,
    /// Began with COPY: looking for FROM or TO outside parentheses.
    Looking,
    AfterFrom,
    /// `COPY … FROM STDIN` (or `FROM STDOUT`, which the server takes the same way).
    FromStdin,
}

/// What psql collects before it sends a statement (its query buffer), as far as it decides
/// where statements end and where COPY data begins.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unit {
    tokens: bool,
    paren: u32,
    /// psql 14+'s count of BEGIN … END inside `CREATE [OR REPLACE] FUNCTION|PROCEDURE`.
    begin: u32,
    /// The first four words, as psql records them to recognise CREATE [OR REPLACE] FUNCTION.
    idents: [u8; 4],
    ident_count: usize,
    copy: CopyStep,
    /// A `;` that psql did not send at (inside a BEGIN ATOMIC body, or parentheses).
    inner_semi: bool,
    copy_word: bool,
}

impl Default for Unit {
    fn default() -> Self {
        Unit {
            tokens: false,
            paren: 0,
            begin: 0,
            idents: [0; 4],
            ident_count: 0,
            copy: CopyStep::No,
            inner_semi: false,
            copy_word: false,
        }
    }
}

/// A token, as far as statement ends and COPY matter.
enum Tok<'a> {
    /// An unquoted identifier or keyword, lowercased; empty when too long to be a keyword.
    Word(&'a [u8]),
    Semi,
    Open,
    Close,
    Other,
}

/// The streaming reader: [`Scanner::push`] each chunk, then [`Scanner::finish`].
#[derive(Debug, Clone)]
pub struct Scanner {
    /// psql enforces `\restrict` for this script, so what depends on its settings is left to it.
    enforced: bool,
    state: State,
    word: Word,
    pending: Pending,
    unit: Unit,
    line: u64,
    offset: u64,
    at_line_start: bool,
    /// Any SQL token so far: a `\restrict` must come before all of it.
    seen_sql: bool,
    restrict_key: Option<Vec<u8>>,
    unrestricted: bool,
    /// How many of the file's first bytes match a UTF-8 byte-order mark.
    bom: u8,
}

/// What one byte does to the output.
enum Step {
    /// Passed on (or part of a held-back line).
    Keep,
    /// Starts a held-back backslash line.
    Hold,
    /// Ends a held-back line that is dropped.
    Drop,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// psql's `variable_char` and `dolq_cont`.
fn is_var_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit()
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b')
}

impl Scanner {
    /// `enforced`: psql will run the script under `\restrict`.
    pub fn new(enforced: bool) -> Scanner {
        Scanner {
            enforced,
            state: State::Sql,
            word: Word::None,
            pending: Pending::None,
            unit: Unit::default(),
            line: 1,
            offset: 0,
            at_line_start: true,
            seen_sql: false,
            restrict_key: None,
            unrestricted: false,
            bom: 0,
        }
    }

    /// Reads `input`, the next bytes of the script, and appends to `out` what psql should get:
    /// all of it but pg_dump's own `\restrict`/`\unrestrict` lines.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        let mut from = if matches!(self.state, State::Meta { .. }) {
            None
        } else {
            Some(0)
        };
        let mut i = 0;
        while i < input.len() {
            // COPY data is most of a dump: skip to the end of each line at once.
            if self.state == State::Data(DataPos::InLine) {
                let rest = &input[i..];
                let end = rest.iter().position(|&b| b == b'\n');
                let line = &rest[..end.unwrap_or(rest.len())];
                if line.contains(&0) {
                    return Err(self.refuse(Problem::Unclear(NUL)));
                }
                match end {
                    Some(n) => {
                        i += n;
                        self.offset += n as u64;
                    }
                    None => {
                        self.offset += rest.len() as u64;
                        self.at_line_start = false;
                        break;
                    }
                }
            }
            let b = input[i];
            match self.byte(b)? {
                Step::Keep => {}
                Step::Hold => {
                    if let Some(f) = from.take() {
                        out.extend_from_slice(&input[f..i]);
                    }
                }
                Step::Drop => from = Some(i + 1),
            }
            self.offset += 1;
            self.at_line_start = b == b'\n';
            if b == b'\n' {
                self.line += 1;
            }
            i += 1;
        }
        if let Some(f) = from {
            out.extend_from_slice(&input[f.min(input.len())..]);
        }
        Ok(())
    }

    /// The end of the script: decides a last backslash line that has no newline.
    pub fn finish(mut self) -> Result<(), Refusal> {
        if let State::Meta { buf, whole_line } = std::mem::replace(&mut self.state, State::Sql) {
            self.meta_line(&buf, whole_line)?;
        }
        Ok(())
    }

    fn refuse(&self, problem: Problem) -> Refusal {
        Refusal {
            line: self.line,
            problem,
        }
    }

    fn byte(&mut self, b: u8) -> Result<Step, Refusal> {
        if b == 0 {
            return Err(self.refuse(Problem::Unclear(NUL)));
        }
        if self.offset < 3 && b == [0xEF, 0xBB, 0xBF][self.offset as usize] {
            self.bom += 1;
        }
        if self.bom == 3 && self.offset == 2 {
            return Err(self.refuse(Problem::Unclear(
                "the file starts with a byte-order mark, which psql drops or keeps depending on the client encoding",
            )));
        }
        if b >= 0x80 && !self.enforced && !matches!(self.state, State::Data(_) | State::Meta { .. })
        {
            return Err(self.refuse(Problem::NeedsRestrict(
                "it holds non-ASCII text outside COPY data, which psql splits differently once the script sets an unsafe client_encoding (SJIS, BIG5, GBK, …)",
            )));
        }
        // A byte may end one state and then be read again in the next (`again`).
        loop {
            let again = match &mut self.state {
                State::Sql => return self.sql(b),
                State::LineComment => {
                    if b == b'\n' || b == b'\r' {
                        self.state = State::Sql;
                    }
                    false
                }
                State::BlockComment { depth, star, slash } => {
                    match b {
                        b'*' if *slash => {
                            *depth += 1;
                            *slash = false;
                        }
                        b'*' => *star = true,
                        b'/' if *star => {
                            if *depth <= 1 {
                                self.state = State::Sql;
                            } else {
                                *depth -= 1;
                                *star = false;
                            }
                        }
                        b'/' => {
                            *slash = true;
                            *star = false;
                        }
                        _ => {
                            *star = false;
                            *slash = false;
                        }
                    }
                    false
                }
                State::Str { kind, run } => {
                    match b {
                        b'\\' => *run += 1,
                        b'\'' => {
                            let (kind, run) = (*kind, *run);
                            if run % 2 == 1 && kind == Kind::Escape {
                                // `\'` inside E'…': an escaped quote.
                                self.state = State::Str { kind, run: 0 };
                            } else {
                                if run % 2 == 1 && !self.enforced {
                                    return Err(self.refuse(Problem::NeedsRestrict(
                                        "a quoted string has a backslash right before a quote, so where it ends depends on standard_conforming_strings, which the script can turn off",
                                    )));
                                }
                                self.state = State::StrQuote { kind };
                            }
                        }
                        _ => *run = 0,
                    }
                    false
                }
                State::StrQuote { kind } => {
                    let kind = *kind;
                    if b == b'\'' {
                        // '' inside a string: one quote.
                        self.state = State::Str { kind, run: 0 };
                        false
                    } else {
                        self.state = State::AfterStr {
                            kind,
                            newline: false,
                            comment: false,
                            dash: false,
                        };
                        true
                    }
                }
                State::AfterStr {
                    kind,
                    newline,
                    comment,
                    dash,
                } => {
                    if *comment {
                        if b == b'\n' || b == b'\r' {
                            *comment = false;
                            *newline = true;
                        }
                        false
                    } else if *dash {
                        if b == b'-' {
                            *dash = false;
                            *comment = true;
                            false
                        } else {
                            // Not a continuation: the `-` was an operator after the string.
                            self.state = State::Sql;
                            self.pending = Pending::Dash;
                            true
                        }
                    } else {
                        match b {
                            b'\n' | b'\r' => {
                                *newline = true;
                                false
                            }
                            b' ' | b'\t' | b'\x0c' | b'\x0b' => false,
                            b'-' => {
                                *dash = true;
                                false
                            }
                            b'\'' if *newline => {
                                // 'a'<newline>'b' is one string. psql versions differ on
                                // whether \v is a space here: both ways a string follows,
                                // read as plain unless psql enforces \restrict.
                                let kind = if self.enforced { *kind } else { Kind::Plain };
                                self.state = State::Str { kind, run: 0 };
                                false
                            }
                            _ => {
                                self.state = State::Sql;
                                true
                            }
                        }
                    }
                }
                State::QuotedIdent => {
                    if b == b'"' {
                        self.state = State::QuotedIdentQuote;
                    }
                    false
                }
                State::QuotedIdentQuote => {
                    if b == b'"' {
                        self.state = State::QuotedIdent;
                        false
                    } else {
                        self.state = State::Sql;
                        true
                    }
                }
                State::DollarOpen { tag } => {
                    if b == b'$' {
                        let tag = std::mem::take(tag);
                        self.state = State::Dollar { tag, close: None };
                        false
                    } else if tag.is_empty() && b.is_ascii_digit() {
                        // $1: a parameter.
                        self.state = State::Sql;
                        self.word = Word::Number { glued: false };
                        false
                    } else if is_var_char(b) && (!tag.is_empty() || is_ident_start(b)) {
                        if tag.len() == MAX_TAG {
                            return Err(self.refuse(Problem::Unclear(
                                "a dollar-quote tag is longer than 256 bytes",
                            )));
                        }
                        tag.push(b);
                        false
                    } else {
                        // `$abc` with no closing `$`: a `$`, then the identifier abc.
                        let tag = std::mem::take(tag);
                        self.state = State::Sql;
                        self.word = if tag.is_empty() {
                            Word::None
                        } else {
                            ident_word(&tag)
                        };
                        true
                    }
                }
                State::Dollar { tag, close } => {
                    if b == b'$' {
                        if matches!(close, Some((n, true)) if *n == tag.len()) {
                            self.state = State::Sql;
                            self.sql_token(Tok::Other)?;
                        } else {
                            *close = Some((0, true));
                        }
                    } else if let Some((n, ok)) = close {
                        if is_var_char(b) && (*n > 0 || !*ok || is_ident_start(b)) {
                            if *ok && *n < tag.len() && tag[*n] == b {
                                *n += 1;
                            } else {
                                *ok = false;
                                *n += 1;
                            }
                        } else {
                            *close = None;
                        }
                    }
                    false
                }
                State::Meta { buf, whole_line } => {
                    if b == b'\n' {
                        let (buf, whole_line) = (std::mem::take(buf), *whole_line);
                        self.state = State::Sql;
                        self.meta_line(&buf, whole_line)?;
                        return Ok(Step::Drop);
                    }
                    buf.push(b);
                    // Decided as soon as its name is complete, unless it may be pg_dump's.
                    if let Some(name) = complete_name(buf) {
                        if !(*whole_line && (name == b"restrict" || name == b"unrestrict")) {
                            let problem = Problem::MetaCommand(shown_name(name));
                            return Err(self.refuse(problem));
                        }
                    }
                    if buf.len() > MAX_META_LINE {
                        let problem = Problem::MetaCommand(shown_name(name_of(buf)));
                        return Err(self.refuse(problem));
                    }
                    false
                }
                State::CopyRest => match b {
                    b'\n' => {
                        self.state = State::Data(DataPos::LineStart);
                        false
                    }
                    b' ' | b'\t' | b'\r' => false,
                    _ => {
                        return Err(self.refuse(Problem::Unclear(
                            "text follows `COPY … FROM stdin;` on its line, which psql reads only after the data",
                        )))
                    }
                },
                State::Data(pos) => {
                    let end = matches!(*pos, DataPos::BackslashDot | DataPos::BackslashDotCr);
                    if b == b'\n' && end {
                        // `\.` alone on its line ends the data; psql takes `\.\r\n` too.
                        self.state = State::Sql;
                    } else {
                        *pos = match (*pos, b) {
                            (_, b'\n') => DataPos::LineStart,
                            (DataPos::LineStart, b'\\') => DataPos::Backslash,
                            (DataPos::Backslash, b'.') => DataPos::BackslashDot,
                            (DataPos::BackslashDot, b'\r') => DataPos::BackslashDotCr,
                            _ => DataPos::InLine,
                        };
                    }
                    false
                }
            };
            if !again {
                return Ok(Step::Keep);
            }
        }
    }

    /// A byte in psql's INITIAL state.
    fn sql(&mut self, b: u8) -> Result<Step, Refusal> {
        // Resolve the byte held back from the one before.
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => {}
            Pending::Dash => {
                if b == b'-' {
                    self.state = State::LineComment;
                    return Ok(Step::Keep);
                }
                self.sql_token(Tok::Other)?;
            }
            Pending::Slash => {
                if b == b'*' {
                    self.state = State::BlockComment {
                        depth: 1,
                        star: false,
                        slash: false,
                    };
                    return Ok(Step::Keep);
                }
                self.sql_token(Tok::Other)?;
            }
            Pending::Colon => {
                self.sql_token(Tok::Other)?;
                if b == b':' || b == b'=' {
                    // `::` or `:=`.
                    return Ok(Step::Keep);
                }
                if is_var_char(b) {
                    self.word = Word::Var;
                    return Ok(Step::Keep);
                }
            }
        }
        // Continue or end the word being read.
        match self.word {
            Word::Ident { head, len } => {
                if is_ident_cont(b) {
                    self.word = grow(head, len, b);
                    return Ok(Step::Keep);
                }
                self.word = Word::None;
                let prefix = len == 1 && b == b'\'' && matches!(head[0], b'e' | b'b' | b'x' | b'n');
                if prefix {
                    // E'…', B'…', X'…', N'…': a string, and the letter is no identifier.
                    self.sql_token(Tok::Other)?;
                    let kind = if head[0] == b'e' {
                        Kind::Escape
                    } else {
                        Kind::Plain
                    };
                    self.state = State::Str { kind, run: 0 };
                    return Ok(Step::Keep);
                }
                let word = &head[..len.min(head.len())];
                let word = if len > head.len() { &[][..] } else { word };
                let word = word.to_vec();
                self.sql_token(Tok::Word(&word))?;
            }
            Word::Number { glued } => {
                if b == b'$' && glued {
                    return Err(self.refuse(Problem::Unclear(
                        "a number runs into a name and a `$` (like 1a$$), which psql versions split differently",
                    )));
                }
                if b.is_ascii_digit() || b == b'.' {
                    return Ok(Step::Keep);
                }
                if is_ident_start(b) {
                    self.word = Word::Number { glued: true };
                    return Ok(Step::Keep);
                }
                self.word = Word::None;
            }
            Word::Var => {
                if is_var_char(b) {
                    return Ok(Step::Keep);
                }
                self.word = Word::None;
            }
            Word::None => {}
        }
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b' => {}
            b'\'' => {
                self.sql_token(Tok::Other)?;
                self.state = State::Str {
                    kind: Kind::Plain,
                    run: 0,
                };
            }
            b'"' => {
                self.sql_token(Tok::Other)?;
                self.state = State::QuotedIdent;
            }
            b'$' => {
                self.sql_token(Tok::Other)?;
                self.state = State::DollarOpen { tag: Vec::new() };
            }
            b'-' => self.pending = Pending::Dash,
            b'/' => self.pending = Pending::Slash,
            b':' => self.pending = Pending::Colon,
            b'\\' => {
                let whole_line = self.at_line_start && !self.unit.tokens;
                self.state = State::Meta {
                    buf: vec![b'\\'],
                    whole_line,
                };
                return Ok(Step::Hold);
            }
            b';' => self.sql_token(Tok::Semi)?,
            b'(' => self.sql_token(Tok::Open)?,
            b')' => self.sql_token(Tok::Close)?,
            b'0'..=b'9' => {
                self.sql_token(Tok::Other)?;
                self.word = Word::Number { glued: false };
            }
            _ if is_ident_start(b) => self.word = grow([0; 10], 0, b),
            _ => self.sql_token(Tok::Other)?,
        }
        Ok(Step::Keep)
    }

    /// Follows psql's query buffer: where it sends a statement, and whether that statement
    /// is a COPY that reads data from psql.
    fn sql_token(&mut self, tok: Tok<'_>) -> Result<(), Refusal> {
        if self.unrestricted {
            return Err(self.refuse(Problem::Unclear(
                "SQL follows the file's \\unrestrict line, which pg_dump writes last",
            )));
        }
        self.seen_sql = true;
        let first = !self.unit.tokens;
        self.unit.tokens = true;
        let u = &mut self.unit;
        if u.copy == CopyStep::AfterFrom && u.paren == 0 {
            u.copy = match tok {
                Tok::Word(b"stdin") | Tok::Word(b"stdout") => CopyStep::FromStdin,
                _ => CopyStep::No,
            };
        }
        match tok {
            Tok::Word(w) => {
                // psqlscan.l: the first words of the statement, for CREATE [OR REPLACE]
                // FUNCTION|PROCEDURE, whose BEGIN ATOMIC … END bodies hold `;`s.
                if u.ident_count < 4
                    && matches!(
                        w,
                        b"create" | b"function" | b"procedure" | b"or" | b"replace"
                    )
                {
                    u.idents[u.ident_count] = w[0];
                }
                u.ident_count += 1;
                let routine = u.idents[0] == b'c'
                    && (u.idents[1] == b'f'
                        || u.idents[1] == b'p'
                        || (u.idents[1] == b'o'
                            && u.idents[2] == b'r'
                            && (u.idents[3] == b'f' || u.idents[3] == b'p')));
                if routine && u.paren == 0 {
                    match w {
                        b"begin" => u.begin += 1,
                        b"case" if u.begin >= 1 => u.begin += 1,
                        b"end" if u.begin > 0 => u.begin -= 1,
                        _ => {}
                    }
                }
                if w == b"copy" {
                    u.copy_word = true;
                    if first {
                        u.copy = CopyStep::Looking;
                    }
                }
                if u.copy == CopyStep::Looking && u.paren == 0 {
                    match w {
                        b"from" => u.copy = CopyStep::AfterFrom,
                        b"to" => u.copy = CopyStep::No,
                        _ => {}
                    }
                }
            }
            Tok::Open => u.paren += 1,
            Tok::Close => u.paren = u.paren.saturating_sub(1),
            Tok::Semi if u.paren == 0 && u.begin == 0 => {
                if u.inner_semi && u.copy_word {
                    return Err(self.refuse(Problem::Unclear(
                        "a COPY sits inside a statement psql sends together with others (a BEGIN ATOMIC body), so where its data starts is unclear",
                    )));
                }
                let copy_in = u.copy == CopyStep::FromStdin;
                self.unit = Unit::default();
                if copy_in {
                    self.state = State::CopyRest;
                }
            }
            Tok::Semi => u.inner_semi = true,
            Tok::Other => {}
        }
        Ok(())
    }

    /// A whole backslash line: pg_dump's `\restrict KEY` or `\unrestrict KEY`, or a refusal.
    fn meta_line(&mut self, buf: &[u8], whole_line: bool) -> Result<(), Refusal> {
        let name = name_of(buf);
        let refuse = |s: &Self| s.refuse(Problem::MetaCommand(shown_name(name)));
        if !whole_line {
            return Err(refuse(self));
        }
        let text = buf.strip_suffix(b"\r").unwrap_or(buf);
        let text = trim_end(text);
        let key = |prefix: &[u8]| -> Option<Vec<u8>> {
            let key = text.strip_prefix(prefix)?;
            (!key.is_empty() && key.len() <= 256 && key.iter().all(u8::is_ascii_alphanumeric))
                .then(|| key.to_vec())
        };
        if let Some(k) = key(b"\\restrict ") {
            if self.seen_sql || self.restrict_key.is_some() {
                return Err(refuse(self));
            }
            self.restrict_key = Some(k);
            return Ok(());
        }
        if let Some(k) = key(b"\\unrestrict ") {
            if self.restrict_key.as_deref() != Some(&k[..]) || self.unrestricted {
                return Err(refuse(self));
            }
            self.unrestricted = true;
            return Ok(());
        }
        Err(refuse(self))
    }
}

const NUL: &str = "it holds a NUL byte, at which psql cuts the line";

fn ident_word(tag: &[u8]) -> Word {
    let mut w = Word::Ident {
        head: [0; 10],
        len: 0,
    };
    for &b in tag {
        if let Word::Ident { head, len } = w {
            w = grow(head, len, b);
        }
    }
    w
}

fn grow(mut head: [u8; 10], len: usize, b: u8) -> Word {
    if len < head.len() {
        head[len] = b.to_ascii_lowercase();
    }
    Word::Ident {
        head,
        len: len.saturating_add(1),
    }
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rposition(|b| !is_space(*b)).map_or(0, |p| p + 1);
    &s[..n]
}

/// The command name after the backslash once a byte has ended it (psql reads `\!` as one
/// character, names as letters), or None while it may go on.
fn complete_name(buf: &[u8]) -> Option<&[u8]> {
    let name = &buf[1..];
    let first = *name.first()?;
    if !first.is_ascii_alphabetic() {
        return Some(&name[..1]);
    }
    let n = name
        .iter()
        .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')?;
    Some(&name[..n])
}

/// The name however far it got (at the end of the line or the held-back limit).
fn name_of(buf: &[u8]) -> &[u8] {
    complete_name(buf).unwrap_or(&buf[1.min(buf.len())..])
}

/// A name fit to show: printable ASCII only, clipped.
fn shown_name(name: &[u8]) -> String {
    let mut s: String = name
        .iter()
        .take(MAX_NAME)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    if name.len() > MAX_NAME {
        s.push('…');
    }
    s
}

/// Reads a whole script held in memory (tests, small files).
pub fn check(script: &[u8], enforced: bool) -> Result<Vec<u8>, Refusal> {
    let mut s = Scanner::new(enforced);
    let mut out = Vec::with_capacity(script.len());
    s.push(script, &mut out)?;
    s.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways psql may run: enforcing `\restrict`, or an older one with the scan alone.
    fn passes(script: &str) {
        for enforced in [true, false] {
            if let Err(r) = check(script.as_bytes(), enforced) {
                panic!("refused (enforced: {enforced}): {r}\n{script}");
            }
        }
    }

    fn meta(script: &str) -> (u64, String) {
        let mut seen = None;
        for enforced in [true, false] {
            match check(script.as_bytes(), enforced) {
                Err(Refusal {
                    line,
                    problem: Problem::MetaCommand(name),
                }) => {
                    let now = (line, name);
                    assert!(seen.is_none() || seen.as_ref() == Some(&now), "{now:?}");
                    seen = Some(now);
                }
                other => panic!(
                    "expected a meta-command (enforced: {enforced}), got {other:?}\n{script}"
                ),
            }
        }
        seen.unwrap()
    }

    fn unclear(script: &[u8]) -> Refusal {
        let r = check(script, true).expect_err("refused");
        assert!(matches!(r.problem, Problem::Unclear(_)), "{r:?}");
        assert_eq!(check(script, false).unwrap_err().line, r.line);
        r
    }

    #[test]
    fn a_meta_command_is_found_at_a_line_start_and_in_the_middle_of_one() {
        assert_eq!(meta("\\! touch /tmp/x\n"), (1, "!".into()));
        assert_eq!(meta("SELECT 1;\nSELECT 1; \\! id\n"), (2, "!".into()));
        assert_eq!(meta("SELECT 1 \\gexec\n"), (1, "gexec".into()));
        assert_eq!(meta("SELECT 1;\\o /tmp/out\n"), (1, "o".into()));
        assert_eq!(meta("\\copy t to program 'id'\n"), (1, "copy".into()));
        assert_eq!(meta("\\set x 1"), (1, "set".into()));
        assert_eq!(meta("\\i"), (1, "i".into()));
        // `\;` is psql's way to glue statements, not a command; refused all the same.
        assert_eq!(meta("SELECT 1 \\; SELECT 2;\n"), (1, ";".into()));
    }

    #[test]
    fn right_after_a_semicolon_or_a_string_a_backslash_is_a_meta_command() {
        assert_eq!(meta("SELECT 'a';\\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT 'a'\\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT 'a'\n\n\\! id\n"), (3, "!".into()));
        assert_eq!(meta("SELECT $$a$$\\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT \"a\"\\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT 1 /* a */ \\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT 1 -- a\n\\! id\n"), (2, "!".into()));
    }

    #[test]
    fn the_name_shown_is_clipped_and_never_its_arguments() {
        let (_, name) = meta("\\connect postgres://u:hunter2@db/x\n");
        assert_eq!(name, "connect");
        let (_, name) = meta("\\averyveryverylongcommandname x\n");
        assert_eq!(name, "averyveryver…");
        let r = check(b"\\! rm -rf /\n", true).unwrap_err();
        assert_eq!(r.to_string(), "line 1 holds the psql meta-command `\\!`");
    }

    #[test]
    fn backslashes_inside_strings_identifiers_dollar_quotes_and_comments_are_text() {
        passes("SELECT 'C:\\\\temp\\\\';\n");
        passes("SELECT 'it''s \\! not a command';\n");
        passes("SELECT E'it\\'s \\\\! \\n';\n");
        passes("SELECT e'\\\\';\n");
        passes("SELECT U&'d\\0061t\\+000061';\n");
        passes("SELECT B'0101', X'1F', N'x';\n");
        passes("SELECT 1 AS \"odd \\! name\", 2 AS \"q\"\"\\\";\n");
        passes("-- a comment \\! id\nSELECT 1;\n");
        passes("/* \\! id */ SELECT 1;\n");
        passes("SELECT 'a'\n'\\! still the same string';\n");
        passes("SELECT 'a' -- c\n  '\\! continued' ;\n");
    }

    #[test]
    fn dollar_quotes_end_only_at_their_own_tag() {
        passes("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT '\\! x' $$;\n");
        passes("DO $body$ BEGIN RAISE NOTICE $$ \\! $$; END $body$;\n");
        passes("SELECT $a$ $b$ \\! $b$ $A$ \\! $a$;\n");
        passes("SELECT $_$ x ~ '^\\d+\\\\$' $_$;\n");
        passes("SELECT $q$\n\\.\n\\! id\n$q$;\n");
        assert_eq!(meta("SELECT $a$ x $a$ \\! id\n"), (1, "!".into()));
        assert_eq!(meta("SELECT $a$ x $b$ y $a$; \\o f\n"), (1, "o".into()));
        // `a$$` is an identifier, not a dollar quote: the backslash is outside anything.
        assert_eq!(meta("SELECT a$$ \\! id $$;\n"), (1, "!".into()));
        // `$1` is a parameter; `$1$$` a parameter then a dollar quote.
        passes("PREPARE p AS SELECT $1$$ \\! $$;\n");
        // psql 14, 15 and 16 split `1a$$` three ways.
        let r = unclear(b"SELECT 1a$$ \\! $$;\n");
        assert!(r.to_string().contains("psql versions"), "{r}");
    }

    #[test]
    fn block_comments_nest() {
        passes("/* outer /* inner */ \\! still a comment */ SELECT 1;\n");
        assert_eq!(meta("/* one */ /* two */ \\! id\n"), (1, "!".into()));
        passes("/*/ not closed yet \\! */ SELECT 1;\n");
        passes("/**/ SELECT 1; /* a\n \\! b\n */\n");
        // psql ends a -- comment at \r too.
        assert_eq!(meta("SELECT 1; -- a\r\\! id\n"), (1, "!".into()));
    }

    #[test]
    fn copy_data_is_raw_up_to_a_line_holding_only_a_backslash_dot() {
        let dump =
            "COPY public.t (id, s) FROM stdin;\n1\tback\\\\slash \\\\! x\n2\t\\N\n\\.\nSELECT 1;\n";
        passes(dump);
        assert_eq!(check(dump.as_bytes(), true).unwrap(), dump.as_bytes());
        // After the data, SQL again.
        assert_eq!(
            meta("COPY t FROM stdin;\n1\n\\.\n\\! id\n"),
            (4, "!".into())
        );
        // psql ends the data at \.\r\n as well.
        assert_eq!(
            meta("COPY t FROM stdin;\r\n1\r\n\\.\r\n\\! id\n"),
            (4, "!".into())
        );
        // \. with more on the line is data.
        passes("COPY t FROM stdin;\n\\.x\n\\! data\n\\.\n");
        // STDOUT after FROM is data from psql too; a column named copy changes nothing.
        passes("COPY t (id, copy) FROM STDOUT WITH (FORMAT text);\n\\! data\n\\.\n");
        // COPY … TO and COPY … FROM a file read nothing from psql.
        assert_eq!(meta("COPY t TO STDOUT;\n\\! id\n"), (2, "!".into()));
        assert_eq!(meta("COPY t FROM '/f';\n\\! id\n"), (2, "!".into()));
        assert_eq!(
            meta("COPY (SELECT 1 FROM x) TO STDOUT;\n\\! id\n"),
            (2, "!".into())
        );
        // Until its `;`, a COPY is SQL.
        assert_eq!(meta("COPY t FROM stdin\n\\! id\n"), (2, "!".into()));
    }

    #[test]
    fn copy_statements_psql_might_place_differently_are_refused() {
        // psql reads the rest of the COPY line after the data.
        unclear(b"COPY t FROM stdin; SELECT 1;\n1\n\\.\n");
        // Inside BEGIN ATOMIC, psql sends several statements at once.
        unclear(b"CREATE FUNCTION begin() RETURNS int LANGUAGE sql AS 'select 1'; COPY t FROM stdin; end;\n1\n\\.\n");
    }

    #[test]
    fn a_begin_atomic_body_is_one_statement() {
        passes(
            "CREATE FUNCTION public.f(a integer) RETURNS integer\n    LANGUAGE sql\n    BEGIN ATOMIC\n SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n SELECT 2;\nEND;\nCOPY t FROM stdin;\n\\! data\n\\.\n",
        );
    }

    #[test]
    fn pg_dumps_restrict_lines_pass_and_are_left_out() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abcXYZ123\n\nSELECT 1;\n\n--\n-- done\n--\n\n\\unrestrict abcXYZ123\n\n";
        let out = check(dump.as_bytes(), true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "--\n-- PostgreSQL database dump\n--\n\n\nSELECT 1;\n\n--\n-- done\n--\n\n\n"
        );
        // Cut at any point, the output is the same.
        for cut in 0..dump.len() {
            let mut s = Scanner::new(true);
            let mut out = Vec::new();
            s.push(&dump.as_bytes()[..cut], &mut out).unwrap();
            s.push(&dump.as_bytes()[cut..], &mut out).unwrap();
            s.finish().unwrap();
            assert_eq!(out, check(dump.as_bytes(), true).unwrap(), "cut at {cut}");
        }
        // The last line needs no newline.
        passes("\\restrict k1\nSELECT 1;\n\\unrestrict k1");
    }

    #[test]
    fn restrict_lines_anywhere_else_are_refused() {
        // After SQL, twice, with another key, not alone on the line, with more on it.
        assert_eq!(meta("SELECT 1;\n\\restrict k\n").0, 2);
        assert_eq!(meta("\\restrict k\n\\restrict k\n").0, 2);
        assert_eq!(meta("\\restrict k\nSELECT 1;\n\\unrestrict other\n").0, 3);
        assert_eq!(meta("\\unrestrict k\n").0, 1);
        assert_eq!(meta("SELECT 1 \\restrict k\n").0, 1);
        assert_eq!(meta("\\restrict k \\! id\n").0, 1);
        assert_eq!(meta("\\restrict bad-key\n").0, 1);
        assert_eq!(meta("SELECT 1\n\\restrict k\n;\n").0, 2);
        // Nothing but comments after \unrestrict.
        unclear(b"\\restrict k\n\\unrestrict k\nSELECT 1;\n");
        passes("\\restrict k\n\\unrestrict k\n-- end\n");
    }

    #[test]
    fn nul_bytes_and_byte_order_marks_are_refused() {
        assert_eq!(unclear(b"SELECT 'a\0';\n").line, 1);
        assert_eq!(unclear(b"COPY t FROM stdin;\n1\0\n\\.\n").line, 2);
        unclear(b"\xEF\xBB\xBFSELECT 1;\n");
    }

    #[test]
    fn psql_variables_are_not_identifiers_or_string_prefixes() {
        // `:e` is a variable: the string after it is plain, which the backslash does not
        // escape (an older psql could read it either way: refused as such).
        let poisoned = b"SELECT :e'\\' \\! id '';\n";
        let r = check(poisoned, true).unwrap_err();
        assert_eq!(r.problem, Problem::MetaCommand("!".into()));
        let r = check(poisoned, false).unwrap_err();
        assert!(matches!(r.problem, Problem::NeedsRestrict(_)), "{r:?}");
        // `:a$$` is the variable a, then a dollar quote.
        passes("SELECT :a$$ \\! $$;\n");
        // `::` is a cast; `e'…'` after it is an escape string.
        passes("SELECT 'x'::text, e'\\' \\! ';\n");
    }

    #[test]
    fn with_an_older_psql_what_depends_on_the_scripts_own_settings_is_refused() {
        // With standard_conforming_strings off, psql ends this string at \' and runs \!.
        let scs = "SET standard_conforming_strings = off;\nSELECT 'a\\'' \\! id\n'';\n";
        check(scs.as_bytes(), true).expect("psql enforces \\restrict: left to it");
        let r = check(scs.as_bytes(), false).unwrap_err();
        assert!(matches!(r.problem, Problem::NeedsRestrict(_)), "{r:?}");
        assert_eq!(r.line, 2);
        // Under SJIS, psql takes the quote after 0x81 as part of one character.
        let sjis = b"SET client_encoding = 'SJIS';\nSELECT 1 \x81' \\! id\n;\n";
        check(sjis, true).expect("psql enforces \\restrict: left to it");
        let r = check(sjis, false).unwrap_err();
        assert!(matches!(r.problem, Problem::NeedsRestrict(_)), "{r:?}");
        let r = check(b"SELECT 'caf\xc3\xa9';\n", false).unwrap_err();
        assert!(matches!(r.problem, Problem::NeedsRestrict(_)), "{r:?}");
        check(b"SELECT 'caf\xc3\xa9';\n", true).unwrap();
        // COPY data may hold any bytes, and an even run of backslashes ends a string alike.
        passes("COPY t FROM stdin;\ncaf\u{e9}\n\\.\nSELECT '\\\\';\n");
    }

    #[test]
    fn a_script_is_read_the_same_in_chunks_of_any_size() {
        let script = "--\n\\restrict K1\nCREATE TABLE \"a\"\"b\" (x text DEFAULT E'\\'' );\nSELECT $t$ \\! $t$, 'x'\n  'y', 1 /* /* */ */;\nCOPY t FROM stdin;\nx\\.\n\\.\n\\unrestrict K1\n";
        let whole = check(script.as_bytes(), true).unwrap();
        for size in 1..8 {
            let mut s = Scanner::new(true);
            let mut out = Vec::new();
            for chunk in script.as_bytes().chunks(size) {
                s.push(chunk, &mut out).unwrap();
            }
            s.finish().unwrap();
            assert_eq!(out, whole, "chunks of {size}");
        }
        let poisoned = format!("{script}SELECT 1; \\! id\n");
        for size in 1..8 {
            let mut s = Scanner::new(true);
            let mut out = Vec::new();
            let r = poisoned
                .as_bytes()
                .chunks(size)
                .try_for_each(|c| s.push(c, &mut out))
                .unwrap_err();
            assert_eq!(r.line, 10, "chunks of {size}");
            assert!(!out.windows(5).any(|w| w == b"\\! id"), "held back");
        }
    }
}
