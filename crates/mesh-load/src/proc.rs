//! Memory and CPU of a process, from /proc.

/// Resident memory now and at peak, in KiB (VmRSS, VmHWM).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// User + system CPU seconds used by a process so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of process `pid` and of this process, read together around a
/// measured phase.
pub fn cpu_pair(pid: u32) -> (f64, f64) {
    (
        cpu_seconds(pid).unwrap_or_default(),
        cpu_seconds(std::process::id()).unwrap_or_default(),
    )
}

/// `<server> CPU: ... per <unit>; mesh-load CPU: ... per <unit>` between two
/// [`cpu_pair`] readings over `count` units of work.
pub fn cpu_split(
    server: &str,
    unit: &str,
    before: (f64, f64),
    after: (f64, f64),
    count: u64,
) -> String {
    let per = |s: f64| s / count.max(1) as f64 * 1e6;
    let (server_s, load_s) = (after.0 - before.0, after.1 - before.1);
    format!(
        "{server} CPU: {server_s:.2}s user+sys = {:.1} µs per {unit}; \
         mesh-load CPU: {load_s:.2}s = {:.1} µs per {unit}",
        per(server_s),
        per(load_s)
    )
}

/// Raises this process's open-file limit (RLIMIT_NOFILE) to its hard limit, which
/// children such as pilot inherit; returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        let (rss, hwm) = memory_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
        assert!(memory_kib(u32::MAX).is_none());
        assert!(raise_nofile_limit().unwrap() >= 1024);
    }
}
