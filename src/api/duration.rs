//! Durations in kordon's specs, written as Kubernetes writes them (Go's
//! `time.ParseDuration`: "30m", "1h30m", "1.5h", "300ms"). The API server checks each
//! with CEL's `duration()` when the object is written ([`RULE`]), and the controller
//! reads each with [`parse`], which accepts the same strings, so a value is either
//! refused at admission or carried out: never silently ignored.
use std::time::Duration;

/// The CEL rule on every duration field: it parses, and is not negative.
pub const RULE: &str = "duration(self) >= duration('0s')";
pub const RULE_MESSAGE: &str = "a duration such as 30m, 1h30m or 90s";

/// [`RULE`] for the drain policy's durations, checked on the policy (its type keeps a
/// hand-written default, which field rules cannot carry).
pub const DRAIN_RULE: &str = "(!has(self.timeout) || duration(self.timeout) >= duration('0s')) && (!has(self.ladder) || duration(self.ladder.deadline) >= duration('0s'))";
pub const DRAIN_RULE_MESSAGE: &str =
    "timeout and ladder.deadline are durations such as 30m, 1h30m or 90s";

/// Go's duration syntax: one or more decimal numbers, each with an optional fraction
/// and a unit (ns, us, µs, ms, s, m, h); "0" alone is zero. Negative durations are
/// refused, as the CEL rule refuses them.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = || format!("\"{text}\" is not {RULE_MESSAGE}");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_others_are_refused() {
        let secs = |s: f64| Duration::from_secs_f64(s);
        for (text, want) in [
            ("30m", secs(1800.0)),
            ("1h30m", secs(5400.0)),
            ("1.5h", secs(5400.0)),
            ("300ms", secs(0.3)),
            ("2h45m10s", secs(9910.0)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        for text in [
            "",
            "10",
            "ten minutes",
            "1h 30m",
            "2days",
            "-5m",
            "5x",
            ".s",
            "m",
        ] {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
    }
}
