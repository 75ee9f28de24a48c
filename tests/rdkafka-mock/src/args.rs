//! A tiny command-line parser: `--name value`, `--name=value` and boolean `--name` flags.

use std::str::FromStr;

/// Why a subcommand failed.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Bad command line: reported with the usage text, exit code 2.
    Usage(String),
    /// Anything else: exit code 1.
    Run(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Self {
        Self::Run(s)
    }
}

/// A command-line error.
pub(crate) fn usage<T>(msg: String) -> Result<T, Fail> {
    Err(Fail::Usage(msg))
}

/// The options of one subcommand, consumed as they are read; [`Opts::finish`] rejects leftovers.
pub(crate) struct Opts {
    /// `(name without dashes, value)`; `None` for a boolean flag.
    items: Vec<(String, Option<String>)>,
}

impl Opts {
    /// Splits `args` into options; `flags` names the options that take no value.
    pub(crate) fn parse(args: &[String], flags: &[&str]) -> Result<Self, String> {
        let mut items = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument '{arg}'"));
            };
            if let Some((name, value)) = name.split_once('=') {
                items.push((name.to_owned(), Some(value.to_owned())));
            } else if flags.contains(&name) {
                items.push((name.to_owned(), None));
            } else {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                items.push((name.to_owned(), Some(value.clone())));
            }
        }
        Ok(Self { items })
    }

    /// Every value given for `--name`, in order.
    pub(crate) fn all(&mut self, name: &str) -> Result<Vec<String>, Fail> {
        let mut out = Vec::new();
        let mut rest = Vec::new();
        for (n, v) in self.items.drain(..) {
            if n == name {
                out.push(v.ok_or_else(|| Fail::Usage(format!("--{name} needs a value")))?);
            } else {
                rest.push((n, v));
            }
        }
        self.items = rest;
        Ok(out)
    }

    /// The value of `--name`, if given (at most once).
    pub(crate) fn opt(&mut self, name: &str) -> Result<Option<String>, Fail> {
        let mut all = self.all(name)?;
        match all.len() {
            0 => Ok(None),
            1 => Ok(all.pop()),
            _ => usage(format!("--{name} given more than once")),
        }
    }

    /// Every value of `--name`, parsed.
    pub(crate) fn all_parse<T: FromStr>(&mut self, name: &str) -> Result<Vec<T>, Fail> {
        self.all(name)?.iter().map(|v| num(&format!("--{name}"), v).map_err(Fail::Usage)).collect()
    }

    /// The parsed value of `--name`, if given.
    pub(crate) fn opt_parse<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, Fail> {
        self.opt(name)?.map(|v| v.parse().map_err(|_| Fail::Usage(format!("--{name}: bad value '{v}'")))).transpose()
    }

    /// The value of a required `--name`.
    pub(crate) fn req(&mut self, name: &str) -> Result<String, Fail> {
        self.opt(name)?.ok_or_else(|| Fail::Usage(format!("--{name} is required")))
    }

    /// The parsed value of a required `--name`.
    pub(crate) fn req_parse<T: FromStr>(&mut self, name: &str) -> Result<T, Fail> {
        self.opt_parse(name)?.ok_or_else(|| Fail::Usage(format!("--{name} is required")))
    }

    /// Whether the boolean flag `--name` was given.
    pub(crate) fn flag(&mut self, name: &str) -> Result<bool, Fail> {
        let before = self.items.len();
        let mut bad = false;
        self.items.retain(|(n, v)| {
            if n == name {
                bad |= v.is_some();
                false
            } else {
                true
            }
        });
        if bad {
            return usage(format!("--{name} takes no value"));
        }
        Ok(self.items.len() != before)
    }

    /// Fails on any option that was not consumed.
    pub(crate) fn finish(self) -> Result<(), Fail> {
        match self.items.first() {
            None => Ok(()),
            Some((name, _)) => usage(format!("unknown option --{name}")),
        }
    }
}

/// Parses one positional word of a stdin command.
pub(crate) fn num<T: FromStr>(what: &str, word: &str) -> Result<T, String> {
    word.parse().map_err(|_| format!("bad {what} '{word}'"))
}
