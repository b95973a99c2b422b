<?php
// The wordpress driver's site actions, run by the control plane from the platform root:
//   php bin/hosting-wp.php <action>
// Input: the site as one JSON object on stdin (domain, url, site_dir, language, admin_email,
// db with its password, previous). Output: log lines, then a JSON object as the last line.

function fail(string $message): void
{
    fwrite(STDERR, $message . "\n");
    exit(1);
}

function result(array $r): void
{
    echo json_encode($r, JSON_UNESCAPED_SLASHES), "\n";
    exit(0);
}

$hosting_action = $argv[1] ?? '';
$hosting_input = json_decode(stream_get_contents(STDIN), true);
if (!is_array($hosting_input) || !isset($hosting_input['site_dir'], $hosting_input['url'])) {
    fail('expected the site as a JSON object on stdin');
}

// WordPress reads the request it serves; on the command line there is none, so the site's
// own address stands in for it.
$hosting_url = parse_url($hosting_input['url']);
$hosting_host = $hosting_url['host'] . (isset($hosting_url['port']) ? ':' . $hosting_url['port'] : '');
$_SERVER['HTTP_HOST'] = $hosting_host;
$_SERVER['SERVER_NAME'] = $hosting_url['host'];
$_SERVER['SERVER_PORT'] = $hosting_url['port'] ?? 80;
$_SERVER['REQUEST_URI'] = '/';
$_SERVER['REQUEST_METHOD'] = 'GET';
$_SERVER['HOSTING_SITE_DIR'] = $hosting_input['site_dir'];
putenv('HOSTING_SITE_DIR=' . $hosting_input['site_dir']);

$hosting_wordpress = dirname(__DIR__) . '/wordpress';

// The control plane sends its own welcome mail.
function wp_new_blog_notification($blog_title, $blog_url, $user_id, $password) {}

if ($hosting_action === 'install') {
    define('WP_INSTALLING', true);
}
require $hosting_wordpress . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/plugin.php';

/** The installed locale for a language code such as fr, fr_fr or fr-FR ('' for English). */
function hosting_locale(string $language): string
{
    $language = strtolower(str_replace('-', '_', $language));
    if ($language === '' || $language === 'en' || $language === 'en_us') {
        return '';
    }
    $candidates = [];
    foreach (glob(WP_LANG_DIR . '/*.mo') ?: [] as $file) {
        $locale = basename($file, '.mo');
        if (!preg_match('/^[a-z]{2,3}(_[A-Z]{2})?(_[a-z]+)?$/', $locale)) {
            continue;
        }
        if (strtolower($locale) === $language) {
            return $locale;
        }
        if (strpos(strtolower($locale), $language . '_') === 0) {
            $candidates[] = $locale;
        }
    }
    sort($candidates);
    return $candidates[0] ?? '';
}

/** A one-time login: WordPress's own password-reset link for the administrator. */
function hosting_login_url(): string
{
    $admins = get_users(['role' => 'administrator', 'orderby' => 'ID', 'number' => 1]);
    if (!$admins) {
        fail('the site has no administrator');
    }
    $key = get_password_reset_key($admins[0]);
    if (is_wp_error($key)) {
        fail('cannot make a password-reset key: ' . $key->get_error_message());
    }
    return network_site_url('wp-login.php?action=rp&key=' . $key . '&login=' . rawurlencode($admins[0]->user_login), 'login');
}

// WordPress's own code uses globals such as $action: this script's are all hosting_*.
switch ($hosting_action) {
    case 'install':
        if (!is_blog_installed()) {
            $locale = hosting_locale($hosting_input['language'] ?? 'en');
            $installed = wp_install($hosting_input['domain'], 'admin', $hosting_input['admin_email'], true, '', wp_generate_password(32, true, true), $locale);
            if (is_wp_error($installed)) {
                fail('the install failed: ' . $installed->get_error_message());
            }
            echo "WordPress installed" . ($locale ? " in $locale" : '') . "\n";
        } else {
            echo "WordPress was installed already\n";
        }
        result(['login_url' => hosting_login_url()]);

    case 'login-link':
        result(['login_url' => hosting_login_url()]);

    case 'update-db':
        $before = (int) get_option('db_version');
        wp_upgrade();
        $after = (int) get_option('db_version');
        echo "database version $before -> $after\n";
        result(['db_version' => $after]);

    case 'clear-cache':
        wp_cache_flush();
        global $wpdb;
        $wpdb->query("DELETE FROM {$wpdb->options} WHERE option_name LIKE '\\_transient\\_%' OR option_name LIKE '\\_site\\_transient\\_%'");
        result([]);

    case 'maintenance-on':
        file_put_contents($hosting_input['site_dir'] . '/.maintenance', (string) time());
        result(['maintenance' => true]);

    case 'maintenance-off':
        @unlink($hosting_input['site_dir'] . '/.maintenance');
        result(['maintenance' => false]);

    case 'packages':
        global $wp_version;
        $packages = [['name' => 'wordpress', 'type' => 'core', 'version' => $wp_version,
            'schema_version' => (int) get_option('db_version')]];
        // Plugins and themes are in the codebase every site shares; a site's list is what it
        // can use, whether it has switched them on or not.
        foreach (get_plugins() as $file => $data) {
            $slug = dirname($file) === '.' ? basename($file, '.php') : dirname($file);
            $packages[] = ['name' => $slug, 'type' => 'plugin', 'version' => $data['Version'] ?: '0', 'schema_version' => null];
        }
        foreach (wp_get_themes() as $slug => $theme) {
            $packages[] = ['name' => $slug, 'type' => 'theme', 'version' => $theme->get('Version') ?: '0', 'schema_version' => null];
        }
        result(['packages' => $packages]);

    case 'fix-paths':
        $previous = $hosting_input['previous'] ?? null;
        if (!is_array($previous)) {
            result(['fixed' => 0]);
        }
        global $wpdb;
        $fixed = 0;
        if (get_option('blogname') === $previous['domain']) {
            update_option('blogname', $hosting_input['domain']);
            $fixed++;
        }
        foreach ([[$previous['url'], $hosting_input['url']], [$previous['site_dir'], $hosting_input['site_dir']]] as [$from, $to]) {
            $fixed += (int) $wpdb->query($wpdb->prepare(
                "UPDATE {$wpdb->posts} SET post_content = REPLACE(post_content, %s, %s), guid = REPLACE(guid, %s, %s)",
                $from, $to, $from, $to
            ));
        }
        echo "rewrote $fixed references to {$previous['domain']}\n";
        result(['fixed' => $fixed]);

    default:
        fail("unknown action '$hosting_action'");
}
