<?php
// The example application's only page, and its one-time login.
require __DIR__ . '/../lib/app.php';

header('Content-Type: text/html; charset=utf-8');
$dir = $_SERVER['HOSTING_SITE_DIR'] ?? '';
if ($dir === '' || !is_file("$dir/settings.php")) {
    http_response_code(500);
    echo "<h1>Not configured</h1><p>This host has no site settings.</p>";
    exit;
}
$settings = require "$dir/settings.php";
try {
    $pdo = app_connect($settings['db']);
} catch (PDOException $e) {
    http_response_code(503);
    echo "<h1>Database unavailable</h1>";
    exit;
}
$h = fn($s) => htmlspecialchars((string) $s, ENT_QUOTES);
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);

if (app_config($pdo, 'maintenance') === '1') {
    http_response_code(503);
    echo "<h1>Site under maintenance</h1><p>Please come back soon.</p>";
    exit;
}

if ($path === '/login') {
    $token = (string) ($_GET['token'] ?? '');
    $q = $pdo->prepare('UPDATE example_users SET login_token = NULL WHERE id = 1 AND login_token = ? AND login_token_expires > NOW()');
    $q->execute([hash('sha256', $token)]);
    if ($token === '' || $q->rowCount() !== 1) {
        http_response_code(403);
        echo "<h1>Login link invalid</h1><p>This one-time login link was used already or has expired.</p>";
        exit;
    }
    $email = $pdo->query('SELECT email FROM example_users WHERE id = 1')->fetchColumn();
    echo "<h1>Logged in</h1><p>You are logged in as the administrator (" . $h($email) . ").</p>";
    exit;
}

$pdo->exec("UPDATE example_config SET value = value + 1 WHERE name = 'visits'");
$name = app_config($pdo, 'site_name', '(unnamed)');
$database = $pdo->query('SELECT DATABASE()')->fetchColumn();
$pages = $pdo->query('SELECT title, body FROM example_pages ORDER BY id')->fetchAll();
echo "<!doctype html><html><head><title>" . $h($name) . "</title></head><body>\n";
echo "<h1>" . $h($name) . "</h1>\n";
foreach ($pages as $p) {
    echo "<h2>" . $h($p['title']) . "</h2><p>" . $h($p['body']) . "</p>\n";
}
echo "<p>Profile " . $h(app_config($pdo, 'profile')) . ", language " . $h(app_config($pdo, 'language')) . ".</p>\n";
echo "<p>Read from database <code>" . $h($database) . "</code>; visits: " . $h(app_config($pdo, 'visits')) . ".</p>\n";
echo "<footer>example application " . APP_VERSION . "</footer></body></html>\n";
