<?php
// Shared code of the example application: database access and its schema.

const APP_VERSION = '1.0.0';

// What this codebase's code can bring a site to: package => [version, schema version].
// A newer platform raises these and adds an update function below.
const CODE_PACKAGES = [
    'example' => ['core', '1.0.0', 1000],
    'guestbook' => ['module', '1.0.0', 6003],
];

// hook_update_N-style updates, per package: schema version => function. Each runs once, in
// order, and only up to the schema version the code declares above: a codebase that still
// declares guestbook at 6003 does not run its 6004 update, the next release (which declares
// 6004) does.
const UPDATES = [
    'guestbook' => [
        6004 => 'guestbook_update_6004',
    ],
];

// Guestbook 6004: entries get a moderation flag; existing entries count as approved.
function guestbook_update_6004(PDO $pdo): void
{
    $has = $pdo->query("SHOW COLUMNS FROM guestbook_entries LIKE 'approved'")->fetch();
    if (!$has) {
        $pdo->exec('ALTER TABLE guestbook_entries ADD COLUMN approved TINYINT NOT NULL DEFAULT 1');
    }
}

function app_connect(array $db): PDO
{
    $dsn = sprintf('mysql:host=%s;port=%d;dbname=%s;charset=utf8mb4', $db['host'], $db['port'], $db['name']);
    return new PDO($dsn, $db['user'], $db['password'], [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_DEFAULT_FETCH_MODE => PDO::FETCH_ASSOC,
    ]);
}

function app_config(PDO $pdo, string $name, ?string $default = null): ?string
{
    $q = $pdo->prepare('SELECT value FROM example_config WHERE name = ?');
    $q->execute([$name]);
    $v = $q->fetchColumn();
    return $v === false ? $default : $v;
}

function app_set_config(PDO $pdo, string $name, string $value): void
{
    $q = $pdo->prepare('INSERT INTO example_config (name, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)');
    $q->execute([$name, $value]);
}

function app_new_login_token(PDO $pdo, string $url): string
{
    $token = bin2hex(random_bytes(20));
    $q = $pdo->prepare('UPDATE example_users SET login_token = ?, login_token_expires = DATE_ADD(NOW(), INTERVAL 1 DAY) WHERE id = 1');
    $q->execute([hash('sha256', $token)]);
    return rtrim($url, '/') . '/login?token=' . $token;
}

const GREETINGS = ['en' => 'Hello', 'fr' => 'Bonjour', 'de' => 'Hallo'];
