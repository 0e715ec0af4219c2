//! `policies/oncall.toml`: who takes turns holding each role, and who is on duty at a moment,
//! overrides (taken shifts, kept in the store) included. Pure: the caller passes the moment and
//! the overrides.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as Span, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use super::located::{self, choices, Problems};
use super::people::People;
use super::roles::{Role, Roles};
use super::Policies;

/// How long each turn lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Whole local calendar days (`1d`, `1w`): a turn starting at 09:00 starts at 09:00 on
    /// both sides of a daylight-saving change.
    Days(u32),
    /// Absolute time (`12h`, `30m`): the same number of seconds whatever the clocks do.
    Fixed(Span),
}

impl std::fmt::Display for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Turn::Days(n) if n % 7 == 0 => write!(f, "{}w", n / 7),
            Turn::Days(n) => write!(f, "{n}d"),
            Turn::Fixed(s) if s.num_seconds() % 3600 == 0 => write!(f, "{}h", s.num_hours()),
            Turn::Fixed(s) if s.num_seconds() % 60 == 0 => write!(f, "{}m", s.num_minutes()),
            Turn::Fixed(s) => write!(f, "{}s", s.num_seconds()),
        }
    }
}

/// `[rotations.ROLE]`: the role's people take turns, `people[0]` first from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub role: String,
    /// Person ids, in turn order.
    pub people: Vec<String>,
    pub turn: Turn,
    /// When `people[0]`'s first turn begins.
    pub start: DateTime<Utc>,
    /// `start` on the wall clock of `policy.timezone`: day turns count from it.
    start_local: NaiveDateTime,
    tz: Tz,
}

impl Rotation {
    /// When turn `k` begins (turn 0 at `start`).
    pub fn boundary(&self, k: i64) -> DateTime<Utc> {
        match self.turn {
            Turn::Fixed(span) => self.start + Span::seconds(span.num_seconds() * k),
            Turn::Days(n) => {
                resolve_local(self.tz, self.start_local + Span::days(i64::from(n) * k))
            }
        }
    }

    /// The turn running at `at`; None before the rotation starts.
    pub fn turn_at(&self, at: DateTime<Utc>) -> Option<i64> {
        if at < self.start {
            return None;
        }
        let mut k = match self.turn {
            Turn::Fixed(span) => (at - self.start).num_seconds() / span.num_seconds().max(1),
            Turn::Days(n) => {
                let local = at.with_timezone(&self.tz).naive_local();
                (local - self.start_local).num_days() / i64::from(n)
            }
        };
        // The estimate is off by at most one turn around a clock change.
        while self.boundary(k + 1) <= at {
            k += 1;
        }
        while k > 0 && self.boundary(k) > at {
            k -= 1;
        }
        Some(k)
    }

    /// The person on turn `k`.
    pub fn person(&self, k: i64) -> &str {
        &self.people[k.rem_euclid(self.people.len() as i64) as usize]
    }
}

/// A local wall-clock time in `tz` as an instant: the earlier of a repeated hour, and past the
/// gap of a skipped one (02:30 on the spring-forward night is 03:30).
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    use chrono::Offset;
    if let Some(at) = tz.from_local_datetime(&local).earliest() {
        return at.with_timezone(&Utc);
    }
    // In a gap: read the wall clock with the offset in force before it, which moves the time
    // forward by the gap's length.
    let before = tz
        .from_local_datetime(&(local - Span::hours(3)))
        .earliest()
        .map_or(0, |t| t.offset().fix().local_minus_utc());
    (local - Span::seconds(i64::from(before))).and_utc()
}

/// A time as people write it: RFC 3339 (`2026-12-07T09:00:00Z`, `…+01:00`), or local to `tz`
/// without an offset (`2026-12-07T09:00` or `2026-12-07T09:00:00`).
pub fn parse_time(text: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for form in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(local) = NaiveDateTime::parse_from_str(text, form) {
            return Ok(resolve_local(tz, local));
        }
    }
    Err(format!(
        "{text:?} is not a time: use 2026-12-07T09:00 (in {}) or RFC 3339 such as 2026-12-07T09:00:00Z",
        tz.name()
    ))
}

/// `30s`, `10m`, `12h`, `1d`, `1w` as seconds and the unit; a clear sentence otherwise.
pub(crate) fn parse_length(text: &str) -> Result<(u64, char), String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "{text:?} is negative: use a length such as \"10m\""
        ));
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let bad = || {
        format!("{text:?} is not a length: use a number and s, m, h, d or w, e.g. \"10m\", \"12h\", \"1w\"")
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let (per, unit) = match unit {
        "s" => (1, 's'),
        "m" => (60, 'm'),
        "h" => (3600, 'h'),
        "d" => (86_400, 'd'),
        "w" => (7 * 86_400, 'w'),
        "" if n == 0 => (1, 's'),
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(per)
        .filter(|s| *s <= 366 * 86_400)
        .ok_or_else(|| format!("{text:?} is longer than a year"))?;
    Ok((secs, unit))
}

/// A shift someone took (`/oncall override`), as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub role: String,
    /// A person id of people.toml.
    pub person: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Override {
    fn covers(&self, role: &str, at: DateTime<Utc>) -> bool {
        self.role == role && self.from <= at && at < self.until
    }
}

/// Why these people are on duty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DutySource {
    /// Their turn in the role's rotation.
    Rotation,
    /// Someone took the shift.
    Override,
    /// No rotation (or not started yet): everyone the role lists.
    Holders,
}

impl DutySource {
    pub fn as_str(self) -> &'static str {
        match self {
            DutySource::Rotation => "rotation",
            DutySource::Override => "override",
            DutySource::Holders => "holders",
        }
    }
}

/// Who is on duty for a role at a moment, and who comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnDuty {
    pub role: String,
    /// Person ids on duty (empty: the role lists nobody in people.toml, only platform ids).
    pub people: Vec<String>,
    pub source: DutySource,
    /// Whether the role's `hours` cover the moment.
    pub in_hours: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Who takes over at `until`, and when.
    pub next: Option<(Vec<String>, DateTime<Utc>)>,
}

/// Every rotation, by role.
#[derive(Debug, Clone, Default)]
pub struct Rotations {
    rotations: Vec<Rotation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OncallFile {
    #[serde(default)]
    rotations: BTreeMap<Spanned<String>, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    people: Spanned<Vec<Spanned<String>>>,
    turn: Spanned<String>,
    start: Spanned<String>,
}

impl Rotations {
    /// Parses the file against the roles and people already loaded; `tz` is `policy.timezone`.
    pub fn parse(
        file: &str,
        text: &str,
        roles: &Roles,
        people: &People,
        tz: Tz,
    ) -> anyhow::Result<Rotations> {
        let parsed: OncallFile = located::parse(file, text)?;
        let mut problems = Problems::new(file, text);
        let mut rotations = Vec::new();
        for (role, e) in parsed.rotations {
            let key_span = role.span();
            let role = role.into_inner();
            let Some(known) = roles.get(&role) else {
                problems.at(
                    key_span,
                    format!(
                        "rotations.{role}: unknown role {role:?}: use one of roles.toml's roles: {}",
                        choices(roles.names())
                    ),
                );
                continue;
            };
            let list_span = e.people.span();
            let list = e.people.into_inner();
            if list.is_empty() {
                problems.at(
                    list_span,
                    format!("rotations.{role}.people: a rotation needs people: list who takes turns, e.g. people = [\"ana\", \"luis\"]"),
                );
            }
            let mut ids: Vec<String> = Vec::new();
            for id in list {
                let (span, id) = (id.span(), id.into_inner());
                if people.get(&id).is_none() {
                    problems.at(
                        span,
                        format!(
                            "rotations.{role}.people: unknown person {id:?}: add [people.{id}] to people.toml, or use one of: {}",
                            choices(people.ids())
                        ),
                    );
                } else if ids.contains(&id) {
                    problems.at(span, format!("rotations.{role}.people: {id:?} is listed twice: a person takes one turn per round"));
                } else if !known.people.is_empty() && !known.people.contains(&id) {
                    problems.at(
                        span,
                        format!("rotations.{role}.people: {id:?} does not hold {role}: add them to people of [roles.{role}] in roles.toml"),
                    );
                }
                ids.push(id);
            }
            let turn = match parse_length(e.turn.get_ref()) {
                Ok((0, _)) => Err(format!(
                    "{:?} is no time at all: use e.g. \"1w\"",
                    e.turn.get_ref()
                )),
                Ok((n, 'd' | 'w')) => Ok(Turn::Days((n / 86_400) as u32)),
                Ok((n, _)) => Ok(Turn::Fixed(Span::seconds(n as i64))),
                Err(e) => Err(e),
            };
            let turn = match turn {
                Ok(t) => t,
                Err(why) => {
                    problems.at(e.turn.span(), format!("rotations.{role}.turn: {why}"));
                    continue;
                }
            };
            let start = match parse_time(e.start.get_ref(), tz) {
                Ok(t) => t,
                Err(why) => {
                    problems.at(e.start.span(), format!("rotations.{role}.start: {why}"));
                    continue;
                }
            };
            if ids.is_empty() {
                continue;
            }
            rotations.push(Rotation {
                role,
                people: ids,
                turn,
                start,
                start_local: start.with_timezone(&tz).naive_local(),
                tz,
            });
        }
        problems.finish()?;
        Ok(Rotations { rotations })
    }

    pub fn get(&self, role: &str) -> Option<&Rotation> {
        self.rotations.iter().find(|r| r.role == role)
    }

    /// Every rotation, sorted by role.
    pub fn iter(&self) -> impl Iterator<Item = &Rotation> {
        self.rotations.iter()
    }

    pub fn len(&self) -> usize {
        self.rotations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rotations.is_empty()
    }
}

/// Who the files alone put on duty: (people, source, since, until).
type Scheduled = (
    Vec<String>,
    DutySource,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

impl Policies {
    /// Every rotation of `oncall.toml`.
    pub fn rotations(&self) -> &Rotations {
        &self.inner().rotations
    }

    fn scheduled(&self, role: &Role, at: DateTime<Utc>) -> Scheduled {
        let holders = || role.people.clone();
        let Some(rotation) = self.rotations().get(&role.name) else {
            return (holders(), DutySource::Holders, None, None);
        };
        match rotation.turn_at(at) {
            None => (holders(), DutySource::Holders, None, Some(rotation.start)),
            Some(k) => {
                let person = vec![rotation.person(k).to_string()];
                // One person's rotation never hands over.
                let until = (rotation.people.len() > 1).then(|| rotation.boundary(k + 1));
                (
                    person,
                    DutySource::Rotation,
                    Some(rotation.boundary(k)),
                    until,
                )
            }
        }
    }

    /// Who is on duty for `role` at `at` (None: no such role). The override covering `at`
    /// with the latest `from` wins over the rotation; without a rotation, everyone the role
    /// lists in `people` is on duty.
    pub fn on_duty(&self, role: &str, at: DateTime<Utc>, overrides: &[Override]) -> Option<OnDuty> {
        let role = self.roles().get(role)?;
        let in_hours = self.clock().covers(role.hours, at);
        let (people, source, since, until) = self.duty_at(role, at, overrides);
        // An override starting before the turn ends cuts it short.
        let upcoming = overrides
            .iter()
            .filter(|o| o.role == role.name && o.from > at && o.until > o.from)
            .map(|o| o.from)
            .min();
        let until = match (until, upcoming) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let next = until.map(|u| (self.duty_at(role, u, overrides).0, u));
        Some(OnDuty {
            role: role.name.clone(),
            people,
            source,
            in_hours,
            since,
            until,
            next,
        })
    }

    fn duty_at(&self, role: &Role, at: DateTime<Utc>, overrides: &[Override]) -> Scheduled {
        let taken = overrides
            .iter()
            .filter(|o| o.covers(&role.name, at))
            .max_by_key(|o| o.from);
        match taken {
            Some(o) => (
                vec![o.person.clone()],
                DutySource::Override,
                Some(o.from),
                Some(o.until),
            ),
            None => self.scheduled(role, at),
        }
    }

    /// The next moment after `at` when the people on duty for `role` change (a rotation's
    /// turn, an override's start or end); None when nothing ever changes or no such role.
    pub fn next_handoff(
        &self,
        role: &str,
        at: DateTime<Utc>,
        overrides: &[Override],
    ) -> Option<DateTime<Utc>> {
        let now = self.on_duty(role, at, overrides)?;
        let mut t = at;
        // Skip boundaries where the same people stay on (an override by the person on turn);
        // bounded, since each step moves strictly forward.
        for _ in 0..64 {
            let duty = self.on_duty(role, t, overrides)?;
            let (next, when) = duty.next?;
            if next != now.people {
                return Some(when);
            }
            t = when;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::Commands;
    use crate::domain::hours::{parse_timezone, BusinessHours, Clock};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The shipped roles and people, with this oncall.toml, in `tz`.
    fn policies(tz: &str, oncall: &str) -> Policies {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("roles.toml", super::super::EMBEDDED_ROLES),
            ("people.toml", super::super::EMBEDDED_PEOPLE),
            ("escalation.toml", super::super::EMBEDDED_ESCALATION),
            ("runbot.cedarschema", super::super::EMBEDDED_SCHEMA),
            ("runbot.cedar", super::super::EMBEDDED_POLICIES),
            ("oncall.toml", oncall),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let clock = Clock {
            tz: parse_timezone(tz).unwrap(),
            business: BusinessHours::default(),
        };
        Policies::load_from(Some(dir.path()), &clock, &Commands::load(None).unwrap()).unwrap()
    }

    const WEEKLY: &str = "[rotations.devops-lead]\npeople = [\"ana\", \"luis\"]\nturn = \"1w\"\nstart = \"2026-12-07T09:00:00\"\n";

    #[test]
    fn turns_change_at_the_boundary_and_not_before() {
        let p = policies("UTC", WEEKLY);
        let d = p
            .on_duty("devops-lead", utc("2026-12-14T08:59:59Z"), &[])
            .unwrap();
        assert_eq!(d.people, ["ana"]);
        assert_eq!(d.source, DutySource::Rotation);
        assert_eq!(d.since, Some(utc("2026-12-07T09:00:00Z")));
        assert_eq!(d.until, Some(utc("2026-12-14T09:00:00Z")));
        assert_eq!(
            d.next,
            Some((vec!["luis".into()], utc("2026-12-14T09:00:00Z")))
        );
        assert!(d.in_hours);
        let d = p
            .on_duty("devops-lead", utc("2026-12-14T09:00:00Z"), &[])
            .unwrap();
        assert_eq!(d.people, ["luis"]);
        // Round and round: the third week is Ana's again.
        let d = p
            .on_duty("devops-lead", utc("2026-12-21T09:00:00Z"), &[])
            .unwrap();
        assert_eq!(d.people, ["ana"]);
        assert_eq!(
            p.next_handoff("devops-lead", utc("2026-12-08T00:00:00Z"), &[]),
            Some(utc("2026-12-14T09:00:00Z"))
        );
        assert!(p
            .on_duty("nobody", utc("2026-12-08T00:00:00Z"), &[])
            .is_none());
    }

    #[test]
    fn before_its_start_a_rotation_leaves_the_role_to_its_holders() {
        let p = policies("UTC", WEEKLY);
        let d = p
            .on_duty("devops-lead", utc("2026-12-01T00:00:00Z"), &[])
            .unwrap();
        assert_eq!(d.source, DutySource::Holders);
        assert_eq!(d.people, ["ana", "luis"]);
        assert_eq!(d.until, Some(utc("2026-12-07T09:00:00Z")));
        assert_eq!(
            d.next,
            Some((vec!["ana".into()], utc("2026-12-07T09:00:00Z")))
        );
        // A role without a rotation: its people, for good.
        let d = p.on_duty("cto", utc("2026-12-01T00:00:00Z"), &[]).unwrap();
        assert_eq!(
            (d.people, d.source, d.until, d.next),
            (vec!["marta".to_string()], DutySource::Holders, None, None)
        );
    }

    #[test]
    fn day_turns_keep_the_local_hour_across_daylight_saving() {
        // Madrid leaves summer time on 2026-10-25 (03:00 CEST → 02:00 CET).
        let p = policies(
            "Europe/Madrid",
            "[rotations.devops-lead]\npeople = [\"ana\", \"luis\"]\nturn = \"1d\"\nstart = \"2026-10-23T09:00\"\n",
        );
        // 09:00 CEST is 07:00 UTC; after the change 09:00 CET is 08:00 UTC.
        let r = p.rotations().get("devops-lead").unwrap();
        assert_eq!(r.boundary(0), utc("2026-10-23T07:00:00Z"));
        assert_eq!(r.boundary(2), utc("2026-10-25T08:00:00Z"));
        assert_eq!(r.boundary(3), utc("2026-10-26T08:00:00Z"));
        let d = p
            .on_duty("devops-lead", utc("2026-10-25T07:30:00Z"), &[])
            .unwrap();
        assert_eq!(d.people, ["luis"], "still the 24th's turn at 08:30 local");
        assert_eq!(d.until, Some(utc("2026-10-25T08:00:00Z")));
        let d = p
            .on_duty("devops-lead", utc("2026-10-25T08:00:00Z"), &[])
            .unwrap();
        assert_eq!(d.people, ["ana"]);
        // Hour turns are absolute time: 12h after 09:00 CEST on the 24th is 20:00 CET.
        let p = policies(
            "Europe/Madrid",
            "[rotations.devops-lead]\npeople = [\"ana\", \"luis\"]\nturn = \"12h\"\nstart = \"2026-10-24T21:00:00+02:00\"\n",
        );
        let r = p.rotations().get("devops-lead").unwrap();
        assert_eq!(r.boundary(1), utc("2026-10-25T07:00:00Z"));
    }

    #[test]
    fn an_override_wins_and_the_rotation_resumes_after_it() {
        let p = policies("UTC", WEEKLY);
        let taken = Override {
            role: "devops-lead".into(),
            person: "marta".into(),
            from: utc("2026-12-08T20:00:00Z"),
            until: utc("2026-12-09T04:00:00Z"),
        };
        let later = Override {
            person: "luis".into(),
            from: utc("2026-12-08T22:00:00Z"),
            until: utc("2026-12-08T23:00:00Z"),
            ..taken.clone()
        };
        let all = [taken.clone(), later.clone()];
        let d = p
            .on_duty("devops-lead", utc("2026-12-08T21:00:00Z"), &all)
            .unwrap();
        assert_eq!(
            (d.people.clone(), d.source),
            (vec!["marta".to_string()], DutySource::Override)
        );
        // Cut short by the later override, which in turn hands back to Marta.
        assert_eq!(d.until, Some(later.from));
        let d = p
            .on_duty("devops-lead", utc("2026-12-08T22:30:00Z"), &all)
            .unwrap();
        assert_eq!(d.people, ["luis"]);
        assert_eq!(d.next, Some((vec!["marta".into()], later.until)));
        let d = p
            .on_duty("devops-lead", utc("2026-12-08T23:30:00Z"), &all)
            .unwrap();
        assert_eq!(d.next, Some((vec!["ana".into()], taken.until)));
        // Before it, Ana's turn ends early: at the override's start.
        let d = p
            .on_duty("devops-lead", utc("2026-12-08T10:00:00Z"), &all)
            .unwrap();
        assert_eq!(d.people, ["ana"]);
        assert_eq!(d.next, Some((vec!["marta".into()], taken.from)));
        // The end is exclusive; another role's override changes nothing.
        let d = p.on_duty("devops-lead", taken.until, &all).unwrap();
        assert_eq!(d.source, DutySource::Rotation);
        let other = Override {
            role: "cto".into(),
            ..taken
        };
        let d = p
            .on_duty("devops-lead", utc("2026-12-08T21:00:00Z"), &[other])
            .unwrap();
        assert_eq!(d.people, ["ana"]);
    }

    #[test]
    fn times_are_local_unless_they_carry_an_offset() {
        let tz = parse_timezone("Europe/Madrid").unwrap();
        assert_eq!(
            parse_time("2026-12-07T09:00", tz).unwrap(),
            utc("2026-12-07T08:00:00Z")
        );
        assert_eq!(
            parse_time("2026-12-07T09:00:00Z", tz).unwrap(),
            utc("2026-12-07T09:00:00Z")
        );
        // 02:30 does not exist on 2026-03-29 in Madrid: taken as 03:30 CEST.
        assert_eq!(
            parse_time("2026-03-29T02:30", tz).unwrap(),
            utc("2026-03-29T01:30:00Z")
        );
        assert!(parse_time("next monday", tz)
            .unwrap_err()
            .contains("Europe/Madrid"));
    }

    #[test]
    fn lengths_parse_or_say_why() {
        assert_eq!(parse_length("1w"), Ok((604_800, 'w')));
        assert_eq!(parse_length("12h"), Ok((43_200, 'h')));
        assert_eq!(parse_length("0"), Ok((0, 's')));
        assert!(parse_length("-5m").unwrap_err().contains("negative"));
        assert!(parse_length("5 minutes")
            .unwrap_err()
            .contains("not a length"));
        assert!(parse_length("400d").unwrap_err().contains("year"));
    }
}
