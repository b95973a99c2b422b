<?php
// The example application's command line: one sub-command per hosting action.
// Input: a JSON document on stdin (site, profile, language, admin_email, db with password).
// Output: log lines, then a JSON object as the last line (the action's result).

require __DIR__ . '/../lib/app.php';

function fail(string $message): void
{
    fwrite(STDERR, $message . "\n");
    exit(1);
}

function result(array $r): void
{
    echo json_encode($r, JSON_UNESCAPED_SLASHES), "\n";
}

$action = $argv[1] ?? '';
$input = json_decode(stream_get_contents(STDIN), true);
if (!is_array($input)) {
    fail('expected the site as a JSON object on stdin');
}
try {
    $pdo = app_connect($input['db']);
} catch (PDOException $e) {
    fail('cannot connect to the site database: ' . $e->getMessage());
}

switch ($action) {
    case 'install':
        $pdo->exec('CREATE TABLE IF NOT EXISTS example_config (name VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL)');
        $pdo->exec('CREATE TABLE IF NOT EXISTS example_users (id INT PRIMARY KEY, email VARCHAR(254) NOT NULL,
            login_token CHAR(64) NULL, login_token_expires DATETIME NULL)');
        $pdo->exec('CREATE TABLE IF NOT EXISTS example_pages (id INT AUTO_INCREMENT PRIMARY KEY, title VARCHAR(255) NOT NULL, body TEXT NOT NULL)');
        $pdo->exec('CREATE TABLE IF NOT EXISTS guestbook_entries (id INT AUTO_INCREMENT PRIMARY KEY, author VARCHAR(255) NOT NULL, message TEXT NOT NULL)');
        app_set_config($pdo, 'site_name', $input['domain']);
        app_set_config($pdo, 'profile', $input['profile']);
        app_set_config($pdo, 'language', $input['language']);
        app_set_config($pdo, 'visits', app_config($pdo, 'visits', '0'));
        foreach (CODE_PACKAGES as $name => [$type, $version, $schema]) {
            app_set_config($pdo, "schema:$name", (string) $schema);
            app_set_config($pdo, "version:$name", $version);
        }
        $q = $pdo->prepare('INSERT INTO example_users (id, email) VALUES (1, ?) ON DUPLICATE KEY UPDATE email = VALUES(email)');
        $q->execute([$input['admin_email']]);
        if ($input['profile'] === 'standard' && (int) $pdo->query('SELECT COUNT(*) FROM example_pages')->fetchColumn() === 0) {
            $greeting = GREETINGS[$input['language']] ?? GREETINGS['en'];
            $q = $pdo->prepare('INSERT INTO example_pages (title, body) VALUES (?, ?)');
            $q->execute(['Welcome', "$greeting! This page was stored in the site's own database at install time."]);
        }
        echo "installed {$input['domain']} with profile {$input['profile']} ({$input['language']})\n";
        result(['login_url' => app_new_login_token($pdo, $input['url'])]);
        break;

    case 'login-link':
        result(['login_url' => app_new_login_token($pdo, $input['url'])]);
        break;

    case 'packages':
        $packages = [];
        foreach (CODE_PACKAGES as $name => [$type, $version, $schema]) {
            $installed = app_config($pdo, "schema:$name");
            if ($installed === null) {
                continue; // not enabled on this site
            }
            $packages[] = ['name' => $name, 'type' => $type, 'version' => app_config($pdo, "version:$name", $version),
                'schema_version' => (int) $installed];
        }
        result(['packages' => $packages]);
        break;

    case 'update-db':
        $ran = [];
        foreach (CODE_PACKAGES as $name => [$type, $version, $schema]) {
            $current = (int) app_config($pdo, "schema:$name", '0');
            foreach (UPDATES[$name] ?? [] as $n => $fn) {
                if ($n > $current && $n <= $schema) {
                    $fn($pdo);
                    app_set_config($pdo, "schema:$name", (string) $n);
                    $ran[] = "$name:$n";
                    echo "ran update $name $n\n";
                }
            }
            app_set_config($pdo, "version:$name", $version);
        }
        result(['updates' => $ran]);
        break;

    case 'fix-paths':
        // After a rename or clone: the site's name and anything stored under the old
        // address or directory now refer to the new ones.
        $previous = $input['previous'] ?? null;
        if (!is_array($previous)) {
            result(['fixed' => 0]);
            break;
        }
        $fixed = 0;
        if (app_config($pdo, 'site_name') === $previous['domain']) {
            app_set_config($pdo, 'site_name', $input['domain']);
            $fixed++;
        }
        foreach ([[$previous['url'], $input['url']], [$previous['site_dir'], $input['site_dir']]] as [$from, $to]) {
            $q = $pdo->prepare('UPDATE example_pages SET body = REPLACE(body, ?, ?) WHERE body LIKE ?');
            $q->execute([$from, $to, '%' . $from . '%']);
            $fixed += $q->rowCount();
        }
        echo "rewrote $fixed references to {$previous['domain']}\n";
        result(['fixed' => $fixed]);
        break;

    case 'clear-cache':
        app_set_config($pdo, 'cache_cleared_at', date('c'));
        result([]);
        break;

    case 'maintenance-on':
    case 'maintenance-off':
        app_set_config($pdo, 'maintenance', $action === 'maintenance-on' ? '1' : '0');
        result(['maintenance' => $action === 'maintenance-on']);
        break;

    default:
        fail("unknown action '$action'");
}
