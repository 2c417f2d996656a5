//! Maintenance windows for `kordon roll --window "Mon-Fri 02:00-05:00 Europe/Berlin"`,
//! optionally with dates on which they do not open: `... except 2026-12-24..2027-01-01`.
//!
//! A window is a weekly schedule in a civil time zone. Civil times are turned into
//! instants per occurrence, so DST shifts move the window with the wall clock; times
//! that fall in a gap or fold use jiff's compatible disambiguation (as RFC 5545 does).

use std::{fmt, str::FromStr};

use jiff::{
    Timestamp,
    civil::{Date, Time, Weekday},
    tz::TimeZone,
};

const EXAMPLE: &str = "\"Mon-Fri 02:00-05:00 Europe/Berlin\"";
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why a `--window` value was rejected; each message names the bad part and the window.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error("invalid window {window:?}: expected DAYS START-END [TZ], e.g. {EXAMPLE}")]
    Shape { window: String },
    #[error("invalid window {window:?}: times must be HH:MM or HH:MM:SS, e.g. {EXAMPLE}")]
    Time { window: String },
    #[error(
        "unknown day {day:?} in window {window:?}: use Mon Tue Wed Thu Fri Sat Sun, ranges like Mon-Fri, or *, e.g. {EXAMPLE}"
    )]
    Day { day: String, window: String },
    #[error("unknown time zone {zone:?} in window {window:?}: use an IANA name, e.g. {EXAMPLE}")]
    Zone { zone: String, window: String },
    #[error("window {window:?} can never open: it starts and ends at the same time")]
    NeverOpens { window: String },
    #[error(
        "invalid excluded date {date:?} in window {window:?}: use YYYY-MM-DD or a range YYYY-MM-DD..YYYY-MM-DD, e.g. \"Mon-Fri 02:00-05:00 Europe/Berlin except 2026-12-24..2027-01-01\""
    )]
    Except { date: String, window: String },
}

/// A weekly maintenance window; the days name the day on which each occurrence opens.
#[derive(Debug, Clone)]
pub struct Window {
    text: String,
    /// Indexed by Monday-zero weekday offset.
    days: [bool; 7],
    start: Time,
    end: Time,
    /// The close falls on the day after the opening (END < START, or `24:00`).
    ends_next_day: bool,
    tz: TimeZone,
    /// Dates (in the window's zone, inclusive ranges) on which no occurrence opens:
    /// holidays, change freezes.
    except: Vec<(Date, Date)>,
}

/// Whether new nodes may start now, across all configured windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// At least one window is open; `closes` is the latest close among them.
    Open { closes: Timestamp },
    /// No window is open; `opens` is the earliest next opening.
    Closed { opens: Timestamp },
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let window = || text.to_string();
        let (schedule, except) = match text.split_once(" except ") {
            Some((schedule, dates)) => (schedule, parse_except(dates.trim(), text)?),
            None => (text, Vec::new()),
        };
        let tokens: Vec<&str> = schedule.split_whitespace().collect();
        let (days, range, zone) = match tokens[..] {
            [d, r] => (d, r, "UTC"),
            [d, r, z] => (d, r, z),
            _ => return Err(WindowError::Shape { window: window() }),
        };
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| WindowError::Time { window: window() })?;
        let (start, start_24) =
            parse_time(start).ok_or_else(|| WindowError::Time { window: window() })?;
        let (end, end_24) =
            parse_time(end).ok_or_else(|| WindowError::Time { window: window() })?;
        if start_24 {
            return Err(WindowError::Time { window: window() });
        }
        if start == end && !end_24 {
            return Err(WindowError::NeverOpens { window: window() });
        }
        let tz = TimeZone::get(zone).map_err(|_| WindowError::Zone {
            zone: zone.to_string(),
            window: window(),
        })?;
        Ok(Window {
            days: parse_days(days).map_err(|day| WindowError::Day {
                day,
                window: window(),
            })?,
            ends_next_day: end_24 || end < start,
            start,
            end,
            tz,
            except,
            text: window(),
        })
    }
}

/// Parses `2026-12-24,2026-12-31..2027-01-01`.
fn parse_except(dates: &str, window: &str) -> Result<Vec<(Date, Date)>, WindowError> {
    dates
        .split(',')
        .map(|item| {
            let item = item.trim();
            let bad = || WindowError::Except {
                date: item.to_string(),
                window: window.to_string(),
            };
            let (first, last) = item.split_once("..").unwrap_or((item, item));
            let first: Date = first.trim().parse().map_err(|_| bad())?;
            let last: Date = last.trim().parse().map_err(|_| bad())?;
            if last < first {
                return Err(bad());
            }
            Ok((first, last))
        })
        .collect()
}

/// Parses `HH:MM` or `HH:MM:SS`; the flag is set for `24:00[:00]` (returned as midnight).
fn parse_time(s: &str) -> Option<(Time, bool)> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let n: Vec<i8> = parts
        .iter()
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if (h, m, sec) == (24, 0, 0) {
        return Some((Time::midnight(), true));
    }
    Time::new(h, m, sec, 0).ok().map(|t| (t, false))
}

/// Parses `Mon-Fri,Sun`, `*` or `daily`; the error is the offending day name.
fn parse_days(s: &str) -> Result<[bool; 7], String> {
    let day = |d: &str| {
        let lower = d.to_ascii_lowercase();
        DAYS.iter()
            .position(|n| *n == lower)
            .ok_or_else(|| d.to_string())
    };
    let mut set = [false; 7];
    for item in s.split(',') {
        if item == "*" || item.eq_ignore_ascii_case("daily") {
            set = [true; 7];
            continue;
        }
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(item)?, day(item)?),
        };
        // Ranges wrap around the week: Fri-Mon is Fri, Sat, Sun, Mon.
        for i in 0..=(last + 7 - first) % 7 {
            set[(first + i) % 7] = true;
        }
    }
    Ok(set)
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// True when `now` is inside the window.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.next(now)
            .is_some_and(|(opens, closes)| opens <= now && now < closes)
    }

    /// The window's current or next interval `(opens, closes)`, with `opens <= now < closes`
    /// when open now. Back-to-back occurrences (e.g. `Mon-Fri 00:00-24:00`) are merged so
    /// the caller sees one stretch; for an always-open window `closes` is about two weeks out.
    pub fn next(&self, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let today = self.tz.to_datetime(now).date();
        // Start yesterday: an occurrence that crossed midnight may still be open. Scan two
        // weeks: a DST gap can empty this week's only occurrence.
        let mut date = today.yesterday().unwrap_or(today);
        let mut found: Option<(Timestamp, Timestamp)> = None;
        // Past the excluded days too, so that a freeze longer than two weeks still finds
        // the opening after it.
        let excluded: i64 = self
            .except
            .iter()
            .filter(|(_, last)| *last >= today)
            .map(|(first, last)| i64::from((*last - *first).get_days()))
            .sum::<i64>()
            + 1;
        for _ in 0..16 + excluded.min(800) {
            if let Some((opens, closes)) = self.occurrence(date).filter(|&(_, c)| c > now) {
                match found {
                    None => found = Some((opens, closes)),
                    Some((o, c)) if opens <= c => found = Some((o, c.max(closes))),
                    Some(_) => break,
                }
            }
            let Ok(tomorrow) = date.tomorrow() else { break };
            date = tomorrow;
        }
        found
    }

    /// The occurrence opening on `date`, if the window runs that weekday and is non-empty
    /// (a DST gap can swallow a short window).
    fn occurrence(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days[weekday_index(date.weekday())]
            || self.except.iter().any(|(f, l)| *f <= date && date <= *l)
        {
            return None;
        }
        let opens = self.tz.to_timestamp(date.to_datetime(self.start)).ok()?;
        let close_date = if self.ends_next_day {
            date.tomorrow().ok()?
        } else {
            date
        };
        let closes = self
            .tz
            .to_timestamp(close_date.to_datetime(self.end))
            .ok()?;
        (opens < closes).then_some((opens, closes))
    }
}

fn weekday_index(w: Weekday) -> usize {
    usize::try_from(w.to_monday_zero_offset()).unwrap_or(0)
}

/// Whether the fleet may start a node now; `None` for an empty slice (no windows means
/// no restriction, which callers decide themselves).
pub fn availability(windows: &[Window], now: Timestamp) -> Option<Availability> {
    let intervals: Vec<_> = windows.iter().filter_map(|w| w.next(now)).collect();
    let open = intervals
        .iter()
        .filter(|(o, c)| *o <= now && now < *c)
        .map(|&(_, c)| c)
        .max();
    match open {
        Some(closes) => Some(Availability::Open { closes }),
        None => intervals
            .iter()
            .map(|&(o, _)| o)
            .min()
            .map(|opens| Availability::Closed { opens }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn days(s: &str) -> String {
        let win = w(&format!("{s} 01:00-02:00"));
        DAYS.iter()
            .zip(win.days)
            .filter(|(_, on)| *on)
            .map(|(d, _)| *d)
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn parses_the_issue_example() {
        let win = w("  Mon-Fri 02:00-05:00 Europe/Berlin ");
        assert_eq!(win.to_string(), "Mon-Fri 02:00-05:00 Europe/Berlin");
        assert_eq!(win.tz.iana_name(), Some("Europe/Berlin"));
        assert!(!win.ends_next_day);
    }

    #[test]
    fn day_ranges_lists_wraps_and_wildcards() {
        assert_eq!(days("Mon-Fri"), "mon,tue,wed,thu,fri");
        assert_eq!(days("Sat,Sun"), "sat,sun");
        assert_eq!(days("Mon-Wed,Fri"), "mon,tue,wed,fri");
        assert_eq!(days("Fri-Mon"), "mon,fri,sat,sun");
        assert_eq!(days("*"), "mon,tue,wed,thu,fri,sat,sun");
        assert_eq!(days("Daily"), "mon,tue,wed,thu,fri,sat,sun");
        assert_eq!(days("mON-tue"), "mon,tue");
    }

    #[test]
    fn seconds_midnight_end_and_default_utc() {
        let win = w("Sun 01:02:03-04:05:06");
        assert_eq!(
            (win.start, win.end),
            (Time::constant(1, 2, 3, 0), Time::constant(4, 5, 6, 0))
        );
        assert_eq!(win.tz.iana_name(), Some("UTC"));
        let whole = w("Sun 00:00-24:00");
        // 2026-11-29 is a Sunday.
        assert_eq!(
            whole.next(ts("2026-11-29T12:00:00Z")),
            Some((ts("2026-11-29T00:00:00Z"), ts("2026-11-30T00:00:00Z")))
        );
    }

    #[test]
    fn berlin_weekday_window_open_and_closed() {
        let win = w("Mon-Fri 02:00-05:00 Europe/Berlin");
        // Tuesday 2026-11-24; Berlin is UTC+1, so the window is 01:00-04:00 UTC.
        assert!(win.is_open(ts("2026-11-24T01:30:00Z")));
        assert!(!win.is_open(ts("2026-11-24T04:30:00Z")));
        assert!(!win.is_open(ts("2026-11-24T00:59:59Z")));
    }

    #[test]
    fn crossing_midnight_belongs_to_the_opening_day() {
        let win = w("Fri 22:00-02:00");
        assert!(win.is_open(ts("2026-11-28T01:00:00Z"))); // Saturday
        assert!(!win.is_open(ts("2026-11-28T03:00:00Z")));
        assert!(!win.is_open(ts("2026-11-29T01:00:00Z"))); // Sunday is not after a Friday
        assert_eq!(
            win.next(ts("2026-11-28T01:00:00Z")),
            Some((ts("2026-11-27T22:00:00Z"), ts("2026-11-28T02:00:00Z")))
        );
    }

    #[test]
    fn next_opening_from_a_closed_weekend() {
        let win = w("Mon-Fri 02:00-05:00 Europe/Berlin");
        let next = win.next(ts("2026-11-28T12:00:00Z"));
        assert_eq!(
            next,
            Some((ts("2026-11-30T01:00:00Z"), ts("2026-11-30T04:00:00Z")))
        );
    }

    #[test]
    fn back_to_back_days_merge() {
        let win = w("Mon-Fri 00:00-24:00");
        assert_eq!(
            win.next(ts("2026-11-24T12:00:00Z")),
            Some((ts("2026-11-24T00:00:00Z"), ts("2026-11-28T00:00:00Z")))
        );
    }

    #[test]
    fn spring_forward_gives_a_shorter_window() {
        // 2026-03-29: Berlin clocks jump 02:00 CET -> 03:00 CEST; 02:00 maps to 03:00 CEST.
        let win = w("Sun 02:00-04:00 Europe/Berlin");
        let expected = (ts("2026-03-29T01:00:00Z"), ts("2026-03-29T02:00:00Z"));
        assert_eq!(win.next(ts("2026-03-28T12:00:00Z")), Some(expected));
        assert!(win.is_open(ts("2026-03-29T01:30:00Z")));
        // 02:30 and 03:30 both map to 03:30 CEST: empty that day, so it moves a week on.
        let gone = w("Sun 02:30-03:30 Europe/Berlin");
        assert_eq!(
            gone.next(ts("2026-03-28T12:00:00Z")).map(|(o, _)| o),
            Some(ts("2026-04-05T00:30:00Z"))
        );
    }

    #[test]
    fn errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<Window>().unwrap_err().to_string();
        assert_eq!(
            err("Mon-Fri 2-5"),
            r#"invalid window "Mon-Fri 2-5": times must be HH:MM or HH:MM:SS, e.g. "Mon-Fri 02:00-05:00 Europe/Berlin""#
        );
        assert_eq!(
            err("Mon 03:00-03:00 UTC"),
            r#"window "Mon 03:00-03:00 UTC" can never open: it starts and ends at the same time"#
        );
        assert_eq!(
            err("Mon 01:00-02:00 Mars/Olympus"),
            r#"unknown time zone "Mars/Olympus" in window "Mon 01:00-02:00 Mars/Olympus": use an IANA name, e.g. "Mon-Fri 02:00-05:00 Europe/Berlin""#
        );
        assert!(
            err("Mun-Fri 01:00-02:00")
                .starts_with(r#"unknown day "Mun" in window "Mun-Fri 01:00-02:00": "#)
        );
        assert!(err("Mon").starts_with(r#"invalid window "Mon": expected DAYS START-END [TZ]"#));
        for bad in [
            "Mon 24:00-01:00",
            "Mon 01:00",
            "Mon 25:00-26:00",
            "Mon 01:60-02:00",
            "Mon 1:00-02:00",
        ] {
            assert_eq!(
                bad.parse::<Window>().unwrap_err(),
                WindowError::Time { window: bad.into() }
            );
        }
    }

    #[test]
    fn availability_across_windows() {
        let night = w("Mon-Fri 02:00-05:00 Europe/Berlin"); // 01:00-04:00 UTC in November
        let early = w("Tue 00:00-03:00");
        let late = w("Tue 22:00-23:00");
        let at = ts("2026-11-24T01:30:00Z"); // Tuesday
        assert_eq!(availability(&[], at), None);
        assert_eq!(
            availability(&[night.clone(), early], at),
            Some(Availability::Open {
                closes: ts("2026-11-24T04:00:00Z")
            })
        );
        let closed = ts("2026-11-24T12:00:00Z");
        assert_eq!(
            availability(&[night, late], closed),
            Some(Availability::Closed {
                opens: ts("2026-11-24T22:00:00Z")
            })
        );
    }

    #[test]
    fn excluded_dates_skip_their_occurrences_in_the_windows_zone() {
        let win = w("Mon-Fri 02:00-05:00 Europe/Berlin except 2026-12-24,2026-12-28..2027-01-01");
        // Wednesday 2026-12-23 10:00 UTC: the next opening would be Thursday the 24th,
        // excluded; Friday the 25th opens; after it, the whole next week is excluded.
        assert_eq!(
            win.next(ts("2026-12-23T10:00:00Z")).map(|(o, _)| o),
            Some(ts("2026-12-25T01:00:00Z"))
        );
        assert_eq!(
            win.next(ts("2026-12-25T05:00:00Z")).map(|(o, _)| o),
            Some(ts("2027-01-04T01:00:00Z"))
        );
        // A freeze longer than the two weeks scanned still finds the opening after it.
        let frozen = w("daily 02:00-03:00 UTC except 2027-01-01..2027-02-28");
        assert_eq!(
            frozen.next(ts("2027-01-01T00:00:00Z")).map(|(o, _)| o),
            Some(ts("2027-03-01T02:00:00Z"))
        );
        for bad in [
            "daily 02:00-03:00 except 2027-13-01",
            "daily 02:00-03:00 except 2027-02-01..2027-01-01",
            "daily 02:00-03:00 except tomorrow",
        ] {
            assert!(
                matches!(bad.parse::<Window>(), Err(WindowError::Except { .. })),
                "{bad}"
            );
        }
    }
}
