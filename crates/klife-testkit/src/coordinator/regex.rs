//! A small regular expression engine for KIP-848 regex subscriptions
//! (`SubscribedTopicRegex`), matched as Kafka matches them: against the whole topic name
//! (RE2/J `matches`). The workspace has no regex crate, so this covers the subset topic
//! patterns use: literals, `.`, classes (`[a-z0-9_-]`, `[^x]`, `\d`, `\w`, `\s`), groups
//! (`(...)`, `(?:...)`), alternation `|`, the quantifiers `*`, `+`, `?`, `{n}`, `{n,}`,
//! `{n,m}`, and a leading `^` / trailing `$` (no-ops under a full match). Anything else
//! (backreferences, lookarounds, flags, Unicode classes) is refused as invalid.

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Regex {
    alternatives: Vec<Vec<Node>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Char(char),
    Any,
    Class { ranges: Vec<(char, char)>, negated: bool },
    Group(Vec<Vec<Node>>),
    Repeat { node: Box<Node>, min: u32, max: Option<u32> },
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegexError(pub(crate) &'static str);

impl Regex {
    /// Compiles `pattern`.
    pub(crate) fn new(pattern: &str) -> Result<Regex, RegexError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut p = Parser { chars: &chars, at: 0 };
        if p.peek() == Some('^') {
            p.at += 1;
        }
        let alternatives = p.alternation(0)?;
        if p.at != chars.len() {
            return Err(RegexError("unbalanced parenthesis"));
        }
        Ok(Regex { alternatives })
    }

    /// Whether the whole of `text` matches.
    pub(crate) fn full_match(&self, text: &str) -> bool {
        let s: Vec<char> = text.chars().collect();
        self.alternatives.iter().any(|alt| seq(alt, &s, 0, &mut |j| j == s.len()))
    }
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.at += usize::from(c.is_some());
        c
    }

    fn alternation(&mut self, depth: usize) -> Result<Vec<Vec<Node>>, RegexError> {
        if depth > 32 {
            return Err(RegexError("groups nested too deep"));
        }
        let mut alternatives = vec![self.sequence(depth)?];
        while self.peek() == Some('|') {
            self.at += 1;
            alternatives.push(self.sequence(depth)?);
        }
        Ok(alternatives)
    }

    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, RegexError> {
        let mut nodes = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            if c == '$' && self.at + 1 == self.chars.len() {
                self.at += 1;
                break;
            }
            let atom = self.atom(depth)?;
            nodes.push(self.quantified(atom)?);
        }
        Ok(nodes)
    }

    fn atom(&mut self, depth: usize) -> Result<Node, RegexError> {
        match self.next() {
            Some('.') => Ok(Node::Any),
            Some('(') => {
                if self.peek() == Some('?') {
                    self.at += 1;
                    if self.next() != Some(':') {
                        return Err(RegexError("unsupported group flags"));
                    }
                }
                let inner = self.alternation(depth + 1)?;
                if self.next() != Some(')') {
                    return Err(RegexError("missing closing parenthesis"));
                }
                Ok(Node::Group(inner))
            }
            Some('[') => self.class(),
            Some('\\') => self.escape(),
            Some('*' | '+' | '?' | '{') => Err(RegexError("missing argument to repetition operator")),
            Some(')') | None => Err(RegexError("unexpected end")),
            Some('^' | '$') => Err(RegexError("anchors are supported only at the ends")),
            Some(c) => Ok(Node::Char(c)),
        }
    }

    fn escape(&mut self) -> Result<Node, RegexError> {
        let class = |ranges: Vec<(char, char)>, negated| Node::Class { ranges, negated };
        let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
        let space = vec![(' ', ' '), ('\t', '\r')];
        match self.next() {
            Some('d') => Ok(class(vec![('0', '9')], false)),
            Some('D') => Ok(class(vec![('0', '9')], true)),
            Some('w') => Ok(class(word, false)),
            Some('W') => Ok(class(word, true)),
            Some('s') => Ok(class(space, false)),
            Some('S') => Ok(class(space, true)),
            Some(c) if !c.is_ascii_alphanumeric() => Ok(Node::Char(c)),
            _ => Err(RegexError("unsupported escape")),
        }
    }

    fn class(&mut self) -> Result<Node, RegexError> {
        let negated = self.peek() == Some('^');
        self.at += usize::from(negated);
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = match self.next() {
                None => return Err(RegexError("missing closing ]")),
                Some(']') if !first => break,
                Some('\\') => match self.escape()? {
                    Node::Char(c) => c,
                    Node::Class { ranges: r, negated: false } => {
                        ranges.extend(r);
                        first = false;
                        continue;
                    }
                    _ => return Err(RegexError("unsupported escape in a class")),
                },
                Some(c) => c,
            };
            first = false;
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|n| *n != ']') {
                self.at += 1;
                let end = match self.next() {
                    Some('\\') => match self.escape()? {
                        Node::Char(e) => e,
                        _ => return Err(RegexError("bad class range")),
                    },
                    Some(e) => e,
                    None => return Err(RegexError("missing closing ]")),
                };
                if end < c {
                    return Err(RegexError("bad class range"));
                }
                ranges.push((c, end));
            } else {
                ranges.push((c, c));
            }
        }
        Ok(Node::Class { ranges, negated })
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, RegexError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                self.at += 1;
                let min = self.number().ok_or(RegexError("bad repetition"))?;
                let max = if self.peek() == Some(',') {
                    self.at += 1;
                    if self.peek() == Some('}') {
                        None
                    } else {
                        Some(self.number().ok_or(RegexError("bad repetition"))?)
                    }
                } else {
                    Some(min)
                };
                if self.peek() != Some('}') || max.is_some_and(|m| m < min) || min > 1000 {
                    return Err(RegexError("bad repetition"));
                }
                (min, max)
            }
            _ => return Ok(atom),
        };
        self.at += 1;
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            // RE2's lazy and possessive forms do not change what a full match accepts,
            // but a stacked repetition is an error there.
            if self.peek() == Some('?') {
                self.at += 1;
            } else {
                return Err(RegexError("bad repetition operator"));
            }
        }
        Ok(Node::Repeat { node: Box::new(atom), min, max })
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect::<String>().parse().ok()
    }
}

fn seq(nodes: &[Node], s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match nodes.split_first() {
        None => k(i),
        Some((n, rest)) => node(n, s, i, &mut |j| seq(rest, s, j, k)),
    }
}

fn node(n: &Node, s: &[char], i: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    match n {
        Node::Char(c) => s.get(i) == Some(c) && k(i + 1),
        Node::Any => s.get(i).is_some_and(|c| *c != '\n') && k(i + 1),
        Node::Class { ranges, negated } => {
            s.get(i).is_some_and(|c| ranges.iter().any(|(a, b)| (a..=b).contains(&c)) != *negated) && k(i + 1)
        }
        Node::Group(alternatives) => alternatives.iter().any(|alt| seq(alt, s, i, k)),
        Node::Repeat { node: inner, min, max } => repeat(inner, *min, *max, 0, s, i, k),
    }
}

fn repeat(
    inner: &Node,
    min: u32,
    max: Option<u32>,
    count: u32,
    s: &[char],
    i: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if max.is_none_or(|m| count < m)
        && node(inner, s, i, &mut |j| (j != i || count < min) && repeat(inner, min, max, count + 1, s, j, k))
    {
        return true;
    }
    count >= min && k(i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Regex::new(p).unwrap().full_match(t)
    }

    #[test]
    fn full_match_semantics() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders-1"), "a full match, as RE2/J matches()");
        assert!(!m("^orders", "orders-1"));
        assert!(m("^orders.*", "orders-1"));
        assert!(m("orders-.*$", "orders-"));
        assert!(m("orders-\\d+", "orders-12"));
        assert!(!m("orders-\\d+", "orders-x"));
        assert!(m("(orders|payments)-[a-z]{2,3}", "payments-eu"));
        assert!(!m("(orders|payments)-[a-z]{2,3}", "payments-euro"));
        assert!(m("a|b", "b") && !m("a|b", "ab"));
        assert!(m("[^.]+\\.x", "abc.x") && !m("[^.]+\\.x", "a.b.x"));
        assert!(m("t(?:-[0-9])?", "t") && m("t(?:-[0-9])?", "t-4"));
        assert!(m("", ""));
        assert!(m("(a*)*b", "aaab"));
        assert!(m("x{0}y", "y"));
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for p in ["(", "a)", "[a", "*a", "a**", "\\p{L}", "(?i)a", "a{3,1}", "[z-a]", "a^b"] {
            assert!(Regex::new(p).is_err(), "{p}");
        }
    }
}
