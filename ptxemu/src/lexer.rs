//! Splits PTX text into tokens; comments vanish here.

use crate::error::{Error, Result};

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Directive, opcode, register, label or symbol: letters, digits, `_ $ % .` and `::`.
    Word(String),
    /// A numeric literal exactly as written (decoded by the parser, which knows the context).
    Number(String),
    /// A string literal (only `.pragma` uses them).
    Str(String),
    /// One punctuation character.
    Punct(char),
}

/// A token with its 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%' | '.')
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%' | '.')
}

/// Tokenizes a whole module.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1u32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = line;
            i += 2;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(Error::Parse {
                            line: start,
                            msg: "unterminated /* comment".into(),
                        })
                    }
                    Some('*') if chars.get(i + 1) == Some(&'/') => {
                        i += 2;
                        break;
                    }
                    Some(ch) => {
                        if *ch == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                }
            }
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '"' && chars[i] != '\n' {
                i += 1;
            }
            if chars.get(i) != Some(&'"') {
                return Err(Error::Parse {
                    line,
                    msg: "unterminated string".into(),
                });
            }
            out.push(Token {
                tok: Tok::Str(chars[start..i].iter().collect()),
                line,
            });
            i += 1;
        } else if is_word_start(c) {
            let start = i;
            while i < chars.len() {
                if is_word_char(chars[i]) {
                    i += 1;
                } else if chars[i] == ':' && chars.get(i + 1) == Some(&':') {
                    // cache hints such as `.L1::evict_last` are one word
                    i += 2;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Word(chars[start..i].iter().collect()),
                line,
            });
        } else if c.is_ascii_digit() {
            let start = i;
            let hex =
                c == '0' && matches!(chars.get(i + 1), Some('x' | 'X' | 'f' | 'F' | 'd' | 'D'));
            while i < chars.len() {
                let ch = chars[i];
                let exponent_sign =
                    !hex && matches!(ch, '+' | '-') && matches!(chars[i - 1], 'e' | 'E');
                if ch.is_ascii_alphanumeric() || ch == '.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Token {
                tok: Tok::Number(chars[start..i].iter().collect()),
                line,
            });
        } else if ",;:[]{}()+-!|@<>=".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(Error::Parse {
                line,
                msg: format!("unexpected character `{c}`"),
            });
        }
    }
    Ok(out)
}
