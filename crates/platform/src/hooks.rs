use crate::{check_db_host, Action, PackageInfo, PlatformError, ProfileInfo, RunAs, SiteContext};
use domain::{DomainName, HostPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const MANIFEST_FILE: &str = "hosting.toml";

/// `hosting.toml`: what a PHP application tells the control plane about itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub application: Application,
    #[serde(default)]
    pub settings: SettingsSpec,
    #[serde(default)]
    pub packages: Vec<PackageInfo>,
    pub profiles: Vec<ProfileInfo>,
    /// action name → argv (no shell), run from the platform root.
    #[serde(default)]
    pub actions: BTreeMap<String, Vec<String>>,
    /// What the application needs of PHP; platform verify checks it against the PHP that
    /// the web server's site pools run.
    #[serde(default)]
    pub php: PhpRequirements,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhpRequirements {
    /// The lowest PHP version it runs on, `8.1` or `7.4.3`.
    #[serde(default)]
    pub min_version: Option<String>,
    /// Extensions it needs, as `php -m` names them (`pdo_mysql`, `mbstring`, `gd`).
    #[serde(default)]
    pub extensions: Vec<String>,
}

impl PhpRequirements {
    /// What the given PHP lacks, said so that an operator knows what to install.
    pub fn unmet(&self, version: &str, extensions: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(min) = &self.min_version {
            if version_parts(version) < version_parts(min) {
                out.push(format!(
                    "PHP {min} or newer (the web server runs PHP {version})"
                ));
            }
        }
        for ext in &self.extensions {
            let want = ext.to_ascii_lowercase();
            if !extensions.iter().any(|e| e.eq_ignore_ascii_case(&want)) {
                out.push(format!(
                    "the PHP extension {ext} (install it on the web server, for example apt-get install php-{want}, then verify the platform again)"
                ));
            }
        }
        out
    }
}

/// `8.2.36` → [8, 2, 36]; what is not a number ends the list (`8.3.0-dev` → [8, 3, 0]).
fn version_parts(v: &str) -> Vec<u64> {
    v.split('.')
        .map_while(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    /// The document root, relative to the platform root.
    #[serde(default = "dot")]
    pub web_root: String,
    /// Where requests for paths that are not files go, relative to the web root.
    #[serde(default = "index_php")]
    pub front_controller: String,
    /// Where site directories are made, relative to the platform root.
    #[serde(default = "sites")]
    pub sites_dir: String,
    /// Each site's private directory, relative to its site directory: writable by the site,
    /// never served (temporary files, sessions, private uploads).
    #[serde(default = "private")]
    pub private_dir: String,
    /// What a task requests to see that the site answers (install, restore, migrate, ...).
    #[serde(default = "slash")]
    pub health_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingsSpec {
    /// The settings file's name inside the site directory.
    #[serde(default = "settings_php")]
    pub file: String,
    #[serde(default)]
    pub format: SettingsFormat,
}

impl Default for SettingsSpec {
    fn default() -> Self {
        Self {
            file: settings_php(),
            format: SettingsFormat::Php,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SettingsFormat {
    /// `<?php return [...];`
    #[default]
    Php,
    Json,
    /// Drupal's `settings.php`: `$databases`, `$settings`, `$base_url`.
    Drupal,
    /// What the wordpress platform's wp-config.php loads: `define('DB_NAME', ...)`, keys.
    Wordpress,
}

fn dot() -> String {
    ".".into()
}
fn index_php() -> String {
    "index.php".into()
}
fn sites() -> String {
    "sites".into()
}
fn settings_php() -> String {
    "settings.php".into()
}
pub(crate) fn private() -> String {
    "private".into()
}
pub(crate) fn slash() -> String {
    "/".into()
}

/// A relative path from a manifest: plain segments only, so joining it to the root stays
/// inside the root.
fn check_relative(field: &str, value: &str) -> Result<(), String> {
    if value == "." {
        return Ok(());
    }
    let ok = !value.is_empty()
        && !value.starts_with('/')
        && value
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("{field} = {value:?} must be a relative path of plain segments (letters, digits, . _ -)"))
    }
}

impl Manifest {
    /// Reads and checks `<root>/hosting.toml`.
    pub async fn read(root: &HostPath) -> Result<Self, PlatformError> {
        let path = root.as_path().join(MANIFEST_FILE);
        let err = |reason: String| PlatformError::Manifest {
            path: path.display().to_string(),
            reason,
        };
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        m.check()
    }

    /// The checks every manifest passes, read from a file or made by a driver's scan.
    pub fn check(self) -> Result<Self, String> {
        let m = self;
        check_relative("application.web_root", &m.application.web_root)?;
        check_relative(
            "application.front_controller",
            &m.application.front_controller,
        )?;
        check_relative("application.sites_dir", &m.application.sites_dir)?;
        check_relative("settings.file", &m.settings.file)?;
        check_relative("application.private_dir", &m.application.private_dir)?;
        let app = &m.application;
        if app.sites_dir == "." {
            return Err("application.sites_dir cannot be the platform root: site directories need a directory of their own".into());
        }
        if app.web_root == app.sites_dir || app.web_root.starts_with(&format!("{}/", app.sites_dir))
        {
            return Err(format!(
                "application.web_root = {:?} lies inside application.sites_dir = {:?}: sites' own files would be the web root",
                app.web_root, app.sites_dir
            ));
        }
        if matches!(app.private_dir.as_str(), "." | "files")
            || app.private_dir.starts_with("files/")
            || app.private_dir == m.settings.file
        {
            return Err(format!(
                "application.private_dir = {:?} must be a directory of its own in the site directory, not its public files",
                app.private_dir
            ));
        }
        if !app.health_path.starts_with('/')
            || app.health_path.len() > 512
            || !app
                .health_path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._~-?=&%+".contains(&b))
        {
            return Err(format!(
                "application.health_path = {:?} must be a path starting with / (letters, digits, / . _ ~ - ? = & % +)",
                app.health_path
            ));
        }
        if let Some(v) = &m.php.min_version {
            if version_parts(v).is_empty() || v.len() > 32 {
                return Err(format!(
                    "php.min_version = {v:?} must be a version such as \"8.1\""
                ));
            }
        }
        for ext in &m.php.extensions {
            if ext.is_empty()
                || ext.len() > 64
                || !ext
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b' ')
            {
                return Err(format!("php.extensions: {ext:?} is not an extension name"));
            }
        }
        if m.settings.file.contains('/') {
            return Err("settings.file must be a file name, not a path".into());
        }
        if m.profiles.is_empty() {
            return Err("declare at least one [[profiles]] entry with its languages".into());
        }
        for (name, argv) in &m.actions {
            if !KNOWN_ACTIONS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown action '{name}'; known actions: {}",
                    KNOWN_ACTIONS.join(", ")
                ));
            }
            if argv.is_empty() || argv[0].is_empty() {
                return Err(format!("action '{name}' must be a non-empty argv list"));
            }
        }
        if !m.actions.contains_key("install") {
            return Err("the manifest must declare an 'install' action".into());
        }
        Ok(m)
    }

    pub fn web_root(&self, root: &HostPath) -> Result<HostPath, PlatformError> {
        join(root, &self.application.web_root)
    }

    pub fn site_dir(
        &self,
        root: &HostPath,
        domain: &DomainName,
    ) -> Result<HostPath, PlatformError> {
        join(&join(root, &self.application.sites_dir)?, domain.as_str())
    }

    /// A site's private directory, inside its site directory.
    pub fn private_dir(&self, site_dir: &HostPath) -> Result<HostPath, PlatformError> {
        join(site_dir, &self.application.private_dir)
    }

    /// The settings file's content for a site.
    pub fn render_settings(&self, site: &SiteContext) -> Result<String, PlatformError> {
        check_db_host(&site.db.host).map_err(|reason| PlatformError::ActionFailed {
            action: "settings",
            reason,
        })?;
        // Every value below is a checked type (domain, identifiers, alphanumeric password,
        // normalized path, host name), so none of them can break out of a quoted string.
        Ok(match self.settings.format {
            SettingsFormat::Php => format!(
                "<?php\n// Generated by the hosting control plane; a verify task rewrites it.\nreturn [\n  'site' => [\n    'domain' => '{domain}',\n    'aliases' => [{aliases}],\n    'url' => '{url}',\n    'dir' => '{dir}',\n    'private_dir' => '{private}',\n    'profile' => '{profile}',\n    'language' => '{language}',\n    'secret' => '{secret}',\n  ],\n  'db' => [\n    'driver' => 'mysql',\n    'host' => '{host}',\n    'port' => {port},\n    'name' => '{name}',\n    'user' => '{user}',\n    'password' => '{password}',\n  ],\n];\n",
                domain = site.domain,
                aliases = site.aliases.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(", "),
                url = site.url,
                dir = site.site_dir,
                private = site.private_dir,
                secret = crate::derived_key(site, "app"),
                profile = site.profile,
                language = site.language,
                host = site.db.host,
                port = site.db.port,
                name = site.db.name,
                user = site.db.user,
                password = site.db.password.expose(),
            ),
            SettingsFormat::Drupal => crate::drupal::render_settings(site),
            SettingsFormat::Wordpress => crate::wordpress::render_settings(site),
            SettingsFormat::Json => {
                let v = serde_json::json!({
                    "site": {
                        "domain": site.domain, "aliases": site.aliases, "url": site.url, "dir": site.site_dir,
                        "private_dir": site.private_dir, "profile": site.profile, "language": site.language,
                        "secret": crate::derived_key(site, "app"),
                    },
                    "db": {
                        "driver": "mysql", "host": site.db.host, "port": site.db.port, "name": site.db.name,
                        "user": site.db.user, "password": site.db.password.expose(),
                    },
                });
                format!("{v:#}\n")
            }
        })
    }

    /// Runs a site action. Returns the JSON object the command printed as its last line of
    /// output (or `{}`); every other line goes to `log`, with the database password masked.
    pub async fn run_action<L: FnMut(&'static str, String) + Send>(
        &self,
        root: &HostPath,
        action: Action,
        site: &SiteContext,
        timeout: Duration,
        mut log: L,
    ) -> Result<serde_json::Value, PlatformError> {
        let key = action.key();
        let argv = self
            .actions
            .get(key)
            .ok_or(PlatformError::NoSuchAction(key))?;
        let failed = |reason: String| PlatformError::ActionFailed {
            action: key,
            reason,
        };
        let stdin_doc = serde_json::json!({
            "action": key,
            "domain": site.domain,
            "aliases": site.aliases,
            "url": site.url,
            "site_dir": site.site_dir,
            "private_dir": site.private_dir,
            "settings_file": site.site_dir.as_path().join(&self.settings.file),
            "profile": site.profile,
            "language": site.language,
            "admin_email": site.admin_email,
            "db": {
                "host": site.db.host, "port": site.db.port, "name": site.db.name,
                "user": site.db.user, "password": site.db.password.expose(),
            },
            "previous": site.previous,
        });
        // The password travels on stdin only: the environment and the arguments of a process
        // can be read by other users of the host (/proc/<pid>/environ, /proc/<pid>/cmdline).
        // The environment is made afresh, so no secret of the calling service (its database
        // and broker URLs) reaches the platform's code, which runs as the site's own user.
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .current_dir(root.as_path())
            .env_clear()
            .env("PATH", ACTION_PATH)
            .env("HOME", site.private_dir.as_str())
            .env("LANG", "C.UTF-8")
            .env("HOSTING_ACTION", key)
            .env("HOSTING_SITE_DOMAIN", site.domain.as_str())
            .env("HOSTING_SITE_URL", &site.url)
            .env("HOSTING_SITE_DIR", site.site_dir.as_str())
            .env("HOSTING_SITE_PRIVATE_DIR", site.private_dir.as_str())
            .env("HOSTING_PLATFORM_ROOT", root.as_str())
            // Not secrets, and what CMS command-line tools take as options.
            .env("HOSTING_SITE_PROFILE", site.profile.as_str())
            .env("HOSTING_SITE_LANGUAGE", site.language.as_str())
            .env("HOSTING_ADMIN_EMAIL", site.admin_email.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match site.run_as {
            // `uid` also drops the supplementary groups when we are root (std does setgroups).
            Some(RunAs { uid, gid }) => {
                command.uid(uid).gid(gid);
            }
            None if running_as_root() => return Err(failed(
                "refusing to run a platform action as root: the site has no system user of its own"
                    .into(),
            )),
            None => {}
        }
        let mut child = command
            .spawn()
            .map_err(|e| failed(format!("cannot start {:?}: {e}", argv[0])))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| failed("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("no stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| failed("no stderr".into()))?;
        let secret = site.db.password.expose().to_owned();
        let mask = move |line: String| line.replace(&secret, "***");

        let run = async {
            let doc = stdin_doc.to_string();
            // A command that does not read its stdin closes the pipe; that is fine.
            let _ = stdin.write_all(doc.as_bytes()).await;
            drop(stdin);
            let mut out_lines = BufReader::new(stdout).lines();
            let mut err_lines = BufReader::new(stderr).lines();
            let mut last_out: Option<String> = None;
            let mut tail_err: Vec<String> = Vec::new();
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                tokio::select! {
                    line = out_lines.next_line(), if out_open => match line {
                        Ok(Some(l)) => {
                            if let Some(prev) = last_out.replace(mask(l)) {
                                if !prev.trim().is_empty() { log("info", prev); }
                            }
                        }
                        _ => out_open = false,
                    },
                    line = err_lines.next_line(), if err_open => match line {
                        Ok(Some(l)) => {
                            let l = mask(l);
                            if tail_err.len() == 5 { tail_err.remove(0); }
                            tail_err.push(l.clone());
                            log("warning", l);
                        }
                        _ => err_open = false,
                    },
                }
            }
            let status = child.wait().await.map_err(|e| failed(e.to_string()))?;
            let result = match last_out.as_deref().map(str::trim) {
                Some(l) if l.starts_with('{') => match serde_json::from_str::<serde_json::Value>(l)
                {
                    Ok(v) => v,
                    Err(_) => {
                        log("info", l.to_owned());
                        serde_json::json!({})
                    }
                },
                Some(l) if !l.is_empty() => {
                    log("info", l.to_owned());
                    serde_json::json!({})
                }
                _ => serde_json::json!({}),
            };
            if !status.success() {
                let why = if tail_err.is_empty() {
                    "no output on stderr".to_owned()
                } else {
                    tail_err.join(" | ")
                };
                return Err(failed(format!("{} exited with {status}: {why}", argv[0])));
            }
            Ok(result)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(failed(format!(
                "no result within {timeout:?}; the command was stopped"
            ))),
        }
    }
}

/// The PATH platform actions get: the system's, nothing from the calling service.
pub const ACTION_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The environment variables an action may see: these and the `HOSTING_*` ones set above.
pub const ACTION_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "HOSTING_ACTION",
    "HOSTING_SITE_DOMAIN",
    "HOSTING_SITE_URL",
    "HOSTING_SITE_DIR",
    "HOSTING_SITE_PRIVATE_DIR",
    "HOSTING_PLATFORM_ROOT",
    "HOSTING_SITE_PROFILE",
    "HOSTING_SITE_LANGUAGE",
    "HOSTING_ADMIN_EMAIL",
];

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

const KNOWN_ACTIONS: &[&str] = &[
    "install",
    "update_db",
    "clear_cache",
    "maintenance_on",
    "maintenance_off",
    "login_link",
    "packages",
    "fix_paths",
];

fn join(base: &HostPath, rel: &str) -> Result<HostPath, PlatformError> {
    if rel == "." {
        return Ok(base.clone());
    }
    HostPath::parse(&format!("{base}/{rel}")).map_err(|e| PlatformError::Manifest {
        path: base.to_string(),
        reason: e.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[application]
name = "demo"
[[profiles]]
name = "standard"
languages = ["en"]
[actions]
install = ["php", "install.php"]
"#;

    #[test]
    fn a_minimal_manifest_gets_defaults() {
        let m = Manifest::parse(MINIMAL).unwrap();
        assert_eq!(m.application.web_root, ".");
        assert_eq!(m.settings.file, "settings.php");
    }

    #[test]
    fn escaping_paths_and_unknown_actions_are_refused() {
        let bad = MINIMAL.replace("name = \"demo\"", "name = \"demo\"\nsites_dir = \"../etc\"");
        assert!(Manifest::parse(&bad).unwrap_err().contains("sites_dir"));
        let bad = format!("{MINIMAL}deploy = [\"rm\"]\n");
        assert!(Manifest::parse(&bad)
            .unwrap_err()
            .contains("unknown action"));
        let no_install = MINIMAL.replace("install = [\"php\", \"install.php\"]", "");
        assert!(Manifest::parse(&no_install)
            .unwrap_err()
            .contains("install"));
    }

    #[test]
    fn layouts_that_would_serve_or_mix_site_data_are_refused() {
        let with =
            |line: &str| MINIMAL.replace("name = \"demo\"", &format!("name = \"demo\"\n{line}"));
        for (line, field) in [
            ("sites_dir = \".\"", "sites_dir"),
            ("web_root = \"sites\"", "web_root"),
            ("web_root = \"sites/x\"", "web_root"),
            ("private_dir = \"files\"", "private_dir"),
            ("private_dir = \"../up\"", "private_dir"),
            ("health_path = \"no-slash\"", "health_path"),
            ("health_path = \"/a b\"", "health_path"),
        ] {
            let err = Manifest::parse(&with(line)).unwrap_err();
            assert!(err.contains(field), "{line}: {err}");
        }
        let ok =
            Manifest::parse(&with("web_root = \".\"\nprivate_dir = \"data/private\"")).unwrap();
        assert_eq!(ok.application.private_dir, "data/private");
        let bad_php = format!("{MINIMAL}[php]\nextensions = [\"pdo;rm\"]\n");
        assert!(Manifest::parse(&bad_php)
            .unwrap_err()
            .contains("php.extensions"));
    }

    #[test]
    fn php_requirements_say_what_is_missing() {
        let needs = PhpRequirements {
            min_version: Some("8.1".into()),
            extensions: vec!["pdo_mysql".into(), "Intl".into()],
        };
        let have = vec!["pdo_mysql".to_owned(), "core".to_owned()];
        assert_eq!(needs.unmet("8.2.36", &have).len(), 1);
        assert!(needs.unmet("8.2.36", &have)[0].contains("extension Intl"));
        let old = needs.unmet("7.4.33", &[have, vec!["intl".into()]].concat());
        assert_eq!(old.len(), 1);
        assert!(old[0].contains("PHP 8.1 or newer"));
        assert!(needs
            .unmet("8.1.0", &["pdo_mysql".into(), "intl".into()])
            .is_empty());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use propcheck::Gen;

    const EXAMPLE: &str = include_str!("../../../platforms/example/hosting.toml");

    /// Whatever text a platform's manifest holds, reading it panics never, and what is
    /// accepted passes its own checks again.
    #[test]
    fn manifests_parse_totally() {
        let mut g = Gen::new(0x0a11_f357);
        assert!(Manifest::parse(EXAMPLE).is_ok());
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        for _ in 0..3000 {
            let text = match g.below(3) {
                0 => g.mutate(EXAMPLE),
                1 => {
                    // A line of the example replaced by a hostile one.
                    let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
                    let at = g.below(l.len());
                    let key = l[at].split('=').next().unwrap_or("x").trim().to_owned();
                    l[at] = format!("{key} = \"{}\"", g.string(40).replace(['"', '\\'], ""));
                    l.join("\n")
                }
                _ => g.string(400),
            };
            if let Ok(m) = Manifest::parse(&text) {
                let again = m.clone().check();
                assert!(again.is_ok(), "{text}");
                assert!(!m.application.sites_dir.contains(".."));
                assert!(!m.application.web_root.starts_with('/'));
            }
        }
    }
}
