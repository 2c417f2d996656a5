//! The rate budget (`--max-per 24h=5`, a MaintenancePlan's `maxPer`): at most N node
//! starts in any period, a sliding window over the start times the roll's or the plan's
//! own records keep in the cluster (marks on the nodes, NodeMaintenances), so that it
//! holds across restarts. Pure: the callers read the times, this decides.
use std::num::NonZeroU32;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// At most `starts` node starts in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateBudget {
    period: SignedDuration,
    starts: NonZeroU32,
}

/// What is wrong with a rate budget, in words that fit after the flag or the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("the period must be more than 0, e.g. 24h")]
    ZeroPeriod,
    #[error("the period must be at most a year")]
    LongPeriod,
    #[error("at most 0 starts would never let a node go; allow at least 1")]
    ZeroStarts,
}

/// A period longer than any maintenance cadence, and far below where adding it to a
/// clock reading overflows.
const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

/// Whether a node may start now under the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// This many more may start now.
    Free(NonZeroU32),
    /// The budget is spent until this instant, when the oldest start that counts ages
    /// out of the period.
    SpentUntil(Timestamp),
}

impl RateBudget {
    pub fn new(period: Duration, starts: u32) -> Result<Self, RateError> {
        if period.is_zero() {
            return Err(RateError::ZeroPeriod);
        }
        if period > LONGEST {
            return Err(RateError::LongPeriod);
        }
        let period = SignedDuration::try_from(period).map_err(|_| RateError::LongPeriod)?;
        let starts = NonZeroU32::new(starts).ok_or(RateError::ZeroStarts)?;
        Ok(Self { period, starts })
    }

    pub fn period(&self) -> Duration {
        self.period.unsigned_abs()
    }

    pub fn starts(&self) -> u32 {
        self.starts.get()
    }

    /// How many nodes may start at `now`, given when the earlier ones started. A start
    /// counts while it is less than a period old (one in the future, a clock ahead of
    /// ours, counts too); when `N` of them count, the budget frees a place as the
    /// oldest of those ages out.
    pub fn room(&self, started: &[Timestamp], now: Timestamp) -> Room {
        let since = now - self.period;
        let mut counted: Vec<Timestamp> = started.iter().copied().filter(|t| *t > since).collect();
        let used = u32::try_from(counted.len()).unwrap_or(u32::MAX);
        if let Some(free) = self
            .starts
            .get()
            .checked_sub(used)
            .and_then(NonZeroU32::new)
        {
            return Room::Free(free);
        }
        // With `used` >= N starts counted, a place frees once all but N - 1 of them
        // have aged out: when the (used - N + 1)-th oldest does.
        counted.sort_unstable();
        let frees = counted[counted.len() - self.starts.get() as usize];
        Room::SpentUntil(frees + self.period)
    }

    /// "at most 5 node starts per 24h".
    pub fn describe(&self) -> String {
        // jiff's friendly format: "24h", "1h 30m", "6s".
        format!(
            "at most {} node start(s) per {:#}",
            self.starts, self.period
        )
    }
}

/// `PERIOD=N` as the CLI takes it (`24h=5`), with the period read by `duration`. The
/// messages leave the whole value out: the CLI puts the flag and the value in front.
pub fn parse_flag(
    text: &str,
    duration: impl Fn(&str) -> Result<Duration, String>,
) -> Result<RateBudget, String> {
    let (period, starts) = text
        .rsplit_once('=')
        .ok_or_else(|| "write PERIOD=N, e.g. 24h=5".to_string())?;
    let period = duration(period).map_err(|e| format!("the period \"{period}\": {e}"))?;
    let starts: u32 = starts
        .parse()
        .map_err(|_| format!("\"{starts}\" is not a number of node starts"))?;
    RateBudget::new(period, starts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        format!("2026-12-06T{s}Z").parse().expect("time")
    }

    fn budget(period: u64, starts: u32) -> RateBudget {
        RateBudget::new(Duration::from_secs(period), starts).expect("budget")
    }

    fn free(n: u32) -> Room {
        Room::Free(NonZeroU32::new(n).expect("non-zero"))
    }

    #[test]
    fn starts_older_than_the_period_no_longer_count() {
        let two_a_minute = budget(60, 2);
        assert_eq!(two_a_minute.room(&[], at("10:00:00")), free(2));
        let once = [at("10:00:00")];
        assert_eq!(two_a_minute.room(&once, at("10:00:30")), free(1));
        // A start exactly a period old has aged out.
        let twice = [at("10:00:00"), at("10:00:20")];
        assert_eq!(two_a_minute.room(&twice, at("10:01:00")), free(1));
        assert_eq!(two_a_minute.room(&twice, at("10:01:20")), free(2));
    }

    #[test]
    fn a_spent_budget_waits_for_the_oldest_start_that_counts_to_age_out() {
        let two_a_minute = budget(60, 2);
        // In any order; 09:58 no longer counts.
        let started = [at("10:00:20"), at("09:58:00"), at("10:00:00")];
        assert_eq!(
            two_a_minute.room(&started, at("10:00:30")),
            Room::SpentUntil(at("10:01:00"))
        );
        // Over budget (records written by a roll with a larger one): all but one must
        // age out before one more may start.
        let three = [at("10:00:00"), at("10:00:10"), at("10:00:20")];
        assert_eq!(
            two_a_minute.room(&three, at("10:00:30")),
            Room::SpentUntil(at("10:01:10"))
        );
    }

    #[test]
    fn no_three_starts_within_any_period_when_the_budget_is_two() {
        // Start whenever the budget allows, one at a time, and check the times.
        let two_per_6s = budget(6, 2);
        let mut now = at("10:00:00");
        let mut started = Vec::new();
        while started.len() < 7 {
            match two_per_6s.room(&started, now) {
                Room::Free(_) => started.push(now),
                Room::SpentUntil(t) => {
                    assert!(t > now);
                    now = t;
                }
            }
        }
        for w in started.windows(3) {
            assert!(
                w[2].duration_since(w[0]) >= SignedDuration::from_secs(6),
                "{w:?}"
            );
        }
        assert_eq!(started[6], at("10:00:18"));
    }

    #[test]
    fn a_start_in_the_future_counts() {
        let one = budget(60, 1);
        assert_eq!(
            one.room(&[at("10:00:05")], at("10:00:00")),
            Room::SpentUntil(at("10:01:05"))
        );
    }

    #[test]
    fn the_flag_is_period_equals_starts() {
        let humantime = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string());
        let b = parse_flag("24h=5", humantime).expect("valid");
        assert_eq!((b.period(), b.starts()), (Duration::from_secs(86_400), 5));
        assert_eq!(b.describe(), "at most 5 node start(s) per 24h");
        let bad = |s: &str| parse_flag(s, humantime).expect_err(s);
        assert_eq!(bad("24h"), "write PERIOD=N, e.g. 24h=5");
        assert_eq!(bad("0s=2"), "the period must be more than 0, e.g. 24h");
        assert!(bad("1h=0").ends_with("allow at least 1"));
        assert_eq!(bad("1h=five"), "\"five\" is not a number of node starts");
        assert!(bad("soon=2").starts_with("the period \"soon\": "));
        assert_eq!(
            RateBudget::new(Duration::from_secs(400 * 86_400), 1),
            Err(RateError::LongPeriod)
        );
    }
}
