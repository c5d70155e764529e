//! A strict JSON reader: it accepts a body only when dockerd (Go's
//! `encoding/json`) can read it in exactly one way.
//!
//! Go's decoder is lenient where a checker can be fooled (issue #5): it
//! matches object keys to struct fields case-insensitively with Unicode simple
//! folding, keeps the last of duplicate keys, and `json.Decoder` ignores what
//! follows the first value. So [`parse_strict`] refuses:
//! - duplicate keys in any object, compared after escapes are decoded;
//! - anything but whitespace after the first value;
//! - invalid UTF-8 and lone surrogate escapes (Go would read U+FFFD);
//! - every form RFC 8259 does not allow (Go allows none of them either):
//!   leading zeros, `+1`, `.5`, `1.`, control characters in strings, a BOM,
//!   comments, trailing commas;
//! - nesting deeper than [`MAX_DEPTH`].
//!
//! Keys that fold to a known field without being spelled exactly are refused
//! later, level by level, with [`field_match`]: only the rules know which
//! fields a level has.

use std::collections::HashSet;
use std::fmt;

/// Deepest nesting accepted. Docker request bodies nest a handful of levels.
pub const MAX_DEPTH: usize = 64;

/// A JSON value as read by [`parse_strict`]. Objects keep their members in
/// order; keys are unique.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written (already checked against the JSON grammar).
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The member named exactly `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The value as JSON text, members in their order and numbers as
    /// written, so that a body the policy rewrote (bind sources pinned) is
    /// read by dockerd exactly as the policy read it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Null => out.extend_from_slice(b"null"),
            Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Json::Number(n) => out.extend_from_slice(n.as_bytes()),
            Json::String(s) => write_string(s, out),
            Json::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Json::Object(members) => {
                out.push(b'{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(k, out);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The member named exactly `key`, mutable.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        match self {
            Json::Object(members) => members.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// FNV-1a of an object key: keys come from the client, but a collision
/// only costs a linear scan, never a wrong answer.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Hashes that are already hashes: the set uses them as they are.
type KeyHash = std::hash::BuildHasherDefault<Identity>;

#[derive(Default)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, b| (h << 8) ^ u64::from(*b));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A JSON string: quotes, backslashes and control characters escaped,
/// everything else as UTF-8 (Go's decoder reads both alike).
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Why a body is not strict JSON. `at` is a byte offset into the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    InvalidUtf8 { at: usize },
    Syntax { at: usize, expected: &'static str },
    UnexpectedEnd { expected: &'static str },
    DuplicateKey { key: String, at: usize },
    TrailingData { at: usize },
    LoneSurrogate { at: usize },
    TooDeep { at: usize },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::InvalidUtf8 { at } => write!(f, "invalid UTF-8 at byte {at}"),
            JsonError::Syntax { at, expected } => write!(f, "expected {expected} at byte {at}"),
            JsonError::UnexpectedEnd { expected } => {
                write!(f, "body ends where {expected} was expected")
            }
            JsonError::DuplicateKey { key, at } => {
                write!(f, "duplicate key {key:?} at byte {at}")
            }
            JsonError::TrailingData { at } => write!(f, "data after the JSON value at byte {at}"),
            JsonError::LoneSurrogate { at } => write!(f, "unpaired surrogate escape at byte {at}"),
            JsonError::TooDeep { at } => {
                write!(f, "nesting deeper than {MAX_DEPTH} levels at byte {at}")
            }
        }
    }
}

impl std::error::Error for JsonError {}

/// Parses one JSON value that fills `bytes` (whitespace around it allowed),
/// refusing everything Go could read differently from us.
pub fn parse_strict(bytes: &[u8]) -> Result<Json, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        i: 0,
    };
    p.ws();
    let value = p.value(0)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(JsonError::TrailingData { at: p.i });
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a [u8],
    /// The same bytes, known to be UTF-8.
    text: &'a str,
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// JSON whitespace only: Go's `isSpace` is exactly these four.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn fail<T>(&self, expected: &'static str) -> Result<T, JsonError> {
        if self.i >= self.s.len() {
            Err(JsonError::UnexpectedEnd { expected })
        } else {
            Err(JsonError::Syntax {
                at: self.i,
                expected,
            })
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.fail("a JSON value"),
        }
    }

    fn literal(&mut self, word: &'static str, value: Json) -> Result<Json, JsonError> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(value)
        } else {
            self.fail(word)
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { at: self.i });
        }
        self.i += 1; // {
        let mut members: Vec<(String, Json)> = Vec::new();
        // Hashes of the keys seen so far, once an object is too big to scan
        // linearly; a hash seen before is confirmed by a scan (no key is
        // cloned, and SipHash cost a fifth of a whole decision).
        let mut seen: Option<HashSet<u64, KeyHash>> = None;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.fail("an object key");
            }
            let key_at = self.i;
            let key = self.string()?;
            let fresh = seen.as_mut().is_some_and(|set| set.insert(fnv1a(&key)));
            let duplicate = !fresh && members.iter().any(|(k, _)| *k == key);
            if duplicate {
                return Err(JsonError::DuplicateKey { key, at: key_at });
            }
            if seen.is_none() && members.len() >= 16 {
                let mut set = HashSet::with_capacity_and_hasher(64, KeyHash::default());
                set.extend(members.iter().map(|(k, _)| fnv1a(k)));
                set.insert(fnv1a(&key));
                seen = Some(set);
            }
            self.ws();
            if self.peek() != Some(b':') {
                return self.fail("':'");
            }
            self.i += 1;
            self.ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Object(members));
                }
                _ => return self.fail("',' or '}'"),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep { at: self.i });
        }
        self.i += 1; // [
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Array(items));
                }
                _ => return self.fail("',' or ']'"),
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail("a digit"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.fail("a digit after '.'");
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.fail("a digit in the exponent");
            }
            self.digits();
        }
        Ok(Json::Number(self.text[start..self.i].to_owned()))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            // Copy the run up to the next quote, backslash or control byte.
            let run = self.i;
            while matches!(self.peek(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.i += 1;
            }
            // Runs end at ASCII bytes, so they are whole UTF-8 sequences.
            out.push_str(&self.text[run..self.i]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let at = self.i;
                    self.i += 1;
                    let Some(e) = self.peek() else {
                        return self.fail("an escape");
                    };
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(at)?),
                        _ => {
                            self.i -= 1;
                            return self.fail("a valid escape");
                        }
                    }
                }
                Some(_) => return self.fail("no control characters in strings"),
                None => return self.fail("'\"'"),
            }
        }
    }

    /// After `\u`: four hex digits, and a second `\uXXXX` for a surrogate
    /// pair. Go turns unpaired surrogates into U+FFFD; we refuse them.
    fn unicode_escape(&mut self, at: usize) -> Result<char, JsonError> {
        let hi = self.hex4()?;
        if !(0xD800..0xE000).contains(&hi) {
            return char::from_u32(hi).ok_or(JsonError::LoneSurrogate { at });
        }
        if hi >= 0xDC00 || !self.s[self.i..].starts_with(b"\\u") {
            return Err(JsonError::LoneSurrogate { at });
        }
        self.i += 2;
        let lo = self.hex4()?;
        if !(0xDC00..0xE000).contains(&lo) {
            return Err(JsonError::LoneSurrogate { at });
        }
        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
        char::from_u32(c).ok_or(JsonError::LoneSurrogate { at })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return self.fail("four hex digits"),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }
}

/// How an object key relates to one level's known field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldMatch {
    /// Spelled exactly as the field: we read it as dockerd does.
    Exact(&'static str),
    /// Not spelled exactly, but Go would match it to this field.
    Folded(&'static str),
    /// Go ignores it too.
    Unknown,
}

/// Matches `key` against a level's field names the way Go's `encoding/json`
/// does: an exact match first, then a case-insensitive one under Unicode
/// simple folding.
pub fn field_match(key: &str, fields: &[&'static str]) -> FieldMatch {
    if let Some(f) = fields.iter().find(|f| **f == key) {
        return FieldMatch::Exact(f);
    }
    match fields.iter().find(|f| go_equal_fold_ascii(key, f)) {
        Some(f) => FieldMatch::Folded(f),
        None => FieldMatch::Unknown,
    }
}

/// Go's `strings.EqualFold(key, field)` for an ASCII `field` (every Docker
/// API field name is ASCII).
///
/// Two runes are equal under Go's simple folding when they share an orbit
/// of `unicode.SimpleFold`. The orbits that contain an ASCII letter are
/// `{A, a}` … `{Z, z}` except two: `{K, k, U+212A KELVIN SIGN}` and
/// `{S, s, U+017F LATIN SMALL LETTER LONG S}`. Every other non-ASCII rune
/// is in an orbit without ASCII, so it never equals an ASCII rune. In
/// particular U+0130 `İ` and U+0131 `ı` are alone in their orbits (Go's
/// `TestSimpleFold` lists them as having no fold), so `Privıleged` is an
/// unknown key for dockerd as for us.
pub fn go_equal_fold_ascii(key: &str, field: &str) -> bool {
    debug_assert!(field.is_ascii());
    let mut k = key.chars();
    for f in field.chars() {
        match k.next() {
            Some(c) if go_fold_ascii(c) == Some(f.to_ascii_uppercase()) => {}
            _ => return false,
        }
    }
    k.next().is_none()
}

/// The ASCII representative of `c`'s simple-fold orbit (upper case), if the
/// orbit has one.
pub fn go_fold_ascii(c: char) -> Option<char> {
    match c {
        '\u{212A}' => Some('K'),
        '\u{017F}' => Some('S'),
        c if c.is_ascii() => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Json {
        parse_strict(s.as_bytes()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &[u8]) -> JsonError {
        match parse_strict(s) {
            Ok(v) => panic!("{:?} parsed as {v:?}", String::from_utf8_lossy(s)),
            Err(e) => e,
        }
    }

    #[test]
    fn values() {
        assert_eq!(ok(" null "), Json::Null);
        assert_eq!(ok("true"), Json::Bool(true));
        assert_eq!(
            ok("[1, -0.5e+3, 0, 10E-2]"),
            Json::Array(vec![
                Json::Number("1".into()),
                Json::Number("-0.5e+3".into()),
                Json::Number("0".into()),
                Json::Number("10E-2".into()),
            ])
        );
        let v = ok(r#"{"a": {"b": [true, false, null]}, "c": "d"}"#);
        assert_eq!(v.get("c"), Some(&Json::String("d".into())));
        assert_eq!(
            v.get("a").and_then(|a| a.get("b")).map(Json::kind),
            Some("an array")
        );
        assert_eq!(ok("{}"), Json::Object(vec![]));
        assert_eq!(ok("[]"), Json::Array(vec![]));
        assert_eq!(ok("\r\n\t{ }\n"), Json::Object(vec![]));
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            ok(r#""\"\\\/\b\f\n\r\t\u0041\u00e9\u212a\ud83d\ude00""#),
            Json::String("\"\\/\u{8}\u{c}\n\r\tAé\u{212A}😀".into())
        );
        // Keys too: an escaped spelling is the same key.
        let v = ok(r#"{"Privil\u0065ged": true}"#);
        assert_eq!(v.get("Privileged"), Some(&Json::Bool(true)));
        assert_eq!(ok("\"ſ K é\""), Json::String("ſ K é".into()));
    }

    #[test]
    fn duplicate_keys_are_refused_at_every_depth() {
        assert!(
            matches!(err(br#"{"a":1,"a":2}"#), JsonError::DuplicateKey { key, .. } if key == "a")
        );
        assert!(matches!(
            err(br#"{"x":{"y":[{"z":1,"z":1}]}}"#),
            JsonError::DuplicateKey { key, .. } if key == "z"
        ));
        // The same key written with an escape.
        assert!(matches!(
            err(br#"{"Privileged":false,"Privil\u0065ged":true}"#),
            JsonError::DuplicateKey { .. }
        ));
        // Different spellings are different keys here; the rules refuse the
        // folded one.
        ok(r#"{"Privileged":false,"privileged":true}"#);
        // Big objects switch to a set; duplicates are still found.
        let mut big: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        ok(&format!("{{{}}}", big.join(",")));
        big.push("\"k3\":0".into());
        assert!(matches!(
            err(format!("{{{}}}", big.join(",")).as_bytes()),
            JsonError::DuplicateKey { key, .. } if key == "k3"
        ));
    }

    #[test]
    fn trailing_data_is_refused() {
        for s in [
            r#"{} {"HostConfig":{"Privileged":true}}"#,
            "{}x",
            "{}}",
            "1 2",
            "null,",
            "{}\u{0}",
        ] {
            assert!(
                matches!(err(s.as_bytes()), JsonError::TrailingData { .. }),
                "{s:?}"
            );
        }
    }

    #[test]
    fn non_json_forms_are_refused() {
        for s in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "{'a':1}",
            "01",
            "+1",
            ".5",
            "1.",
            "1e",
            "-",
            "--1",
            "0x10",
            "NaN",
            "Infinity",
            "tru",
            "nul",
            "True",
            "\"\t\"",
            "\"a\nb\"",
            "\"\\x41\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "\"abc",
            "/* c */ {}",
            "{\"a\" 1}",
            "[1 2]",
            "\u{feff}{}",
            "\u{a0}{}",
            "{\"a\":1\u{b}}",
        ] {
            err(s.as_bytes());
        }
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_are_refused() {
        assert!(matches!(err(b"\"\xff\""), JsonError::InvalidUtf8 { at: 1 }));
        assert!(matches!(
            err(b"{\"Privileged\xc0\":true}"),
            JsonError::InvalidUtf8 { .. }
        ));
        for s in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            r#""\ud800x""#,
            r#""\udbff\udbff""#,
        ] {
            assert!(
                matches!(err(s.as_bytes()), JsonError::LoneSurrogate { .. }),
                "{s}"
            );
        }
    }

    #[test]
    fn depth_is_capped() {
        let ok_depth = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        ok(&ok_depth);
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(matches!(err(deep.as_bytes()), JsonError::TooDeep { .. }));
        let deep_obj = r#"{"a":"#.repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            err(deep_obj.as_bytes()),
            JsonError::TooDeep { .. }
        ));
        // Far deeper than the stack could take if the cap were missing.
        let huge = "[".repeat(1_000_000);
        assert!(matches!(err(huge.as_bytes()), JsonError::TooDeep { .. }));
    }

    #[test]
    fn go_folding_matches_only_the_orbits_go_has() {
        let f = |k| go_equal_fold_ascii(k, "Privileged");
        assert!(f("Privileged") && f("privileged") && f("PRIVILEGED") && f("pRiViLeGeD"));
        assert!(!f("Privıleged"), "dotless i is alone in its orbit");
        assert!(!f("Prİvileged"), "dotted capital I is alone in its orbit");
        assert!(!f("Privilege") && !f("Privilegedd") && !f(""));
        // Kelvin sign and long s fold to ASCII.
        assert!(go_equal_fold_ascii(
            "Devicecgroupruleſ",
            "DeviceCgroupRules"
        ));
        assert!(go_equal_fold_ascii("\u{212A}ernelMemory", "KernelMemory"));
        assert!(go_equal_fold_ascii("ſecurityopt", "SecurityOpt"));
        assert!(go_equal_fold_ascii("CapAdd", "CapAdd"));
        assert!(go_equal_fold_ascii("Capadd", "CapAdd"));
        // Neither folds to a letter it is not related to.
        assert!(!go_equal_fold_ascii("\u{212A}", "s") && !go_equal_fold_ascii("ſ", "k"));
        // Angstrom sign folds with å, never with an ASCII letter.
        assert!(!go_equal_fold_ascii("\u{212B}", "A"));
        // Full (not simple) case mappings do not apply: ß is not "ss".
        assert!(!go_equal_fold_ascii("ß", "ss"));
        // Non-letters must match exactly.
        assert!(!go_equal_fold_ascii("Cap_Add", "CapAdd"));
        assert_eq!(go_fold_ascii('k'), Some('K'));
        assert_eq!(go_fold_ascii('é'), None);
    }

    #[test]
    fn field_match_prefers_exact_then_folded() {
        const F: &[&str] = &["Privileged", "PidMode"];
        assert_eq!(
            field_match("Privileged", F),
            FieldMatch::Exact("Privileged")
        );
        assert_eq!(
            field_match("privileged", F),
            FieldMatch::Folded("Privileged")
        );
        assert_eq!(field_match("PIDMODE", F), FieldMatch::Folded("PidMode"));
        assert_eq!(field_match("Privıleged", F), FieldMatch::Unknown);
        assert_eq!(field_match("Image", F), FieldMatch::Unknown);
    }

    #[test]
    fn written_json_reads_back_as_the_same_value() {
        for text in [
            r#"{"Image":"a","HostConfig":{"Binds":["/builds/x:/w:ro"],"Memory":1e3,"X":null,"Y":[true,false,-0.5]}}"#,
            r#"["quote\" back\\ nl\n tab\t ctl\u0001 \u00e9 \ud83d\ude00"]"#,
            "{}",
            "[]",
        ] {
            let value = parse_strict(text.as_bytes()).unwrap();
            let written = value.to_bytes();
            assert_eq!(
                parse_strict(&written).unwrap(),
                value,
                "{}",
                String::from_utf8_lossy(&written)
            );
            let serde: serde_json::Value = serde_json::from_slice(&written).unwrap();
            assert_eq!(
                serde,
                serde_json::from_str::<serde_json::Value>(text).unwrap()
            );
        }
    }

    #[test]
    fn a_duplicate_key_in_a_large_object_is_found_past_the_linear_scan() {
        let keys: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let fine = format!("{{{}}}", keys.join(","));
        assert!(parse_strict(fine.as_bytes()).is_ok());
        for dup in ["k0", "k17", "k39"] {
            let body = format!(r#"{{{},"{dup}":true}}"#, keys.join(","));
            assert!(
                matches!(parse_strict(body.as_bytes()), Err(JsonError::DuplicateKey { ref key, .. }) if key == dup),
                "{dup}"
            );
        }
    }
}
