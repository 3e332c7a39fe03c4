//! Following the control plane, without IO: the document in force, whether it is known to be
//! in sync, and what each input (an event payload, a snapshot, a reconnect) calls for.
//!
//! Events are applied in revision order; one at or below the current revision is a replay or
//! a duplicate and changes nothing. A gap, an event that cannot be read, a reconnect (events
//! may have been missed) or a document that fails to compile calls for a full snapshot.

use policy::{ApplyError, PolicyDoc, PolicyEvent};

use super::status::{EventOutcome, ResyncReason};

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Nothing,
    /// The document changed: compile and publish it.
    Changed,
    /// Load a full snapshot; events until then are covered by it.
    Resync(ResyncReason),
}

pub struct Follower {
    doc: PolicyDoc,
    synced: bool,
}

impl Follower {
    /// `synced`: whether `doc` came from the control plane just now (a snapshot fetched after
    /// the subscription started); a fallback document is not.
    pub fn new(doc: PolicyDoc, synced: bool) -> Follower {
        Follower { doc, synced }
    }

    pub fn doc(&self) -> &PolicyDoc {
        &self.doc
    }

    pub fn in_sync(&self) -> bool {
        self.synced
    }

    fn resync(&mut self, reason: ResyncReason) -> Step {
        self.synced = false;
        Step::Resync(reason)
    }

    pub fn on_event(&mut self, payload: &[u8]) -> (EventOutcome, Step) {
        if !self.synced {
            // The snapshot that is on its way includes this event or follows it.
            return (EventOutcome::Skipped, Step::Nothing);
        }
        let event: PolicyEvent = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable policy event");
                return (EventOutcome::Rejected, self.resync(ResyncReason::BadEvent));
            }
        };
        match self.doc.apply(&event) {
            Ok(true) => (EventOutcome::Applied, Step::Changed),
            Ok(false) => (EventOutcome::Duplicate, Step::Nothing),
            Err(e @ ApplyError::Gap { .. }) => {
                tracing::info!(error = %e, "policy event gap");
                (EventOutcome::Rejected, self.resync(ResyncReason::Gap))
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy event refused");
                (EventOutcome::Rejected, self.resync(ResyncReason::BadEvent))
            }
        }
    }

    /// A full snapshot is the truth, even if older than what we had (a restored database).
    pub fn on_snapshot(&mut self, doc: PolicyDoc) -> Step {
        self.synced = true;
        if doc == self.doc {
            Step::Nothing
        } else {
            self.doc = doc;
            Step::Changed
        }
    }

    /// The connection to the broker came (back): events may have been missed meanwhile.
    pub fn on_reconnect(&mut self) -> Step {
        self.resync(ResyncReason::Reconnect)
    }

    /// The document could not be compiled: the last good policy stays in force.
    pub fn on_apply_failed(&mut self) -> Step {
        self.resync(ResyncReason::ApplyFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(rev: u64, name: &str) -> Vec<u8> {
        let hash = policy::password::hash("pw").unwrap();
        serde_json::to_vec(&json!({
            "version": 1, "revision": rev, "kind": "user_upserted",
            "user": {"name": name, "password_hash": hash, "enabled": true, "rules": []}
        }))
        .unwrap()
    }

    fn at(rev: u64) -> PolicyDoc {
        PolicyDoc {
            revision: rev,
            ..PolicyDoc::default()
        }
    }

    #[test]
    fn events_apply_in_order_and_replays_change_nothing() {
        let mut f = Follower::new(at(3), true);
        assert_eq!(
            f.on_event(&event(4, "a")),
            (EventOutcome::Applied, Step::Changed)
        );
        assert_eq!(
            f.on_event(&event(4, "a")),
            (EventOutcome::Duplicate, Step::Nothing)
        );
        assert_eq!(
            f.on_event(&event(2, "old")),
            (EventOutcome::Duplicate, Step::Nothing)
        );
        assert_eq!(f.doc().revision, 4);
        assert_eq!(f.doc().users.len(), 1);
        assert!(f.in_sync());
    }

    #[test]
    fn gaps_garbage_and_unknown_versions_call_for_a_snapshot() {
        let mut f = Follower::new(at(3), true);
        assert_eq!(
            f.on_event(&event(5, "a")),
            (EventOutcome::Rejected, Step::Resync(ResyncReason::Gap))
        );
        assert!(!f.in_sync());
        // While the snapshot is pending, events are left to it.
        assert_eq!(
            f.on_event(&event(4, "a")),
            (EventOutcome::Skipped, Step::Nothing)
        );
        assert_eq!(f.on_snapshot(at(5)), Step::Changed);
        assert_eq!(
            f.on_event(b"{not json"),
            (EventOutcome::Rejected, Step::Resync(ResyncReason::BadEvent))
        );
        f.on_snapshot(at(5));
        let v2 = br#"{"version":2,"revision":6,"kind":"user_deleted","name":"a"}"#;
        assert_eq!(
            f.on_event(v2),
            (EventOutcome::Rejected, Step::Resync(ResyncReason::BadEvent))
        );
        assert_eq!(
            f.doc().revision,
            5,
            "a refused event leaves the document alone"
        );
    }

    #[test]
    fn reconnects_and_failed_compiles_resync_and_equal_snapshots_are_quiet() {
        let mut f = Follower::new(at(1), false);
        assert_eq!(
            f.on_event(&event(2, "a")),
            (EventOutcome::Skipped, Step::Nothing)
        );
        assert_eq!(f.on_snapshot(at(1)), Step::Nothing);
        assert!(f.in_sync());
        assert_eq!(f.on_reconnect(), Step::Resync(ResyncReason::Reconnect));
        assert_eq!(
            f.on_snapshot(at(0)),
            Step::Changed,
            "older snapshots win too"
        );
        assert_eq!(f.on_apply_failed(), Step::Resync(ResyncReason::ApplyFailed));
        assert!(!f.in_sync());
    }
}
