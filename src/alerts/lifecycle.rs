//! The life of an alert group, as pure code: firing → resolved → firing again, alerts joining
//! a group, truncated webhooks. The store loads the state under its locks, calls [`apply`] for
//! each webhook in arrival order, and writes what changed.
//!
//! Alertmanager re-sends whole groups (repeat_interval, retries, several peers), so a webhook
//! that matches the state changes nothing and records nothing.

use chrono::{DateTime, Utc};

use crate::domain::alert::{
    AlertEvent, AlertState, AlertStates, EventKind, GroupState, IncomingGroup, Transition,
};
use crate::domain::{AlertStatus, GroupStatus};

/// Applies one webhook to its group (None: not seen before) and the group's known alerts,
/// appending the timeline entries it causes; `now` is in the stored form.
///
/// The alerts must hold every stored alert the webhook names and, when the webhook resolves
/// the group, every firing one (also those a truncated webhook left out).
pub fn apply(
    incoming: &IncomingGroup,
    group: &mut Option<GroupState>,
    alerts: &mut AlertStates,
    events: &mut Vec<AlertEvent>,
    now: &str,
) -> Transition {
    let w = incoming;
    let next = next_group(w, now);
    let is_new = group.is_none();
    if is_new {
        // A new group's timeline opens with the group, before its alerts.
        events.push(AlertEvent {
            fingerprint: None,
            kind: EventKind::group(w.status),
            at: next.started_at.clone(),
        });
    }
    let mut event = |fingerprint: &str, kind, at| {
        events.push(AlertEvent {
            fingerprint: Some(fingerprint.to_string()),
            kind,
            at,
        })
    };

    for alert in &w.alerts {
        let fp = alert.fingerprint.as_str();
        let incoming = AlertState {
            status: alert.status,
            severity: alert.severity,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.starts_at.clone(),
            ends_at: alert.ends_at.clone(),
            generator_url: alert.generator_url.clone(),
            first_seen_at: now.to_string(),
            updated_at: now.to_string(),
        };
        let transition_at = match alert.status {
            AlertStatus::Firing => incoming.starts_at.clone(),
            AlertStatus::Resolved => incoming.ends_at.clone().unwrap_or_else(|| now.to_string()),
        };
        let kind = EventKind::alert(alert.status);
        match alerts.get_mut(fp) {
            None => {
                event(fp, kind, transition_at);
                alerts.insert(fp.to_string(), (incoming, true));
            }
            Some((stored, dirty)) => {
                let same = stored.status == incoming.status
                    && stored.severity == incoming.severity
                    && stored.labels == incoming.labels
                    && stored.annotations == incoming.annotations
                    && stored.starts_at == incoming.starts_at
                    && stored.ends_at == incoming.ends_at
                    && stored.generator_url == incoming.generator_url;
                if !same {
                    if stored.status != incoming.status {
                        event(fp, kind, transition_at);
                    }
                    let first_seen = std::mem::take(&mut stored.first_seen_at);
                    *stored = AlertState {
                        first_seen_at: first_seen,
                        ..incoming
                    };
                    *dirty = true;
                }
            }
        }
    }

    if w.status == GroupStatus::Resolved {
        // The whole group is resolved: so is every alert not in (a truncated) webhook.
        for (fp, (stored, dirty)) in alerts.iter_mut() {
            if stored.status == AlertStatus::Firing {
                stored.status = AlertStatus::Resolved;
                stored.ends_at = Some(now.to_string());
                stored.updated_at = now.to_string();
                *dirty = true;
                event(fp, EventKind::AlertResolved, now.to_string());
            }
        }
    }

    let Some(stored) = group else {
        *group = Some(next);
        return Transition {
            group_changed: true,
            group_became: Some(w.status),
        };
    };
    let status_changed = stored.status != next.status;
    if status_changed {
        let at = next.resolved_at.clone().unwrap_or(next.started_at.clone());
        events.push(AlertEvent {
            fingerprint: None,
            kind: EventKind::group(w.status),
            at,
        });
    }
    // While a group keeps firing, it started when it first fired.
    let started_at = if status_changed && w.status == GroupStatus::Firing {
        next.started_at.clone()
    } else {
        stored.started_at.clone()
    };
    let changed = status_changed
        || stored.severity != next.severity
        || stored.severity_note != next.severity_note
        || stored.runbook != next.runbook
        || stored.group_labels != next.group_labels
        || stored.common_labels != next.common_labels
        || stored.common_annotations != next.common_annotations
        || stored.external_url != next.external_url
        || stored.truncated_alerts != next.truncated_alerts
        || stored.resolved_at != next.resolved_at
        || stored.started_at != started_at;
    if changed {
        *stored = GroupState {
            created_at: std::mem::take(&mut stored.created_at),
            started_at,
            ..next
        };
    }
    Transition {
        group_changed: changed,
        group_became: status_changed.then_some(w.status),
    }
}

/// The group as this webhook alone describes it. Stored times are fixed width, so the earliest
/// text is the earliest time.
fn next_group(w: &IncomingGroup, now: &str) -> GroupState {
    let firing_start = w
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| a.starts_at.as_str())
        .min()
        .or_else(|| w.alerts.iter().map(|a| a.starts_at.as_str()).min())
        .unwrap_or(now)
        .to_string();
    let resolved_at = (w.status == GroupStatus::Resolved).then(|| {
        w.alerts
            .iter()
            .filter_map(|a| a.ends_at.as_deref())
            .max()
            .unwrap_or(now)
            .to_string()
    });
    GroupState {
        receiver: w.receiver.clone(),
        group_key: w.group_key.clone(),
        status: w.status,
        severity: w.severity,
        severity_note: w.severity_note.clone(),
        runbook: w.runbook.clone(),
        group_labels: w.group_labels.clone(),
        common_labels: w.common_labels.clone(),
        common_annotations: w.common_annotations.clone(),
        external_url: w.external_url.clone(),
        truncated_alerts: w.truncated_alerts,
        started_at: firing_start,
        resolved_at,
        created_at: now.to_string(),
        updated_at: now.to_string(),
    }
}

/// Whether a group that fires again opens a new episode with a new card (the old card stays as
/// history): its card last showed it resolved, longer than `window` ago. Within the window the
/// old card is edited back to firing.
pub fn fires_anew(
    status: GroupStatus,
    shown: Option<GroupStatus>,
    shown_resolved_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: chrono::Duration,
) -> bool {
    status == GroupStatus::Firing
        && shown == Some(GroupStatus::Resolved)
        && shown_resolved_at.is_some_and(|t| now - t > window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::alert::{Fingerprint, IncomingAlert};
    use crate::domain::Severity;

    /// 10:MM on the test's day, in the stored form.
    fn t(minute: u32) -> String {
        format!("2026-11-27T10:{minute:02}:00.000000000Z")
    }

    fn firing(fp: &str, starts: u32) -> IncomingAlert {
        IncomingAlert {
            fingerprint: Fingerprint::parse(fp).unwrap(),
            status: AlertStatus::Firing,
            severity: Severity::Sev2,
            labels: format!("{{\"alertname\":\"APIDown\",\"instance\":\"{fp}\"}}"),
            annotations: "{}".into(),
            starts_at: t(starts),
            ends_at: None,
            generator_url: "http://prometheus/graph".into(),
        }
    }

    fn resolved(fp: &str, starts: u32, ends: u32) -> IncomingAlert {
        IncomingAlert {
            status: AlertStatus::Resolved,
            ends_at: Some(t(ends)),
            ..firing(fp, starts)
        }
    }

    fn webhook(status: GroupStatus, alerts: Vec<IncomingAlert>) -> IncomingGroup {
        IncomingGroup {
            receiver: "runbot".into(),
            group_key: "{}:{alertname=\"APIDown\"}".into(),
            status,
            severity: Severity::Sev2,
            severity_note: None,
            runbook: Some("APIDown".into()),
            group_labels: "{\"alertname\":\"APIDown\"}".into(),
            common_labels: "{\"alertname\":\"APIDown\"}".into(),
            common_annotations: "{}".into(),
            external_url: "http://alertmanager:9093".into(),
            truncated_alerts: 0,
            alerts,
        }
    }

    /// One group as the store would hold it between batches.
    #[derive(Default)]
    struct Group {
        state: Option<GroupState>,
        alerts: AlertStates,
        events: Vec<AlertEvent>,
    }

    impl Group {
        /// Applies a webhook in a batch of its own at 10:`now`, and returns what it did with
        /// the timeline entries it added.
        fn send(&mut self, w: &IncomingGroup, now: u32) -> (Transition, Vec<AlertEvent>) {
            // What the store wrote is no longer "changed" in the next batch.
            for (_, changed) in self.alerts.values_mut() {
                *changed = false;
            }
            let before = self.events.len();
            let t = apply(
                w,
                &mut self.state,
                &mut self.alerts,
                &mut self.events,
                &t(now),
            );
            (t, self.events[before..].to_vec())
        }

        fn group(&self) -> &GroupState {
            self.state.as_ref().unwrap()
        }

        fn alert(&self, fp: &str) -> &AlertState {
            &self.alerts[fp].0
        }

        fn changed_alerts(&self) -> Vec<&str> {
            let mut fps: Vec<&str> = (self.alerts.iter())
                .filter(|(_, (_, changed))| *changed)
                .map(|(fp, _)| fp.as_str())
                .collect();
            fps.sort_unstable();
            fps
        }
    }

    /// The group's row changed and it opened, resolved or fired again.
    fn became(status: GroupStatus) -> Transition {
        Transition {
            group_changed: true,
            group_became: Some(status),
        }
    }

    /// The group's row changed, its status did not.
    fn became_nothing() -> Transition {
        Transition {
            group_changed: true,
            group_became: None,
        }
    }

    fn entry(fingerprint: Option<&str>, kind: EventKind, at: u32) -> AlertEvent {
        AlertEvent {
            fingerprint: fingerprint.map(str::to_string),
            kind,
            at: t(at),
        }
    }

    #[test]
    fn a_new_group_opens_its_timeline_before_its_alerts() {
        let mut g = Group::default();
        let w = webhook(GroupStatus::Firing, vec![firing("a1", 5), firing("a2", 3)]);
        let (did, added) = g.send(&w, 6);
        assert_eq!(did, became(GroupStatus::Firing));
        assert_eq!(
            added,
            [
                entry(None, EventKind::GroupFiring, 3),
                entry(Some("a1"), EventKind::AlertFiring, 5),
                entry(Some("a2"), EventKind::AlertFiring, 3),
            ]
        );
        assert_eq!(g.group().started_at, t(3), "the earliest firing alert");
        assert_eq!(g.group().created_at, t(6));
        assert_eq!(g.alert("a1").first_seen_at, t(6));
        assert_eq!(g.changed_alerts(), ["a1", "a2"]);
    }

    #[test]
    fn a_resend_changes_nothing() {
        let mut g = Group::default();
        let w = webhook(GroupStatus::Firing, vec![firing("a1", 5), firing("a2", 3)]);
        g.send(&w, 6);
        let before = g.group().clone();
        let (did, added) = g.send(&w, 9);
        assert_eq!(did, Transition::default());
        assert!(added.is_empty(), "{added:?}");
        assert!(g.changed_alerts().is_empty());
        assert_eq!(g.group(), &before, "not even updated_at moves");
    }

    #[test]
    fn a_changed_detail_rewrites_the_row_without_a_timeline_entry() {
        let mut g = Group::default();
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 5)]), 6);
        let mut worse = firing("a1", 5);
        worse.severity = Severity::Sev1;
        let mut w = webhook(GroupStatus::Firing, vec![worse]);
        w.severity = Severity::Sev1;
        let (did, added) = g.send(&w, 8);
        assert!(added.is_empty(), "{added:?}");
        assert_eq!(did, became_nothing());
        assert_eq!(g.changed_alerts(), ["a1"]);
        assert_eq!(g.alert("a1").severity, Severity::Sev1);
        assert_eq!(g.alert("a1").first_seen_at, t(6), "first seen stays");
        assert_eq!(g.alert("a1").updated_at, t(8));
        assert_eq!(g.group().severity, Severity::Sev1);
        assert_eq!(g.group().created_at, t(6), "created stays");
        assert_eq!(g.group().updated_at, t(8));
    }

    #[test]
    fn an_alert_joining_a_firing_group_keeps_the_group_start() {
        let mut g = Group::default();
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 5)]), 6);
        // The newcomer started earlier than the group did, as Alertmanager may report it.
        let w = webhook(GroupStatus::Firing, vec![firing("a1", 5), firing("a2", 2)]);
        let (did, added) = g.send(&w, 8);
        assert_eq!(added, [entry(Some("a2"), EventKind::AlertFiring, 2)]);
        assert_eq!(did, Transition::default(), "the group's row is as it was");
        assert_eq!(g.changed_alerts(), ["a2"]);
        assert_eq!(g.group().started_at, t(5), "it started when it first fired");
    }

    #[test]
    fn an_alert_resolving_and_firing_again_inside_a_firing_group() {
        let mut g = Group::default();
        g.send(
            &webhook(GroupStatus::Firing, vec![firing("a1", 1), firing("a2", 2)]),
            3,
        );
        let w = webhook(
            GroupStatus::Firing,
            vec![resolved("a1", 1, 4), firing("a2", 2)],
        );
        let (did, added) = g.send(&w, 5);
        assert_eq!(added, [entry(Some("a1"), EventKind::AlertResolved, 4)]);
        assert_eq!(did.group_became, None, "the group still fires");
        assert_eq!(g.alert("a1").ends_at, Some(t(4)));

        let w = webhook(GroupStatus::Firing, vec![firing("a1", 7), firing("a2", 2)]);
        let (_, added) = g.send(&w, 8);
        assert_eq!(added, [entry(Some("a1"), EventKind::AlertFiring, 7)]);
        assert_eq!(g.alert("a1").ends_at, None);
    }

    #[test]
    fn firing_resolved_firing_is_one_group_with_a_new_episode() {
        let mut g = Group::default();
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 1)]), 2);

        let (did, added) = g.send(
            &webhook(GroupStatus::Resolved, vec![resolved("a1", 1, 10)]),
            11,
        );
        assert_eq!(did.group_became, Some(GroupStatus::Resolved));
        assert_eq!(
            added,
            [
                entry(Some("a1"), EventKind::AlertResolved, 10),
                entry(None, EventKind::GroupResolved, 10),
            ]
        );
        assert_eq!(g.group().status, GroupStatus::Resolved);
        assert_eq!(g.group().resolved_at, Some(t(10)));
        assert_eq!(g.group().started_at, t(1), "a resolve keeps the start");

        let (did, added) = g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 20)]), 21);
        assert_eq!(did, became(GroupStatus::Firing));
        assert_eq!(
            added,
            [
                entry(Some("a1"), EventKind::AlertFiring, 20),
                entry(None, EventKind::GroupFiring, 20),
            ]
        );
        assert_eq!(g.group().started_at, t(20), "the new episode's start");
        assert_eq!(g.group().resolved_at, None);
        assert_eq!(g.group().created_at, t(2), "still the same group");
    }

    #[test]
    fn a_resolve_without_end_times_resolves_now() {
        let mut g = Group::default();
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 1)]), 2);
        let mut late = resolved("a1", 1, 0);
        late.ends_at = None;
        let (_, added) = g.send(&webhook(GroupStatus::Resolved, vec![late]), 9);
        assert_eq!(
            added,
            [
                entry(Some("a1"), EventKind::AlertResolved, 9),
                entry(None, EventKind::GroupResolved, 9),
            ]
        );
    }

    // The webhook is the group's whole state as Alertmanager last saw it: the lifecycle applies
    // it as sent and compares no times across webhooks, so a resolve delivered after a newer
    // firing (a retry, another peer) wins until Alertmanager's next notification.
    #[test]
    fn a_resolve_older_than_the_latest_firing_is_applied_as_sent() {
        let mut g = Group::default();
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 1)]), 2);
        g.send(
            &webhook(GroupStatus::Resolved, vec![resolved("a1", 1, 5)]),
            6,
        );
        g.send(&webhook(GroupStatus::Firing, vec![firing("a1", 10)]), 11);

        let stale = webhook(GroupStatus::Resolved, vec![resolved("a1", 1, 5)]);
        let (did, added) = g.send(&stale, 12);
        assert_eq!(did.group_became, Some(GroupStatus::Resolved));
        assert_eq!(
            added,
            [
                entry(Some("a1"), EventKind::AlertResolved, 5),
                entry(None, EventKind::GroupResolved, 5),
            ]
        );
        assert_eq!(g.alert("a1").starts_at, t(1));
        assert_eq!(g.group().resolved_at, Some(t(5)));
        // The episode's start stays that of the firing it overrode.
        assert_eq!(g.group().started_at, t(10));
    }

    #[test]
    fn a_truncated_webhook_leaves_the_alerts_it_does_not_carry() {
        let mut g = Group::default();
        let all = vec![firing("a1", 1), firing("a2", 2), firing("a3", 3)];
        g.send(&webhook(GroupStatus::Firing, all), 4);

        let mut w = webhook(GroupStatus::Firing, vec![firing("a1", 1)]);
        w.truncated_alerts = 2;
        let (did, added) = g.send(&w, 5);
        assert!(added.is_empty(), "{added:?}");
        assert_eq!(did, became_nothing(), "only the truncated count changed");
        assert_eq!(g.group().truncated_alerts, 2);
        assert!(g.changed_alerts().is_empty());
        for fp in ["a2", "a3"] {
            assert_eq!(g.alert(fp).status, AlertStatus::Firing, "{fp}");
        }
    }

    #[test]
    fn a_group_resolving_resolves_the_alerts_truncated_away() {
        let mut g = Group::default();
        let all = vec![firing("a1", 1), firing("a2", 2), firing("a3", 3)];
        g.send(&webhook(GroupStatus::Firing, all), 4);
        // a3 resolved on its own earlier; it must not be resolved twice.
        let w = webhook(
            GroupStatus::Firing,
            vec![firing("a1", 1), firing("a2", 2), resolved("a3", 3, 5)],
        );
        g.send(&w, 6);

        let mut w = webhook(GroupStatus::Resolved, vec![resolved("a1", 1, 8)]);
        w.truncated_alerts = 2;
        let (did, added) = g.send(&w, 9);
        assert_eq!(did.group_became, Some(GroupStatus::Resolved));
        assert_eq!(
            added,
            [
                entry(Some("a1"), EventKind::AlertResolved, 8),
                entry(Some("a2"), EventKind::AlertResolved, 9),
                entry(None, EventKind::GroupResolved, 8),
            ]
        );
        assert_eq!(g.alert("a2").status, AlertStatus::Resolved);
        assert_eq!(
            g.alert("a2").ends_at,
            Some(t(9)),
            "resolved when we learnt it"
        );
        assert_eq!(g.alert("a2").updated_at, t(9));
        assert_eq!(g.alert("a3").ends_at, Some(t(5)), "untouched");
        assert_eq!(g.changed_alerts(), ["a1", "a2"]);
    }

    // The writer applies a batch's webhooks one after another before writing: a group can be
    // created and resolved before it has a row.
    #[test]
    fn webhooks_of_one_batch_build_on_each_other() {
        let mut g = Group::default();
        let now = t(6);
        let opened = webhook(GroupStatus::Firing, vec![firing("a1", 1)]);
        let closed = webhook(GroupStatus::Resolved, vec![resolved("a1", 1, 5)]);
        let first = apply(&opened, &mut g.state, &mut g.alerts, &mut g.events, &now);
        let second = apply(&closed, &mut g.state, &mut g.alerts, &mut g.events, &now);
        assert_eq!(first.group_became, Some(GroupStatus::Firing));
        assert_eq!(second.group_became, Some(GroupStatus::Resolved));
        assert_eq!(
            g.events,
            [
                entry(None, EventKind::GroupFiring, 1),
                entry(Some("a1"), EventKind::AlertFiring, 1),
                entry(Some("a1"), EventKind::AlertResolved, 5),
                entry(None, EventKind::GroupResolved, 5),
            ]
        );
        assert_eq!(g.changed_alerts(), ["a1"]);
        assert_eq!(g.alert("a1").first_seen_at, now);
    }

    #[test]
    fn a_group_fires_anew_only_after_the_window() {
        let window = chrono::Duration::minutes(30);
        let resolved_at = "2026-11-27T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let at = |minutes| resolved_at + chrono::Duration::minutes(minutes);
        let (firing, resolved) = (GroupStatus::Firing, GroupStatus::Resolved);
        let anew = |status, shown, minutes| {
            fires_anew(status, shown, Some(resolved_at), at(minutes), window)
        };
        assert!(
            !anew(firing, Some(resolved), 10),
            "within: the old card again"
        );
        assert!(
            !anew(firing, Some(resolved), 30),
            "the window's end is within"
        );
        assert!(anew(firing, Some(resolved), 31), "after: a new card");
        assert!(!anew(resolved, Some(resolved), 31), "it must fire");
        assert!(
            !anew(firing, Some(firing), 31),
            "the card never showed it resolved"
        );
        assert!(!anew(firing, None, 31), "no card yet");
        assert!(!fires_anew(firing, Some(resolved), None, at(31), window));
    }
}
