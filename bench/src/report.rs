//! The results table (medians over runs) and the targets computed from it: every
//! ratio is taken within one run (the proxy against direct or the best peer measured in
//! that run), then summarised over runs as median and range.

use crate::load::Rate;

/// One contender measured once.
pub struct Row {
    pub name: String,
    pub gbps_1: f64,
    pub gbps_8: f64,
    pub cpu_s_per_gb: Option<f64>,
    pub tunnels: Rate,
    pub cpu_us_per_tunnel: Option<f64>,
    pub rtt: (f64, f64),
    /// Idle tunnels held; None when this run skipped the idle measurement.
    pub idle_open: Option<usize>,
    pub idle_kib_each: Option<f64>,
    /// Threads of the proxy (its own and io-wq workers) while the idle tunnels are held.
    pub idle_threads: Option<usize>,
}

impl Row {
    /// zcproxy itself, an earlier zcproxy binary, or the runtime spike: never a peer.
    fn is_ours(&self) -> bool {
        self.name.starts_with("zcproxy") || self.name.contains(" spike")
    }
}

/// All runs: `runs[i]` holds the rows of run i, contenders in the same order.
pub struct Runs(pub Vec<Vec<Row>>);

/// Median of the values present (NaN-free); None when there are none.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

fn range(v: &[f64]) -> Option<(f64, f64)> {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

impl Runs {
    /// Contender names in measurement order (from the run that measured the most).
    fn names(&self) -> Vec<String> {
        let widest = self.0.iter().max_by_key(|r| r.len());
        widest.map_or_else(Vec::new, |r| r.iter().map(|x| x.name.clone()).collect())
    }

    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
        self.0.iter().flatten().filter(move |r| r.name == name)
    }

    fn med(&self, name: &str, f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
        median(self.of(name).filter_map(f).collect())
    }

    /// Per run, `f(row, run)` for the named contender.
    fn per_run(&self, name: &str, f: impl Fn(&Row, &[Row]) -> Option<f64>) -> Vec<f64> {
        self.0
            .iter()
            .filter_map(|run| run.iter().find(|r| r.name == name).and_then(|r| f(r, run)))
            .collect()
    }

    /// Per run, the named contender's single-stream rate over direct's in the same run.
    fn vs_direct(&self, name: &str) -> Vec<f64> {
        self.per_run(name, |r, run| {
            let d = run.iter().find(|x| x.name == "direct")?;
            Some(r.gbps_1 / d.gbps_1)
        })
    }

    pub fn print_table(&self, concurrency: usize) {
        let runs = self.0.len();
        println!(
            "| contender | 1 stream Gbit/s | vs direct | 8 streams Gbit/s | proxy CPU s/GB | tunnels/s @{concurrency} | proxy CPU µs/tunnel | tunnel p50/p99 ms | 64 B RTT p50/p99 µs | idle tunnels held | KiB per idle tunnel | threads while idle |",
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for name in self.names() {
            let vs_direct = median(self.vs_direct(&name));
            let failures: u64 = self.of(&name).map(|r| r.tunnels.failures).sum();
            let idle = self.of(&name).find(|r| r.idle_open.is_some());
            println!(
                "| {name} | {} | {} | {} | {} | {}{} | {} | {} / {} | {} / {} | {} | {} | {} |",
                opt(self.med(&name, |r| Some(r.gbps_1)), 2),
                opt(vs_direct, 2),
                opt(self.med(&name, |r| Some(r.gbps_8)), 2),
                opt(self.med(&name, |r| r.cpu_s_per_gb), 3),
                opt(self.med(&name, |r| Some(r.tunnels.per_second)), 0),
                if failures > 0 {
                    format!(" ({failures} failed over {runs} runs)")
                } else {
                    String::new()
                },
                opt(self.med(&name, |r| r.cpu_us_per_tunnel), 0),
                opt(self.med(&name, |r| Some(r.tunnels.p50_ms)), 2),
                opt(self.med(&name, |r| Some(r.tunnels.p99_ms)), 2),
                opt(self.med(&name, |r| Some(r.rtt.0)), 0),
                opt(self.med(&name, |r| Some(r.rtt.1)), 0),
                idle.and_then(|r| r.idle_open)
                    .map_or("-".into(), |n| n.to_string()),
                opt(idle.and_then(|r| r.idle_kib_each), 1),
                idle.and_then(|r| r.idle_threads)
                    .map_or("-".into(), |t| t.to_string()),
            );
        }
    }

    /// The targets of the data-plane issue, for every zcproxy contender: median and range
    /// over runs of each within-run ratio.
    pub fn print_targets(&self) {
        println!();
        println!(
            "| zcproxy contender | 1 stream vs direct (≥ 0.6) | CPU/GB vs best peer (≤ 0.5) | tunnels/s vs best peer (≥ 1.5) | CPU/tunnel vs best peer (≤ 0.7) | 64 B RTT p50 vs best peer (≤ 1.0) | runs |"
        );
        println!("|---|---|---|---|---|---|---|");
        let zc: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| self.of(n).any(Row::is_ours))
            .collect();
        for name in zc {
            let vs_direct = self.vs_direct(&name);
            let cpu = self.per_run(&name, |r, run| {
                let best = peers(run).filter_map(|p| p.cpu_s_per_gb).reduce(f64::min)?;
                Some(r.cpu_s_per_gb? / best)
            });
            let tunnels = self.per_run(&name, |r, run| {
                let best = peers(run)
                    .filter(|p| p.tunnels.failures == 0)
                    .map(|p| p.tunnels.per_second)
                    .reduce(f64::max)?;
                Some(r.tunnels.per_second / best)
            });
            let cpu_tunnel = self.per_run(&name, |r, run| {
                let best = peers(run)
                    .filter(|p| p.tunnels.failures == 0)
                    .filter_map(|p| p.cpu_us_per_tunnel)
                    .reduce(f64::min)?;
                Some(r.cpu_us_per_tunnel? / best)
            });
            let rtt = self.per_run(&name, |r, run| {
                let best = peers(run).map(|p| p.rtt.0).reduce(f64::min)?;
                Some(r.rtt.0 / best)
            });
            let cell = |v: Vec<f64>| match (range(&v), median(v)) {
                (Some((lo, hi)), Some(m)) => format!("{m:.2} ({lo:.2}-{hi:.2})"),
                _ => "-".into(),
            };
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} |",
                cell(vs_direct),
                cell(cpu),
                cell(tunnels),
                cell(cpu_tunnel),
                cell(rtt),
                self.0.len()
            );
        }
    }
}

/// The peer proxies of one run (not zcproxy, not direct).
fn peers(run: &[Row]) -> impl Iterator<Item = &Row> {
    run.iter().filter(|r| !r.is_ours() && r.name != "direct")
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_skips_missing_values() {
        assert_eq!(median(vec![3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }
}
