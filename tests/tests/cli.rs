//! hostctl against a real stack: tables and JSON, `--wait` following a task to its end with
//! the exit code it means, names resolved to ids, the config file, usage and API errors.

use std::process::Output;
use std::time::Duration;
use tests::{bin_dir, id, Stack};

struct Cli<'a> {
    stack: &'a Stack,
    home: std::path::PathBuf,
}

impl Cli<'_> {
    /// Runs hostctl with the stack's URL and token in its environment.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, true).await
    }

    async fn run_with(&self, args: &[&str], env: bool) -> Output {
        let mut cmd = tokio::process::Command::new(bin_dir().join("hostctl"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.home);
        if env {
            cmd.env("HOSTCTL_URL", &self.stack.api)
                .env("HOSTCTL_TOKEN", &self.stack.token);
        }
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("hostctl ends")
            .expect("hostctl runs (make build builds it)")
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostctl_runs_the_site_lifecycle_and_says_how_each_task_ended() {
    let mut stack = Stack::spawn().await;
    let home = stack.dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    {
        let cli = Cli {
            stack: &stack,
            home: home.clone(),
        };

        let o = cli
            .run(&["client", "add", "acme", "email=owner@acme.example"])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(stdout(&o).contains("name: acme"), "{}", text(&o));

        // An install, followed live: its steps, then how it ended.
        let o = cli
            .run(&[
                "site",
                "add",
                "shop.cli.example",
                "--client",
                "acme",
                "--platform",
                "example",
                "--wait",
            ])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let out = stdout(&o);
        assert!(out.contains("step 'vhost' done"), "{}", text(&o));
        assert!(out.contains("succeeded"), "{}", text(&o));
        // Once --wait returns, the site is as the task left it: no race.
        let o = cli.run(&["site", "show", "shop.cli.example"]).await;
        assert!(stdout(&o).contains("status: enabled"), "{}", text(&o));
        let o = cli
            .run(&["--json", "site", "list", "--domain", "shop.cli.example"])
            .await;
        let page: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(page[0]["status"], "enabled", "{page}");
        let site = id(&page[0]);
        let o = cli.run(&["site", "list", "--client", "acme"]).await;
        let out = stdout(&o);
        assert!(out.starts_with("ID"), "{out}");
        assert!(
            out.contains("shop.cli.example") && out.contains("(1 of 1)"),
            "{out}"
        );

        let o = cli
            .run(&["site", "disable", "shop.cli.example", "--wait"])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let o = cli.run(&["site", "show", &site.to_string()]).await;
        assert!(stdout(&o).contains("status: disabled"), "{}", text(&o));
        let o = cli
            .run(&["site", "enable", "shop.cli.example", "--wait"])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(stack.page("shop.cli.example", "/").await.status, 200);

        // A backup, listed, and restored from; --json --wait prints only the ended task.
        let o = cli
            .run(&[
                "--json",
                "site",
                "backup",
                "shop.cli.example",
                "--description",
                "by hostctl",
                "--wait",
            ])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let task: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON task");
        assert_eq!(task["status"], "success", "{task}");
        let backup = task["result"]["backup"].as_i64().expect("the backup's id");
        let o = cli.run(&["site", "backups", "shop.cli.example"]).await;
        assert!(stdout(&o).contains("by hostctl"), "{}", text(&o));
        let o = cli
            .run(&[
                "site",
                "restore",
                "shop.cli.example",
                "--backup",
                &backup.to_string(),
                "--wait",
            ])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));

        // The log of a finished task, and following one that has ended.
        let o = cli
            .run(&[
                "--json",
                "task",
                "list",
                "--site",
                "shop.cli.example",
                "--type",
                "install",
            ])
            .await;
        let tasks: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        let install = id(&tasks[0]);
        let o = cli.run(&["task", "log", &install.to_string()]).await;
        assert!(stdout(&o).contains("step 'vhost' done"), "{}", text(&o));
        let o = cli
            .run(&["task", "log", "--follow", &install.to_string()])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(stdout(&o).contains("step 'vhost' done"), "{}", text(&o));

        // Refused by the API: exit 3 with its message. Usage: exit 2.
        let o = cli
            .run(&["site", "task", "shop.cli.example", "no-such-task", "--wait"])
            .await;
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("hostctl: POST"),
            "{}",
            text(&o)
        );
        let o = cli.run(&["site", "show", "nowhere.cli.example"]).await;
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        let o = cli.run(&["site", "add", "x.cli.example"]).await;
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let o = cli.run_with(&["site", "list"], false).await;
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("no API token"),
            "{}",
            text(&o)
        );

        // The URL and a token file from the config file.
        std::fs::create_dir_all(home.join(".config/hostctl")).expect("config dir");
        std::fs::write(home.join("token"), format!("{}\n", stack.token)).expect("token");
        std::fs::write(
            home.join(".config/hostctl/config.toml"),
            format!(
                "url = \"{}\"\ntoken_file = \"{}\"\n",
                stack.api,
                home.join("token").display()
            ),
        )
        .expect("config");
        let o = cli.run_with(&["platform", "list"], false).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(stdout(&o).contains("example"), "{}", text(&o));

        // -q prints what only this answer shows: the new token.
        let o = cli
            .run(&["-q", "token", "add", "portal", "client=acme"])
            .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(stdout(&o).starts_with("hst_"), "{}", text(&o));
        // A reader that goes away early ends hostctl quietly.
        let piped = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -o pipefail; for i in 1 2 3 4 5 6 7 8; do echo; done | true; {} task list | head -c 1 >/dev/null",
                bin_dir().join("hostctl").display()
            ))
            .env("HOSTCTL_URL", &stack.api)
            .env("HOSTCTL_TOKEN", &stack.token)
            .env("HOME", &home)
            .output()
            .await
            .expect("bash");
        assert!(
            !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
            "{}",
            text(&piped)
        );

        let o = cli.run(&["completions", "bash"]).await;
        assert_eq!(o.status.code(), Some(0));
        assert!(stdout(&o).contains("_hostctl"), "{}", text(&o));
    }

    // A task that fails: --wait exits 1 and says why.
    stack.kill("installer");
    stack
        .start_with("installer", &[("HOSTING_SAGA_FAIL_AT", "install:vhost")])
        .expect("installer");
    {
        let cli = Cli {
            stack: &stack,
            home: home.clone(),
        };
        let o = cli
            .run(&[
                "site",
                "add",
                "broken.cli.example",
                "--client",
                "acme",
                "--platform",
                "example",
                "--wait",
            ])
            .await;
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let out = stdout(&o);
        assert!(
            out.contains("failed: ") && out.contains("HOSTING_SAGA_FAIL_AT"),
            "{}",
            text(&o)
        );
        assert!(out.contains("undone"), "{}", text(&o));
    }
    stack.kill("installer");
    stack.start("installer").expect("installer");
    stack.teardown().await;
}
