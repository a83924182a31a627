//! Request bodies to `serde_json::Value`, faster than `serde_json::from_slice` on the inputs
//! decision requests are made of, and identical to it on every input.
//!
//! Position in the request flow: the server parses every JSON body here, after the size and
//! depth checks and before the AuthZEN shape checks.
//!
//! How it stays identical: [`parse`] first tries a small recursive-descent parser that builds
//! the `Value` directly (one UTF-8 check for the whole body, strings copied without a
//! per-string check, no serde visitor in between). That parser gives up, returning `None`,
//! on anything it is not certain to read exactly as `serde_json` does: invalid syntax, lone
//! surrogates, control characters in strings, `-0`, integers beyond 64 bits, floats that
//! `serde_json` would not read with a single correctly rounded operation, nesting deeper
//! than `serde_json`'s limit, and objects keyed by `serde_json`'s private raw-value token. `serde_json` then parses the body itself, so values and error
//! messages are always `serde_json`'s. A differential test checks the two agree.
//!
//! This module must not accept a body that `serde_json` rejects, nor build a value that
//! differs from `serde_json`'s, including number kinds (`u64`, `i64`, `f64`) and the
//! last-wins rule for duplicate keys.
//!
//! The module also holds the JSON writing the decision log and the responses share: [`write_str`]
//! and the eight-byte scans behind it and the log's one-line request ([`find_below`]).

use serde_json::{Map, Number, Value};

/// The deepest nesting `serde_json` accepts (its limit of 128 counts the refused level):
/// deeper bodies are left to it, and its error.
const MAX_DEPTH: usize = 127;

/// The key serde_json's `raw_value` feature reserves (`serde_json::raw::TOKEN`, private).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Appends `value` as a JSON string, the bytes `serde_json` writes: copied between quotes when
/// nothing in it needs escaping (ids, times, hashes, rule names), else written by `serde_json`.
pub fn write_str(out: &mut Vec<u8>, value: &str) -> Result<(), serde_json::Error> {
    if needs_escape(value.as_bytes()) {
        return serde_json::to_writer(&mut *out, value);
    }
    out.push(b'"');
    out.extend_from_slice(value.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether `bytes` has a byte that a JSON string must escape: a control character, a quote or
/// a backslash (what `serde_json` escapes).
fn needs_escape(bytes: &[u8]) -> bool {
    find_special(bytes).is_some()
}

/// The position of the first control character, quote or backslash in `bytes`: where a JSON
/// string ends or stops being plain text.
fn find_special(bytes: &[u8]) -> Option<usize> {
    let (quote, backslash) = (ONES * u64::from(b'"'), ONES * u64::from(b'\\'));
    let flags = |x| below_n(x, 0x20) | below_n(x ^ quote, 1) | below_n(x ^ backslash, 1);
    find_first(bytes, flags, |b| b < 0x20 || b == b'"' || b == b'\\')
}

/// The position of the first byte of `bytes` below `below` (at most 128).
pub fn find_below(bytes: &[u8], below: u8) -> Option<usize> {
    find_first(bytes, |x| below_n(x, below), |b| b < below)
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `x` that is below `n` (n ≤ 128). Only a flagged byte can
/// borrow from the next, so the lowest flag is always exact; flags above it may not be.
fn below_n(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & (ONES << 7)
}

/// The first byte that `flags` (eight bytes at a time, as in [`below_n`]) or, for the last
/// few, `matches` picks out. These scans run over every string of every decision record.
fn find_first(bytes: &[u8], flags: impl Fn(u64) -> u64, matches: impl Fn(u8) -> bool) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else { break };
        let hits = flags(u64::from_le_bytes(word));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|&b| matches(b)).map(|i| at + i)
}

/// Parses `bytes` as one JSON value, exactly as `serde_json::from_slice` would.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    match fast(bytes) {
        Some(value) => Ok(value),
        None => serde_json::from_slice(bytes),
    }
}

/// The fast parser alone: `None` whenever it leaves the body to `serde_json`.
fn fast(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    Some(Tape::parse(text, MAX_DEPTH)?.to_value(text))
}

/// A JSON body read by the fast parser and kept as its bytes and a [`Tape`] over them, so
/// that a reader can look members up without building a `serde_json::Value` (no allocation
/// per key, string and object; one vector of nodes). [`Doc::to_value`] gives the `Value`
/// [`parse`] would, for readers that need one.
#[derive(Debug, Clone)]
pub struct Doc {
    bytes: bytes::Bytes,
    /// The same bytes as text: a string is then sliced out of it without checking its UTF-8
    /// again (one copy of the body instead of a check per string read).
    text: Box<str>,
    tape: Tape,
}

/// One value inside a [`Doc`].
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    doc: &'a Doc,
    at: usize,
}

/// What an [`Item`] is; arrays and objects are read through the item itself.
#[derive(Debug, Clone, Copy)]
pub enum Kind<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, of the kind `serde_json` gives it.
    Number(&'a Number),
    /// A string.
    Str(&'a str),
    /// An array.
    Array,
    /// An object.
    Object,
}

/// The nodes of one JSON text in document order: an array or object is followed by its
/// contents (an object's as key, value, key, value…) and records where they end, so a
/// reader can step over a whole value.
#[derive(Debug, Clone, Default)]
struct Tape {
    nodes: Vec<Node>,
    /// Strings that had escapes, decoded.
    decoded: Vec<String>,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Number(Number),
    /// A string without escapes: the byte range of its text, between the quotes.
    Text(usize, usize),
    /// A string with escapes: its index in `Tape::decoded`.
    Decoded(usize),
    /// An array; `end` is the index of the first node after its elements.
    Array { end: usize },
    /// An object; `end` as for an array.
    Object { end: usize },
}

// === impl Doc ===

impl Doc {
    /// Reads `bytes` with the fast parser; `None` when it leaves them to `serde_json`
    /// (malformed JSON among them), as [`parse`] would, or when they nest deeper than
    /// `max_depth` (the server's limit, which it then reports).
    pub fn parse(bytes: bytes::Bytes, max_depth: usize) -> Option<Doc> {
        let text: Box<str> = std::str::from_utf8(&bytes).ok()?.into();
        let tape = Tape::parse(&text, max_depth.min(MAX_DEPTH))?;
        Some(Doc { bytes, text, tape })
    }

    /// The top-level value.
    pub fn root(&self) -> Item<'_> {
        Item { doc: self, at: 0 }
    }

    /// The item at `position` (from [`Item::position`] on this document): found again without
    /// a lookup. Out of range, it reads as `null`.
    pub fn at(&self, position: usize) -> Item<'_> {
        Item { doc: self, at: position }
    }

    /// The bytes the document was read from.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// The document as `serde_json` reads it.
    pub fn to_value(&self) -> Value {
        self.tape.to_value(&self.text)
    }
}

// === impl Item ===

impl<'a> Item<'a> {
    /// What the value is.
    pub fn kind(self) -> Kind<'a> {
        match self.node() {
            Node::Null => Kind::Null,
            Node::Bool(b) => Kind::Bool(*b),
            Node::Number(n) => Kind::Number(n),
            Node::Text(..) | Node::Decoded(_) => Kind::Str(self.doc.tape.str(&self.doc.text, self.node())),
            Node::Array { .. } => Kind::Array,
            Node::Object { .. } => Kind::Object,
        }
    }

    /// The string, if the value is one.
    pub fn as_str(self) -> Option<&'a str> {
        match self.kind() {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Where the item is in its document, for [`Doc::at`].
    pub fn position(self) -> usize {
        self.at
    }

    /// Whether the value is an object.
    pub fn is_object(self) -> bool {
        matches!(self.node(), Node::Object { .. })
    }

    /// The member `key` of an object (the last one, if the key repeats: `serde_json` keeps
    /// the last); `None` for a missing key or a value that is not an object.
    pub fn get(self, key: &str) -> Option<Item<'a>> {
        // `members` by hand: this runs several times per decision, and comparing the key's
        // bytes directly skips slicing each key as `str` (callgrind: 245 -> 181 instructions
        // per lookup on `cel-allow.json`).
        let Node::Object { end } = *self.node() else { return None };
        let tape = &self.doc.tape;
        let mut found = None;
        let mut at = self.at + 1;
        while at < end {
            // Every member is looked at: a later one with the same key wins.
            if tape.nodes.get(at).is_some_and(|k| tape.key_is(&self.doc.text, k, key)) {
                found = Some(at + 1);
            }
            at = tape.next(at + 1);
        }
        found.map(|at| Item { doc: self.doc, at })
    }

    /// The members of an object in document order, keys as UTF-8 bytes (a repeated key comes
    /// as often as it was sent); nothing for any other value.
    pub fn members(self) -> impl Iterator<Item = (&'a [u8], Item<'a>)> {
        let end = match self.node() {
            Node::Object { end } => *end,
            _ => self.at + 1,
        };
        let (doc, tape) = (self.doc, &self.doc.tape);
        std::iter::successors(Some(self.at + 1), move |&at| Some(tape.next(at + 1)))
            .take_while(move |&at| at < end)
            .map(move |at| (tape.nodes.get(at).map_or(&[][..], |key| tape.str(&doc.text, key).as_bytes()), Item { doc, at: at + 1 }))
    }

    /// The elements of an array; nothing for any other value.
    pub fn elements(self) -> impl Iterator<Item = Item<'a>> {
        let end = match self.node() {
            Node::Array { end } => *end,
            _ => self.at + 1,
        };
        let tape = &self.doc.tape;
        std::iter::successors(Some(self.at + 1), move |&at| Some(tape.next(at)))
            .take_while(move |&at| at < end)
            .map(move |at| Item { doc: self.doc, at })
    }

    fn node(self) -> &'a Node {
        // `at` is always a node's index: the root, or one `Tape::next` stepped to.
        self.doc.tape.nodes.get(self.at).unwrap_or(&Node::Null)
    }
}

// === impl Tape ===

impl Tape {
    /// Reads `text` as one JSON value; `None` when it is left to `serde_json` or nests deeper
    /// than `max_depth`.
    fn parse(text: &str, max_depth: usize) -> Option<Tape> {
        let mut parser = Parser { text, pos: 0, depth: 0, max_depth };
        // About one node per 8 bytes of a request body, but never more than a small request
        // needs up front: a large body grows the vector as it is read instead.
        let mut tape = Tape { nodes: Vec::with_capacity((text.len() / 8 + 4).min(64)), decoded: Vec::new() };
        parser.value(&mut tape)?;
        parser.skip_whitespace();
        (parser.pos == text.len()).then_some(tape)
    }

    /// The index of the node after the value at `at`.
    fn next(&self, at: usize) -> usize {
        match self.nodes.get(at) {
            Some(Node::Array { end } | Node::Object { end }) => *end,
            _ => at + 1,
        }
    }

    /// Whether `node` is the string `key` ([`Tape::str`] compared, without making a `str`).
    fn key_is(&self, text: &str, node: &Node, key: &str) -> bool {
        match node {
            Node::Text(start, end) => text.as_bytes().get(*start..*end) == Some(key.as_bytes()),
            Node::Decoded(i) => self.decoded.get(*i).is_some_and(|d| d == key),
            _ => false,
        }
    }

    /// The text of a string node; empty for any other node. `text` is what the tape was
    /// parsed from, so a string's range always falls on character boundaries.
    fn str<'t>(&'t self, text: &'t str, node: &Node) -> &'t str {
        match node {
            Node::Text(start, end) => text.get(*start..*end).unwrap_or_default(),
            Node::Decoded(i) => self.decoded.get(*i).map_or("", String::as_str),
            _ => "",
        }
    }

    /// The tape as the `Value` `serde_json` builds from `text`.
    fn to_value(&self, text: &str) -> Value {
        let mut at = 0;
        self.value_at(text, &mut at)
    }

    /// The value at `*at`, as `serde_json` builds it (the last of repeated keys wins); moves
    /// `*at` past it.
    fn value_at(&self, text: &str, at: &mut usize) -> Value {
        let node = self.nodes.get(*at).unwrap_or(&Node::Null);
        *at += 1;
        match *node {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(ref n) => Value::Number(n.clone()),
            Node::Text(..) | Node::Decoded(_) => Value::String(self.str(text, node).to_owned()),
            Node::Array { end } => {
                let mut items = Vec::new();
                while *at < end {
                    items.push(self.value_at(text, at));
                }
                Value::Array(items)
            }
            Node::Object { end } => {
                let mut map = Map::new();
                while *at < end {
                    let key = self.nodes.get(*at).map_or("", |key| self.str(text, key)).to_owned();
                    *at += 1;
                    let value = self.value_at(text, at);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }
}

struct Parser<'a> {
    /// The whole body, valid UTF-8; every position the parser stops at is an ASCII byte, so
    /// slicing between two of them is always on character boundaries.
    text: &'a str,
    pos: usize,
    depth: usize,
    /// The deepest nesting read; deeper is left to the caller.
    max_depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `literal` if the input continues with it.
    fn eat(&mut self, literal: &str) -> Option<()> {
        let rest = self.text.get(self.pos..)?;
        rest.starts_with(literal).then(|| self.pos += literal.len())
    }

    fn value(&mut self, tape: &mut Tape) -> Option<()> {
        self.skip_whitespace();
        let node = match self.peek()? {
            b'{' => return self.container(tape, b'}'),
            b'[' => return self.container(tape, b']'),
            b'"' => self.string(tape)?,
            b't' => self.eat("true").map(|()| Node::Bool(true))?,
            b'f' => self.eat("false").map(|()| Node::Bool(false))?,
            b'n' => self.eat("null").map(|()| Node::Null)?,
            b'-' | b'0'..=b'9' => Node::Number(self.number()?),
            _ => return None,
        };
        tape.nodes.push(node);
        Some(())
    }

    /// An object (`close` is `}`) or an array (`]`), from its opening bracket.
    fn container(&mut self, tape: &mut Tape, close: u8) -> Option<()> {
        self.depth += 1;
        self.pos += 1;
        if self.depth > self.max_depth {
            return None;
        }
        let object = close == b'}';
        let at = tape.nodes.len();
        tape.nodes.push(Node::Null);
        self.skip_whitespace();
        if self.peek()? != close {
            loop {
                if object {
                    self.skip_whitespace();
                    if self.peek()? != b'"' {
                        return None;
                    }
                    let key = self.string(tape)?;
                    // With serde_json's `raw_value` feature (on in this crate) an object whose
                    // key is this token stands for raw JSON text; serde_json alone handles that.
                    if tape.str(self.text, &key) == RAW_VALUE_TOKEN {
                        return None;
                    }
                    tape.nodes.push(key);
                    self.skip_whitespace();
                    self.eat(":")?;
                }
                self.value(tape)?;
                self.skip_whitespace();
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => break,
                    _ => return None,
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        let end = tape.nodes.len();
        *tape.nodes.get_mut(at)? = if object { Node::Object { end } } else { Node::Array { end } };
        Some(())
    }

    /// A string starting at the opening quote.
    fn string(&mut self, tape: &mut Tape) -> Option<Node> {
        self.pos += 1;
        let start = self.pos;
        let bytes = self.text.as_bytes();
        // The common case: no escape before the closing quote, so the text is used as is.
        let end = start + find_special(bytes.get(start..)?)?;
        if bytes.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Some(Node::Text(start, end));
        }
        let mut out = String::with_capacity(end - start + 8);
        out.push_str(self.text.get(start..end)?);
        self.pos = end;
        loop {
            let run = find_special(bytes.get(self.pos..)?)?;
            out.push_str(self.text.get(self.pos..self.pos + run)?);
            self.pos += run;
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    tape.decoded.push(out);
                    return Some(Node::Decoded(tape.decoded.len() - 1));
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                // A raw control character: serde_json's error.
                _ => return None,
            }
        }
    }

    /// One escape after its backslash.
    fn escape(&mut self, out: &mut String) -> Option<()> {
        let c = self.peek()?;
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // Only a high surrogate followed by an escaped low one is a character.
                        self.eat("\\u")?;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return None;
                        }
                        char::from_u32(0x1_0000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(unit)?,
                }
            }
            _ => return None,
        };
        out.push(ch);
        Some(())
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number, as the kind serde_json gives it: `u64`, else `i64`, else `f64`.
    fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        // `0` may not be followed by more digits ("01" is an error).
        if int_digits == 0 || (int_digits > 1 && self.text.as_bytes().get(int_start) == Some(&b'0')) {
            return None;
        }
        let mut frac_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            frac_digits = self.digits();
            if frac_digits == 0 {
                return None;
            }
        }
        let mut exponent: Option<i32> = None;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let sign: i32 = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    -1
                }
                Some(b'+') => {
                    self.pos += 1;
                    1
                }
                _ => 1,
            };
            let exp_start = self.pos;
            let exp_digits = self.digits();
            // A long exponent is left to serde_json's overflow handling.
            if exp_digits == 0 || exp_digits > 4 {
                return None;
            }
            exponent = Some(sign * self.text.get(exp_start..self.pos)?.parse::<i32>().ok()?);
        }
        let text = self.text.get(start..self.pos)?;
        if frac_digits == 0 && exponent.is_none() {
            // serde_json reads `-0` and integers beyond 64 bits as floats.
            return if negative {
                let n = text.parse::<i64>().ok()?;
                (n != 0).then(|| Number::from(n))
            } else {
                text.parse::<u64>().ok().map(Number::from)
            };
        }
        // serde_json computes `significand × 10^e` (or `÷`) in one f64 operation; with at most
        // 15 significant digits and |e| ≤ 22 both operands are exact, so that one rounding is
        // the correctly rounded value `str::parse` gives. Anything else is left to it.
        let scale = exponent.unwrap_or(0).checked_sub(i32::try_from(frac_digits).ok()?)?;
        if int_digits + frac_digits > 15 || !(-22..=22).contains(&scale) {
            return None;
        }
        let value = text.parse::<f64>().ok()?;
        Number::from_f64(value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// The eight-byte scans find what a byte-by-byte scan finds, wherever the byte sits in its
    /// word and whatever follows it (bytes below and above it, UTF-8, several limits).
    #[test]
    fn scans_match_a_plain_scan() {
        let alphabet = [b'a', b' ', b'\t', b'\n', 0x00, 0x1f, 0x20, 0x21, b'"', b'\\', 0x7f, 0x80, 0xc3, 0xff, b'!', b'#', b'['];
        let mut seed = 11u64;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(seed >> 33).unwrap() % n
        };
        for _ in 0..50_000 {
            let len = next(40);
            // Mostly plain bytes, so matches land at every offset.
            let bytes: Vec<u8> = (0..len).map(|_| if next(6) == 0 { alphabet[next(alphabet.len())] } else { b'a' + (next(26) as u8) }).collect();
            let plain = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(&bytes), plain, "{bytes:?}");
            for below in [0x0e, 0x20, 0x21, 0x01, 0x80] {
                let plain = bytes.iter().position(|&b| b < below);
                assert_eq!(find_below(&bytes, below), plain, "{bytes:?} below {below:#x}");
            }
        }
    }

    /// Strings are written as `serde_json` writes them.
    #[test]
    fn write_str_matches_serde() {
        for s in ["", "plain", "01a21745-1849-70cc", "with \"quote\"", "back\\slash", "tab\there", "\u{1}", "é ∑ 😀", "0123456789abcdef\n"] {
            let mut out = Vec::new();
            write_str(&mut out, s).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap());
        }
    }

    /// Whatever the fast parser accepts, serde_json accepts and reads the same, number kinds
    /// and float bits included.
    /// Returns whether the fast parser took it.
    fn agrees(text: &str) -> bool {
        let ours = fast(text.as_bytes());
        let theirs = serde_json::from_str::<Value>(text);
        match (&ours, &theirs) {
            (Some(a), Ok(b)) => {
                assert_eq!(a, b, "{text:?}");
                assert_eq!(serde_json::to_string(a).unwrap(), serde_json::to_string(b).unwrap(), "{text:?}");
                same_numbers(a, b, text);
            }
            (Some(a), Err(e)) => panic!("{text:?}: fast parser accepted {a} but serde_json says {e}"),
            (None, _) => {}
        }
        // A document reads as the same value, member by member and whole.
        let doc = Doc::parse(bytes::Bytes::copy_from_slice(text.as_bytes()), MAX_DEPTH);
        assert_eq!(doc.is_some(), ours.is_some(), "{text:?}");
        if let (Some(doc), Some(value)) = (&doc, &ours) {
            reads_as(doc.root(), value, text);
            assert_eq!(&doc.to_value(), value, "{text:?}");
        }
        // `parse` is serde_json's answer either way.
        match (parse(text.as_bytes()), theirs) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text:?}"),
            (a, b) => panic!("{text:?}: {a:?} vs {b:?}"),
        }
        ours.is_some()
    }

    /// `item` reads as `value`: the same kinds, strings and numbers, each element and each
    /// member (for a repeated key, the last).
    fn reads_as(item: Item<'_>, value: &Value, text: &str) {
        match (item.kind(), value) {
            (Kind::Null, Value::Null) => {}
            (Kind::Bool(a), Value::Bool(b)) => assert_eq!(a, *b, "{text:?}"),
            (Kind::Number(a), Value::Number(b)) => assert_eq!(a, b, "{text:?}"),
            (Kind::Str(a), Value::String(b)) => assert_eq!(a, b, "{text:?}"),
            (Kind::Array, Value::Array(items)) => {
                assert_eq!(item.elements().count(), items.len(), "{text:?}");
                item.elements().zip(items).for_each(|(i, v)| reads_as(i, v, text));
            }
            (Kind::Object, Value::Object(map)) => {
                for (key, v) in map {
                    reads_as(item.get(key).unwrap(), v, text);
                }
                assert!(item.get("no such key \u{1}").is_none());
                assert_eq!(item.elements().count(), 0, "{text:?}");
            }
            (kind, value) => panic!("{text:?}: {kind:?} read where serde_json has {value}"),
        }
        if !matches!(value, Value::Object(_)) {
            assert!(item.get("a").is_none(), "{text:?}");
        }
    }

    fn same_numbers(a: &Value, b: &Value, text: &str) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                assert_eq!((x.is_u64(), x.is_i64(), x.is_f64()), (y.is_u64(), y.is_i64(), y.is_f64()), "{text:?}");
                if let (Some(x), Some(y)) = (x.as_f64(), y.as_f64()) {
                    assert_eq!(x.to_bits(), y.to_bits(), "{text:?}");
                }
            }
            (Value::Array(x), Value::Array(y)) => x.iter().zip(y).for_each(|(x, y)| same_numbers(x, y, text)),
            (Value::Object(x), Value::Object(y)) => x.values().zip(y.values()).for_each(|(x, y)| same_numbers(x, y, text)),
            _ => {}
        }
    }

    #[test]
    fn request_bodies_take_the_fast_path() {
        let body = r#"{
  "subject": { "type": "user", "id": "u-bob" },
  "action": { "name": "provision" },
  "resource": { "type": "cloud.vm", "id": "vm-1", "properties": { "monthly_cost": 35.0, "n": -3, "big": 18446744073709551615, "tags": ["a", "b\n\u00e9\ud83d\ude00"], "x": null, "t": true, "f": false } },
  "context": {}
}"#;
        assert!(fast(body.as_bytes()).is_some());
        agrees(body);
    }

    #[test]
    fn edge_cases_agree_with_serde_json() {
        let cases = [
            "0", "-0", "-0.0", "01", "1.", ".5", "1e", "1e+", "1E3", "1e-3", "-1.5e-7", "2.5E+10",
            "123456789012345", "1234567890123456.5", "0.1", "0.30000000000000004", "1e22", "1e23",
            "1e-22", "1e-23", "123456789012345e7", "9007199254740993", "18446744073709551616",
            "-9223372036854775808", "-9223372036854775809", "1e400", "-1e400", "1e-400", "3.141592653589793",
            "\"\\ud800\"", "\"\\udc00\"", "\"\\ud83d\\ude00\"", "\"\\ud83dx\"", "\"\\u00\"", "\"\\x\"",
            "\"a\u{1}b\"", "\"\\u0000\"", "\"\\/\\b\\f\\n\\r\\t\\\\\\\"\"", "\"é\"", "\"tab\there\"",
            "{\"a\":1,\"a\":2}", "{\"a\":1,}", "[1,]", "[,1]", "{,}", "{\"a\" 1}", "{1:2}", "[1 2]",
            " [ ] ", "{ }", "[[[]]]", "tru", "nul", "true false", "[true]x", "", " ", "\"open",
            "{\"a\":[1,{\"b\":null}],\"c\":\"d\"}", "\u{feff}{}", "[1.0, 2.50, -0.001]",
            // serde_json's raw-value token, plain, escaped, nested, and with a bad value.
            "{\"$serde_json::private::RawValue\":\"[1,2]\"}",
            "{\"a\":{\"$serde_json::private::RawValue\":\"{\\\"x\\\":1}\"}}",
            "{\"$serde_json::private::Raw\\u0056alue\":\"true\"}",
            "{\"$serde_json::private::RawValue\":5}",
            "{\"k\":1,\"$serde_json::private::RawValue\":\"2\"}",
        ];
        for case in cases {
            agrees(case);
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        agrees(&deep);
        let at_limit = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(fast(at_limit.as_bytes()).is_some());
        agrees(&at_limit);
        agrees(&("[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1)));
        // Invalid UTF-8 is serde_json's to report.
        assert_eq!(
            parse(b"\"\xff\"").unwrap_err().to_string(),
            serde_json::from_slice::<Value>(b"\"\xff\"").unwrap_err().to_string()
        );
    }

    /// Many generated numbers and strings, and mutations of a request body: the fast parser
    /// never disagrees with serde_json.
    #[test]
    fn generated_inputs_agree_with_serde_json() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"0123456789-+.eE";
        let mut fast_path = [0usize; 4];
        for _ in 0..20_000 {
            let len = 1 + (next() % 24) as usize;
            let text: String = (0..len).map(|_| char::from(alphabet[(next() % alphabet.len() as u64) as usize])).collect();
            fast_path[0] += usize::from(agrees(&text));
            let float = f64::from_bits(next());
            if float.is_finite() {
                agrees(&float.to_string());
                agrees(&format!("{float:e}"));
            }
            let small = (next() % 2_000_000) as f64 / 1000.0 - 1000.0;
            fast_path[1] += usize::from(agrees(&small.to_string()));
            let scaled = format!("{}e{}", next() % 1_000_000_000, (next() % 60) as i64 - 30);
            fast_path[2] += usize::from(agrees(&scaled));
        }
        let body = br#"{"subject":{"type":"user","id":"a\u00e9\n"},"action":{"name":"x"},"resource":{"type":"t","id":"1","properties":{"n":35.0,"l":[1,-2,true,null]}}}"#;
        let pieces = b" \t\n{}[]\",:\\u0123456789-.eEtrfalsn\x01\xc3\xa9";
        for _ in 0..20_000 {
            let mut text = body.to_vec();
            for _ in 0..1 + next() % 3 {
                let at = (next() % text.len() as u64) as usize;
                match next() % 3 {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, pieces[(next() % pieces.len() as u64) as usize]),
                    _ => text[at] = pieces[(next() % pieces.len() as u64) as usize],
                }
            }
            if let Ok(text) = std::str::from_utf8(&text) {
                fast_path[3] += usize::from(agrees(text));
            }
        }
        // Each kind of input reached the fast parser often enough to mean something.
        assert!(fast_path.iter().all(|&n| n > 1_000), "{fast_path:?}");
    }
}
