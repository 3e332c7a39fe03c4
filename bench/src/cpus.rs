//! CPU placement: with `--proxy-cpus`, every proxy runs on its own CPUs and the load
//! generator and upstreams on the rest, so tunnels/s measures what a proxy sustains on the
//! CPUs it is given rather than what the shared machine has left once the load is served.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// Where proxies run, when `--proxy-cpus` was given (set once at start-up).
static PROXY_CPUS: OnceLock<CpuSet> = OnceLock::new();

/// Pins the load generator (this thread and every thread it spawns later) to the CPUs
/// not in `proxies`, and remembers `proxies` for [`bind_proxy`]. Returns the load's CPUs.
pub fn split(proxies: CpuSet) -> io::Result<CpuSet> {
    let load = proxies.complement_of_allowed()?;
    load.bind_current_thread()?;
    let _ = PROXY_CPUS.set(proxies);
    Ok(load)
}

/// Starts `cmd` on the proxies' CPUs when they were split off.
pub fn bind_proxy(cmd: &mut Command) {
    if let Some(set) = PROXY_CPUS.get() {
        set.bind_command(cmd);
    }
}

/// Shards for zcproxy: `cores` when given, else one per CPU it may use (those of
/// `--proxy-cpus`, or every CPU).
pub fn shards(cores: Option<usize>, proxy_cpus: Option<&CpuSet>) -> usize {
    cores.unwrap_or_else(|| {
        proxy_cpus.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            CpuSet::len,
        )
    })
}

/// A set of CPU numbers, parsed from a list such as `1`, `0,2` or `2-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(Vec<usize>);

impl CpuSet {
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let lo: usize = lo.trim().parse().map_err(|_| format!("bad CPU {part:?}"))?;
            let hi: usize = hi.trim().parse().map_err(|_| format!("bad CPU {part:?}"))?;
            if lo > hi || hi >= libc::CPU_SETSIZE as usize {
                return Err(format!("bad CPU range {part:?}"));
            }
            cpus.extend(lo..=hi);
        }
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.is_empty() {
            return Err("empty CPU list".into());
        }
        Ok(CpuSet(cpus))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The CPUs this process may run on that are not in `self`.
    fn complement_of_allowed(&self) -> io::Result<CpuSet> {
        let allowed = allowed()?;
        let rest: Vec<usize> = allowed
            .into_iter()
            .filter(|c| !self.0.contains(c))
            .collect();
        if rest.is_empty() {
            return Err(io::Error::other(
                "no CPU left for the load generator besides --proxy-cpus",
            ));
        }
        Ok(CpuSet(rest))
    }

    fn to_libc(&self) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in &self.0 {
            // SAFETY: c < CPU_SETSIZE, checked in parse.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        set
    }

    /// Restricts the calling thread (and the threads it spawns from now on) to these CPUs.
    fn bind_current_thread(&self) -> io::Result<()> {
        set_affinity(&self.to_libc())
    }

    /// Makes `cmd`'s process start on these CPUs only.
    fn bind_command(&self, cmd: &mut Command) {
        let set = self.to_libc();
        // SAFETY: sched_setaffinity is async-signal-safe and touches only the child.
        unsafe { cmd.pre_exec(move || set_affinity(&set)) };
    }
}

impl std::fmt::Display for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; set is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: as in to_libc.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; set is large enough.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading bits of a valid set.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::CpuSet;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(CpuSet::parse("1").unwrap().to_string(), "1");
        assert_eq!(CpuSet::parse("3,0-1,1").unwrap().to_string(), "0,1,3");
        for bad in ["", "x", "2-1", "0-99999", "1,,a"] {
            assert!(CpuSet::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
