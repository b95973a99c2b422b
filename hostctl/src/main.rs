//! hostctl: the hosting control plane from a terminal or a script.
//!
//! Every API operation is a command; lists print as tables (`--json`: the API's answer as it
//! is); every command that starts a task takes `--wait`, which shows the task's log live and
//! exits 0 when it succeeded (or ended with a warning), 1 when it failed. Usage errors exit 2,
//! API errors (refused, unreachable) 3.

/// `println!` and `print!` that end hostctl quietly when its reader has gone away.
macro_rules! say {
    ($($arg:tt)*) => { $crate::output::out(&format!("{}\n", format_args!($($arg)*))) };
}
macro_rules! say_raw {
    ($($arg:tt)*) => { $crate::output::out(&format!($($arg)*)) };
}

mod api;
mod follow;
mod output;

use api::{Api, ApiError, Settings};
use clap::{Args, CommandFactory, Parser, Subcommand};
use output::Column;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "hostctl", version, about = "The hosting control plane's command line", long_about = None)]
struct Cli {
    /// The gateway (default http://127.0.0.1:8080).
    #[arg(long, env = "HOSTCTL_URL", global = true)]
    url: Option<String>,
    /// An API token.
    #[arg(long, env = "HOSTCTL_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the API token (make up writes .stack/admin.token).
    #[arg(long, env = "HOSTCTL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The config file (default ~/.config/hostctl/config.toml: url, token or token_file).
    #[arg(long, env = "HOSTCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print the API's JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Print only ids: a list's, a record's, or the task a command started (for scripts).
    #[arg(long, short, global = true, conflicts_with = "json")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sites: list, show, install, and their tasks.
    #[command(subcommand)]
    Site(SiteCommand),
    /// Platforms: the codebases sites run on.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Web and database servers, and their agents.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Clients, who own sites.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Tasks: list, show, follow the log, wait, cancel, retry.
    #[command(subcommand)]
    Task(TaskCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The control plane's settings.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Messages no consumer could take, kept for an operator.
    #[command(subcommand, name = "dead-letter")]
    DeadLetter(DeadLetterCommand),
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// `--wait` for a command that starts a task.
#[derive(Args, Clone, Copy)]
struct Wait {
    /// Follow the task's log until it ends; exit 0 on success, 1 on failure.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
enum SiteCommand {
    /// Sites, filtered and paged.
    List {
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        platform: Option<String>,
        /// Part of a domain.
        #[arg(long)]
        search: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// The last id of the previous page.
        #[arg(long)]
        after: Option<i64>,
    },
    /// A site: its status, link and the tasks it offers.
    Show { site: String },
    /// Installs a new site.
    Add {
        domain: String,
        #[arg(long)]
        client: String,
        #[arg(long)]
        platform: String,
        #[arg(long, default_value = "standard")]
        profile: String,
        #[arg(long, default_value = "en")]
        language: String,
        #[arg(long, default_value = "local")]
        db_server: String,
        /// Another name the site answers to (repeatable).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Any site task by its type, with KEY=VALUE arguments (a value is read as JSON when it
    /// is JSON: backup=3, force=true, backups=[1,2]).
    Task {
        site: String,
        #[arg(value_name = "TYPE")]
        task_type: String,
        #[arg(value_name = "KEY=VALUE")]
        args: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Renders settings and vhost again, refreshes packages.
    Verify {
        site: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Backs the site up.
    Backup {
        site: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Proves a backup restorable without touching the site.
    VerifyBackup {
        site: String,
        #[arg(long)]
        backup: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restores the site from one of its backups.
    Restore {
        site: String,
        #[arg(long)]
        backup: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Deletes backups of the site.
    BackupDelete {
        site: String,
        #[arg(long = "backup", required = true)]
        backups: Vec<i64>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Sends visitors to the "site disabled" page (a backup first).
    Disable {
        site: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Serves the site again.
    Enable {
        site: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// A fresh one-time login link.
    LoginReset {
        site: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Moves the site to another platform (and database server); with --domain, renames it.
    Migrate {
        site: String,
        #[arg(long)]
        platform: String,
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        db_server: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// A copy of the site under a new domain.
    Clone {
        site: String,
        #[arg(long)]
        domain: String,
        /// The copy's platform (default: the site's own).
        #[arg(long)]
        platform: Option<String>,
        #[arg(long)]
        db_server: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Deletes the site (disable it first, unless the settings say otherwise).
    Delete {
        site: String,
        /// Go on past what cannot be reached or is already gone.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// The site's backups.
    Backups { site: String },
    /// Where the site can migrate, with the package comparison.
    Targets { site: String },
    /// The site's backup schedule; with --set, changes it (a JSON schedule, "off" or "inherit").
    Schedule {
        site: String,
        #[arg(long)]
        set: Option<String>,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    List,
    Show {
        platform: String,
    },
    /// Registers a platform (its first verify is queued).
    Add {
        name: String,
        #[arg(long, default_value = "local")]
        server: String,
        #[arg(long)]
        root: String,
        /// How the platform is driven: hooks (its hosting.toml), drupal or wordpress.
        #[arg(long)]
        driver: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Any platform task (verify, lock, unlock, delete, migrate-sites) with KEY=VALUE arguments.
    Task {
        platform: String,
        #[arg(value_name = "TYPE")]
        task_type: String,
        #[arg(value_name = "KEY=VALUE")]
        args: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    Verify {
        platform: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Moves every site of the platform to another.
    MigrateSites {
        platform: String,
        #[arg(long)]
        target: String,
        #[arg(long)]
        concurrency: Option<u32>,
        #[arg(long)]
        failure_budget: Option<u32>,
        /// Move every site's database to this database server too.
        #[arg(long)]
        db_server: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum ServerCommand {
    List,
    Show {
        server: String,
    },
    /// Registers a server; the answer carries its agent's credentials, once.
    Add {
        name: String,
        #[arg(long)]
        kind: String,
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: Option<u16>,
        /// Where platforms may be registered on a web server (repeatable).
        #[arg(long = "platform-dir")]
        platform_dirs: Vec<String>,
    },
    /// Changes a server's record (KEY=VALUE: platform_dirs=[...]).
    Change {
        server: String,
        #[arg(value_name = "KEY=VALUE", required = true)]
        changes: Vec<String>,
    },
    /// Gives the server's agent a new broker password (the old one's connections close).
    Credentials {
        server: String,
    },
    /// Asks the server's agent what it runs.
    Verify {
        server: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    List,
    /// Adds a client (KEY=VALUE: email=...).
    Add {
        name: String,
        #[arg(value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    List {
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long = "type")]
        task_type: Option<String>,
        #[arg(long)]
        parent: Option<i64>,
        #[arg(long)]
        limit: Option<u32>,
        /// The last (oldest) id of the previous page.
        #[arg(long)]
        before: Option<i64>,
    },
    Show {
        task: i64,
    },
    /// The task's log; --follow shows it live until the task ends.
    Log {
        task: i64,
        #[arg(long, short)]
        follow: bool,
    },
    /// Waits for the task to end (exit 0 success, 1 failure).
    Wait {
        task: i64,
    },
    /// Cancels a queued task.
    Cancel {
        task: i64,
    },
    /// Runs a failed task again.
    Retry {
        task: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Queues a task from its JSON (as POST /api/v1/tasks takes it).
    Create {
        body: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    List,
    /// Makes a token (KEY=VALUE: client=acme, task_types=["backup"]); it is shown once.
    Add {
        name: String,
        #[arg(value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    Revoke {
        token: i64,
    },
}

#[derive(Subcommand)]
enum SettingsCommand {
    Show,
    /// Changes settings: KEY=VALUE, a value read as JSON when it is JSON.
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        changes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    List {
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        before: Option<i64>,
    },
    /// Drops a dead letter.
    Drop { id: i64 },
    /// Publishes a dead letter again to where it came from.
    Replay { id: i64 },
}

const SITE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("DOMAIN", "domain"),
    ("STATUS", "status"),
    ("CLIENT", "client"),
    ("PLATFORM", "platform"),
    ("PROFILE", "profile"),
];
const TASK_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("TYPE", "type"),
    ("STATUS", "status"),
    ("SITE", "site"),
    ("PLATFORM", "platform"),
    ("CREATED", "created"),
    ("ERROR", "error"),
];
const PLATFORM_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("STATUS", "status"),
    ("SERVER", "server"),
    ("DRIVER", "driver"),
    ("ROOT", "root"),
];
const SERVER_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("KIND", "kind"),
    ("HOST", "host"),
    ("AGENT", "agent.state"),
    ("LAST SEEN", "agent.last_seen"),
];
const CLIENT_COLUMNS: &[Column] = &[("ID", "id"), ("NAME", "name"), ("EMAIL", "email")];
const TOKEN_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("CLIENT", "client"),
    ("TASK TYPES", "task_types"),
    ("CREATED", "created"),
];
const BACKUP_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("CREATED", "created"),
    ("DESCRIPTION", "description"),
    ("SIZE", "size"),
    ("VERIFIED", "verified"),
];
const TARGET_COLUMNS: &[Column] = &[
    ("PLATFORM", "platform.name"),
    ("SELECTABLE", "selectable"),
    ("SAME", "counts.same"),
    ("UPGRADE", "counts.upgrade"),
    ("WARNING", "counts.warning"),
    ("ERROR", "counts.error"),
    ("WHY NOT", "reason"),
];
const DEAD_LETTER_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("RECEIVED", "received_at"),
    ("QUEUE", "queue"),
    ("TASK", "task_id"),
    ("REASON", "reason"),
];

/// What a command does once parsed: a request, how to show its answer, and whether to follow
/// the task it starts.
enum Show {
    Table(&'static [Column]),
    Record,
    /// A task was started: print it (or follow it with --wait).
    Started(Wait),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "hostctl",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hostctl: {}", output::clean(&format!("{e:#}")));
            if e.downcast_ref::<ApiError>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = Api::from_settings(Settings {
        url: cli.url,
        token: cli.token,
        token_file: cli.token_file,
        config: cli.config,
    })?;
    let (json_out, quiet) = (cli.json, cli.quiet);
    let (method, path, body, show) = request(&api, cli.command).await?;
    // `task log --follow` and `task wait` follow an existing task.
    if method == "FOLLOW" {
        let task: i64 = path.parse()?;
        let done = follow::follow(&api, task, json_out || quiet).await?;
        return Ok(finished(&done, json_out, quiet));
    }
    let page = api.call_page(method, &path, body.as_ref()).await?;
    let answer = page.items;
    match show {
        _ if json_out && !matches!(show, Show::Started(Wait { wait: true })) => {
            say!("{}", serde_json::to_string_pretty(&answer)?);
        }
        Show::Table(_) if quiet => {
            for item in answer.as_array().into_iter().flatten() {
                say!("{}", output::clean(&item["id"].to_string()));
            }
        }
        // What only this answer shows (a new token, an agent's credentials) is what -q prints;
        // else the record's id, if it has one.
        Show::Record if quiet => {
            let shown = ["token", "broker_password"]
                .iter()
                .map(|k| &answer[*k])
                .chain([
                    &answer["agent_credentials"]["broker_password"],
                    &answer["id"],
                ])
                .find(|v| !v.is_null());
            if let Some(v) = shown {
                say!(
                    "{}",
                    output::clean(
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                            .as_str()
                    )
                );
            }
        }
        Show::Table(columns) => say_raw!(
            "{}",
            output::table(
                &json!({"items": answer, "total": page.total, "next": page.next}),
                columns
            )
        ),
        Show::Record => say_raw!("{}", output::record(&answer)),
        Show::Started(wait) => {
            let task = started_task(&answer)
                .ok_or_else(|| ApiError(format!("the answer names no task: {answer}")))?;
            if quiet {
                say!("{}", task["id"]);
            }
            if !wait.wait {
                if !quiet {
                    say_raw!("{}", output::record(&answer));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let id = task["id"].as_i64().unwrap_or_default();
            if !json_out && !quiet {
                say!(
                    "task {id} ({}) queued; following it",
                    task["type"].as_str().unwrap_or("task")
                );
            }
            let done = follow::follow(&api, id, json_out || quiet).await?;
            return Ok(finished(&done, json_out, quiet));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The task an answer started: its `task`, or the answer itself when it is a task.
fn started_task(answer: &Value) -> Option<&Value> {
    if answer["task"].is_object() {
        return Some(&answer["task"]);
    }
    (answer["id"].is_i64() && answer["type"].is_string() && answer["status"].is_string())
        .then_some(answer)
}

/// How a followed task ended: printed, and the exit code it means.
fn finished(task: &Value, json_out: bool, quiet: bool) -> ExitCode {
    let status = task["status"].as_str().unwrap_or_default();
    if quiet {
        // The task's id was printed when it was started; its log went to stderr.
    } else if json_out {
        say!("{}", serde_json::to_string_pretty(task).unwrap_or_default());
    } else {
        let id = &task["id"];
        match (status, task["error"].as_str()) {
            ("success", _) => say!("task {id} succeeded"),
            ("warning", why) => say!(
                "task {id} succeeded with a warning: {}",
                output::clean(why.unwrap_or("-"))
            ),
            (_, why) => say!("task {id} failed: {}", output::clean(why.unwrap_or("-"))),
        }
        if status != "error" && !task["result"].is_null() {
            say_raw!("{}", output::record(&json!({"result": task["result"]})));
        }
    }
    if status == "error" {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `KEY=VALUE` pairs as a JSON object; a value that is JSON (a number, true, a list) is
/// taken as such, anything else as a string.
fn pairs(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            anyhow::bail!("{a:?}: arguments are KEY=VALUE");
        };
        if k.is_empty() {
            anyhow::bail!("{a:?}: the key is empty");
        }
        map.insert(k.to_owned(), literal(v));
    }
    Ok(map)
}

fn literal(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
}

/// A reference to a record as the API takes it in a body: its id, or its name.
fn reference(r: &str) -> Value {
    r.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| json!(r))
}

/// A record's id from its id or its name (a site's domain), by looking through the list.
async fn resolve(api: &Api, noun: &str, key: &str, r: &str) -> anyhow::Result<i64> {
    if let Ok(id) = r.parse::<i64>() {
        return Ok(id);
    }
    let mut path = if noun == "sites" {
        format!("/sites?domain={}", query_value(r))
    } else {
        format!("/{noun}?limit=100")
    };
    // Names and domains compare as the API keeps them (lower case, no final dot). A domain
    // used again after its site was deleted names the live site, else the newest record.
    let wanted = r.trim_end_matches('.').to_lowercase();
    let mut best: Option<(bool, i64)> = None;
    loop {
        let page = api.call_page("GET", &path, None).await?;
        for item in page.items.as_array().into_iter().flatten() {
            if item[key].as_str().map(str::to_lowercase).as_deref() != Some(wanted.as_str()) {
                continue;
            }
            let Some(id) = item["id"].as_i64() else {
                continue;
            };
            let live = item["status"].as_str() != Some("deleted");
            if best.is_none_or(|b| (live, id) > b) {
                best = Some((live, id));
            }
        }
        match page.next.as_deref() {
            Some(next) => path = next.trim_start_matches("/api/v1").to_owned(),
            None => break,
        }
    }
    best.map(|(_, id)| id)
        .ok_or_else(|| ApiError(format!("{noun}: there is no {r:?}")).into())
}

/// A query-string value, encoded as a form value (what the API's query parser reads).
fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `?a=1&b=x` from the options given.
fn query(params: &[(&str, Option<String>)]) -> String {
    let given: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", query_value(v))))
        .collect();
    if given.is_empty() {
        String::new()
    } else {
        format!("?{}", given.join("&"))
    }
}

type Request = (&'static str, String, Option<Value>, Show);

async fn site_task(api: &Api, site: &str, body: Value, wait: Wait) -> anyhow::Result<Request> {
    let id = resolve(api, "sites", "domain", site).await?;
    Ok((
        "POST",
        format!("/sites/{id}/tasks"),
        Some(body),
        Show::Started(wait),
    ))
}

async fn request(api: &Api, command: Command) -> anyhow::Result<Request> {
    use SiteCommand as S;
    Ok(match command {
        Command::Completions { .. } => unreachable!("answered before the API is set up"),
        Command::Site(c) => match c {
            S::List {
                domain,
                client,
                status,
                platform,
                search,
                limit,
                after,
            } => (
                "GET",
                format!(
                    "/sites{}",
                    query(&[
                        ("domain", domain),
                        ("client", client),
                        ("status", status),
                        ("platform", platform),
                        ("search", search),
                        ("limit", limit.map(|l| l.to_string())),
                        ("after", after.map(|a| a.to_string())),
                    ])
                ),
                None,
                Show::Table(SITE_COLUMNS),
            ),
            S::Show { site } => {
                let id = resolve(api, "sites", "domain", &site).await?;
                ("GET", format!("/sites/{id}"), None, Show::Record)
            }
            S::Add {
                domain,
                client,
                platform,
                profile,
                language,
                db_server,
                aliases,
                wait,
            } => (
                "POST",
                "/sites".into(),
                Some(json!({
                    "domain": domain, "client": reference(&client), "platform": reference(&platform),
                    "profile": profile, "language": language, "db_server": reference(&db_server),
                    "aliases": aliases,
                })),
                Show::Started(wait),
            ),
            S::Task {
                site,
                task_type,
                args,
                wait,
            } => {
                let mut body = pairs(&args)?;
                body.insert("type".into(), json!(task_type));
                site_task(api, &site, Value::Object(body), wait).await?
            }
            S::Verify { site, wait } => {
                site_task(api, &site, json!({"type": "verify"}), wait).await?
            }
            S::Backup {
                site,
                description,
                wait,
            } => {
                let mut body = json!({"type": "backup"});
                if let Some(d) = description {
                    body["description"] = json!(d);
                }
                site_task(api, &site, body, wait).await?
            }
            S::VerifyBackup { site, backup, wait } => {
                site_task(
                    api,
                    &site,
                    json!({"type": "verify-backup", "backup": backup}),
                    wait,
                )
                .await?
            }
            S::Restore { site, backup, wait } => {
                site_task(
                    api,
                    &site,
                    json!({"type": "restore", "backup": backup}),
                    wait,
                )
                .await?
            }
            S::BackupDelete {
                site,
                backups,
                wait,
            } => {
                site_task(
                    api,
                    &site,
                    json!({"type": "backup-delete", "backups": backups}),
                    wait,
                )
                .await?
            }
            S::Disable { site, wait } => {
                site_task(api, &site, json!({"type": "disable"}), wait).await?
            }
            S::Enable { site, wait } => {
                site_task(api, &site, json!({"type": "enable"}), wait).await?
            }
            S::LoginReset { site, wait } => {
                site_task(api, &site, json!({"type": "login-reset"}), wait).await?
            }
            S::Migrate {
                site,
                platform,
                domain,
                db_server,
                wait,
            } => {
                let mut body = json!({"type": "migrate", "platform": reference(&platform)});
                if let Some(d) = domain {
                    body["domain"] = json!(d);
                }
                if let Some(db) = db_server {
                    body["db_server"] = reference(&db);
                }
                site_task(api, &site, body, wait).await?
            }
            S::Clone {
                site,
                domain,
                platform,
                db_server,
                wait,
            } => {
                let id = resolve(api, "sites", "domain", &site).await?;
                let platform = match platform {
                    Some(p) => reference(&p),
                    None => {
                        api.call("GET", &format!("/sites/{id}"), None).await?["platform"].clone()
                    }
                };
                let mut body = json!({"type": "clone", "platform": platform, "domain": domain});
                if let Some(db) = db_server {
                    body["db_server"] = reference(&db);
                }
                (
                    "POST",
                    format!("/sites/{id}/tasks"),
                    Some(body),
                    Show::Started(wait),
                )
            }
            S::Delete { site, force, wait } => {
                let mut body = json!({"type": "delete"});
                if force {
                    body["force"] = json!(true);
                }
                site_task(api, &site, body, wait).await?
            }
            S::Backups { site } => {
                let id = resolve(api, "sites", "domain", &site).await?;
                (
                    "GET",
                    format!("/sites/{id}/backups"),
                    None,
                    Show::Table(BACKUP_COLUMNS),
                )
            }
            S::Targets { site } => {
                let id = resolve(api, "sites", "domain", &site).await?;
                (
                    "GET",
                    format!("/sites/{id}/migrate-targets"),
                    None,
                    Show::Table(TARGET_COLUMNS),
                )
            }
            S::Schedule { site, set } => {
                let id = resolve(api, "sites", "domain", &site).await?;
                match set {
                    None => (
                        "GET",
                        format!("/sites/{id}/backup-schedule"),
                        None,
                        Show::Record,
                    ),
                    Some(s) => (
                        "PUT",
                        format!("/sites/{id}/backup-schedule"),
                        Some(json!({"schedule": literal(&s)})),
                        Show::Record,
                    ),
                }
            }
        },
        Command::Platform(c) => match c {
            PlatformCommand::List => (
                "GET",
                "/platforms".into(),
                None,
                Show::Table(PLATFORM_COLUMNS),
            ),
            PlatformCommand::Show { platform } => {
                let id = resolve(api, "platforms", "name", &platform).await?;
                ("GET", format!("/platforms/{id}"), None, Show::Record)
            }
            PlatformCommand::Add {
                name,
                server,
                root,
                driver,
                wait,
            } => {
                let body = json!({"name": name, "server": reference(&server), "root": root, "driver": driver});
                ("POST", "/platforms".into(), Some(body), Show::Started(wait))
            }
            PlatformCommand::Task {
                platform,
                task_type,
                args,
                wait,
            } => {
                let id = resolve(api, "platforms", "name", &platform).await?;
                let mut body = pairs(&args)?;
                body.insert("type".into(), json!(task_type));
                (
                    "POST",
                    format!("/platforms/{id}/tasks"),
                    Some(Value::Object(body)),
                    Show::Started(wait),
                )
            }
            PlatformCommand::Verify { platform, wait } => {
                let id = resolve(api, "platforms", "name", &platform).await?;
                (
                    "POST",
                    format!("/platforms/{id}/tasks"),
                    Some(json!({"type": "verify"})),
                    Show::Started(wait),
                )
            }
            PlatformCommand::MigrateSites {
                platform,
                target,
                concurrency,
                failure_budget,
                db_server,
                wait,
            } => {
                let id = resolve(api, "platforms", "name", &platform).await?;
                let mut body = json!({"type": "migrate-sites", "target": reference(&target)});
                if let Some(c) = concurrency {
                    body["concurrency"] = json!(c);
                }
                if let Some(f) = failure_budget {
                    body["failure_budget"] = json!(f);
                }
                if let Some(d) = db_server {
                    body["db_server"] = reference(&d);
                }
                (
                    "POST",
                    format!("/platforms/{id}/tasks"),
                    Some(body),
                    Show::Started(wait),
                )
            }
        },
        Command::Server(c) => match c {
            ServerCommand::List => ("GET", "/servers".into(), None, Show::Table(SERVER_COLUMNS)),
            ServerCommand::Show { server } => {
                let id = resolve(api, "servers", "name", &server).await?;
                ("GET", format!("/servers/{id}"), None, Show::Record)
            }
            ServerCommand::Add {
                name,
                kind,
                host,
                port,
                platform_dirs,
            } => {
                let mut body = json!({"name": name, "kind": kind, "host": host});
                if let Some(p) = port {
                    body["port"] = json!(p);
                }
                if !platform_dirs.is_empty() {
                    body["platform_dirs"] = json!(platform_dirs);
                }
                ("POST", "/servers".into(), Some(body), Show::Record)
            }
            ServerCommand::Change { server, changes } => {
                let id = resolve(api, "servers", "name", &server).await?;
                (
                    "PATCH",
                    format!("/servers/{id}"),
                    Some(Value::Object(pairs(&changes)?)),
                    Show::Record,
                )
            }
            ServerCommand::Credentials { server } => {
                let id = resolve(api, "servers", "name", &server).await?;
                (
                    "POST",
                    format!("/servers/{id}/credentials"),
                    None,
                    Show::Record,
                )
            }
            ServerCommand::Verify { server, wait } => {
                let id = resolve(api, "servers", "name", &server).await?;
                (
                    "POST",
                    format!("/servers/{id}/tasks"),
                    Some(json!({"type": "verify"})),
                    Show::Started(wait),
                )
            }
        },
        Command::Client(c) => match c {
            ClientCommand::List => ("GET", "/clients".into(), None, Show::Table(CLIENT_COLUMNS)),
            ClientCommand::Add { name, fields } => {
                let mut body = pairs(&fields)?;
                body.insert("name".into(), json!(name));
                (
                    "POST",
                    "/clients".into(),
                    Some(Value::Object(body)),
                    Show::Record,
                )
            }
        },
        Command::Task(c) => match c {
            TaskCommand::List {
                site,
                status,
                task_type,
                parent,
                limit,
                before,
            } => {
                let site = match site {
                    Some(s) => Some(resolve(api, "sites", "domain", &s).await?.to_string()),
                    None => None,
                };
                (
                    "GET",
                    format!(
                        "/tasks{}",
                        query(&[
                            ("site", site),
                            ("status", status),
                            ("type", task_type),
                            ("parent", parent.map(|p| p.to_string())),
                            ("limit", limit.map(|l| l.to_string())),
                            ("before", before.map(|b| b.to_string())),
                        ])
                    ),
                    None,
                    Show::Table(TASK_COLUMNS),
                )
            }
            TaskCommand::Show { task } => ("GET", format!("/tasks/{task}"), None, Show::Record),
            TaskCommand::Log { task, follow: true } | TaskCommand::Wait { task } => {
                ("FOLLOW", task.to_string(), None, Show::Record)
            }
            TaskCommand::Log {
                task,
                follow: false,
            } => (
                "GET",
                format!("/tasks/{task}/log"),
                None,
                Show::Table(&[("AT", "at"), ("LEVEL", "level"), ("MESSAGE", "message")]),
            ),
            TaskCommand::Cancel { task } => {
                ("POST", format!("/tasks/{task}/cancel"), None, Show::Record)
            }
            TaskCommand::Retry { task, wait } => (
                "POST",
                format!("/tasks/{task}/retry"),
                None,
                Show::Started(wait),
            ),
            TaskCommand::Create { body, wait } => {
                let body: Value = serde_json::from_str(&body)
                    .map_err(|e| anyhow::anyhow!("the task is not JSON: {e}"))?;
                ("POST", "/tasks".into(), Some(body), Show::Started(wait))
            }
        },
        Command::Token(c) => match c {
            TokenCommand::List => ("GET", "/tokens".into(), None, Show::Table(TOKEN_COLUMNS)),
            TokenCommand::Add { name, fields } => {
                let mut body = pairs(&fields)?;
                body.insert("name".into(), json!(name));
                (
                    "POST",
                    "/tokens".into(),
                    Some(Value::Object(body)),
                    Show::Record,
                )
            }
            TokenCommand::Revoke { token } => {
                ("DELETE", format!("/tokens/{token}"), None, Show::Record)
            }
        },
        Command::Settings(c) => match c {
            SettingsCommand::Show => ("GET", "/settings".into(), None, Show::Record),
            SettingsCommand::Set { changes } => (
                "PATCH",
                "/settings".into(),
                Some(Value::Object(pairs(&changes)?)),
                Show::Record,
            ),
        },
        Command::DeadLetter(c) => match c {
            DeadLetterCommand::List { limit, before } => (
                "GET",
                format!(
                    "/dead-letters{}",
                    query(&[
                        ("limit", limit.map(|l| l.to_string())),
                        ("before", before.map(|b| b.to_string())),
                    ])
                ),
                None,
                Show::Table(DEAD_LETTER_COLUMNS),
            ),
            DeadLetterCommand::Drop { id } => {
                ("DELETE", format!("/dead-letters/{id}"), None, Show::Record)
            }
            DeadLetterCommand::Replay { id } => (
                "POST",
                format!("/dead-letters/{id}/replay"),
                None,
                Show::Record,
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_when_they_are_json() {
        let m = pairs(&[
            "backup=3".into(),
            "force=true".into(),
            "domain=a.example".into(),
            "backups=[1,2]".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"backup": 3, "force": true, "domain": "a.example", "backups": [1, 2]})
        );
        assert!(pairs(&["nokey".into()]).is_err());
        assert!(pairs(&["=x".into()]).is_err());
    }

    /// Shell words, for the README's lines: quotes group, `\` at a line's end joins the next.
    fn words(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
        for c in line.chars() {
            match (quote, c) {
                (None, '\'' | '"') => {
                    quote = Some(c);
                    any = true;
                }
                (Some(q), c) if c == q => quote = None,
                (None, ' ') => {
                    if any || !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                    any = false;
                }
                (_, c) => cur.push(c),
            }
        }
        if any || !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    #[test]
    fn every_hostctl_line_in_the_readme_parses() {
        let readme = include_str!("../../README.md");
        let mut checked = 0;
        let mut lines = readme.lines().peekable();
        let mut in_sh = false;
        while let Some(line) = lines.next() {
            if line.trim_start().starts_with("```") {
                in_sh = line.trim() == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let mut line = line.trim().to_owned();
            while line.ends_with('\\') {
                line.pop();
                line.push_str(lines.next().unwrap_or_default().trim());
            }
            // The command itself: before a pipe, a comment or a redirection.
            let Some(start) = line.find("hostctl ") else {
                continue;
            };
            if !(start == 0 || line[..start].ends_with("$(")) || line.starts_with("hostctl,") {
                continue;
            }
            let command: String = line[start..]
                .split(" | ")
                .next()
                .unwrap_or_default()
                .split(" #")
                .next()
                .unwrap_or_default()
                .split(" > ")
                .next()
                .unwrap_or_default()
                .trim_end_matches(')')
                .to_owned();
            // A shell variable or a command's output stands for an id here.
            let argv: Vec<String> = words(&command)
                .into_iter()
                .map(|w| {
                    if w.starts_with('$') && !w.contains('/') {
                        "1".into()
                    } else {
                        w
                    }
                })
                .collect();
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!("README: {command}\n{e}");
            }
            checked += 1;
        }
        assert!(
            checked >= 40,
            "only {checked} hostctl lines found in the README"
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_started_task_is_found_in_either_answer() {
        assert_eq!(
            started_task(&json!({"site": {}, "task": {"id": 4}})).map(|t| &t["id"]),
            Some(&json!(4))
        );
        let t = json!({"id": 5, "type": "verify", "status": "queued"});
        assert_eq!(started_task(&t), Some(&t));
        assert_eq!(started_task(&json!({"id": 5})), None);
    }
}
