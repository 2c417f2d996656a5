//! Parsers for flag values: clap runs them before anything else, so a value that
//! could only be a mistake is refused with one sentence (exit 2) before any request.
//! A message says what is wrong with the value; `main` puts the flag and the value in
//! front of it, unless the message quotes the value itself.
use std::time::Duration;

use kordon::drain::ladder::DeleteRule;

/// Longer than any real drain, roll or lease; far below where adding it to a clock
/// reading would overflow.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration such as `90s`, `5m` or `1h30m`; `0s` where a flag gives 0 a meaning.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a duration such as 90s, 5m or 1h30m"))?;
    if d > LONGEST {
        return Err("must be at most a year".into());
    }
    Ok(d)
}

/// A duration that must be more than zero (a timeout that no step could meet).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0, e.g. 10m".into());
    }
    Ok(d)
}

/// A Lease's duration: a Lease counts whole seconds (`leaseDurationSeconds`), and
/// its holder renews it at a fraction of that, so less than a second cannot work.
pub fn lease_duration(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s: a Lease counts whole seconds".into());
    }
    Ok(d)
}

/// A switch written out, as kubectl's boolean flags take it (`--flag=false`).
pub fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A count that must be at least 1 (`--concurrency`, `--max-failures`).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| "must be a whole number of at least 1".to_string())?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// `--grace-period`: seconds as the Eviction and Delete APIs take them
/// (`gracePeriodSeconds`), or -1 for each pod's own `terminationGracePeriodSeconds`
/// (kubectl's convention). Other negatives are refused rather than read as -1.
pub fn grace_period(s: &str) -> Result<i64, String> {
    let bad = || {
        "must be -1 (each pod's own terminationGracePeriodSeconds) or a number of seconds from 0"
            .to_string()
    };
    let n: i64 = s.trim().parse().map_err(|_| bad())?;
    if n < -1 || n > i64::from(u32::MAX) {
        return Err(bad());
    }
    Ok(n)
}

/// A namespace's name, checked as the API server checks it.
pub fn namespace(s: &str) -> Result<String, kordon::names::InvalidName> {
    kordon::names::check_namespace(s)?;
    Ok(s.to_string())
}

/// `--delete-past-budget NAMESPACE[:SELECTOR]` with the namespace checked as a name.
pub fn delete_rule(s: &str) -> Result<DeleteRule, String> {
    let rule: DeleteRule = s.parse()?;
    if let Some(ns) = &rule.namespace {
        kordon::names::check_namespace(ns).map_err(|e| e.to_string())?;
    }
    Ok(rule)
}

/// `--drain-order SELECTOR=N`.
pub fn drain_order(s: &str) -> Result<kordon::tiers::OrderRule, String> {
    s.parse()
        .map_err(|e: kordon::tiers::OrderRuleError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_takes_minus_one_and_seconds_only() {
        assert_eq!(grace_period("-1"), Ok(-1));
        assert_eq!(grace_period("0"), Ok(0));
        assert_eq!(grace_period("30"), Ok(30));
        assert!(grace_period("-7").is_err());
        assert!(grace_period("5s").is_err());
        assert!(grace_period("99999999999").is_err());
    }

    #[test]
    fn counts_and_durations_refuse_what_could_only_be_a_mistake() {
        assert_eq!(at_least_one("8"), Ok(8));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(duration("5parsecs").is_err());
        assert!(duration("1000years").is_err());
        assert!(positive_duration("0s").is_err());
        assert!(lease_duration("500ms").is_err());
        assert_eq!(lease_duration("15s"), Ok(Duration::from_secs(15)));
        assert!(delete_rule("Bad_NS").is_err());
        assert!(delete_rule("*:app=web").is_ok());
    }
}
