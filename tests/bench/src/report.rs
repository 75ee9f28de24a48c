//! The one JSON line each subcommand prints, and the value generator.

#![allow(unsafe_code)]

use std::io::Write;
use std::time::Duration;

/// What one run measured.
pub(crate) struct Report {
    pub(crate) client: &'static str,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed: Duration,
    /// Consumers: the gaps between answers with records.
    pub(crate) gaps: Option<Gaps>,
    /// Groups: the time from the start of the first member to the first record.
    pub(crate) first_record: Option<Duration>,
    /// Groups: the CPU time counted is what the process used after this point (when the
    /// group's assignment was complete), not since it started.
    pub(crate) cpu_since: Option<Usage>,
}

/// The gaps between a consumer's answers with records.
#[derive(Debug, Default, Clone)]
pub(crate) struct Gaps {
    /// The longest, the wait for the first answer included.
    pub(crate) longest: Duration,
    /// How many lasted longer than 100 ms.
    pub(crate) over_100ms: u32,
    /// Records read so far.
    pub(crate) records: u64,
}

/// CPU time and peak memory of this process so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    user_s: f64,
    sys_s: f64,
    max_rss_kb: i64,
}

pub(crate) fn usage() -> Result<Usage, String> {
    // SAFETY: getrusage only writes into the zero-initialised struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Err(format!("getrusage: {}", std::io::Error::last_os_error()));
        }
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage { user_s: secs(ru.ru_utime), sys_s: secs(ru.ru_stime), max_rss_kb: ru.ru_maxrss })
}

impl Report {
    /// Prints the line, with the CPU time and peak RSS of the whole process.
    pub(crate) fn print(&self) -> Result<(), String> {
        let mut u = usage()?;
        if let Some(base) = self.cpu_since {
            (u.user_s, u.sys_s) = (u.user_s - base.user_s, u.sys_s - base.sys_s);
        }
        let line = self.line(&u);
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    }

    fn line(&self, u: &Usage) -> String {
        let gaps = self.gaps.as_ref().map_or(String::new(), |g| {
            format!(r#","longest_gap_ms":{:.3},"gaps_over_100ms":{}"#, g.longest.as_secs_f64() * 1e3, g.over_100ms)
        });
        let first = self.first_record.map_or(String::new(), |f| format!(r#","first_record_s":{:.6}"#, f.as_secs_f64()));
        format!(
            r#"{{"client":"{}","records":{},"bytes":{},"elapsed_s":{:.6},"cpu_user_s":{:.6},"cpu_sys_s":{:.6},"max_rss_kb":{}{gaps}{first}}}"#,
            self.client,
            self.records,
            self.bytes,
            self.elapsed.as_secs_f64(),
            u.user_s,
            u.sys_s,
            u.max_rss_kb
        )
    }
}

/// xorshift64: incompressible bytes, cheap to make (the generator librdkafka's side uses).
pub(crate) struct XorShift(pub(crate) u64);

impl XorShift {
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let x = self.next().to_le_bytes();
            tail.copy_from_slice(&x[..tail.len()]);
        }
    }

    /// The next 8 bytes (whole words are copied with a fixed length, which compiles
    /// to one store rather than a call to `memcpy`).
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A fresh value of `size` bytes.
    pub(crate) fn value(&mut self, size: usize) -> Vec<u8> {
        let mut v = vec![0u8; size];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_fresh_and_sized() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let a = rng.value(13);
        let b = rng.value(13);
        assert_eq!(a.len(), 13);
        assert_ne!(a, b);
    }

    #[test]
    fn consumers_report_their_gaps() {
        let u = Usage { user_s: 1.0, sys_s: 0.5, max_rss_kb: 10 };
        let mut r = Report {
            client: "klife",
            records: 3,
            bytes: 300,
            elapsed: Duration::from_secs(1),
            gaps: None,
            first_record: None,
            cpu_since: None,
        };
        assert!(r.line(&u).ends_with(r#""max_rss_kb":10}"#), "{}", r.line(&u));
        r.gaps = Some(Gaps { longest: Duration::from_millis(512), over_100ms: 2, records: 3 });
        assert!(
            r.line(&u).ends_with(r#""max_rss_kb":10,"longest_gap_ms":512.000,"gaps_over_100ms":2}"#),
            "{}",
            r.line(&u)
        );
        r.gaps = None;
        r.first_record = Some(Duration::from_millis(250));
        assert!(r.line(&u).ends_with(r#""max_rss_kb":10,"first_record_s":0.250000}"#), "{}", r.line(&u));
    }

    #[test]
    fn usage_reads() {
        assert!(usage().expect("getrusage").max_rss_kb > 0);
    }
}
