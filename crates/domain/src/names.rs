use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

macro_rules! string_type {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// A fully qualified host name for a site: IDNA to ASCII, lowercase, RFC 1123 labels,
/// at most 253 characters, at least two labels, and not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);
string_type!(DomainName);

impl DomainName {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let trimmed = input.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(ParseError::new(
                "the domain is empty: give a host name such as example.com",
            ));
        }
        // UTS 46 mapping first (lowercases, maps full-width dots, converts to punycode),
        // then our own RFC 1123 checks on the ASCII result: idna alone allows underscores.
        let ascii = idna::domain_to_ascii(trimmed).map_err(|_| {
            ParseError::new(format!(
                "'{trimmed}' is not a valid domain name: it contains characters that IDNA does not allow"
            ))
        })?;
        if ascii.len() > 253 {
            return Err(ParseError::new(format!(
                "the domain is {} characters long; at most 253 are allowed",
                ascii.len()
            )));
        }
        let labels: Vec<&str> = ascii.split('.').collect();
        if labels.len() < 2 {
            return Err(ParseError::new(format!(
                "'{ascii}' has a single label; give a fully qualified name such as {ascii}.example.com"
            )));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(ParseError::new(format!(
                    "'{ascii}' has a label of {} characters; each part between dots must be 1 to 63 characters",
                    label.len()
                )));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(ParseError::new(format!(
                    "'{ascii}': the label '{label}' may only contain letters, digits and hyphens"
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(ParseError::new(format!(
                    "'{ascii}': the label '{label}' must not start or end with a hyphen"
                )));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ParseError::new(format!(
                "'{ascii}' looks like an IP address; sites need a host name"
            )));
        }
        Ok(Self(ascii))
    }
}

/// A MariaDB/MySQL identifier we generate for databases and users: a lowercase letter, then
/// lowercase letters, digits or underscores, at most 32 characters (MySQL's user name limit).
/// Being this narrow, it can be written into SQL between backquotes or quotes without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DbIdent(String);
string_type!(DbIdent);

impl DbIdent {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "'{s}' is not a database identifier: use 1 to 32 lowercase letters, digits or underscores, starting with a letter"
            )))
        }
    }
}

impl DbIdent {
    /// The identifier a task makes next to a site's database: `<base>_<tag><task>`, where
    /// base is the site's identifier without the `_<tag><task>` an earlier restore (`r`) or
    /// migrate (`m`) gave it, so names do not grow with every one.
    pub fn for_task(&self, tag: char, task: i64) -> Result<DbIdent, ParseError> {
        let base = match self.0.rsplit_once('_') {
            Some((head, tail))
                if tail.len() > 1
                    && matches!(tail.as_bytes()[0], b'r' | b'm')
                    && tail.bytes().skip(1).all(|b| b.is_ascii_digit()) =>
            {
                head
            }
            _ => self.0.as_str(),
        };
        DbIdent::parse(&format!("{base}_{tag}{task}"))
    }
}

/// A site's own unix user (and group) on its web server, named by the control plane from the
/// site id (`<prefix><id>`), never from input: a lowercase letter, then lowercase letters,
/// digits or underscores, at most 32 characters (the Linux limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemUser(String);
string_type!(SystemUser);

impl SystemUser {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "'{s}' is not a system user name: use 1 to 32 lowercase letters, digits or underscores, starting with a letter"
            )))
        }
    }
}

/// A short name for records an operator types: servers, platforms, clients, profiles.
/// Letters, digits, `.`, `_` and `-`, 1 to 64 characters, starting with a letter or digit.
/// It appears in AMQP routing keys and file names, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);
string_type!(Name);

impl Name {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "'{s}' is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )))
        }
    }
}

/// A language code such as `en`, `pt-br` or `zh_hans`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);
string_type!(Language);

impl Language {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = (2..=16).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
            && s.as_bytes()[0].is_ascii_alphabetic();
        if ok {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(ParseError::new(format!(
                "'{s}' is not a language code: use 2 to 16 letters, '-' or '_', such as en or pt-br"
            )))
        }
    }
}

/// An e-mail address, checked loosely (one `@`, a domain with a dot, no spaces or control
/// characters): it is only ever handed to a platform's install action and to SMTP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);
string_type!(Email);

impl Email {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        let bad = || {
            ParseError::new(format!(
                "'{s}' is not an e-mail address such as admin@example.com"
            ))
        };
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, host) = s.split_once('@').ok_or_else(bad)?;
        // A plain address: what mail headers and SMTP take without quoting or comments.
        if local.is_empty()
            || local.len() > 64
            || host.contains('@')
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
            || !local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._%+-'".contains(&b))
        {
            return Err(bad());
        }
        DomainName::parse(host).map_err(|_| bad())?;
        Ok(Self(s.to_owned()))
    }
}

/// An absolute, normalized path on a host (a platform root, a backup store). Only letters,
/// digits and `/ . _ - +` are allowed, no `.` or `..` segments: such a path can be written into
/// an nginx or php-fpm config file and passed to a command without quoting.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPath(String);
string_type!(HostPath);

impl HostPath {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let trimmed = if s.len() > 1 {
            s.trim_end_matches('/')
        } else {
            s
        };
        if !trimmed.starts_with('/') {
            return Err(ParseError::new(format!(
                "'{s}' is not an absolute path: it must start with /"
            )));
        }
        if trimmed.len() > 1024 {
            return Err(ParseError::new("the path is longer than 1024 characters"));
        }
        if !trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'))
        {
            return Err(ParseError::new(format!(
                "'{s}' contains characters other than letters, digits and / . _ - +"
            )));
        }
        if trimmed
            .split('/')
            .skip(1)
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(ParseError::new(format!(
                "'{s}' is not normalized: remove empty, '.' and '..' segments"
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// A child path: `segment` is a checked name, so the result stays a `HostPath`.
    pub fn join(&self, segment: &str) -> Result<HostPath, ParseError> {
        HostPath::parse(&format!("{}/{}", self.0.trim_end_matches('/'), segment))
    }

    pub fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_and_converted_to_ascii() {
        assert_eq!(
            DomainName::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            DomainName::parse("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            DomainName::parse(" shop.example.org. ").unwrap().as_str(),
            "shop.example.org"
        );
    }

    #[test]
    fn bad_domains_are_refused_with_a_reason() {
        for bad in [
            "",
            "localhost",
            "under_score.com",
            "-lead.com",
            "trail-.com",
            "a..b",
            "1.2.3.4",
            "semi;colon.com",
            "sp ace.com",
            "x.com/evil",
            "a.b{c}.com",
        ] {
            let err = DomainName::parse(bad).expect_err(bad);
            assert!(!err.0.is_empty());
        }
    }

    #[test]
    fn a_253_character_domain_is_valid_and_254_is_not() {
        let label = "a".repeat(63);
        let ok = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        assert_eq!(ok.len(), 253);
        assert!(DomainName::parse(&ok).is_ok());
        let too_long = format!("{label}.{label}.{label}.{}", "b".repeat(62));
        assert!(DomainName::parse(&too_long).is_err());
        assert!(DomainName::parse(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn db_identifiers_are_narrow() {
        assert!(DbIdent::parse("site_12").is_ok());
        for bad in ["", "1site", "Site", "a-b", "a`b", "a'b", &"a".repeat(33)] {
            assert!(DbIdent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn task_identifiers_do_not_grow_with_every_restore() {
        let site = DbIdent::parse("host_reseller_12").unwrap();
        assert_eq!(
            site.for_task('r', 40).unwrap().as_str(),
            "host_reseller_12_r40"
        );
        let restored = DbIdent::parse("host_reseller_12_r40").unwrap();
        assert_eq!(
            restored.for_task('r', 41).unwrap().as_str(),
            "host_reseller_12_r41"
        );
        assert_eq!(
            restored.for_task('v', 42).unwrap().as_str(),
            "host_reseller_12_v42"
        );
    }

    #[test]
    fn host_paths_must_be_absolute_and_normalized() {
        assert_eq!(
            HostPath::parse("/var/www/p1/").unwrap().as_str(),
            "/var/www/p1"
        );
        for bad in [
            "relative", "/a/../b", "/a//b", "/a/./b", "/a b", "/a;b", "/a$b", "/a\"b",
        ] {
            assert!(HostPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserializing_goes_through_the_parser() {
        let ok: Result<DomainName, _> = serde_json::from_str("\"a.example\"");
        assert!(ok.is_ok());
        let bad: Result<DomainName, _> = serde_json::from_str("\"a_b.example\"");
        assert!(bad.is_err());
    }

    #[test]
    fn names_and_emails() {
        assert!(Name::parse("web-1.local").is_ok());
        assert!(Name::parse("web 1").is_err());
        assert!(Email::parse("admin@example.com").is_ok());
        assert!(Email::parse("admin@localhost").is_err());
        assert!(Email::parse("a b@example.com").is_err());
        for bad in [
            "<a@example.com>",
            "a;b@example.com",
            "a,b@example.com",
            "a(b)@example.com",
            "\"a\"@example.com",
            ".a@example.com",
            "a..b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert!(Email::parse("o'neil+news@example.com").is_ok());
        assert!(Language::parse("pt-BR").is_ok());
        assert!(Language::parse("e").is_err());
    }
}
