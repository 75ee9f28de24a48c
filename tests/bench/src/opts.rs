//! `--name value` options, taken out as they are read; leftovers are an error.

use std::str::FromStr;

pub(crate) struct Opts {
    items: Vec<(String, String)>,
}

impl Opts {
    pub(crate) fn parse(args: &[String]) -> Result<Opts, String> {
        let mut items = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(name) = arg.strip_prefix("--") else { return Err(format!("unexpected argument {arg:?}")) };
            let (name, value) = match name.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (name.to_owned(), it.next().ok_or_else(|| format!("--{name} needs a value"))?.clone()),
            };
            items.push((name, value));
        }
        Ok(Opts { items })
    }

    pub(crate) fn opt(&mut self, name: &str) -> Option<String> {
        let i = self.items.iter().rposition(|(n, _)| n == name)?;
        let (_, value) = self.items.remove(i);
        // A repeated option: the last one wins, the others are dropped.
        self.items.retain(|(n, _)| n != name);
        Some(value)
    }

    pub(crate) fn req(&mut self, name: &str) -> Result<String, String> {
        self.opt(name).ok_or_else(|| format!("--{name} is required"))
    }

    pub(crate) fn opt_parse<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.opt(name).map(|v| v.parse().map_err(|e| format!("--{name} {v:?}: {e}"))).transpose()
    }

    pub(crate) fn req_parse<T: FromStr>(&mut self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.opt_parse(name)?.ok_or_else(|| format!("--{name} is required"))
    }

    pub(crate) fn finish(self) -> Result<(), String> {
        match self.items.first() {
            None => Ok(()),
            Some((n, _)) => Err(format!("unknown option --{n}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn reads_and_rejects_leftovers() {
        let mut o = Opts::parse(&args("--count 10 --topic=t --count 20")).expect("parse");
        assert_eq!(o.req_parse::<u64>("count"), Ok(20));
        assert_eq!(o.req("topic").as_deref(), Ok("t"));
        assert_eq!(o.opt("missing"), None);
        assert!(o.finish().is_ok());
        let o = Opts::parse(&args("--x 1")).expect("parse");
        assert_eq!(o.finish(), Err("unknown option --x".to_owned()));
        assert!(Opts::parse(&args("--x")).is_err());
        assert!(Opts::parse(&args("x")).is_err());
    }
}
