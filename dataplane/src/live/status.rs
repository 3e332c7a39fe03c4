//! What the control thread knows about the policy's freshness, for /readyz and /metrics.
//! Written only by the control thread; read by the admin thread.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::family;

/// Where the policy in force came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Source {
    /// The config file or flags; no control plane configured.
    Static = 0,
    /// A snapshot and events from the control plane.
    Control = 1,
    /// The last snapshot cached on disk (control plane unreachable at start).
    Cache = 2,
    /// The config file's own policy used as fallback (control plane unreachable at start).
    Config = 3,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Static,
        Source::Control,
        Source::Cache,
        Source::Config,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Control => "control",
            Source::Cache => "cache",
            Source::Config => "config",
        }
    }
}

/// Why a full snapshot was (re)loaded. Label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    Startup,
    Gap,
    Reconnect,
    BadEvent,
    ApplyFailed,
    Retry,
}

impl ResyncReason {
    pub const ALL: [ResyncReason; 6] = [
        ResyncReason::Startup,
        ResyncReason::Gap,
        ResyncReason::Reconnect,
        ResyncReason::BadEvent,
        ResyncReason::ApplyFailed,
        ResyncReason::Retry,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ResyncReason::Startup => "startup",
            ResyncReason::Gap => "gap",
            ResyncReason::Reconnect => "reconnect",
            ResyncReason::BadEvent => "bad_event",
            ResyncReason::ApplyFailed => "apply_failed",
            ResyncReason::Retry => "retry",
        }
    }
}

/// Outcome of one received event. Label values are part of the metrics contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Applied,
    Duplicate,
    Rejected,
    /// Received while a snapshot was pending (the snapshot covers it).
    Skipped,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 4] = [
        EventOutcome::Applied,
        EventOutcome::Duplicate,
        EventOutcome::Rejected,
        EventOutcome::Skipped,
    ];

    pub fn label(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Rejected => "rejected",
            EventOutcome::Skipped => "skipped",
        }
    }
}

pub struct PolicyStatus {
    epoch: Instant,
    source: AtomicU8,
    /// Nanoseconds after `epoch` when the policy was last known to be current.
    synced_at: AtomicU64,
    nats_connected: AtomicBool,
    stale_after: Duration,
    resyncs: [AtomicU64; 6],
    resync_failures: AtomicU64,
    events: [AtomicU64; EventOutcome::ALL.len()],
}

impl PolicyStatus {
    pub fn new(source: Source, stale_after: Duration) -> PolicyStatus {
        PolicyStatus {
            epoch: Instant::now(),
            source: AtomicU8::new(source as u8),
            synced_at: AtomicU64::new(0),
            nats_connected: AtomicBool::new(false),
            stale_after,
            resyncs: Default::default(),
            resync_failures: AtomicU64::new(0),
            events: Default::default(),
        }
    }

    pub fn source(&self) -> Source {
        let v = self.source.load(Ordering::Acquire);
        Source::ALL
            .into_iter()
            .find(|s| *s as u8 == v)
            .unwrap_or(Source::Static)
    }

    pub fn set_source(&self, s: Source) {
        self.source.store(s as u8, Ordering::Release);
    }

    /// The policy in force is known to match the control plane as of now.
    pub fn mark_synced(&self) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.synced_at.store(now.max(1), Ordering::Release);
    }

    /// Seconds since the policy was last known current (0 in static mode).
    pub fn age(&self) -> Duration {
        if self.source() == Source::Static {
            return Duration::ZERO;
        }
        let at = self.synced_at.load(Ordering::Acquire);
        let now = self.epoch.elapsed();
        if at == 0 {
            // Never synced: as old as the process.
            return now;
        }
        now.saturating_sub(Duration::from_nanos(at))
    }

    pub fn is_stale(&self) -> bool {
        self.source() != Source::Static && self.age() > self.stale_after
    }

    pub fn set_connected(&self, up: bool) {
        self.nats_connected.store(up, Ordering::Release);
    }

    pub fn connected(&self) -> bool {
        self.nats_connected.load(Ordering::Acquire)
    }

    pub fn count_resync(&self, r: ResyncReason) {
        self.resyncs[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_resync_failure(&self) {
        self.resync_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_event(&self, o: EventOutcome) {
        self.events[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for the policy families that are per process, not per core.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let single = |out: &mut String, name: &str, kind: &str, help: &str, value: f64| {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        };
        let labelled = |out: &mut String,
                        name: &str,
                        kind: &str,
                        help: &str,
                        label: &str,
                        values: &[(&str, f64)]| {
            family(out, name, kind, help);
            for (v, n) in values {
                let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
            }
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        single(
            out,
            "zcproxy_policy_age_seconds",
            "gauge",
            "Seconds since the policy was last known to match the control plane",
            self.age().as_secs_f64(),
        );
        single(
            out,
            "zcproxy_policy_stale",
            "gauge",
            "1 when the policy age exceeds control.stale_after_secs",
            f64::from(u8::from(self.is_stale())),
        );
        let current = self.source();
        let sources: Vec<_> = Source::ALL
            .iter()
            .map(|s| (s.label(), f64::from(u8::from(*s == current))))
            .collect();
        labelled(
            out,
            "zcproxy_policy_source",
            "gauge",
            "Where the policy in force came from",
            "source",
            &sources,
        );
        single(
            out,
            "zcproxy_policy_nats_connected",
            "gauge",
            "1 while the event subscription is connected",
            f64::from(u8::from(self.connected())),
        );
        let resyncs: Vec<_> = ResyncReason::ALL
            .iter()
            .map(|r| (r.label(), load(&self.resyncs[*r as usize])))
            .collect();
        labelled(
            out,
            "zcproxy_policy_resyncs_total",
            "counter",
            "Full snapshot loads, by reason",
            "reason",
            &resyncs,
        );
        single(
            out,
            "zcproxy_policy_resync_failures_total",
            "counter",
            "Snapshot loads that failed (retried with backoff)",
            load(&self.resync_failures),
        );
        let events: Vec<_> = EventOutcome::ALL
            .iter()
            .map(|o| (o.label(), load(&self.events[*o as usize])))
            .collect();
        labelled(
            out,
            "zcproxy_policy_events_total",
            "counter",
            "Policy events received, by outcome",
            "outcome",
            &events,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_is_never_stale_and_control_ages_until_synced() {
        let s = PolicyStatus::new(Source::Static, Duration::ZERO);
        assert!(!s.is_stale());
        let c = PolicyStatus::new(Source::Config, Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(c.is_stale(), "never synced and older than stale_after");
        c.set_source(Source::Control);
        c.mark_synced();
        assert!(!c.is_stale());
        assert!(c.age() < Duration::from_millis(20));
        let mut text = String::new();
        c.render(&mut text);
        assert!(text.contains("zcproxy_policy_source{source=\"control\"} 1"));
        assert!(text.contains("zcproxy_policy_stale 0"));
    }
}
