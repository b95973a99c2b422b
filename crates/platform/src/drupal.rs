//! The `drupal` driver: a Drupal codebase scanned into the registry, and its sites run with
//! drush (which must be on the web server's PATH).
//!
//! Drupal 8 and later: modules, themes and profiles from `*.info.yml`, core's version from
//! `core/lib/Drupal.php`. Drupal 7: `*.info` and `includes/bootstrap.inc`. A module's schema
//! version is its highest `hook_update_N` in its `.install` file. The result is an ordinary
//! [`Manifest`]: settings rendered as Drupal's `settings.php`, one drush command per action.

use crate::{Application, Manifest, PackageInfo, PackageType, PlatformError, ProfileInfo};
use crate::{PhpRequirements, SettingsFormat, SettingsSpec, SiteContext};
use domain::{HostPath, Language, Name};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Directories a scan does not enter: dependencies, and what sites and builds keep.
const SKIP_DIRS: &[&str] = &["vendor", "node_modules", "files", "tests", ".git"];
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Drupal 7: `.info` files, `drush variable-set`.
    Seven,
    /// Drupal 8 and later: `.info.yml` files, `drush state:set`.
    Modern,
}

/// Scans a Drupal codebase at `root` into a manifest.
pub fn scan(root: &HostPath) -> Result<Manifest, PlatformError> {
    let err = |reason: String| PlatformError::Manifest {
        path: root.to_string(),
        reason,
    };
    let base = root.as_path();
    // A Composer project keeps Drupal in web/ (or docroot/); a tarball at the root.
    let web = ["web", "docroot", "."]
        .into_iter()
        .find(|d| {
            let w = base.join(d);
            w.join("core/lib/Drupal.php").is_file() || w.join("includes/bootstrap.inc").is_file()
        })
        .ok_or_else(|| {
            err("no Drupal here: neither core/lib/Drupal.php nor includes/bootstrap.inc (also looked in web/ and docroot/)".into())
        })?;
    let web_dir = base.join(web);
    let (generation, core_version) = if web_dir.join("core/lib/Drupal.php").is_file() {
        let text = read(&web_dir.join("core/lib/Drupal.php")).map_err(err)?;
        (
            Generation::Modern,
            quoted_after(&text, "const VERSION").map_err(err)?,
        )
    } else {
        let text = read(&web_dir.join("includes/bootstrap.inc")).map_err(err)?;
        (
            Generation::Seven,
            quoted_after(&text, "define('VERSION'").map_err(err)?,
        )
    };

    let mut packages: BTreeMap<(String, &'static str), PackageInfo> = BTreeMap::new();
    let mut profiles = Vec::new();
    let mut infos = Vec::new();
    let roots = [
        "core",
        "modules",
        "themes",
        "profiles",
        "libraries",
        "sites/all",
    ];
    for r in roots {
        collect_infos(&web_dir.join(r), 0, generation, &mut infos);
    }
    for info_path in infos {
        let Some(p) = package(&info_path, generation, &core_version).map_err(err)? else {
            continue;
        };
        if p.package_type == PackageType::Profile {
            if let Ok(name) = Name::parse(&p.name) {
                let mut languages = vec![Language::parse("en").map_err(|e| err(e.0))?];
                let dir = info_path.parent().unwrap_or(base);
                for lang in translations(&[dir.join("translations"), web_dir.join("translations")])
                {
                    if !languages.contains(&lang) {
                        languages.push(lang);
                    }
                }
                profiles.push(ProfileInfo { name, languages });
            }
        }
        packages
            .entry((p.name.clone(), p.package_type.as_str()))
            .or_insert(p);
    }
    let system_schema = packages
        .get(&("system".to_owned(), "module"))
        .and_then(|p| p.schema_version);
    let mut list: Vec<PackageInfo> = vec![PackageInfo {
        name: "drupal".into(),
        package_type: PackageType::Core,
        version: core_version.clone(),
        schema_version: system_schema,
    }];
    list.extend(packages.into_values());
    profiles.sort_by(|a, b| a.name.cmp(&b.name));

    let sites_dir = if web == "." {
        "sites".to_owned()
    } else {
        format!("{web}/sites")
    };
    Manifest {
        application: Application {
            name: "drupal".into(),
            version: Some(core_version),
            web_root: web.into(),
            front_controller: "index.php".into(),
            sites_dir,
            private_dir: crate::hooks::private(),
            health_path: crate::hooks::slash(),
        },
        settings: SettingsSpec {
            file: "settings.php".into(),
            format: SettingsFormat::Drupal,
        },
        packages: list,
        profiles,
        actions: actions(generation, web),
        php: php_requirements(generation),
    }
    .check()
    .map_err(err)
}

/// What Drupal's own requirements check asks of PHP (`core/modules/system/system.install`).
fn php_requirements(generation: Generation) -> PhpRequirements {
    let extensions = ["pdo_mysql", "dom", "simplexml", "xml", "gd"];
    PhpRequirements {
        min_version: Some(match generation {
            Generation::Modern => "7.3".into(),
            Generation::Seven => "5.3".into(),
        }),
        extensions: extensions.iter().map(|e| e.to_string()).collect(),
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The first quoted string after `marker`: `const VERSION = '10.1.5';`.
fn quoted_after(text: &str, marker: &str) -> Result<String, String> {
    let rest = text
        .find(marker)
        .map(|i| &text[i + marker.len()..])
        .ok_or_else(|| format!("no {marker} in Drupal's core"))?;
    let start = rest
        .find(['\'', '"'])
        .ok_or_else(|| format!("no version after {marker}"))?;
    let quote = rest.as_bytes()[start] as char;
    let value = &rest[start + 1..];
    let end = value
        .find(quote)
        .ok_or_else(|| format!("an unterminated version after {marker}"))?;
    Ok(value[..end].to_owned())
}

fn collect_infos(dir: &Path, depth: usize, generation: Generation, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH {
        return;
    }
    for e in crate::sorted_entries(dir) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            if !SKIP_DIRS.contains(&name.as_str()) {
                collect_infos(&e.path(), depth + 1, generation, out);
            }
        } else if ft.is_file() {
            let wanted = match generation {
                Generation::Modern => name.ends_with(".info.yml"),
                Generation::Seven => name.ends_with(".info"),
            };
            if wanted {
                out.push(e.path());
            }
        }
    }
}

/// Top-level `key: value` (YAML) or `key = value` (Drupal 7's ini) pairs; nested keys and
/// lists are skipped, which is all a package needs.
fn info_fields(text: &str, generation: Generation) -> BTreeMap<String, String> {
    let sep = match generation {
        Generation::Modern => ':',
        Generation::Seven => '=',
    };
    text.lines()
        .filter(|l| !l.starts_with([' ', '\t', '#', ';']))
        .filter_map(|l| l.split_once(sep))
        .map(|(k, v)| {
            let v = v.trim().trim_matches(['"', '\'']);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

fn package(
    info: &Path,
    generation: Generation,
    core_version: &str,
) -> Result<Option<PackageInfo>, String> {
    let file = info.file_name().unwrap_or_default().to_string_lossy();
    let name = file
        .trim_end_matches(".yml")
        .trim_end_matches(".info")
        .to_owned();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Ok(None); // not a machine name: not an extension
    }
    let fields = info_fields(&read(info)?, generation);
    let dir = info.parent().unwrap_or(Path::new("."));
    let package_type = match fields.get("type").map(String::as_str) {
        Some("theme") => PackageType::Theme,
        Some("profile") => PackageType::Profile,
        Some("module") => PackageType::Module,
        Some(_) => return Ok(None), // theme engines and the like
        // Drupal 7 says it by place: an install profile has a .profile file beside it.
        None if dir.join(format!("{name}.profile")).is_file() => PackageType::Profile,
        None if dir.components().any(|c| c.as_os_str() == "themes") => PackageType::Theme,
        None => PackageType::Module,
    };
    let version = match fields.get("version").map(String::as_str) {
        None | Some("") | Some("VERSION") => core_version.to_owned(),
        Some(v) => v.to_owned(),
    };
    let schema_version = if package_type == PackageType::Theme {
        None
    } else {
        highest_update(&dir.join(format!("{name}.install")), &name)
    };
    Ok(Some(PackageInfo {
        name,
        package_type,
        version,
        schema_version,
    }))
}

/// The highest N of `function <module>_update_N(` in the module's `.install` file.
pub fn highest_update(install: &Path, module: &str) -> Option<i64> {
    let text = std::fs::read_to_string(install).ok()?;
    let prefix = format!("function {module}_update_");
    text.match_indices(&prefix)
        .filter_map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = rest[digits.len()..].trim_start();
            (!digits.is_empty() && after.starts_with('(')).then(|| digits.parse().ok())?
        })
        .max()
}

/// Languages of the `*.<langcode>.po` files in these directories.
fn translations(dirs: &[PathBuf]) -> BTreeSet<Language> {
    let mut out = BTreeSet::new();
    for d in dirs {
        let Ok(entries) = std::fs::read_dir(d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".po") {
                if let Some((_, code)) = stem.rsplit_once('.') {
                    if let Ok(l) = Language::parse(code) {
                        out.insert(l);
                    }
                }
            }
        }
    }
    out
}

/// drush commands, one per action, run from the platform root through `sh -c` so they can
/// read the site's values from the environment; the database password is never among them:
/// drush reads it from the site's settings.php.
fn actions(generation: Generation, web: &str) -> BTreeMap<String, Vec<String>> {
    let drush =
        format!("drush --root=\"$HOSTING_PLATFORM_ROOT/{web}\" --uri=\"$HOSTING_SITE_URL\" -y");
    let login = format!(
        "url=$({drush} user:login --no-browser) && printf '{{\"login_url\": \"%s\"}}\\n' \"$url\""
    );
    let (cache, on, off, packages) = match generation {
        Generation::Modern => (
            "cache:rebuild",
            "state:set system.maintenance_mode 1 --input-format=integer",
            "state:set system.maintenance_mode 0 --input-format=integer",
            PACKAGES_MODERN,
        ),
        Generation::Seven => (
            "cache-clear all",
            "variable-set maintenance_mode 1",
            "variable-set maintenance_mode 0",
            PACKAGES_SEVEN,
        ),
    };
    let install = format!(
        "{drush} site:install \"$HOSTING_SITE_PROFILE\" --locale=\"$HOSTING_SITE_LANGUAGE\" \
         --account-mail=\"$HOSTING_ADMIN_EMAIL\" --site-mail=\"$HOSTING_ADMIN_EMAIL\" \
         --site-name=\"$HOSTING_SITE_DOMAIN\" --sites-subdir=\"$HOSTING_SITE_DOMAIN\" >&2 && {login}"
    );
    let sh = |cmd: String| vec!["sh".to_owned(), "-c".to_owned(), cmd];
    let mut a = BTreeMap::new();
    a.insert("install".into(), sh(install));
    a.insert("update_db".into(), sh(format!("{drush} updatedb")));
    a.insert("clear_cache".into(), sh(format!("{drush} {cache}")));
    a.insert("maintenance_on".into(), sh(format!("{drush} {on}")));
    a.insert("maintenance_off".into(), sh(format!("{drush} {off}")));
    a.insert("login_link".into(), sh(login));
    a.insert(
        "packages".into(),
        sh(format!("{drush} php:eval '{packages}'")),
    );
    a
}

/// Prints `{"packages": [...]}`: every enabled module with its installed schema version.
const PACKAGES_MODERN: &str = "$out = []; foreach (\\Drupal::moduleHandler()->getModuleList() as $n => $e) { $i = \\Drupal::service(\"extension.list.module\")->getExtensionInfo($n); $s = \\Drupal::service(\"update.update_hook_registry\")->getInstalledVersion($n); $out[] = [\"name\" => $n, \"type\" => \"module\", \"version\" => $i[\"version\"] ?? \\Drupal::VERSION, \"schema_version\" => $s > 0 ? $s : null]; } echo json_encode([\"packages\" => $out]), PHP_EOL;";
const PACKAGES_SEVEN: &str = "$out = []; foreach (module_list() as $n) { $i = system_get_info(\"module\", $n); $s = drupal_get_installed_schema_version($n); $out[] = [\"name\" => $n, \"type\" => \"module\", \"version\" => $i[\"version\"] ?? VERSION, \"schema_version\" => $s > 0 ? (int) $s : null]; } echo json_encode([\"packages\" => $out]), PHP_EOL;";

/// Drupal's settings.php for one site. Every value is a checked type (domain, identifiers,
/// alphanumeric password, normalized path, host name), so none can break out of its quotes.
pub fn render_settings(site: &SiteContext) -> String {
    // Stable for the site's life (restore, migrate, rename), so sessions and one-time links
    // survive them.
    let salt = crate::derived_key(site, "drupal:hash_salt");
    let hosts = std::iter::once(&site.domain)
        .chain(&site.aliases)
        .map(|d| format!("'^{}$'", d.as_str().replace('.', "\\\\.")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "<?php\n// Generated by the hosting control plane; a verify task rewrites it.\n\
$databases['default']['default'] = [\n  'driver' => 'mysql',\n  'database' => '{name}',\n  'username' => '{user}',\n  'password' => '{password}',\n  'host' => '{host}',\n  'port' => {port},\n  'prefix' => '',\n  'collation' => 'utf8mb4_general_ci',\n];\n\
$settings['hash_salt'] = '{salt}';\n\
$settings['config_sync_directory'] = '{private}/config/sync';\n\
$settings['file_public_path'] = 'sites/{domain}/files';\n\
$settings['file_private_path'] = '{private}/files';\n\
$settings['file_temp_path'] = '{private}/tmp';\n\
$settings['trusted_host_patterns'] = [{hosts}];\n\
$drupal_hash_salt = $settings['hash_salt'];\n\
$base_url = '{url}';\n",
        name = site.db.name,
        user = site.db.user,
        password = site.db.password.expose(),
        host = site.db.host,
        port = site.db.port,
        private = site.private_dir,
        domain = site.domain,
        url = site.url.trim_end_matches('/'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("drupal-scan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_modern_codebase_in_web() {
        let root = tempdir("modern");
        write(
            &root,
            "web/core/lib/Drupal.php",
            "<?php\nclass Drupal {\n  const VERSION = '10.1.5';\n}\n",
        );
        write(
            &root,
            "web/core/modules/system/system.info.yml",
            "name: System\ntype: module\nversion: VERSION\npackage: Core\n",
        );
        write(&root, "web/core/modules/system/system.install", "<?php\nfunction system_update_10100() {}\nfunction system_update_10201(&$sandbox) {}\n");
        write(
            &root,
            "web/core/profiles/standard/standard.info.yml",
            "name: Standard\ntype: profile\nversion: VERSION\n",
        );
        write(
            &root,
            "web/core/profiles/standard/translations/drupal-10.1.5.fr.po",
            "",
        );
        write(&root, "web/modules/contrib/views_bulk/views_bulk.info.yml", "name: 'Views bulk'\ntype: module\ndependencies:\n  - drupal:views\nversion: '8.x-1.0-beta3'\n");
        write(&root, "web/modules/contrib/views_bulk/views_bulk.install", "function views_bulk_update_8001() {}\nfunction views_bulk_update_8003 () {}\n// views_bulk_update_9999 in a comment\n");
        write(
            &root,
            "web/themes/contrib/olivero2/olivero2.info.yml",
            "name: Olivero 2\ntype: theme\nversion: 2.11.0\n",
        );
        write(&root, "vendor/x/y/fake.info.yml", "type: module\n");
        let m = scan(&HostPath::parse(root.to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(m.application.web_root, "web");
        assert_eq!(m.application.sites_dir, "web/sites");
        assert_eq!(m.settings.format, SettingsFormat::Drupal);
        let get = |n: &str| m.packages.iter().find(|p| p.name == n).cloned().unwrap();
        assert_eq!(get("drupal").version, "10.1.5");
        assert_eq!(get("drupal").schema_version, Some(10201));
        assert_eq!(get("system").version, "10.1.5");
        assert_eq!(get("views_bulk").version, "8.x-1.0-beta3");
        assert_eq!(get("views_bulk").schema_version, Some(8003));
        assert_eq!(get("olivero2").package_type, PackageType::Theme);
        assert_eq!(get("olivero2").schema_version, None);
        assert!(
            m.packages.iter().all(|p| p.name != "fake"),
            "vendor/ is skipped"
        );
        assert_eq!(m.profiles.len(), 1);
        assert_eq!(m.profiles[0].name.as_str(), "standard");
        let langs: Vec<&str> = m.profiles[0].languages.iter().map(|l| l.as_str()).collect();
        assert_eq!(langs, ["en", "fr"]);
        assert!(m.actions["update_db"][2].contains("updatedb"));
        assert!(!m.actions.values().flatten().any(|a| a.contains("password")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_drupal_7_codebase() {
        let root = tempdir("seven");
        write(
            &root,
            "includes/bootstrap.inc",
            "<?php\ndefine('VERSION', '7.98');\n",
        );
        write(
            &root,
            "modules/system/system.info",
            "name = System\ncore = 7.x\nversion = VERSION\n",
        );
        write(
            &root,
            "modules/system/system.install",
            "function system_update_7085() {}\n",
        );
        write(
            &root,
            "profiles/minimal/minimal.info",
            "name = Minimal\ncore = 7.x\n",
        );
        write(&root, "profiles/minimal/minimal.profile", "<?php\n");
        write(
            &root,
            "sites/all/modules/views/views.info",
            "name = Views\ncore = 7.x\nversion = \"7.x-3.29\"\n",
        );
        write(
            &root,
            "sites/all/modules/views/views.install",
            "function views_update_7301() {}\nfunction views_update_7302() {}\n",
        );
        write(
            &root,
            "sites/all/themes/zen/zen.info",
            "name = Zen\ncore = 7.x\nversion = \"7.x-6.4\"\n",
        );
        let m = scan(&HostPath::parse(root.to_str().unwrap()).unwrap()).unwrap();
        assert_eq!(m.application.web_root, ".");
        assert_eq!(m.application.sites_dir, "sites");
        let get = |n: &str| m.packages.iter().find(|p| p.name == n).cloned().unwrap();
        assert_eq!(get("drupal").version, "7.98");
        assert_eq!(get("views").version, "7.x-3.29");
        assert_eq!(get("views").schema_version, Some(7302));
        assert_eq!(get("zen").package_type, PackageType::Theme);
        assert_eq!(get("minimal").package_type, PackageType::Profile);
        assert_eq!(m.profiles[0].name.as_str(), "minimal");
        assert!(m.actions["maintenance_on"][2].contains("variable-set maintenance_mode 1"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn not_drupal_says_so() {
        let root = tempdir("none");
        let e = scan(&HostPath::parse(root.to_str().unwrap()).unwrap()).unwrap_err();
        assert!(e.to_string().contains("no Drupal here"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
