<?php
/*
 * Plugin Name: Hosting control plane
 * Description: Keeps each site's uploads in its own site directory and puts a site (not the
 * whole codebase) in maintenance. Installed by the control plane's wordpress driver.
 */

if (!defined('HOSTING_SITE_DIR')) {
    return;
}

// Uploads go to <site dir>/files, served by the vhost at /files/ (where PHP never runs), so
// backup, restore, migrate and clone carry them with the site.
add_filter('upload_dir', function (array $dirs): array {
    $base = HOSTING_SITE_DIR . '/files';
    $url = home_url('/files');
    $dirs['path'] = $base . $dirs['subdir'];
    $dirs['url'] = $url . $dirs['subdir'];
    $dirs['basedir'] = $base;
    $dirs['baseurl'] = $url;
    return $dirs;
});

// Per-site maintenance: WordPress's own .maintenance file sits in the shared codebase.
if (PHP_SAPI !== 'cli' && is_file(HOSTING_SITE_DIR . '/.maintenance')) {
    wp_die(
        '<h1>Briefly unavailable for scheduled maintenance</h1><p>Check back in a minute.</p>',
        'Maintenance',
        ['response' => 503]
    );
}
