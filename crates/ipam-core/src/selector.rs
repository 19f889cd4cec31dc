//! Node selectors in Calico's selector syntax, parsed once into a validated [`Selector`] and
//! evaluated on node labels.
//!
//! Supported: `all()`, `has(k)`, `k == 'v'`, `k != 'v'`, `k in {'a','b'}`, `k not in {..}`,
//! `!`, `&&`, `||` and parentheses; strings in single or double quotes. Precedence, tightest
//! first: `!`, `&&`, `||`. An empty selector selects every node, like `all()`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Why a selector failed to parse, with the byte offset where parsing stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {text:?} at byte {pos}: {msg}")]
pub struct SelectorError {
    /// The selector text.
    pub text: String,
    /// Byte offset of the problem.
    pub pos: usize,
    /// What was expected.
    pub msg: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    All,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed node selector. Serialises as its source text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    text: String,
    expr: Expr,
}

impl Selector {
    /// Parses selector text.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { src: text, pos: 0 };
        p.skip_ws();
        let expr = if p.at_end() {
            Expr::All
        } else {
            let e = p.or()?;
            p.skip_ws();
            if !p.at_end() {
                return Err(p.err("unexpected trailing input"));
            }
            e
        };
        Ok(Selector {
            text: text.to_string(),
            expr,
        })
    }

    /// The selector that selects every node.
    pub fn all() -> Selector {
        Selector {
            text: "all()".into(),
            expr: Expr::All,
        }
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a node with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        eval(&self.expr, labels)
    }
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Selector::parse(&s)
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.text
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

fn eval(e: &Expr, l: &BTreeMap<String, String>) -> bool {
    match e {
        Expr::All => true,
        Expr::Has(k) => l.contains_key(k),
        Expr::Eq(k, v) => l.get(k) == Some(v),
        Expr::Ne(k, v) => l.get(k) != Some(v),
        Expr::In(k, vs) => l.get(k).is_some_and(|x| vs.contains(x)),
        Expr::NotIn(k, vs) => l.get(k).is_none_or(|x| !vs.contains(x)),
        Expr::Not(x) => !eval(x, l),
        Expr::And(a, b) => eval(a, l) && eval(b, l),
        Expr::Or(a, b) => eval(a, l) || eval(b, l),
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

/// Nesting bound so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn err(&self, msg: &str) -> SelectorError {
        SelectorError {
            text: self.src.to_string(),
            pos: self.pos,
            msg: msg.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), SelectorError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{tok}`")))
        }
    }

    fn depth_check(&self, depth: usize) -> Result<(), SelectorError> {
        if depth > MAX_DEPTH {
            Err(self.err("selector nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        self.or_d(0)
    }

    fn or_d(&mut self, d: usize) -> Result<Expr, SelectorError> {
        self.depth_check(d)?;
        let mut e = self.and_d(d)?;
        while self.eat("||") {
            let r = self.and_d(d)?;
            e = Expr::Or(Box::new(e), Box::new(r));
        }
        Ok(e)
    }

    fn and_d(&mut self, d: usize) -> Result<Expr, SelectorError> {
        let mut e = self.unary(d)?;
        while self.eat("&&") {
            let r = self.unary(d)?;
            e = Expr::And(Box::new(e), Box::new(r));
        }
        Ok(e)
    }

    fn unary(&mut self, d: usize) -> Result<Expr, SelectorError> {
        self.depth_check(d)?;
        self.skip_ws();
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(d + 1)?)));
        }
        if self.eat("(") {
            let e = self.or_d(d + 1)?;
            self.expect(")")?;
            return Ok(e);
        }
        let ident = self.ident()?;
        match ident.as_str() {
            "all" if self.peek_paren() => {
                self.expect("(")?;
                self.expect(")")?;
                return Ok(Expr::All);
            }
            "has" if self.peek_paren() => {
                self.expect("(")?;
                let k = self.ident()?;
                self.expect(")")?;
                return Ok(Expr::Has(k));
            }
            _ => {}
        }
        if self.eat("==") {
            return Ok(Expr::Eq(ident, self.string()?));
        }
        if self.eat("!=") {
            return Ok(Expr::Ne(ident, self.string()?));
        }
        if self.eat_word("in") {
            return Ok(Expr::In(ident, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.err("expected `in` after `not`"));
            }
            return Ok(Expr::NotIn(ident, self.set()?));
        }
        Err(self.err("expected `==`, `!=`, `in` or `not in` after label name"))
    }

    fn peek_paren(&mut self) -> bool {
        self.skip_ws();
        self.rest().starts_with('(')
    }

    fn eat_word(&mut self, w: &str) -> bool {
        self.skip_ws();
        let r = self.rest();
        if r.starts_with(w) && !r[w.len()..].starts_with(is_ident_char) {
            self.pos += w.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let r = self.rest();
        let n = r.find(|c: char| !is_ident_char(c)).unwrap_or(r.len());
        if n == 0 {
            return Err(self.err("expected a label name"));
        }
        let s = r[..n].to_string();
        self.pos += n;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let q = match self.rest().chars().next() {
            Some(c @ ('\'' | '"')) => c,
            _ => return Err(self.err("expected a quoted string")),
        };
        let body = &self.rest()[1..];
        match body.find(q) {
            Some(end) => {
                let s = body[..end].to_string();
                self.pos += end + 2;
                Ok(s)
            }
            None => Err(self.err("unterminated string")),
        }
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.expect("{")?;
        let mut v = Vec::new();
        if self.eat("}") {
            return Ok(v);
        }
        loop {
            v.push(self.string()?);
            if self.eat("}") {
                return Ok(v);
            }
            self.expect(",")?;
        }
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(sel: &str, kv: &[(&str, &str)]) -> bool {
        Selector::parse(sel)
            .expect("a valid literal")
            .matches(&labels(kv))
    }

    #[test]
    fn evaluates_each_form() {
        assert!(m("all()", &[]));
        assert!(m("", &[]));
        assert!(m("has(zone)", &[("zone", "a")]));
        assert!(!m("has(zone)", &[]));
        assert!(m("zone == 'a'", &[("zone", "a")]));
        assert!(!m("zone == \"a\"", &[("zone", "b")]));
        assert!(m("zone != 'a'", &[]));
        assert!(m("zone in {'a', 'b'}", &[("zone", "b")]));
        assert!(!m("zone in {'a','b'}", &[("zone", "c")]));
        assert!(m("zone not in {'a'}", &[("zone", "c")]));
        assert!(m("!has(gpu)", &[]));
        assert!(m(
            "has(a) && (b == 'x' || c == 'y')",
            &[("a", "1"), ("c", "y")]
        ));
        assert!(!m(
            "has(a) && b == 'x' || c == 'y' && has(d)",
            &[("a", "1"), ("c", "y")]
        ));
        assert!(m("!(has(a) && has(b))", &[("a", "1")]));
        assert!(m(
            "kubernetes.io/os == 'linux'",
            &[("kubernetes.io/os", "linux")]
        ));
    }

    #[test]
    fn rejects_bad_text_with_position() {
        for (bad, pos) in [
            ("has(", 4),
            ("zone = 'a'", 5),
            ("zone == 'a", 8),
            ("a == 'x' &&", 11),
            ("(all()", 6),
            ("all() all()", 6),
            ("zone in {'a' 'b'}", 13),
        ] {
            let e = Selector::parse(bad).unwrap_err();
            assert_eq!(e.pos, pos, "{bad}: {e}");
        }
        let deep = "!".repeat(500) + "all()";
        assert!(Selector::parse(&deep).is_err());
    }

    #[test]
    fn serialises_as_text() {
        let s = Selector::parse("has(x)").expect("a valid literal");
        assert_eq!(String::from(s.clone()), "has(x)");
        assert!(Selector::try_from("has(".to_string()).is_err());
    }
}
