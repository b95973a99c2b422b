//! Every site is a cell: its own unix user and PHP pool, PHP that cannot read its neighbours,
//! actions that run as the site's user with nothing of the services' environment, no script
//! that runs from a place a site can write, dumps that cannot run commands, no password at
//! rest in the broker, and a site that must answer before a task calls it done.

use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::{id, Stack, StackOptions};

/// A script as a site would upload it: if it runs, its output says so.
const UPLOADED: &str = "<?php echo 'EXECUTED-' . (40 + 2);\n";

async fn install_on(stack: &Stack, domain: &str, platform: &str) -> Value {
    let (site, task) = stack.create_site(domain, "acme", platform).await;
    let done = stack.wait_task(id(&task), Duration::from_secs(90)).await;
    stack.assert_success(&done).await;
    stack.site(id(&site)).await
}

fn ids_of(site: &Value) -> (u32, u32) {
    let user = site["system_user"].as_str().unwrap_or_default();
    tests::user_ids(user).unwrap_or_else(|| panic!("no system user {user:?} for {site}"))
}

fn password_of(site_dir: &Path) -> String {
    let settings = std::fs::read_to_string(site_dir.join("settings.php")).expect("settings");
    tests::password_from_settings(&settings).expect("a password in the settings")
}

/// Writes a file into a site's directory as the site would: owned by its user.
fn write_as(path: &Path, content: &str, (uid, gid): (u32, u32)) {
    std::fs::write(path, content).expect("writing a site file");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

async fn probe(stack: &Stack, domain: &str, query: &str) -> Value {
    let page = stack.page(domain, &format!("/probe.php?{query}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    serde_json::from_str(&page.body).unwrap_or_else(|_| panic!("probe: {}", page.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_a_cell_its_neighbours_cannot_read() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack.fixture_platform("cells", |m| m).await;
    let root = stack.dir.join("platforms/cells");
    std::fs::write(root.join("public/probe.php"), tests::PHP_PROBE).expect("the probe");
    let a = install_on(&stack, "a.acme.example", "cells").await;
    let b = install_on(&stack, "b.acme.example", "cells").await;
    let (a_dir, b_dir) = (
        root.join("sites/a.acme.example"),
        root.join("sites/b.acme.example"),
    );
    let (a_uid, a_gid) = ids_of(&a);
    let (b_uid, _) = ids_of(&b);
    assert_ne!(a_uid, b_uid, "each site has its own user");
    assert!(a_uid != 0 && b_uid != 0);

    // The cell's layout: the site's user owns its directory; the web server's group may pass
    // and read public files; settings are root's, readable by the site's group only.
    let meta = |p: PathBuf| std::fs::metadata(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let web = tests::web_gid();
    let site_dir = meta(a_dir.clone());
    assert_eq!(
        (site_dir.uid(), site_dir.gid(), site_dir.mode() & 0o7777),
        (a_uid, web, 0o710)
    );
    let files = meta(a_dir.join("files"));
    assert_eq!(
        (files.uid(), files.gid(), files.mode() & 0o7777),
        (a_uid, web, 0o2750)
    );
    let settings = meta(a_dir.join("settings.php"));
    assert_eq!(
        (settings.uid(), settings.gid(), settings.mode() & 0o777),
        (0, a_gid, 0o640)
    );
    for private in ["private", "private/tmp", "private/sessions", "private/logs"] {
        let m = meta(a_dir.join(private));
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (a_uid, a_gid, 0o700),
            "{private}"
        );
    }
    let pool = std::fs::read_to_string(stack.dir.join(format!(
        "webconf/pools/{}.conf",
        a["system_user"].as_str().unwrap_or_default()
    )))
    .expect("site A's own pool");
    for line in [
        "pm = ondemand".to_owned(),
        "listen.mode = 0660".to_owned(),
        format!("user = {a_uid}"),
        format!("listen.owner = {a_uid}"),
        format!("listen.group = {web}"),
    ] {
        assert!(pool.contains(&line), "{line} in {pool}");
    }

    // A's PHP runs as A and reads its own settings (the probe works)...
    let own = probe(
        &stack,
        "a.acme.example",
        &format!("path={}", a_dir.join("settings.php").display()),
    )
    .await;
    assert_eq!(own["uid"], a_uid, "{own}");
    assert_eq!(own["read"], true, "{own}");
    // ... and nothing of B's: settings (its database password), files, private directory.
    std::fs::write(b_dir.join("files/upload.txt"), "B's upload").expect("a file of B's");
    for path in [
        b_dir.join("settings.php"),
        b_dir.join("files"),
        b_dir.join("files/upload.txt"),
        b_dir.join("private"),
        b_dir.join("private/sessions"),
        b_dir.clone(),
        PathBuf::from("/etc/passwd"),
    ] {
        let seen = probe(
            &stack,
            "a.acme.example",
            &format!("path={}", path.display()),
        )
        .await;
        assert_eq!(
            (&seen["read"], &seen["list"]),
            (&json!(false), &json!(false)),
            "site A's PHP reached {}: {seen}",
            path.display()
        );
    }
    assert_eq!(
        probe(&stack, "b.acme.example", "").await["uid"],
        b_uid,
        "B's pool runs as B"
    );

    // Delete removes the site's pool and its user.
    for site in [&a, &b] {
        assert_eq!(
            stack
                .run_site_task(id(site), json!({"type": "disable"}))
                .await["status"],
            "success"
        );
        let done = stack
            .run_site_task(id(site), json!({"type": "delete"}))
            .await;
        stack.assert_success(&done).await;
        let user = site["system_user"].as_str().unwrap_or_default();
        assert!(tests::user_ids(user).is_none(), "{user} is gone");
        assert!(!stack
            .dir
            .join(format!("webconf/pools/{user}.conf"))
            .exists());
    }
    stack.teardown().await;
}

/// The allowed environment of a platform action (docs/manifest.md).
const ACTION_ENV: &[&str] = &[
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

/// A running process whose environment has all of `marks`: its pid.
fn find_process(marks: &[String]) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let vars: Vec<String> = environ
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        marks.iter().all(|m| vars.contains(m)).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_run_as_the_site_user_with_nothing_of_the_services() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    // A login_link action that takes its time, so that it can be looked at while it runs.
    stack
        .fixture_platform("slow", |m| {
            m.replace(
                r#"login_link = ["php", "bin/site.php", "login-link"]"#,
                r#"login_link = ["php", "bin/slow-login.php"]"#,
            )
        })
        .await;
    let root = stack.dir.join("platforms/slow");
    std::fs::write(
        root.join("bin/slow-login.php"),
        "<?php sleep(4); echo json_encode(['login_url' => getenv('HOSTING_SITE_URL') . '/login?token=t']), \"\\n\";\n",
    )
    .expect("the slow action");
    const DOMAIN: &str = "slow.acme.example";
    let site = install_on(&stack, DOMAIN, "slow").await;
    let (uid, gid) = ids_of(&site);
    let password = password_of(&root.join("sites").join(DOMAIN));

    let (status, r) = stack
        .post_site_task(id(&site), json!({"type": "login-reset"}))
        .await;
    assert_eq!(status, 202, "{r}");
    let marks = [
        "HOSTING_ACTION=login_link".to_owned(),
        format!("HOSTING_SITE_DOMAIN={DOMAIN}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = find_process(&marks) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the action never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        field("Uid:"),
        vec![uid; 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(field("Gid:"), vec![gid; 4]);
    assert!(field("Groups:").is_empty(), "no supplementary groups");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("its environment");
    for var in environ.split(|b| *b == 0).filter(|v| !v.is_empty()) {
        let var = String::from_utf8_lossy(var);
        let name = var.split('=').next().unwrap_or_default();
        assert!(
            ACTION_ENV.contains(&name),
            "{name} is not for actions: {var}"
        );
        for secret in [
            "postgres://",
            "amqp://",
            "hosting:hosting",
            "guest:guest",
            password.as_str(),
        ] {
            assert!(!var.contains(secret), "{var} holds a secret");
        }
    }
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    stack.assert_success(&done).await;
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_script_runs_from_a_place_a_site_can_write() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    // Two layouts: site directories outside the web root (the example: public/ is served) and
    // inside it (web_root = ".", as Drupal has it).
    stack
        .fixture_platform("flat", |m| {
            m.replace(r#"web_root = "public""#, r#"web_root = ".""#)
                .replace(
                    r#"front_controller = "index.php""#,
                    r#"front_controller = "public/index.php""#,
                )
        })
        .await;
    for (platform, root, flat) in [
        ("example", stack.example_root.clone(), false),
        ("flat", stack.dir.join("platforms/flat"), true),
    ] {
        let own = format!("own-{platform}.acme.example");
        let other = format!("other-{platform}.acme.example");
        let site = install_on(&stack, &own, platform).await;
        install_on(&stack, &other, platform).await;
        let ids = ids_of(&site);
        let dir = root.join("sites").join(&own);
        write_as(&dir.join("files/x.php"), UPLOADED, ids);
        write_as(&dir.join("files/note.txt"), "public", ids);
        write_as(&dir.join("private/x.php"), UPLOADED, ids);
        let other_password = password_of(&root.join("sites").join(&other));
        let own_password = password_of(&dir);

        // Scripts in a site's public files are refused in either layout; where site
        // directories lie in the web root, nothing of them but public files is served.
        let mut refused = vec!["/files/x.php".to_owned()];
        let elsewhere = [
            format!("/sites/{own}/files/x.php"),
            format!("/sites/{own}/private/x.php"),
            format!("/sites/{own}/settings.php"),
            format!("/sites/{other}/settings.php"),
            format!("/sites/{other}/private/"),
            format!("/sites/{own}/private/logs/php-errors.log"),
            format!("/sites/{own}/.hosting-site"),
        ];
        if flat {
            refused.extend(elsewhere.iter().cloned());
        }
        for path in refused.iter().chain(&elsewhere) {
            let page = stack.page(&own, path).await;
            if refused.contains(path) {
                assert!(
                    matches!(page.status, 403 | 404),
                    "{platform}: {path} answered {}: {}",
                    page.status,
                    page.body
                );
            }
            for leak in ["EXECUTED-42", "40 + 2", &other_password, &own_password] {
                assert!(
                    !page.body.contains(leak),
                    "{platform}: {path} gave away {leak}: {}",
                    page.body
                );
            }
        }
        // Public files are still served, as static bytes.
        let note = stack.page(&own, "/files/note.txt").await;
        assert_eq!((note.status, note.body.as_str()), (200, "public"));
        if flat {
            let note = stack
                .page(&own, &format!("/sites/{own}/files/note.txt"))
                .await;
            assert_eq!((note.status, note.body.as_str()), (200, "public"));
        }
        assert_eq!(stack.page(&own, "/").await.status, 200, "{platform}");
    }
    stack.teardown().await;
}

/// Unpacks a backup, lets `edit` change its dump, and packs it again with its manifest made to
/// match (as an attacker with write access to the store would); the new file's path.
fn tampered_copy(archive: &Path, edit: impl FnOnce(&[u8]) -> Vec<u8>, label: &str) -> PathBuf {
    let work = archive.with_file_name(format!("work-{label}"));
    std::fs::create_dir_all(&work).expect("work dir");
    let run = |script: String| {
        let out = std::process::Command::new("bash")
            .args(["-o", "pipefail", "-c", &script])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{script}: {out:?}");
    };
    run(format!(
        "zstd -d -q -c '{}' | tar -x -C '{}'",
        archive.display(),
        work.display()
    ));
    let dump_path = work.join("database/dump-00001.sql");
    let dump = edit(&std::fs::read(&dump_path).expect("the dump"));
    std::fs::write(&dump_path, &dump).expect("writing the dump");
    let manifest_path = work.join("hosting-backup.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("the manifest"))
            .expect("manifest JSON");
    use sha2::Digest;
    manifest["database"]["dump_sha256"] = json!(hex::encode(sha2::Sha256::digest(&dump)));
    manifest["database"]["dump_bytes"] = json!(dump.len());
    std::fs::write(&manifest_path, manifest.to_string()).expect("writing the manifest");
    let out = archive.with_file_name(format!("tampered-{label}.tar.zst"));
    run(format!(
        "tar -C '{}' -c site database/dump-00001.sql hosting-backup.json | zstd -q -o '{}'",
        work.display(),
        out.display()
    ));
    std::fs::remove_dir_all(&work).expect("removing the work dir");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_dump_never_runs_anything() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    const DOMAIN: &str = "dump.acme.example";
    let site = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&site);
    let backup = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&backup).await;
    let record = stack.backups(sid).await[0].clone();
    let archive = stack
        .backup_dir()
        .join(record["key"].as_str().unwrap_or_default());
    let marker = stack.dir.join("the-dump-ran");
    let database = format!(
        "Read from database <code>{}</code>",
        site["db_name"].as_str().unwrap_or_default()
    );

    // Each client command before the dump's own first line (which, from a recent
    // mariadb-dump, turns the sandbox on by itself: an attacker would not keep it first).
    let commands = [
        format!("\\! touch {}\n", marker.display()),
        format!("system touch {}\n", marker.display()),
        "source /etc/hostname\n".to_owned(),
    ];
    for (n, command) in commands.iter().enumerate() {
        let path = tampered_copy(
            &archive,
            |dump| [command.as_bytes(), dump].concat(),
            &n.to_string(),
        );
        let bytes = std::fs::read(&path).expect("the tampered archive");
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let key = path
            .strip_prefix(stack.backup_dir())
            .expect("in the store")
            .to_string_lossy()
            .into_owned();

        // Its checksum unknown to the record: refused before any byte is used.
        stack
            .state_exec(&format!(
                "INSERT INTO backups (site_id, key, size, checksum, description) VALUES ({sid}, '{key}', {}, '{}', 'tampered {n}')",
                bytes.len(),
                record["checksum"].as_str().unwrap_or_default()
            ))
            .await;
        // And with a record that matches it (an attacker who can write the state database too):
        // the import refuses the command.
        stack
            .state_exec(&format!(
                "INSERT INTO backups (site_id, key, size, checksum, description) VALUES ({sid}, '{key}', {}, '{sha}', 'tampered and recorded {n}')",
                bytes.len()
            ))
            .await;
        let list = stack.backups(sid).await;
        let find = |d: String| {
            list.as_array()
                .and_then(|l| l.iter().find(|b| b["description"] == d.as_str()))
                .map(id)
                .expect("the crafted record")
        };
        let (unrecorded, recorded) = (
            find(format!("tampered {n}")),
            find(format!("tampered and recorded {n}")),
        );
        for (backup, expected) in [(unrecorded, "checksum"), (recorded, "sandbox")] {
            for task in ["restore", "verify-backup"] {
                let done = stack
                    .run_site_task(sid, json!({"type": task, "backup": backup}))
                    .await;
                let error = done["error"].as_str().unwrap_or_default();
                assert!(
                    done["status"] != "success" && error.contains(expected),
                    "{task} of {command:?} ({expected}): {done}"
                );
                assert!(!marker.exists(), "{command:?} ran during {task}");
                let page = stack.page(DOMAIN, "/").await;
                assert_eq!(page.status, 200, "{task}: {}", page.body);
                assert!(
                    page.body.contains(&database),
                    "the site is as it was: {}",
                    page.body
                );
            }
        }
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_database_password_rests_in_the_broker() {
    use futures_util::StreamExt;
    use lapin::options::*;
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    // A copy of every request dbprov receives.
    let conn = lapin::Connection::connect(tests::AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .expect("the broker");
    let ch = conn.create_channel().await.expect("a channel");
    let spy = format!("{}.spy", stack.prefix);
    ch.queue_declare(
        spy.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .expect("the spy queue");
    ch.queue_bind(
        spy.as_str().into(),
        format!("{}.rpc", stack.prefix).as_str().into(),
        "dbprov.local".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .expect("binding the spy");
    const DOMAIN: &str = "secret.acme.example";
    stack.install_site(DOMAIN, "acme").await;
    let password = password_of(&stack.example_root.join("sites").join(DOMAIN));

    let mut consumer = ch
        .basic_consume(
            spy.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("consuming the spy");
    let mut creates = 0;
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        let body = String::from_utf8_lossy(&d.data);
        assert!(
            !body.contains(&password),
            "a dbprov request carries the password: {body}"
        );
        creates += usize::from(body.contains("create-database"));
    }
    assert!(creates >= 1, "the spy saw the database being made");
    let _ = conn.close(200, "done".into()).await;

    // Nor anywhere in the broker's own files.
    let mut stack_of_dirs = vec![PathBuf::from("/var/lib/rabbitmq")];
    while let Some(dir) = stack_of_dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack_of_dirs.push(path),
                Ok(t) if t.is_file() => {
                    if let Ok(bytes) = std::fs::read(&path) {
                        assert!(
                            !bytes
                                .windows(password.len())
                                .any(|w| w == password.as_bytes()),
                            "the password lies in {}",
                            path.display()
                        );
                    }
                }
                _ => {}
            }
        }
    }
    stack.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_answers_5xx_is_not_called_installed() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    const CRASH: &str = "<?php error_log('hosting-test: the front page crashed'); http_response_code(500); echo \"<h1>Internal trouble</h1>\\n\";\n";
    stack.fixture_platform("crashing", |m| m).await;
    std::fs::write(stack.dir.join("platforms/crashing/public/index.php"), CRASH)
        .expect("a crashing front page");

    // Install: undone, with what the site answered and what PHP logged.
    const BROKEN: &str = "broken.acme.example";
    let (site, task) = stack.create_site(BROKEN, "acme", "crashing").await;
    let done = stack.wait_task(id(&task), Duration::from_secs(90)).await;
    let error = done["error"].as_str().unwrap_or_default();
    assert_eq!(done["status"], "error", "{done}");
    for part in ["500", "Internal trouble", "the front page crashed"] {
        assert!(error.contains(part), "{part} in {error}");
    }
    assert_eq!(stack.site(id(&site)).await["status"], "failed");
    let (dbs, users) = stack.mariadb_leftovers().await;
    assert!(dbs.is_empty() && users.is_empty(), "{dbs:?} {users:?}");
    assert!(tests::site_users(&stack.prefix).is_empty());
    assert!(!stack
        .dir
        .join("platforms/crashing/sites")
        .join(BROKEN)
        .exists());
    assert!(!stack.vhost_path(BROKEN).exists());

    // Migrate onto it: undone, the site serves from where it was.
    const GOOD: &str = "good.acme.example";
    let good = stack.install_site(GOOD, "acme").await;
    let done = stack
        .run_site_task(
            id(&good),
            json!({"type": "migrate", "platform": "crashing"}),
        )
        .await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["error"].as_str().unwrap_or_default().contains("500"),
        "{done}"
    );
    let page = stack.page(GOOD, "/").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(stack.site(id(&good)).await["platform"], "example");

    // Verify of a site that breaks later: a warning that says what it answered.
    let index = stack.example_root.join("public/index.php");
    let original = std::fs::read_to_string(&index).expect("the front page");
    std::fs::write(&index, CRASH).expect("breaking the front page");
    let verify = stack
        .run_site_task(id(&good), json!({"type": "verify"}))
        .await;
    std::fs::write(&index, original).expect("mending the front page");
    assert_eq!(verify["status"], "warning", "{verify}");
    assert!(
        verify["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Internal trouble"),
        "{verify}"
    );
    let verify = stack
        .run_site_task(id(&good), json!({"type": "verify"}))
        .await;
    stack.assert_success(&verify).await;
    stack.teardown().await;
}

/// Registers a platform and waits for its verify task; the finished task.
async fn register(stack: &Stack, name: &str, edit: impl FnOnce(String) -> String) -> Value {
    let root = stack.dir.join("platforms").join(name);
    tests::copy_dir(&tests::repo_root().join("platforms/example"), &root).expect("a copy");
    let manifest = root.join("hosting.toml");
    let text = std::fs::read_to_string(&manifest).expect("the manifest");
    std::fs::write(&manifest, edit(text)).expect("the edited manifest");
    let body =
        json!({"name": name, "server": "local", "root": root.to_string_lossy(), "driver": "hooks"});
    let (status, r) = stack.call("POST", "/platforms", Some(body)).await;
    assert_eq!(status, 202, "{r}");
    stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_verify_checks_the_php_that_pools_run() {
    // This web server's php-fpm started without the calendar extension: its configuration
    // directory lacks the file that loads it, as before `apt-get install` of an extension.
    let conf = std::env::temp_dir().join(format!("hosting-php-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&conf).expect("a PHP configuration directory");
    let system = std::fs::read_dir("/etc/php")
        .expect("/etc/php")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("fpm/conf.d"))
        .find(|p| p.is_dir())
        .expect("php-fpm's conf.d");
    let mut calendar = None;
    for e in std::fs::read_dir(&system)
        .expect("conf.d")
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if name.contains("calendar") {
            calendar = Some((name, text));
        } else {
            std::fs::write(conf.join(&name), text).expect("copying an ini file");
        }
    }
    let (calendar_name, calendar_ini) = calendar.expect("Debian's calendar extension");
    let stack = Stack::spawn_with(StackOptions {
        env: vec![(
            "webconf",
            "PHP_INI_SCAN_DIR".into(),
            conf.to_string_lossy().into_owned(),
        )],
        ..Default::default()
    })
    .await;
    stack.create_client("acme").await;

    let future = register(&stack, "needs-future", |m| {
        format!("{m}\n[php]\nmin_version = \"99.1\"\n")
    })
    .await;
    assert_eq!(future["status"], "error", "{future}");
    assert!(
        future["error"]
            .as_str()
            .unwrap_or_default()
            .contains("PHP 99.1 or newer"),
        "{future}"
    );
    let needs = register(&stack, "needs-calendar", |m| {
        format!("{m}\n[php]\nextensions = [\"pdo_mysql\", \"calendar\"]\n")
    })
    .await;
    assert_eq!(needs["status"], "error", "{needs}");
    let error = needs["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the PHP extension calendar") && !error.contains("pdo_mysql"),
        "{error}"
    );

    // The extension is installed: the next verify finds php-fpm without it, reloads it, and
    // the platform is enabled; its sites have the extension.
    std::fs::write(conf.join(&calendar_name), calendar_ini).expect("installing calendar");
    let platform = stack.platform_id("needs-calendar").await;
    let (status, r) = stack
        .call(
            "POST",
            &format!("/platforms/{platform}/tasks"),
            Some(json!({"type": "verify"})),
        )
        .await;
    assert_eq!(status, 202, "{r}");
    let done = stack
        .wait_task(id(&r["task"]), Duration::from_secs(60))
        .await;
    stack.assert_success(&done).await;
    let log = stack.task_log_text(id(&done)).await;
    assert!(
        log.contains("reloaded") && log.contains("calendar"),
        "{log}"
    );
    std::fs::write(
        stack.dir.join("platforms/needs-calendar/public/probe.php"),
        tests::PHP_PROBE,
    )
    .expect("the probe");
    install_on(&stack, "cal.acme.example", "needs-calendar").await;
    assert_eq!(
        probe(&stack, "cal.acme.example", "ext=calendar").await["ext"],
        true
    );
    stack.teardown().await;
    let _ = std::fs::remove_dir_all(&conf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_migrates_only_within_its_application_and_owns_what_it_gets_back() {
    let stack = Stack::spawn().await;
    stack.create_client("acme").await;
    stack
        .fixture_platform("another-app", |m| {
            m.replacen(r#"name = "example""#, r#"name = "another-app""#, 1)
        })
        .await;
    const DOMAIN: &str = "app.acme.example";
    let site = stack.install_site(DOMAIN, "acme").await;
    let sid = id(&site);
    let (_, targets) = stack
        .call("GET", &format!("/sites/{sid}/migrate-targets"), None)
        .await;
    let other = targets
        .as_array()
        .and_then(|l| l.iter().find(|t| t["platform"]["name"] == "another-app"))
        .unwrap_or_else(|| panic!("another-app listed: {targets}"));
    assert_eq!(other["selectable"], false, "{other}");
    assert!(
        other["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("application"),
        "{other}"
    );
    let (status, r) = stack
        .post_site_task(sid, json!({"type": "migrate", "platform": "another-app"}))
        .await;
    assert_eq!(status, 409, "{r}");
    assert!(r.to_string().contains("another-app"), "{r}");

    // Restored files are the site's, whatever uid the archive recorded; a clone's are its own.
    let (uid, gid) = ids_of(&site);
    let dir = stack.example_root.join("sites").join(DOMAIN);
    std::fs::write(dir.join("files/foreign.txt"), "made elsewhere").expect("a file");
    write_as(&dir.join("private/kept.txt"), "private data", (uid, gid));
    std::os::unix::fs::chown(dir.join("files/foreign.txt"), Some(4242), Some(4242)).expect("chown");
    let backup = stack.run_site_task(sid, json!({"type": "backup"})).await;
    stack.assert_success(&backup).await;
    let restore = stack
        .run_site_task(
            sid,
            json!({"type": "restore", "backup": backup["result"]["backup"]}),
        )
        .await;
    stack.assert_success(&restore).await;
    let restored = std::fs::metadata(dir.join("files/foreign.txt")).expect("restored");
    assert_eq!(
        (restored.uid(), restored.gid()),
        (uid, tests::web_gid()),
        "restored files are the site's"
    );
    let settings = std::fs::metadata(dir.join("settings.php")).expect("settings");
    assert_eq!((settings.uid(), settings.gid()), (0, gid));
    // The private directory came back with the rest.
    assert_eq!(
        std::fs::read_to_string(dir.join("private/kept.txt")).expect("private file"),
        "private data"
    );

    let clone = stack
        .run_site_task(
            sid,
            json!({"type": "clone", "platform": "example", "domain": "copy.acme.example"}),
        )
        .await;
    stack.assert_success(&clone).await;
    let copy = stack
        .site(clone["result"]["site"].as_i64().unwrap_or_default())
        .await;
    let (copy_uid, _) = ids_of(&copy);
    assert_ne!(copy_uid, uid, "a clone has a user of its own");
    let copied = std::fs::metadata(
        stack
            .example_root
            .join("sites/copy.acme.example/files/foreign.txt"),
    )
    .expect("the clone's file");
    assert_eq!(copied.uid(), copy_uid);
    let private = std::fs::metadata(
        stack
            .example_root
            .join("sites/copy.acme.example/private/kept.txt"),
    )
    .expect("the clone's private file");
    assert_eq!(private.uid(), copy_uid);
    assert_eq!(stack.page("copy.acme.example", "/").await.status, 200);
    stack.teardown().await;
}
