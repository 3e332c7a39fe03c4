//! Reloading the configuration file without a restart (`POST /reload`, SIGHUP): its policy
//! (when the policy is the file's, not a control plane's), the TLS certificate files, and the
//! limits a core can change while it runs. Settings that only a restart can change (a
//! listen address, timeouts, windows, pool sizes) are reported as such, not half-applied.

use std::sync::{Arc, Mutex};

use crate::config::{Config, Limits};
use crate::identity::Identity;
use crate::live::Compiler;
use crate::shared::Shared;

/// Reads the configuration again the way start-up did (file and command-line flags).
pub type Loader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

pub struct Reloader {
    shared: Arc<Shared>,
    load: Loader,
    /// For a policy from the file: the compiler that compiled the one in force (per-user
    /// tunnel counts carry over between its versions). `None` with a control plane.
    compiler: Option<Mutex<Compiler>>,
    identity: Option<Arc<Identity>>,
    /// The configuration last put in force; one reload at a time.
    applied: Mutex<Config>,
}

/// Limits the cores apply at once; the others of `[limits]` need a restart.
const LIVE_LIMITS: [&str; 3] = [
    "max_connections_per_core",
    "password_checks_per_core",
    "tunnel_buffer_per_core",
];

impl Reloader {
    pub fn new(
        shared: Arc<Shared>,
        load: Loader,
        compiler: Option<Compiler>,
        identity: Option<Arc<Identity>>,
    ) -> Reloader {
        Reloader {
            applied: Mutex::new(shared.config.clone()),
            shared,
            load,
            compiler: compiler.map(Mutex::new),
            identity,
        }
    }

    /// Reloads; what was put in force and what needs a restart, a line each. A file that
    /// does not load or validate changes nothing.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let new = (self.load)()?;
        new.validate().map_err(|e| e.to_string())?;
        let mut report = Vec::new();
        match &self.compiler {
            Some(compiler) => {
                let mut compiler = compiler.lock().unwrap_or_else(|p| p.into_inner());
                let mut doc = new.policy.clone();
                // A new revision, so that everything that follows the policy sees a change.
                doc.revision = self.shared.bus.mailbox(0).latest().revision + 1;
                let live = compiler.compile(&doc).map_err(|e| e.to_string())?;
                report.push(format!(
                    "policy: revision {} in force ({} users)",
                    live.revision,
                    live.users().count()
                ));
                self.shared.bus.publish(Arc::new(live));
            }
            None => {
                report.push(
                    "policy: from the control plane (the file's [policy] is only its start-up fallback)"
                        .into(),
                );
            }
        }
        if let Some(identity) = &self.identity {
            match identity.reload() {
                Ok(true) => report.push("tls: new certificates in use".into()),
                Ok(false) => report.push("tls: certificates unchanged".into()),
                Err(e) => report.push(format!("tls: certificates not reloaded: {e}")),
            }
        }
        let changed = changed_keys("limits", &applied.limits, &new.limits);
        let (live, restart): (Vec<_>, Vec<_>) = changed
            .into_iter()
            .partition(|k| LIVE_LIMITS.iter().any(|l| k == &format!("limits.{l}")));
        let mut limits = applied.limits.clone();
        limits.max_connections_per_core = new.limits.max_connections_per_core;
        limits.password_checks_per_core = new.limits.password_checks_per_core;
        limits.tunnel_buffer_per_core = new.limits.tunnel_buffer_per_core;
        if !live.is_empty() {
            report.push(format!("limits: {} in force", live.join(", ")));
        }
        self.shared.set_limits(limits.clone());
        // Every core takes the limits (and any new policy) at its next look at its mailbox.
        self.shared.bus.ring();
        let mut restart = restart;
        restart.extend(restart_keys(&applied, &new));
        if !restart.is_empty() {
            report.push(format!("needs a restart: {}", restart.join(", ")));
        }
        // Only what was put in force counts as applied: a setting that needs a restart is
        // named again by the next reload, until the restart.
        applied.limits = limits;
        applied.policy = new.policy;
        Ok(report)
    }
}

/// Keys of the sections (other than `[limits]` and `[policy]`) whose values differ:
/// `section.key` within a table, the key alone for a top-level setting.
fn restart_keys(old: &Config, new: &Config) -> Vec<String> {
    let (old, new) = (json(old), json(new));
    let mut keys = Vec::new();
    for (key, value) in &new {
        if key == "limits" || key == "policy" {
            continue;
        }
        match (old.get(key), value) {
            (Some(a @ serde_json::Value::Object(_)), b @ serde_json::Value::Object(_)) => {
                keys.extend(fields_changed(key, a, b));
            }
            (before, now) if before != Some(now) => keys.push(key.clone()),
            _ => {}
        }
    }
    keys
}

/// `section.key` for every field of `a` and `b` (one section) that differs.
fn changed_keys(section: &str, a: &Limits, b: &Limits) -> Vec<String> {
    let (a, b) = (json(a), json(b));
    fields_changed(section, &a.into(), &b.into())
}

/// `section.key` for every field of table `b` whose value in table `a` differs.
fn fields_changed(section: &str, a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return Vec::new();
    };
    b.iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, _)| format!("{section}.{k}"))
        .collect()
}

/// A settings table as JSON fields (empty where it would not serialise, which the
/// configuration types always do).
fn json(value: &impl serde::Serialize) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named_by_key() {
        let old = Config::default();
        let mut new = Config::default();
        new.limits.password_checks_per_core = 9;
        new.limits.pipe_size = 1 << 20;
        new.timeouts.idle_secs = 5;
        new.listen = "127.0.0.1:2080".parse().unwrap();
        let mut limits = changed_keys("limits", &old.limits, &new.limits);
        limits.sort();
        assert_eq!(
            limits,
            ["limits.password_checks_per_core", "limits.pipe_size"]
        );
        let mut restart = restart_keys(&old, &new);
        restart.sort();
        assert_eq!(restart, ["listen", "timeouts.idle_secs"]);
        assert!(restart_keys(&old, &Config::default()).is_empty());
    }
}
