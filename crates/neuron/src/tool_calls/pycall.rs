//! Python-style calls — `get_weather(city="Paris", days=3)` — as Gemma's
//! ```` ```tool_code ```` blocks and Llama 3.1's `<|python_tag|>` built-in
//! tool calls (`brave_search.call(query="x")`) write them.
//!
//! Owns the small literal grammar those calls use (strings in either quote,
//! numbers, `True`/`False`/`None`, lists, tuples, dicts) and its conversion
//! to JSON arguments. Keyword arguments only: a positional argument has no
//! name to put in the JSON object, so such a call is not a call.

use serde_json::{Map, Number, Value};

use super::json::Scan;

/// A parse result: `Err(Incomplete)` when the text ends too early,
/// `Err(Invalid)` when it cannot be a call.
pub type PResult<T> = Result<T, Scan>;

/// One call: `(name, arguments object, end offset)`. A trailing `.call`
/// (Llama's built-in tool syntax) is dropped from the name.
pub fn call_at(s: &str, i: usize) -> PResult<(String, Value, usize)> {
    let mut c = Cursor { s, i };
    let mut name = c.ident()?;
    while c.peek() == Some(b'.') {
        c.i += 1;
        name.push('.');
        name.push_str(&c.ident()?);
    }
    if let Some(base) = name.strip_suffix(".call") {
        name = base.to_string();
    }
    c.expect(b'(')?;
    let mut args = Map::new();
    loop {
        c.ws();
        match c.peek() {
            None => return Err(Scan::Incomplete),
            Some(b')') => {
                c.i += 1;
                break;
            }
            Some(_) => {}
        }
        let key = c.ident()?;
        c.ws();
        c.expect(b'=')?;
        c.ws();
        let value = c.value()?;
        args.insert(key, value);
        c.ws();
        match c.peek() {
            None => return Err(Scan::Incomplete),
            Some(b',') => c.i += 1,
            Some(b')') => {}
            Some(_) => return Err(Scan::Invalid),
        }
    }
    Ok((name, Value::Object(args), c.i))
}

/// Renders a call the way [`call_at`] reads it (for prompts that show the
/// model its earlier calls). Arguments that are not an object render as
/// an empty call.
pub fn render_call(name: &str, arguments: &Value) -> String {
    let mut out = format!("{name}(");
    if let Value::Object(map) = arguments {
        let parts: Vec<String> = map
            .iter()
            .map(|(k, v)| format!("{k}={}", literal(v)))
            .collect();
        out.push_str(&parts.join(", "));
    }
    out.push(')');
    out
}

fn literal(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        // A JSON string literal is also a valid Python one.
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A position in text being scanned (shared with FunctionGemma's syntax).
pub(super) struct Cursor<'a> {
    pub s: &'a str,
    pub i: usize,
}

impl Cursor<'_> {
    pub fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    pub fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    pub fn ws(&mut self) {
        self.i = super::json::skip_ws(self.s, self.i);
    }

    pub fn expect(&mut self, b: u8) -> PResult<()> {
        match self.peek() {
            None => Err(Scan::Incomplete),
            Some(c) if c == b => {
                self.i += 1;
                Ok(())
            }
            Some(_) => Err(Scan::Invalid),
        }
    }

    /// The ASCII bytes `ok(byte, is_first)` accepts; at the end of the text
    /// it may go on (`Incomplete`), and none is `Invalid`.
    pub fn take(&mut self, ok: impl Fn(u8, bool) -> bool) -> PResult<String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if ok(c, self.i == start)) {
            self.i += 1;
        }
        if self.peek().is_none() {
            return Err(Scan::Incomplete);
        }
        if self.i == start {
            return Err(Scan::Invalid);
        }
        Ok(self.s[start..self.i].to_string())
    }

    /// `[A-Za-z_][A-Za-z0-9_]*`.
    fn ident(&mut self) -> PResult<String> {
        self.take(|c, first| c == b'_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit()))
    }

    fn value(&mut self) -> PResult<Value> {
        match self.peek() {
            None => Err(Scan::Incomplete),
            Some(q @ (b'"' | b'\'')) => self.string(q).map(Value::String),
            Some(b'[') => self.seq(b']').map(Value::Array),
            Some(b'(') => self.seq(b')').map(Value::Array),
            Some(b'{') => self.dict(),
            Some(c) if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.ident()?;
                match word.as_str() {
                    "True" | "true" => Ok(Value::Bool(true)),
                    "False" | "false" => Ok(Value::Bool(false)),
                    "None" | "null" => Ok(Value::Null),
                    _ => Err(Scan::Invalid),
                }
            }
            Some(_) => Err(Scan::Invalid),
        }
    }

    fn string(&mut self, quote: u8) -> PResult<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.i..];
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                return Err(Scan::Incomplete);
            };
            self.i += c.len_utf8();
            match c {
                c if c as u32 == u32::from(quote) => return Ok(out),
                '\n' => return Err(Scan::Invalid),
                '\\' => {
                    let Some(e) = chars.next() else {
                        return Err(Scan::Incomplete);
                    };
                    self.i += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '0' => out.push('\0'),
                        'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or(Scan::Incomplete)?;
                            let code = u32::from_str_radix(hex, 16).map_err(|_| Scan::Invalid)?;
                            out.push(char::from_u32(code).ok_or(Scan::Invalid)?);
                            self.i += 4;
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }

    fn seq(&mut self, close: u8) -> PResult<Vec<Value>> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.peek() == Some(close) {
                self.i += 1;
                return Ok(out);
            }
            out.push(self.value()?);
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b',') => self.i += 1,
                Some(c) if c == close => {}
                Some(_) => return Err(Scan::Invalid),
            }
        }
    }

    fn dict(&mut self) -> PResult<Value> {
        self.i += 1;
        let mut out = Map::new();
        loop {
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(out));
                }
                Some(q @ (b'"' | b'\'')) => {
                    let key = self.string(q)?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    out.insert(key, self.value()?);
                }
                Some(_) => return Err(Scan::Invalid),
            }
            self.ws();
            match self.peek() {
                None => return Err(Scan::Incomplete),
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                Some(_) => return Err(Scan::Invalid),
            }
        }
    }

    fn number(&mut self) -> PResult<Value> {
        let text =
            self.take(|c, _| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))?;
        number(&text).ok_or(Scan::Invalid)
    }
}

/// A number literal as JSON: an integer when it is one.
pub(super) fn number(text: &str) -> Option<Value> {
    let text = text.trim_start_matches('+');
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::Number(n.into()));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyword_calls_become_json() {
        let s = r#"convert(amount=200000.0, currency="USD", new_currency='EUR', flags=[True, None], opts={"a": (1, 2)}) tail"#;
        let (name, args, end) = call_at(s, 0).unwrap();
        assert_eq!(name, "convert");
        assert_eq!(
            args,
            json!({"amount": 200000.0, "currency": "USD", "new_currency": "EUR",
                   "flags": [true, null], "opts": {"a": [1, 2]}})
        );
        assert_eq!(&s[end..], " tail");
        let (name, args, _) = call_at(r#"brave_search.call(query="x \"y\"\n")"#, 0).unwrap();
        assert_eq!(
            (name.as_str(), args),
            ("brave_search", json!({"query": "x \"y\"\n"}))
        );
        assert_eq!(call_at("f()", 0).unwrap().1, json!({}));
    }

    #[test]
    fn incomplete_and_invalid_are_told_apart() {
        for partial in ["get_wea", "f(", "f(a=", "f(a=\"x", "f(a=[1, 2", "f(a=1"] {
            assert_eq!(
                call_at(partial, 0).unwrap_err(),
                Scan::Incomplete,
                "{partial}"
            );
        }
        for bad in [
            "f(1, 2)",
            "f(a=b)",
            "1f()",
            "f(a=1 b=2)",
            "f[a=1]",
            "f(a=\"x\ny\")",
        ] {
            assert_eq!(call_at(bad, 0).unwrap_err(), Scan::Invalid, "{bad}");
        }
    }

    #[test]
    fn rendered_calls_read_back() {
        let args = json!({"city": "São \"Paulo\"", "n": 3, "ok": false, "x": null, "l": [1.5, "a"], "d": {"k": "v"}});
        let text = render_call("get_weather", &args);
        let (name, back, end) = call_at(&text, 0).unwrap();
        assert_eq!(
            (name.as_str(), back, end),
            ("get_weather", args, text.len())
        );
    }
}
