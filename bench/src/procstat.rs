//! CPU time and memory of a process and all its descendants, from /proc.

use std::collections::HashMap;

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are space-separated.
    let after = text.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The process and every descendant.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(f) = stat_fields(pid) {
                    if let Some(ppid) = f.get(1).and_then(|p| p.parse().ok()) {
                        parent.insert(pid, ppid);
                    }
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    out
}

/// User + system CPU seconds of the tree (threads included; reaped children too).
pub fn cpu_seconds(root: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            // utime, stime, cutime, cstime are fields 14-17 (1-based), i.e. 11..15 here.
            f[11..15]
                .iter()
                .filter_map(|v| v.parse::<f64>().ok())
                .sum::<f64>()
        })
        .sum::<f64>()
        / hz
}

/// CPU seconds spent between two `cpu_seconds` readings, or None when the difference is
/// too small for the kernel's clock-tick accounting to say anything (10 ms per tick: a
/// short run would report 0 s and a ratio of 0 against a peer).
pub fn cpu_spent(before: f64, after: f64) -> Option<f64> {
    let spent = after - before;
    (spent >= 0.1).then_some(spent)
}

/// Proportional set size of the tree in KiB (shared pages split between processes).
pub fn pss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Threads of the process tree, kernel io-wq workers (`iou-wrk-*`) included.
pub fn threads(root: u32) -> usize {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .map(|d| d.count())
        .sum()
}
