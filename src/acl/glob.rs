//! Shell patterns with the exact semantics of Go's `path.Match`, which docker_auth uses for
//! every ACL pattern that is not a `/regex/`.
//!
//! Go reports a malformed pattern only while matching; we parse once so that a bad pattern
//! fails when the config loads instead of silently never matching. Matching deliberately
//! keeps Go's algorithm: each star-led chunk takes its leftmost fit and earlier chunks are
//! never revisited. A fully backtracking matcher would accept some names Go rejects (e.g.
//! `*[^z]*c` against `a/bc`), and ACL compatibility matters more than elegance here.

/// Why a pattern is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("pattern ends with an unescaped '\\'")]
    TrailingBackslash,
    #[error("unterminated character class '['")]
    UnterminatedClass,
    #[error(
        "a character class element cannot be an unescaped '-' or ']' (classes must be non-empty)"
    )]
    BadClassElement,
}

#[derive(Debug, Clone)]
enum Token {
    /// One byte of the pattern; multi-byte characters compare bytewise, as in Go.
    Byte(u8),
    /// `?`: one character other than `/`.
    AnyChar,
    /// `[...]`: one character, `/` included, inside (or, negated, outside) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A run of single-character tokens, optionally preceded by `*`.
#[derive(Debug, Clone)]
struct Chunk {
    star: bool,
    tokens: Vec<Token>,
}

/// A validated `path.Match` pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    chunks: Vec<Chunk>,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let bytes = pattern.as_bytes();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let mut star = false;
            while i < bytes.len() && bytes[i] == b'*' {
                star = true;
                i += 1;
            }
            let mut tokens = Vec::new();
            while i < bytes.len() && bytes[i] != b'*' {
                match bytes[i] {
                    b'?' => {
                        tokens.push(Token::AnyChar);
                        i += 1;
                    }
                    b'\\' => {
                        // The escaped character may be multi-byte; its bytes all become
                        // literals, which is what Go's bytewise comparison amounts to.
                        let next = bytes.get(i + 1).ok_or(GlobError::TrailingBackslash)?;
                        tokens.push(Token::Byte(*next));
                        i += 2;
                    }
                    b'[' => {
                        let (token, used) = parse_class(&pattern[i + 1..])?;
                        tokens.push(token);
                        i += 1 + used;
                    }
                    b => {
                        tokens.push(Token::Byte(b));
                        i += 1;
                    }
                }
            }
            chunks.push(Chunk { star, tokens });
        }
        Ok(Glob { chunks })
    }

    pub fn is_match(&self, name: &str) -> bool {
        let mut rest = name.as_bytes();
        for (index, chunk) in self.chunks.iter().enumerate() {
            let last = index + 1 == self.chunks.len();
            if chunk.star && chunk.tokens.is_empty() {
                // Only a trailing star has no tokens after it.
                return !rest.contains(&b'/');
            }
            if let Some(used) = match_chunk(&chunk.tokens, rest) {
                // The last chunk must consume everything, or a star could still help.
                if !last || used == rest.len() {
                    rest = &rest[used..];
                    continue;
                }
            }
            if !chunk.star {
                return false;
            }
            // The star swallows 1.. bytes, never a '/'. Go steps bytewise, so a chunk may be
            // tried from the middle of a character; decode_char mirrors Go's RuneError there.
            let mut advanced = None;
            for skip in 1..=rest.len() {
                if rest[skip - 1] == b'/' {
                    break;
                }
                if let Some(used) = match_chunk(&chunk.tokens, &rest[skip..]) {
                    let after = &rest[skip + used..];
                    if last && !after.is_empty() {
                        continue;
                    }
                    advanced = Some(after);
                    break;
                }
            }
            match advanced {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    }
}

/// Parses the class body after `[`; returns the token and the bytes consumed, `]` included.
fn parse_class(body: &str) -> Result<(Token, usize), GlobError> {
    let mut at = 0;
    let negated = body.starts_with('^');
    if negated {
        at += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(']') && !ranges.is_empty() {
            return Ok((Token::Class { negated, ranges }, at + 1));
        }
        let (lo, used) = class_char(rest)?;
        at += used;
        let mut hi = lo;
        if body[at..].starts_with('-') {
            let (c, used) = class_char(&body[at + 1..])?;
            hi = c;
            at += 1 + used;
        }
        ranges.push((lo, hi));
    }
}

/// One possibly escaped class character. Like Go, running out of pattern right after it
/// is an error, since the class can then never be closed.
fn class_char(s: &str) -> Result<(char, usize), GlobError> {
    let mut chars = s.chars();
    let (c, used) = match chars.next() {
        None => return Err(GlobError::UnterminatedClass),
        Some('-' | ']') => return Err(GlobError::BadClassElement),
        Some('\\') => match chars.next() {
            None => return Err(GlobError::UnterminatedClass),
            Some(c) => (c, 1 + c.len_utf8()),
        },
        Some(c) => (c, c.len_utf8()),
    };
    if used == s.len() {
        return Err(GlobError::UnterminatedClass);
    }
    Ok((c, used))
}

/// Matches the tokens against the start of `s`; returns the bytes consumed.
fn match_chunk(tokens: &[Token], s: &[u8]) -> Option<usize> {
    let mut at = 0;
    for token in tokens {
        let rest = &s[at..];
        let first = *rest.first()?;
        match token {
            Token::Byte(b) => {
                if first != *b {
                    return None;
                }
                at += 1;
            }
            Token::AnyChar => {
                if first == b'/' {
                    return None;
                }
                at += decode_char(rest).1;
            }
            Token::Class { negated, ranges } => {
                let (c, width) = decode_char(rest);
                let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                if inside == *negated {
                    return None;
                }
                at += width;
            }
        }
    }
    Some(at)
}

/// Decodes one character like Go's `utf8.DecodeRune`: an invalid or partial sequence
/// (here only possible mid-character) yields U+FFFD with width 1.
fn decode_char(s: &[u8]) -> (char, usize) {
    let width = match s.first() {
        Some(0x00..=0x7f) => 1,
        Some(0xc0..=0xdf) => 2,
        Some(0xe0..=0xef) => 3,
        Some(0xf0..=0xf7) => 4,
        _ => return (char::REPLACEMENT_CHARACTER, 1),
    };
    s.get(..width)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.chars().next())
        .map_or((char::REPLACEMENT_CHARACTER, 1), |c| (c, width))
}

#[cfg(test)]
mod tests;
