//! Newtypes for names that must not be mixed up, and the checks the API server applies
//! to names, so that a name it would refuse is refused before any request.
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// The name of a Node (cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeName(String);

impl NodeName {
    /// A name as the API server gave it (already valid); user input goes through
    /// [`NodeName::parse`].
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// A name typed by a user, checked as the API server checks a Node's name: an
    /// RFC 1123 subdomain (`ValidateNodeName` in Kubernetes' validation). Without this
    /// check a name like `bad name!` ends up in a request path and fails as an invalid
    /// URI, which says nothing useful.
    pub fn parse(name: &str) -> Result<Self, InvalidName> {
        check(name, Kind::Subdomain, "node")?;
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = InvalidName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for NodeName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// Checks a namespace's name as the API server does: an RFC 1123 label
/// (`ValidateNamespaceName`).
pub fn check_namespace(name: &str) -> Result<(), InvalidName> {
    check(name, Kind::Label, "namespace")
}

/// A name the API server would refuse, with the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{name}\" is not a valid {what} name: {why}; {rule}")]
pub struct InvalidName {
    pub name: String,
    /// What the name was for ("node", "namespace").
    pub what: &'static str,
    pub why: String,
    rule: &'static str,
}

#[derive(Clone, Copy)]
enum Kind {
    /// RFC 1123 subdomain: labels joined by dots, at most 253 characters.
    Subdomain,
    /// RFC 1123 label: no dots, at most 63 characters.
    Label,
}

impl Kind {
    fn max(self) -> usize {
        match self {
            Kind::Subdomain => 253,
            Kind::Label => 63,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Kind::Subdomain => {
                "a name is lowercase letters, digits, '-' and '.', starts and ends with a letter or digit, and has at most 253 characters (RFC 1123 subdomain)"
            }
            Kind::Label => {
                "a name is lowercase letters, digits and '-', starts and ends with a letter or digit, and has at most 63 characters (RFC 1123 label)"
            }
        }
    }
}

fn check(name: &str, kind: Kind, what: &'static str) -> Result<(), InvalidName> {
    let why = why_invalid(name, kind);
    match why {
        None => Ok(()),
        Some(why) => Err(InvalidName {
            name: name.to_string(),
            what,
            why,
            rule: kind.rule(),
        }),
    }
}

/// The first thing wrong with `name`, in the order a reader would look.
fn why_invalid(name: &str, kind: Kind) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    let dots = matches!(kind, Kind::Subdomain);
    if let Some(c) = name.chars().find(|&c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
    }) {
        return Some(if c.is_ascii_uppercase() {
            format!("it contains the capital {c:?}")
        } else {
            format!("it contains {c:?}")
        });
    }
    let length = name.chars().count();
    if length > kind.max() {
        return Some(format!("it has {length} characters"));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Some("it has an empty part between dots, or starts or ends with a dot".into());
        }
        if part.starts_with('-') || part.ends_with('-') {
            return Some(format!("\"{part}\" starts or ends with '-'"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_rfc_1123_subdomains() {
        for good in [
            "node-2",
            "a",
            "ip-10-0-0-1.ec2.internal",
            "0",
            &"a".repeat(253),
        ] {
            assert!(NodeName::parse(good).is_ok(), "{good}");
        }
        let cases = [
            ("bad name!", "contains ' '"),
            ("Node-1", "capital 'N'"),
            ("", "empty"),
            ("-node", "\"-node\" starts or ends with '-'"),
            ("node-", "starts or ends with '-'"),
            ("a..b", "empty part"),
            (".a", "empty part"),
            ("node_1", "contains '_'"),
        ];
        for (bad, why) in cases {
            let err = NodeName::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("\"{bad}\" is not a valid node name: ")),
                "{err}"
            );
        }
        let long = "a".repeat(254);
        assert!(
            NodeName::parse(&long)
                .expect_err("too long")
                .why
                .contains("254 characters")
        );
    }

    #[test]
    fn namespaces_are_rfc_1123_labels() {
        assert!(check_namespace("kube-system").is_ok());
        assert!(check_namespace("a.b").expect_err("dot").why.contains("'.'"));
        assert!(check_namespace(&"a".repeat(64)).is_err());
        assert!(check_namespace(&"a".repeat(63)).is_ok());
    }
}
