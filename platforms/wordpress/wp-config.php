<?php
// The hosting control plane's wp-config.php: one WordPress codebase, many sites. Each site's
// own settings (database, addresses, keys) live in its site directory, ../sites/<domain>/:
// on the web the vhost names that directory (HOSTING_SITE_DIR, chosen by the host name the
// request came for); on the command line the driver sets it.
$hosting_dir = $_SERVER['HOSTING_SITE_DIR'] ?? (getenv('HOSTING_SITE_DIR') ?: '');
$hosting_sites = realpath(dirname(__DIR__) . '/sites');
$hosting_real = $hosting_dir === '' ? false : realpath($hosting_dir);
if ($hosting_sites === false || $hosting_real === false
    || strpos($hosting_real, $hosting_sites . '/') !== 0
    || !is_file($hosting_real . '/settings.php')) {
    if (PHP_SAPI !== 'cli') {
        header('HTTP/1.1 404 Not Found');
    }
    echo "No site is configured for this address.\n";
    exit(1);
}
require $hosting_real . '/settings.php';

if (!defined('ABSPATH')) {
    define('ABSPATH', __DIR__ . '/');
}
require_once ABSPATH . 'wp-settings.php';
