//! When a role is on call: `policy.timezone`, `policy.business_hours` and the `hours` of each
//! role in `roles.toml`.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use chrono_tz::Tz;

/// When a role is on call, as written in `roles.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hours {
    /// `"24/7"`
    Always,
    /// `"business"`: inside `policy.business_hours`.
    Business,
    /// `"weekends"`: on the days outside `policy.business_hours`' days.
    Weekends,
}

impl Hours {
    pub const CHOICES: &'static str = "\"24/7\", \"business\" or \"weekends\"";

    pub fn parse(s: &str) -> Option<Hours> {
        match s {
            "24/7" => Some(Hours::Always),
            "business" => Some(Hours::Business),
            "weekends" => Some(Hours::Weekends),
            _ => None,
        }
    }

    /// As written in `roles.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hours::Always => "24/7",
            Hours::Business => "business",
            Hours::Weekends => "weekends",
        }
    }

    /// For reasons: "on call in business hours".
    pub fn on_call_text(self) -> &'static str {
        match self {
            Hours::Always => "on call 24/7",
            Hours::Business => "on call in business hours",
            Hours::Weekends => "on call at weekends",
        }
    }
}

/// `policy.business_hours`: a daily window on some days of the week, e.g. `09:00-18:00`
/// (Monday to Friday) or `Sun-Thu 08:00-17:00`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessHours {
    /// Indexed by `Weekday::num_days_from_monday`.
    days: [bool; 7],
    /// Minutes since midnight; `start < end <= 24 * 60`.
    start: u32,
    end: u32,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl BusinessHours {
    pub const FORM: &'static str =
        "use HH:MM-HH:MM (Monday to Friday), e.g. 09:00-18:00, or put the days first, e.g. Sun-Thu 08:00-17:00";

    pub fn parse(s: &str) -> Result<BusinessHours, String> {
        let s = s.trim();
        let (days, window) = match s.split_once(' ') {
            Some((d, w)) => (parse_days(d.trim())?, w.trim()),
            None => ([true, true, true, true, true, false, false], s),
        };
        let (a, b) = window
            .split_once('-')
            .ok_or_else(|| format!("{window:?} is not a window HH:MM-HH:MM"))?;
        let start = parse_hhmm(a).ok_or_else(|| format!("{a:?} is not a time HH:MM"))?;
        let end = parse_hhmm(b).ok_or_else(|| format!("{b:?} is not a time HH:MM"))?;
        if start >= end {
            return Err(format!(
                "{window:?} ends before it starts (windows over midnight are not supported)"
            ));
        }
        Ok(BusinessHours { days, start, end })
    }

    pub fn is_business_day(&self, day: Weekday) -> bool {
        self.days[day.num_days_from_monday() as usize]
    }
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours::parse("09:00-18:00").expect("the default parses")
    }
}

impl BusinessHours {
    /// The days outside business days, e.g. `Sat-Sun`.
    pub fn weekend_days(&self) -> String {
        days_text(self.days.map(|d| !d))
    }
}

impl fmt::Display for BusinessHours {
    /// `Mon-Fri 09:00-18:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            days_text(self.days),
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// `Mon-Fri`, `Sun-Thu`, or the days one by one when they are not one run.
fn days_text(days: [bool; 7]) -> String {
    let on: Vec<usize> = (0..7).filter(|&i| days[i]).collect();
    // A run may wrap past Sunday (Sun-Thu): find the day that starts it.
    let start = on
        .iter()
        .copied()
        .find(|&i| !days[(i + 6) % 7])
        .unwrap_or(0);
    let run_len = (0..7).take_while(|k| days[(start + k) % 7]).count();
    if run_len == on.len() && on.len() > 1 {
        format!("{}-{}", DAYS[start], DAYS[(start + run_len - 1) % 7])
    } else if on.is_empty() {
        "no day".into()
    } else {
        on.iter().map(|&i| DAYS[i]).collect::<Vec<_>>().join(",")
    }
}

fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    ((h < 24 && m < 60) || (h == 24 && m == 0)).then_some(h * 60 + m)
}

fn parse_day(s: &str) -> Option<usize> {
    DAYS.iter().position(|d| d.eq_ignore_ascii_case(s))
}

/// `Mon-Fri`, `Sun-Thu` (wrapping), `Sat` or `Mon,Wed,Fri`.
fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let bad = || format!("{s:?} is not a day range such as Mon-Fri or Sun-Thu");
    let mut days = [false; 7];
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?);
                let mut i = a;
                loop {
                    days[i] = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => days[parse_day(part).ok_or_else(bad)?] = true,
        }
    }
    Ok(days)
}

/// An IANA time zone name such as `Europe/Madrid` or `UTC`; an unknown one names the closest.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        let closest = chrono_tz::TZ_VARIANTS
            .iter()
            .map(|tz| (strsim::jaro_winkler(name, tz.name()), tz.name()))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        format!("{name:?} is not an IANA time zone name{closest}: use e.g. Europe/Madrid, America/New_York or UTC")
    })
}

/// Local time in `policy.timezone` and what it means for on-call hours.
#[derive(Debug, Clone)]
pub struct Clock {
    pub tz: Tz,
    pub business: BusinessHours,
}

/// What a moment is, in the team's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    pub business_hours: bool,
    pub weekend: bool,
    /// 0 to 23, local.
    pub hour: u32,
}

impl Clock {
    pub fn moment(&self, at: DateTime<Utc>) -> Moment {
        let local = at.with_timezone(&self.tz);
        let business_day = self.business.is_business_day(local.weekday());
        let minute = local.hour() * 60 + local.minute();
        Moment {
            business_hours: business_day
                && (self.business.start..self.business.end).contains(&minute),
            weekend: !business_day,
            hour: local.hour(),
        }
    }

    pub fn covers(&self, hours: Hours, at: DateTime<Utc>) -> bool {
        let m = self.moment(at);
        match hours {
            Hours::Always => true,
            Hours::Business => m.business_hours,
            Hours::Weekends => m.weekend,
        }
    }

    /// `23:10 Sun Europe/Madrid`, for reasons.
    pub fn describe(&self, at: DateTime<Utc>) -> String {
        let local = at.with_timezone(&self.tz);
        format!(
            "{:02}:{:02} {} {}",
            local.hour(),
            local.minute(),
            DAYS[local.weekday().num_days_from_monday() as usize],
            self.tz.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn clock(tz: &str, hours: &str) -> Clock {
        Clock {
            tz: parse_timezone(tz).unwrap(),
            business: BusinessHours::parse(hours).unwrap(),
        }
    }

    #[test]
    fn business_hours_are_local_to_the_configured_zone() {
        let c = clock("Europe/Madrid", "09:00-18:00");
        // 2026-11-25 is a Wednesday; Madrid is UTC+1 in November.
        assert!(!c.moment(utc("2026-11-25T07:59:00Z")).business_hours);
        assert!(c.moment(utc("2026-11-25T08:00:00Z")).business_hours);
        assert!(c.moment(utc("2026-11-25T16:59:00Z")).business_hours);
        assert!(!c.moment(utc("2026-11-25T17:00:00Z")).business_hours);
        assert_eq!(c.moment(utc("2026-11-25T08:00:00Z")).hour, 9);
        // Saturday night UTC is Sunday morning in Madrid.
        let m = c.moment(utc("2026-11-28T23:30:00Z"));
        assert!(m.weekend && !m.business_hours);
        assert_eq!(
            c.describe(utc("2026-11-29T22:10:00Z")),
            "23:10 Sun Europe/Madrid"
        );
    }

    #[test]
    fn hours_cover_what_the_runbook_says() {
        let c = clock("UTC", "09:00-18:00");
        let wed_day = utc("2026-11-25T10:00:00Z");
        let wed_night = utc("2026-11-25T23:00:00Z");
        let sat_night = utc("2026-11-28T03:00:00Z");
        assert!(c.covers(Hours::Always, wed_night));
        assert!(c.covers(Hours::Business, wed_day));
        assert!(!c.covers(Hours::Business, wed_night));
        assert!(!c.covers(Hours::Business, sat_night));
        assert!(c.covers(Hours::Weekends, sat_night));
        assert!(!c.covers(Hours::Weekends, wed_day));
    }

    #[test]
    fn other_work_weeks_and_their_weekends() {
        let c = clock("Asia/Jerusalem", "Sun-Thu 08:00-17:00");
        assert_eq!(c.business.to_string(), "Sun-Thu 08:00-17:00");
        // Friday is a weekend day there, Sunday a working day.
        assert!(c.moment(utc("2026-11-27T10:00:00Z")).weekend);
        assert!(c.moment(utc("2026-11-29T08:00:00Z")).business_hours);
        assert_eq!(BusinessHours::default().to_string(), "Mon-Fri 09:00-18:00");
        assert_eq!(BusinessHours::default().weekend_days(), "Sat-Sun");
        assert_eq!(c.business.weekend_days(), "Fri-Sat");
        assert_eq!(
            BusinessHours::parse("Mon,Wed 10:00-24:00")
                .unwrap()
                .to_string(),
            "Mon,Wed 10:00-24:00"
        );
    }

    #[test]
    fn malformed_hours_and_zones_are_refused() {
        for bad in [
            "9-18",
            "09:00",
            "18:00-09:00",
            "09:00-25:00",
            "Mon-Fry 09:00-18:00",
            "9:00-18:00",
        ] {
            assert!(BusinessHours::parse(bad).is_err(), "{bad}");
        }
        let err = parse_timezone("Europe/Madird").unwrap_err();
        assert!(err.contains("did you mean Europe/Madrid"), "{err}");
        assert!(parse_timezone("UTC").is_ok());
    }
}
