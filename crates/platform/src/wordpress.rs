//! The `wordpress` driver: a WordPress codebase, laid out by `platforms/wordpress/build.sh`
//! (`wordpress/` the codebase, `bin/hosting-wp.php` the site actions, `sites/<domain>/`).
//!
//! Platform verify reads core's version and database version (`$wp_version`,
//! `$wp_db_version`: the schema version), plugins and themes with the versions from their
//! headers, and the installed translations. Site actions go through WordPress itself on the
//! PHP command line: `wp_install`, a password-reset key for the one-time login, `wp_upgrade`.

use crate::{Application, Manifest, PackageInfo, PackageType, PlatformError, ProfileInfo};
use crate::{PhpRequirements, SettingsFormat, SettingsSpec, SiteContext};
use domain::{HostPath, Language, Name};
use std::collections::BTreeMap;
use std::path::Path;

/// Where the codebase is inside the platform root.
pub const CODEBASE: &str = "wordpress";

pub fn scan(root: &HostPath) -> Result<Manifest, PlatformError> {
    let err = |reason: String| PlatformError::Manifest {
        path: root.to_string(),
        reason,
    };
    let wp = root.as_path().join(CODEBASE);
    let version_php = wp.join("wp-includes/version.php");
    let text = std::fs::read_to_string(&version_php).map_err(|e| {
        err(format!(
            "no WordPress codebase: {}: {e} (build the platform with platforms/wordpress/build.sh)",
            version_php.display()
        ))
    })?;
    let version = php_assignment(&text, "$wp_version")
        .ok_or_else(|| err("no $wp_version in wp-includes/version.php".into()))?;
    let db_version: i64 = php_assignment(&text, "$wp_db_version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("no $wp_db_version in wp-includes/version.php".into()))?;
    if !root.as_path().join("bin/hosting-wp.php").is_file() {
        return Err(err(
            "bin/hosting-wp.php is missing (build the platform with platforms/wordpress/build.sh)"
                .into(),
        ));
    }

    let mut packages = vec![PackageInfo {
        name: "wordpress".into(),
        package_type: PackageType::Core,
        version: version.clone(),
        schema_version: Some(db_version),
    }];
    let content = wp.join("wp-content");
    packages.extend(plugins(&content.join("plugins")));
    packages.extend(themes(&content.join("themes")));

    let mut languages = vec![Language::parse("en").map_err(|e| err(e.0))?];
    languages.extend(installed_languages(&content.join("languages")));
    let manifest = Manifest {
        application: Application {
            name: "wordpress".into(),
            version: Some(version),
            web_root: CODEBASE.into(),
            front_controller: "index.php".into(),
            sites_dir: "sites".into(),
            private_dir: crate::hooks::private(),
            health_path: crate::hooks::slash(),
        },
        settings: SettingsSpec {
            file: "settings.php".into(),
            format: SettingsFormat::Wordpress,
        },
        packages,
        profiles: vec![ProfileInfo {
            // WordPress has no install profiles: one, named as the example platform's is.
            name: Name::parse("standard").map_err(|e| err(e.0))?,
            languages,
        }],
        actions: actions(),
        // What WordPress 6 needs to run at all (it talks to MySQL through mysqli).
        php: PhpRequirements {
            min_version: Some("7.0".into()),
            extensions: vec!["mysqli".into()],
        },
    };
    manifest.check().map_err(err)
}

/// `$name = '6.1.9';` or `$name = 53496;`
fn php_assignment(text: &str, name: &str) -> Option<String> {
    let line = text.lines().find(|l| {
        l.trim_start().starts_with(&format!("{name} "))
            || l.trim_start().starts_with(&format!("{name}="))
    })?;
    let value = line.split_once('=')?.1.trim().trim_end_matches(';').trim();
    Some(value.trim_matches(['\'', '"']).to_owned())
}

/// `Key: value` headers in the first 8 KiB of a plugin's main file or a theme's style.css.
fn headers(path: &Path) -> BTreeMap<String, String> {
    let Ok(bytes) = std::fs::read(path) else {
        return BTreeMap::new();
    };
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(8192)]).into_owned();
    head.lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches(['*', '#', '/']).trim();
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (!k.is_empty()
                && k.len() < 32
                && k.chars().all(|c| c.is_ascii_alphabetic() || c == ' '))
            .then(|| (k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn slug_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn plugins(dir: &Path) -> Vec<PackageInfo> {
    let mut out = Vec::new();
    for e in crate::sorted_entries(dir) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let (slug, main) = if path.is_dir() {
            // The plugin's main file is the .php file in its folder with a Plugin Name header.
            let Some(main) = crate::sorted_entries(&path)
                .into_iter()
                .map(|f| f.path())
                .filter(|p| p.extension().is_some_and(|x| x == "php"))
                .find(|f| headers(f).contains_key("Plugin Name"))
            else {
                continue;
            };
            (name, main)
        } else if let Some(stem) = name.strip_suffix(".php") {
            (stem.to_owned(), path)
        } else {
            continue;
        };
        let h = headers(&main);
        if !h.contains_key("Plugin Name") || !slug_ok(&slug) {
            continue;
        }
        out.push(PackageInfo {
            name: slug,
            package_type: PackageType::Plugin,
            version: h.get("Version").cloned().unwrap_or_else(|| "0".into()),
            schema_version: None,
        });
    }
    out
}

fn themes(dir: &Path) -> Vec<PackageInfo> {
    let mut out = Vec::new();
    for e in crate::sorted_entries(dir) {
        let slug = e.file_name().to_string_lossy().into_owned();
        let h = headers(&e.path().join("style.css"));
        if !h.contains_key("Theme Name") || !slug_ok(&slug) {
            continue;
        }
        out.push(PackageInfo {
            name: slug,
            package_type: PackageType::Theme,
            version: h.get("Version").cloned().unwrap_or_else(|| "0".into()),
            schema_version: None,
        });
    }
    out
}

/// Core translations: `fr_FR.mo`, `de_DE_formal.mo` (not `admin-fr_FR.mo` and the like),
/// as lower-case codes (`fr_fr`).
fn installed_languages(dir: &Path) -> Vec<Language> {
    let mut out: Vec<Language> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let locale = name.strip_suffix(".mo")?;
                    let mut parts = locale.split('_');
                    let lang = parts.next()?;
                    let ok = (2..=3).contains(&lang.len())
                        && lang.bytes().all(|b| b.is_ascii_lowercase())
                        && parts
                            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphabetic()));
                    ok.then(|| Language::parse(locale).ok())?
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    out.dedup();
    out
}

fn actions() -> BTreeMap<String, Vec<String>> {
    [
        ("install", "install"),
        ("update_db", "update-db"),
        ("clear_cache", "clear-cache"),
        ("maintenance_on", "maintenance-on"),
        ("maintenance_off", "maintenance-off"),
        ("login_link", "login-link"),
        ("packages", "packages"),
        ("fix_paths", "fix-paths"),
    ]
    .into_iter()
    .map(|(action, command)| {
        (
            action.to_owned(),
            vec!["php".into(), "bin/hosting-wp.php".into(), command.into()],
        )
    })
    .collect()
}

/// The site's `settings.php`, which the platform's wp-config.php loads. Every value is a
/// checked type (domain, identifiers, alphanumeric password, normalized path, host name), so
/// none can break out of its quotes. The keys and salts derive from the site's application
/// secret: the same through verify, restore, migrate and rename, so sessions survive them.
pub fn render_settings(site: &SiteContext) -> String {
    let key = |name: &str| crate::derived_key(site, &format!("wordpress:{name}"));
    let keys = [
        "AUTH_KEY",
        "SECURE_AUTH_KEY",
        "LOGGED_IN_KEY",
        "NONCE_KEY",
        "AUTH_SALT",
        "SECURE_AUTH_SALT",
        "LOGGED_IN_SALT",
        "NONCE_SALT",
    ]
    .iter()
    .map(|k| format!("define('{k}', '{}');\n", key(k)))
    .collect::<String>();
    let url = site.url.trim_end_matches('/');
    format!(
        "<?php\n// Generated by the hosting control plane; a verify task rewrites it.\n\
define('DB_NAME', '{name}');\n\
define('DB_USER', '{user}');\n\
define('DB_PASSWORD', '{password}');\n\
define('DB_HOST', '{host}:{port}');\n\
define('DB_CHARSET', 'utf8mb4');\n\
define('DB_COLLATE', '');\n\
define('WP_HOME', '{url}');\n\
define('WP_SITEURL', '{url}');\n\
define('HOSTING_SITE_DIR', '{dir}');\n\
define('HOSTING_SITE_DOMAIN', '{domain}');\n\
define('HOSTING_PRIVATE_DIR', '{private}');\n\
// The codebase is shared and managed by the control plane: no updates or installs from a site.\n\
define('DISALLOW_FILE_MODS', true);\n\
define('AUTOMATIC_UPDATER_DISABLED', true);\n\
define('WP_AUTO_UPDATE_CORE', false);\n\
{keys}\
$table_prefix = 'wp_';\n",
        name = site.db.name,
        user = site.db.user,
        password = site.db.password.expose(),
        host = site.db.host,
        port = site.db.port,
        dir = site.site_dir,
        private = site.private_dir,
        domain = site.domain,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_built_like_build_sh_makes_it() {
        let root = std::env::temp_dir().join(format!("wp-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(
            "wordpress/wp-includes/version.php",
            "<?php\n$wp_version = '6.1.9';\n$wp_db_version = 53496;\n",
        );
        w("bin/hosting-wp.php", "<?php\n");
        w(
            "wordpress/wp-content/plugins/akismet/akismet.php",
            "<?php\n/*\nPlugin Name: Akismet Anti-Spam\nVersion: 5.0.2\n*/\n",
        );
        w(
            "wordpress/wp-content/plugins/akismet/class.akismet.php",
            "<?php\n",
        );
        w(
            "wordpress/wp-content/plugins/hello.php",
            "<?php\n/**\n * Plugin Name: Hello Dolly\n * Version: 1.7.2\n */\n",
        );
        w(
            "wordpress/wp-content/plugins/index.php",
            "<?php\n// Silence is golden.\n",
        );
        w(
            "wordpress/wp-content/themes/twentytwentythree/style.css",
            "/*\nTheme Name: Twenty Twenty-Three\nVersion: 1.0\n*/\n",
        );
        w("wordpress/wp-content/languages/fr_FR.mo", "");
        w("wordpress/wp-content/languages/admin-fr_FR.mo", "");
        w("wordpress/wp-content/languages/de_DE_formal.mo", "");
        let m = scan(&HostPath::parse(root.to_str().unwrap()).unwrap()).unwrap();
        let names: Vec<(&str, &str, Option<i64>)> = m
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.schema_version))
            .collect();
        assert_eq!(
            names,
            [
                ("wordpress", "6.1.9", Some(53496)),
                ("akismet", "5.0.2", None),
                ("hello", "1.7.2", None),
                ("twentytwentythree", "1.0", None)
            ]
        );
        let langs: Vec<&str> = m.profiles[0].languages.iter().map(|l| l.as_str()).collect();
        assert_eq!(langs, ["en", "de_de_formal", "fr_fr"]);
        assert_eq!(m.application.web_root, "wordpress");
        assert_eq!(m.settings.format, SettingsFormat::Wordpress);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
