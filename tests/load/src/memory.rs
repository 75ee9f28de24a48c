//! The process's resident memory, from `/proc/self/status`: now (`VmRSS`) and its peak
//! since the start (`VmHWM`, the kernel's high-water mark, so that no sample misses it).

/// `VmRSS` and `VmHWM` in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rss {
    pub(crate) now: usize,
    pub(crate) peak: usize,
}

/// Reads this process's resident memory; `None` where `/proc` is not there.
pub(crate) fn read() -> Option<Rss> {
    parse(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmRSS` and `VmHWM` lines of a status file (in kB there).
fn parse(status: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<usize> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: usize = line[name.len()..].split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(Rss { now: field("VmRSS:")?, peak: field("VmHWM:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_lines() {
        let status = "Name:\tklife-load\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse(status), Some(Rss { now: 1024 * 1024, peak: 2048 * 1024 }));
        assert_eq!(parse("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_some() {
        let rss = read().expect("/proc/self/status");
        assert!(rss.now > 0 && rss.peak >= rss.now);
    }
}
