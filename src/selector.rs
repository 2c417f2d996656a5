//! A label selector in `kubectl get -l` syntax, read once and matched in memory, so a
//! MaintenancePlan finds its nodes in the controller's watch instead of listing them
//! on every pass: `a=b`, `a==b`, `a!=b`, `a in (b,c)`, `a notin (b,c)`, `a`, `!a`,
//! `a>1`, `a<1`, joined by commas (all must hold).
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector \"{selector}\": {problem}")]
pub struct SelectorError {
    selector: String,
    problem: String,
}

impl Selector {
    /// Whether a node (or any object) with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let number = |k: &str| labels.get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            // As the API server reads it: an object without the key is selected.
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::GreaterThan(k, n) => number(k).is_some_and(|v| v > *n),
            Self::LessThan(k, n) => number(k).is_some_and(|v| v < *n),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let fail = |problem: String| SelectorError {
            selector: s.to_string(),
            problem,
        };
        split_top_level(s)
            .map_err(fail)?
            .into_iter()
            .filter(|part| !part.trim().is_empty())
            .map(|part| requirement(part.trim()).map_err(fail))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
            Self::GreaterThan(k, n) => write!(f, "{k}>{n}"),
            Self::LessThan(k, n) => write!(f, "{k}<{n}"),
        }
    }
}

/// The requirements: split at commas outside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_u32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "a \")\" without its \"(\"".to_string())?;
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("a \"(\" without its \")\"".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_of(key)?));
    }
    if let Some(open) = part.find('(') {
        let close = part
            .strip_suffix(')')
            .ok_or_else(|| format!("\"{part}\": nothing may follow the \")\""))?;
        let values: Vec<String> = close[open + 1..]
            .split(',')
            .map(|v| value_of(v.trim()))
            .collect::<Result<_, _>>()?;
        let mut words = part[..open].split_whitespace();
        let (Some(key), Some(op), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("\"{part}\": write KEY in (A,B) or KEY notin (A,B)"));
        };
        let key = key_of(key)?;
        return match op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!("\"{other}\" is not an operator: use in or notin")),
        };
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            return Ok(make(key_of(key)?, value_of(value.trim())?));
        }
    }
    for (op, greater) in [('>', true), ('<', false)] {
        if let Some((key, n)) = part.split_once(op) {
            let n: i64 = n
                .trim()
                .parse()
                .map_err(|_| format!("\"{part}\": {op} compares with a whole number"))?;
            let key = key_of(key)?;
            return Ok(if greater {
                Requirement::GreaterThan(key, n)
            } else {
                Requirement::LessThan(key, n)
            });
        }
    }
    Ok(Requirement::Exists(key_of(part)?))
}

/// A label key: `name` or `prefix/name`, letters, digits, `-`, `_`, `.`.
pub fn key_of(key: &str) -> Result<String, String> {
    let key = key.trim();
    let fine = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let ok = match key.split_once('/') {
        Some((prefix, name)) => fine(prefix) && fine(name),
        None => fine(key),
    };
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("\"{key}\" is not a label key"))
    }
}

/// A label value: empty, or letters, digits, `-`, `_`, `.`.
pub fn value_of(value: &str) -> Result<String, String> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(value.to_string())
    } else {
        Err(format!("\"{value}\" is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        let s: Selector = selector.parse().expect(selector);
        s.matches(&labels(pairs))
    }

    #[test]
    fn every_operator_reads_as_kubectl_reads_it() {
        let node = [
            ("pool", "gpu"),
            ("topology.kubernetes.io/zone", "a"),
            ("rank", "3"),
        ];
        for (selector, selected) in [
            ("", true),
            ("pool=gpu", true),
            ("pool==gpu", true),
            ("pool!=gpu", false),
            ("absent!=x", true),
            ("pool in (cpu, gpu)", true),
            ("pool notin (gpu)", false),
            ("absent notin (gpu)", true),
            ("pool", true),
            ("!pool", false),
            ("!absent", true),
            ("rank>2", true),
            ("rank<3", false),
            ("pool=gpu,topology.kubernetes.io/zone in (a,b)", true),
            ("pool=gpu,topology.kubernetes.io/zone=b", false),
        ] {
            assert_eq!(selects(selector, &node), selected, "{selector}");
        }
    }

    #[test]
    fn a_bad_selector_is_one_sentence() {
        for bad in [
            "pool in (a",
            "pool in a)",
            "pool inn (a)",
            "bad key=1",
            "a=b c",
            "n>x",
        ] {
            let e = bad.parse::<Selector>().expect_err(bad);
            assert!(e.to_string().starts_with("label selector"), "{e}");
        }
    }

    #[test]
    fn a_selector_reads_back_as_written() {
        let s: Selector = "a=b,c notin (d,e),!f,g".parse().expect("selector");
        assert_eq!(s.to_string(), "a=b,c notin (d,e),!f,g");
    }
}
