//! Package checks before a migrate or clone, the reference's logic 1–6: for each package
//! enabled on the site, compare it with what the target platform offers.
//!
//! - `error`: the target's schema version is older than the site's (a site cannot go back), or,
//!   for a package without schema versions, its version is older;
//! - `warning`: the target does not have the package (it will probably be disabled);
//! - `upgrade`: the target has a newer schema version, or the same schema and a newer version;
//! - `same`: otherwise.
//!
//! A target with any error is not selectable, and neither is a platform of another application
//! (a WordPress site does not migrate onto Drupal, whatever their packages say).

use serde::Serialize;
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageStatus {
    Same,
    Upgrade,
    Warning,
    Error,
}

/// A package as the registry knows it: on a site (installed) or on a platform (offered).
#[derive(Debug, Clone)]
pub struct PackageVersion {
    pub name: String,
    pub package_type: String,
    pub version: String,
    pub schema_version: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PackageComparison {
    pub name: String,
    #[serde(rename = "type")]
    pub package_type: String,
    /// On the site: version and schema version.
    pub current: Side,
    /// On the target, if it has the package.
    pub target: Option<Side>,
    pub status: PackageStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub version: String,
    pub schema_version: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub same: usize,
    pub upgrade: usize,
    pub warning: usize,
    pub error: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub selectable: bool,
    /// Why the target cannot be chosen whatever its packages (another application).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub counts: Counts,
    pub packages: Vec<PackageComparison>,
}

impl TargetCheck {
    /// Marks the target as not selectable, whatever its packages, and says why.
    pub fn refuse(&mut self, reason: String) {
        self.selectable = false;
        self.reason = Some(reason);
    }

    /// What makes the target unusable, as a sentence for a 409.
    pub fn errors(&self) -> String {
        if let Some(r) = &self.reason {
            return r.clone();
        }
        self.packages
            .iter()
            .filter(|p| p.status == PackageStatus::Error)
            .map(|p| {
                if p.current.schema_version.is_none() {
                    return format!(
                        "{} (site at version {}, target at {})",
                        p.name,
                        p.current.version,
                        p.target.as_ref().map_or("none", |t| t.version.as_str())
                    );
                }
                format!(
                    "{} (site at schema {}, target at {})",
                    p.name,
                    p.current
                        .schema_version
                        .map_or("none".into(), |s| s.to_string()),
                    p.target
                        .as_ref()
                        .and_then(|t| t.schema_version)
                        .map_or("none".into(), |s| s.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Compares the packages enabled on a site with those a target platform offers.
pub fn check(site: &[PackageVersion], target: &[PackageVersion]) -> TargetCheck {
    let mut counts = Counts::default();
    let mut packages = Vec::with_capacity(site.len());
    for p in site {
        let offered = target
            .iter()
            .find(|t| t.name == p.name && t.package_type == p.package_type);
        let status = match offered {
            None => PackageStatus::Warning,
            Some(t) => match (p.schema_version, t.schema_version) {
                (Some(have), Some(offer)) if offer < have => PackageStatus::Error,
                // The target knows no schema for a package the site has one for: it cannot
                // be told to be newer, so it is treated as older.
                (Some(_), None) => PackageStatus::Error,
                (Some(have), Some(offer)) if offer > have => PackageStatus::Upgrade,
                // Without schema versions, the versions say whether the target is older.
                (None, _) => match compare_versions(&t.version, &p.version) {
                    Ordering::Greater => PackageStatus::Upgrade,
                    Ordering::Less => PackageStatus::Error,
                    Ordering::Equal => PackageStatus::Same,
                },
                _ => match compare_versions(&t.version, &p.version) {
                    Ordering::Greater => PackageStatus::Upgrade,
                    _ => PackageStatus::Same,
                },
            },
        };
        match status {
            PackageStatus::Same => counts.same += 1,
            PackageStatus::Upgrade => counts.upgrade += 1,
            PackageStatus::Warning => counts.warning += 1,
            PackageStatus::Error => counts.error += 1,
        }
        packages.push(PackageComparison {
            name: p.name.clone(),
            package_type: p.package_type.clone(),
            current: Side {
                version: p.version.clone(),
                schema_version: p.schema_version,
            },
            target: offered.map(|t| Side {
                version: t.version.clone(),
                schema_version: t.schema_version,
            }),
            status,
        });
    }
    TargetCheck {
        selectable: counts.error == 0,
        reason: None,
        counts,
        packages,
    }
}

/// Compares version strings the way CMS release names are written: `2.11.0`, Drupal's
/// `7.x-2.11` and `8.x-1.0-beta3` (the core prefix `N.x-` is compared first), with
/// pre-releases (`alpha` < `beta` < `rc`) before the release they lead to.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ka, kb) = (version_key(a), version_key(b));
    ka.cmp(&kb)
}

/// (core, numbers, pre-release rank, pre-release number). A release without a pre-release
/// suffix ranks above all of its pre-releases.
fn version_key(v: &str) -> (u64, Vec<u64>, u8, u64) {
    let v = v.trim().trim_start_matches(['v', 'V']);
    let (core, rest) = match v.split_once(".x-") {
        Some((c, r)) if c.chars().all(|ch| ch.is_ascii_digit()) => (c.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    let (numbers, pre) = match rest.split_once('-') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    let mut nums: Vec<u64> = numbers
        .split('.')
        .map(|n| {
            n.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    while nums.len() > 1 && nums.last() == Some(&0) {
        nums.pop();
    }
    let (rank, n) = match pre {
        None => (9, 0),
        Some(p) => {
            let p = p.to_ascii_lowercase();
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            let n = digits.parse().unwrap_or(0);
            let rank = if p.starts_with("alpha") {
                1
            } else if p.starts_with("beta") {
                2
            } else if p.starts_with("rc") {
                3
            } else if p.starts_with("dev") {
                0
            } else {
                4
            };
            (rank, n)
        }
    };
    (core, nums, rank, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, schema: Option<i64>) -> PackageVersion {
        PackageVersion {
            name: name.into(),
            package_type: "module".into(),
            version: version.into(),
            schema_version: schema,
        }
    }

    #[test]
    fn the_references_four_cases() {
        let site = [pkg("x", "1.0", Some(6003))];
        let a = check(&site, &[pkg("x", "1.0", Some(6002))]);
        assert_eq!(a.packages[0].status, PackageStatus::Error);
        assert!(!a.selectable);
        assert!(a
            .errors()
            .contains("x (site at schema 6003, target at 6002)"));
        let b = check(&site, &[]);
        assert_eq!(b.packages[0].status, PackageStatus::Warning);
        assert!(b.selectable);
        let c = check(&site, &[pkg("x", "1.0", Some(6003))]);
        assert_eq!(c.packages[0].status, PackageStatus::Same);
        let d = check(&site, &[pkg("x", "1.1", Some(6004))]);
        assert_eq!(d.packages[0].status, PackageStatus::Upgrade);
        assert_eq!(
            d.counts,
            Counts {
                upgrade: 1,
                ..Default::default()
            }
        );
        // Same schema, newer code: an upgrade without database updates.
        let e = check(&site, &[pkg("x", "1.0.1", Some(6003))]);
        assert_eq!(e.packages[0].status, PackageStatus::Upgrade);
    }

    #[test]
    fn without_schema_versions_the_versions_decide() {
        let site = [pkg("plugin", "2.1.0", None)];
        let older = check(&site, &[pkg("plugin", "2.0.9", None)]);
        assert_eq!(older.packages[0].status, PackageStatus::Error);
        assert!(!older.selectable);
        assert!(older
            .errors()
            .contains("plugin (site at version 2.1.0, target at 2.0.9)"));
        let same = check(&site, &[pkg("plugin", "2.1", None)]);
        assert_eq!(same.packages[0].status, PackageStatus::Same);
        let newer = check(&site, &[pkg("plugin", "2.2.0", None)]);
        assert_eq!(newer.packages[0].status, PackageStatus::Upgrade);
        let mut other_app = check(&site, &[pkg("plugin", "2.2.0", None)]);
        other_app.refuse("platform p holds another application".into());
        assert!(!other_app.selectable);
        assert_eq!(other_app.errors(), "platform p holds another application");
    }

    #[test]
    fn drupal_and_semantic_versions_compare() {
        use Ordering::*;
        assert_eq!(compare_versions("7.x-2.11", "7.x-2.9"), Greater);
        assert_eq!(compare_versions("8.x-1.0-beta3", "8.x-1.0"), Less);
        assert_eq!(compare_versions("8.x-1.0-beta3", "8.x-1.0-alpha9"), Greater);
        assert_eq!(compare_versions("8.x-1.0-rc1", "8.x-1.0-beta3"), Greater);
        assert_eq!(compare_versions("2.11.0", "2.9.1"), Greater);
        assert_eq!(compare_versions("2.11", "2.11.0"), Equal);
        assert_eq!(compare_versions("8.x-1.0", "7.x-3.0"), Greater);
        assert_eq!(compare_versions("v1.2.3", "1.2.3"), Equal);
    }
}
