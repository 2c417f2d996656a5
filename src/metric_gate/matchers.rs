//! Alertmanager label matchers as `--pause-on-alerts` takes them: `severity=critical,team=shop`
//! (also `!=`, `=~`, `!~`), sent to Alertmanager as its API's `filter` parameters, which
//! use the Prometheus matcher syntax (`severity="critical"`).
use std::fmt;
use std::str::FromStr;

use super::GateError;

/// How a label is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }
}

/// One `name OP value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: Op,
    pub value: String,
}

impl Matcher {
    /// As Alertmanager's `filter` parameter takes it: the value quoted and escaped.
    pub fn filter(&self) -> String {
        let value = self.value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{}{}\"{value}\"", self.name, self.op.as_str())
    }
}

/// A set of matchers an alert must all meet: one `--pause-on-alerts` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matchers(Vec<Matcher>);

impl Matchers {
    pub fn iter(&self) -> impl Iterator<Item = &Matcher> {
        self.0.iter()
    }
}

impl FromStr for Matchers {
    type Err = GateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let matchers = s
            .split(',')
            .map(|part| matcher(part.trim(), s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(matchers))
    }
}

impl fmt::Display for Matchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|m| format!("{}{}{}", m.name, m.op.as_str(), m.value))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// One `name OP value` of `whole`; a value may be written in double quotes.
fn matcher(part: &str, whole: &str) -> Result<Matcher, GateError> {
    let bad = |why: &str| GateError::Matcher {
        part: part.to_string(),
        whole: whole.to_string(),
        why: why.to_string(),
    };
    // The first operator character ends the name; "!=" and "!~" start with '!', "=~"
    // is '=' followed by '~'.
    let at = part
        .find(['=', '!'])
        .ok_or_else(|| bad("is not NAME=VALUE (or !=, =~, !~)"))?;
    let (name, rest) = (part[..at].trim(), &part[at..]);
    let (op, value) = [Op::Regex, Op::NotRegex, Op::NotEqual, Op::Equal]
        .into_iter()
        .find_map(|op| rest.strip_prefix(op.as_str()).map(|v| (op, v)))
        .ok_or_else(|| bad("is not NAME=VALUE (or !=, =~, !~)"))?;
    let valid_name = name
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if name.is_empty() || !valid_name {
        return Err(bad("needs a label name of letters, digits and _"));
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok(Matcher {
        name: name.to_string(),
        op,
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_read_every_operator_and_become_alertmanager_filters() {
        let m: Matchers = r#"severity=critical, team!=shop,alertname=~"High.*",env!~dev"#
            .parse()
            .expect("matchers");
        let filters: Vec<String> = m.iter().map(Matcher::filter).collect();
        assert_eq!(
            filters,
            [
                r#"severity="critical""#,
                r#"team!="shop""#,
                r#"alertname=~"High.*""#,
                r#"env!~"dev""#
            ]
        );
        assert_eq!(
            m.to_string(),
            "severity=critical,team!=shop,alertname=~High.*,env!~dev"
        );
    }

    #[test]
    fn a_bad_matcher_is_named_with_what_is_wrong() {
        for (bad, part) in [
            ("severity", "severity"),
            ("severity=critical,team", "team"),
            ("=critical", "=critical"),
            ("1x=a", "1x=a"),
            ("", ""),
        ] {
            match bad.parse::<Matchers>() {
                Err(GateError::Matcher { part: p, .. }) => assert_eq!(p, part, "{bad:?}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn a_quote_in_a_value_is_escaped_for_the_filter() {
        let m: Matchers = r#"summary=say "hi""#.parse().expect("matchers");
        let filters: Vec<String> = m.iter().map(Matcher::filter).collect();
        assert_eq!(filters, [r#"summary="say \"hi\"""#]);
    }
}
