//! The `playbook` command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use engine::events::{Collector, EventSink, Redacting};
use engine::inventory::Inventory;
use engine::plan::Plan;
use engine::report::{JsonReporter, TextReporter};
use engine::runner::RunOptions;
use engine::secret::Redactor;
use engine::transport::DefaultConnector;
use engine::Registry;
use miette::Report;

/// Exit codes, as documented in the README.
const EXIT_BAD_INPUT: u8 = 1;
const EXIT_CODES: &str = "Exit codes: 0 all ok; 1 bad input (command line, inventory, playbook, \
templates), nothing was run; 2 a task failed; 3 a host was unreachable; 130 interrupted (Ctrl-C); \
143 stopped by SIGTERM.";

#[derive(Parser)]
#[command(
    name = "playbook",
    version,
    about = "Agentless configuration: Rhai playbooks, run idempotently over SSH",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a playbook. Exit code: 0 all ok, 2 a task failed, 3 a host unreachable, 1 bad input.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Show phases, tasks and target hosts without touching a host.
    Plan(PlanArgs),
    /// Print the task graph as Graphviz DOT.
    Graph(PlanArgs),
    /// Show hosts, groups and every resolved variable with where it came from.
    Inventory {
        /// The inventory file (TOML); default $PLAYBOOK_INVENTORY.
        #[arg(short, long, env = "PLAYBOOK_INVENTORY")]
        inventory: PathBuf,
        /// Show only this host.
        #[arg(long)]
        host: Option<String>,
        /// Print the inventory as a TOML inventory (an Ansible INI or YAML inventory converted,
        /// with its group_vars/ and host_vars/), and stop.
        #[arg(long)]
        to_toml: bool,
        #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE|@FILE")]
        extra_vars: Vec<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Encrypt and decrypt secrets with the vault (age: a passphrase or X25519 identities).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
        #[command(flatten)]
        keys: VaultArgs,
    },
    /// Show what earlier runs changed, per host and task, from the run journal beside the
    /// inventory (`.playbook/INVENTORY.journal.jsonl`), oldest first.
    History {
        /// The inventory file the runs used; default $PLAYBOOK_INVENTORY.
        #[arg(short, long, env = "PLAYBOOK_INVENTORY")]
        inventory: PathBuf,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Only changes from this day or time on (UTC): `2026-12-01` or `2026-12-01T09:00:00Z`.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per change, as the journal stores it.
        #[arg(long)]
        json: bool,
    },
    /// Show a module's documentation, or list the modules.
    Doc { module: Option<String> },
    /// Print a shell completion script: `playbook completions bash > /etc/bash_completion.d/playbook`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the vault's keys are.
#[derive(Args, Clone)]
struct VaultArgs {
    /// A file whose first line is the vault's passphrase.
    #[arg(
        long,
        value_name = "FILE",
        env = "PLAYBOOK_VAULT_PASSWORD_FILE",
        global = true
    )]
    vault_password_file: Option<PathBuf>,
    /// An age identity file (`AGE-SECRET-KEY-1…` lines, as age-keygen writes them).
    #[arg(
        long,
        value_name = "FILE",
        env = "PLAYBOOK_VAULT_IDENTITY",
        global = true
    )]
    vault_identity: Option<PathBuf>,
}

impl VaultArgs {
    fn open(&self) -> Result<engine::vault::Vault, Report> {
        engine::vault::Vault::from_files(
            self.vault_password_file.as_deref(),
            self.vault_identity.as_deref(),
        )
        .map_err(|e| miette::miette!("{e}"))
    }
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Encrypt a whole file in place (age's ASCII armor).
    Encrypt { file: PathBuf },
    /// Decrypt a whole file in place.
    Decrypt { file: PathBuf },
    /// Print a decrypted file.
    View { file: PathBuf },
    /// Edit a file decrypted with $EDITOR, then encrypt it again (a new file if it does not
    /// exist).
    Edit { file: PathBuf },
    /// Encrypt one value read from standard input, for a file of variables:
    /// `NAME = "vault:age:…"`.
    EncryptString {
        /// The variable's name: prints a whole TOML line.
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Args)]
struct PlanArgs {
    /// The playbook (a Rhai script).
    playbook: PathBuf,
    /// The inventory file (TOML); default $PLAYBOOK_INVENTORY.
    #[arg(short, long, env = "PLAYBOOK_INVENTORY")]
    inventory: PathBuf,
    /// Only these hosts (a pattern: group, host, glob, `a:b`, `a:&b`, `a:!b`).
    #[arg(short, long)]
    limit: Option<String>,
    /// Extra variables, highest precedence: `key=value`, `@vars.yml`/`@vars.json`/`@vars.toml`,
    /// or a JSON object.
    #[arg(short = 'e', long = "extra-vars", value_name = "KEY=VALUE|@FILE|JSON")]
    extra_vars: Vec<String>,
    #[command(flatten)]
    vault: VaultArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Show what would change and change nothing.
    #[arg(short = 'C', long)]
    check: bool,
    /// Run notified handlers even on hosts that failed (and after any_errors_fatal).
    #[arg(long)]
    force_handlers: bool,
    /// Show a unified diff of every file change.
    #[arg(short = 'D', long)]
    diff: bool,
    /// List the hosts each phase's tasks run on, and stop (nothing is run).
    #[arg(long)]
    list_hosts: bool,
    /// List the tasks with their tags, and stop (nothing is run).
    #[arg(long)]
    list_tasks: bool,
    /// Plan the playbook against the inventory (syntax, modules, arguments, templates), and
    /// stop (nothing is run).
    #[arg(long)]
    syntax_check: bool,
    /// List every phase's tags, and stop (nothing is run).
    #[arg(long)]
    list_tags: bool,
    /// Start at the first task of this name: the tasks declared before it do not run.
    #[arg(long, value_name = "TASK NAME")]
    start_at_task: Option<String>,
    /// Only tasks with one of these tags (comma separated).
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Skip tasks with any of these tags (comma separated).
    #[arg(long, value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// How many tasks run at once across all hosts (1 or more).
    #[arg(short, long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    forks: u32,
    /// How the run is reported: text for people, json for programs (one event per line).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Also show unchanged and skipped tasks, with timings.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Accept and record host keys that are not in known_hosts yet (changed keys are still refused).
    #[arg(long)]
    accept_new_host_keys: bool,
    /// Ask once for the sudo password used by hosts with `become = true`.
    #[arg(short = 'K', long)]
    ask_become_pass: bool,
    /// Seconds one remote command may run.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Connect as this user where the inventory names none (as Ansible's -u).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    user: Option<String>,
    /// SSH private key for hosts the inventory gives no identity_file.
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// Run tasks with sudo on hosts the inventory does not set `become` for.
    #[arg(short = 'b', long = "become")]
    become_: bool,
    /// The user `become` switches to where the inventory names none (default root).
    #[arg(long, value_name = "USER")]
    become_user: Option<String>,
    /// Bytes of a command's output kept per stream (its first and last halves; what lies
    /// between is cut, and counted in `stdout_cut`/`stderr_cut`): 1048576, 512K, 1M, 1G.
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = parse_bytes)]
    keep_output: usize,
}

/// A size as `--keep-output` takes it: bytes, or with a binary suffix K, M, G (KiB, MiB…).
fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => {
            return Err(format!(
                "{text:?}: a size is bytes, or a number with K, M or G"
            ))
        }
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: a size is bytes, or a number with K, M or G"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl RunArgs {
    fn connection_settings(&self) -> engine::inventory::CommandLineSettings {
        engine::inventory::CommandLineSettings {
            user: self.user.clone(),
            identity_file: self.private_key.clone(),
            become_: self.become_,
            become_user: self.become_user.clone(),
        }
    }
}

fn main() -> ExitCode {
    // A command-line mistake is bad input (1), like every other: clap's own code, 2, means "a
    // task failed" here.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_BAD_INPUT } else { 0 });
        }
    };
    adopt_orphans();
    // Unwrapped lines keep file:line:col and messages greppable in logs.
    miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }))
    .ok();
    // A panic's message may hold a value: it is shown redacted like everything else.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", secrets().redact(&info.to_string()));
    }));
    match real_main(cli) {
        Ok(code) => {
            reap_orphans();
            ExitCode::from(code)
        }
        Err(report) => {
            eprintln!("{}", secrets().redact(&format!("{report:?}")));
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// The secrets this process knows (the inventory's, the vault's, the playbook's): everything it
/// prints goes through them, events, plans, errors and panics alike.
fn secrets() -> &'static Arc<Redactor> {
    static SECRETS: std::sync::OnceLock<Arc<Redactor>> = std::sync::OnceLock::new();
    SECRETS.get_or_init(Arc::default)
}

/// Prints to stdout with every known secret replaced.
fn show(text: &str) {
    print!("{}", secrets().redact(text));
}

/// ssh ControlMasters run detached from us; as a subreaper we are their parent when they end and
/// reap them ourselves, so none is left as a zombie waiting for a slow init.
fn adopt_orphans() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

fn reap_orphans() {
    #[cfg(target_os = "linux")]
    loop {
        // SAFETY: waitpid with a null status pointer and WNOHANG only collects exited children.
        let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    modules::register_all(&mut r);
    r
}

/// The inventory, and the extra vars with the names of those read from the vault, decrypted
/// with `vault`; every secret value is registered with [`secrets`] before anything is shown.
fn load_inventory(
    path: &Path,
    cli: &engine::inventory::CommandLineSettings,
    vault: &VaultArgs,
    extra: &[String],
) -> Result<(Arc<Inventory>, ExtraVars), Report> {
    let vault = vault.open()?;
    let inventory = Inventory::load_with_vault(path, cli, &vault).map_err(Report::new)?;
    let mut vars = serde_json::Map::new();
    let mut secret = BTreeSet::new();
    for a in extra {
        let (v, names) = engine::inventory::parse_extra_var_with(a, &vault)
            .map_err(|e| miette::miette!("{e}"))?;
        vars.extend(v);
        secret.extend(names);
    }
    let names = inventory.secret_names().union(&secret).cloned().collect();
    inventory.register_secrets(secrets(), &names, &Default::default(), &vars);
    Ok((Arc::new(inventory), ExtraVars { vars, secret }))
}

/// Extra vars (`-e`), and which of them were read from the vault.
struct ExtraVars {
    vars: serde_json::Map<String, serde_json::Value>,
    secret: BTreeSet<String>,
}

fn build_plan(
    args: &PlanArgs,
    cli: &engine::inventory::CommandLineSettings,
    sink: Arc<dyn EventSink>,
) -> Result<(Plan, Arc<Inventory>, ExtraVars), Report> {
    let (inventory, extra) = load_inventory(&args.inventory, cli, &args.vault, &args.extra_vars)?;
    let limit = match &args.limit {
        None => None,
        Some(p) => {
            let hosts = engine::pattern::select(&inventory, p)
                .map_err(|e| miette::miette!("--limit {p}: {e}"))?;
            if hosts.is_empty() {
                return Err(miette::miette!(
                    "--limit {p} matches no host in {}",
                    args.inventory.display()
                ));
            }
            Some(hosts.into_iter().collect::<BTreeSet<_>>())
        }
    };
    let registry = registry();
    let plan = engine::script::plan(engine::script::PlanInput {
        playbook: &args.playbook,
        inventory: inventory.clone(),
        registry: &registry,
        limit,
        extra_vars: extra.vars.clone(),
        sink,
        secret_vars: extra.secret.clone(),
        secrets: secrets().clone(),
    })
    .map_err(Report::new)?;
    Ok((plan, inventory, extra))
}

/// The plan alone, for commands that show it: no run's connection settings or events.
fn plan_only(args: &PlanArgs) -> Result<Plan, Report> {
    let quiet = Arc::new(Collector::default());
    build_plan(args, &Default::default(), quiet).map(|(plan, _, _)| plan)
}

fn real_main(cli: Cli) -> Result<u8, Report> {
    match cli.command {
        Command::History {
            inventory,
            host,
            since,
            json,
        } => {
            let path = engine::journal::path_beside(&inventory);
            let entries = engine::journal::read(&path, host.as_deref(), since.as_deref())
                .map_err(|e| miette::miette!("{e}"))?;
            for e in &entries {
                if json {
                    println!("{}", serde_json::to_string(e).expect("plain JSON"));
                    continue;
                }
                println!(
                    "{}  {}  {} / {}{}{}",
                    e.ts,
                    e.host,
                    e.phase,
                    e.task,
                    if e.handler { " (handler)" } else { "" },
                    e.summary
                        .as_ref()
                        .map(|s| format!(" — {s}"))
                        .unwrap_or_default()
                );
            }
            if entries.is_empty() && !json {
                println!("no change recorded in {}", path.display());
            }
            Ok(0)
        }
        Command::Run(args) => {
            let reporter: Arc<dyn EventSink> = match args.output {
                Output::Text => Arc::new(TextReporter::new(args.verbose)),
                Output::Json => Arc::new(JsonReporter::default()),
            };
            let secrets = secrets().clone();
            // The journal keeps what real runs change (it ignores check runs), redacted too.
            let journal =
                engine::journal::Journal::new(engine::journal::path_beside(&args.plan.inventory));
            let sink: Arc<dyn EventSink> = Arc::new(Redacting {
                inner: Arc::new(engine::events::Tee(vec![reporter, Arc::new(journal)])),
                secrets: secrets.clone(),
            });
            let become_password = if args.ask_become_pass {
                let pw = ask_become_pass()?;
                secrets.add(pw.expose());
                Some(pw)
            } else {
                None
            };
            if args.list_hosts || args.list_tasks || args.list_tags || args.syntax_check {
                let (plan, _, _) = build_plan(
                    &args.plan,
                    &args.connection_settings(),
                    Arc::new(Collector::default()),
                )?;
                if args.syntax_check {
                    show(&format!("playbook: {}\n", args.plan.playbook.display()));
                }
                if args.list_hosts || args.list_tasks || args.list_tags {
                    show(&list_plan(
                        &plan,
                        args.list_hosts,
                        args.list_tasks,
                        args.list_tags,
                    ));
                }
                return Ok(0);
            }
            let (plan, inventory, extra) =
                match build_plan(&args.plan, &args.connection_settings(), sink.clone()) {
                    Ok(built) => built,
                    Err(report) => {
                        // Programs reading the events learn why nothing ran, and where.
                        sink.emit(&bad_input_event(&report));
                        return Err(report);
                    }
                };
            let start_at = match &args.start_at_task {
                None => None,
                Some(name) => Some(start_task(&plan, name)?),
            };
            let opts = RunOptions {
                check: args.check,
                diff: args.diff,
                forks: args.forks as usize,
                tags: args.tags,
                skip_tags: args.skip_tags,
                start_at,
                extra_vars: extra.vars,
                become_password,
                secrets,
                keep_output: args.keep_output,
                pending_handlers: Some(engine::pending::PendingHandlers::beside(
                    &args.plan.inventory,
                    &args.plan.playbook,
                )),
                force_handlers: args.force_handlers,
            };
            let connector = DefaultConnector {
                accept_new_host_keys: args.accept_new_host_keys,
                command_timeout: args.timeout.map(std::time::Duration::from_secs),
            };
            let rt = tokio::runtime::Runtime::new().map_err(|e| miette::miette!("{e}"))?;
            // SIGTERM (a service manager, `timeout`, CI) stops a run as Ctrl-C does, with the
            // recap; the exit code tells which it was (128 + the signal).
            let terminated = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let interrupt = {
                let terminated = terminated.clone();
                async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    match signal(SignalKind::terminate()) {
                        Ok(mut term) => tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = term.recv() => terminated.store(true, std::sync::atomic::Ordering::SeqCst),
                        },
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                }
            };
            let recap = rt.block_on(engine::runner::run_until(
                Arc::new(plan),
                inventory,
                Arc::new(connector),
                opts,
                sink,
                interrupt,
            ));
            if recap.interrupted && terminated.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(143);
            }
            Ok(recap.exit_code() as u8)
        }
        Command::Plan(args) => {
            let plan = plan_only(&args)?;
            show(&describe_plan(&plan));
            Ok(0)
        }
        Command::Graph(args) => {
            let plan = plan_only(&args)?;
            show(&plan.to_dot());
            Ok(0)
        }
        Command::Inventory {
            inventory,
            to_toml: true,
            vault,
            ..
        } => {
            // Converted as written: vault values stay encrypted, an encrypted file is refused.
            let text = Inventory::load_toml(&inventory).map_err(Report::new)?;
            // Checked as it would be used, so what is printed loads.
            load_inventory(&inventory, &Default::default(), &vault, &[])?;
            show(&text);
            Ok(0)
        }
        Command::Inventory {
            inventory,
            host,
            extra_vars,
            vault,
            ..
        } => {
            let (inv, extra) =
                load_inventory(&inventory, &Default::default(), &vault, &extra_vars)?;
            show(&describe_inventory(&inv, host.as_deref(), &extra)?);
            Ok(0)
        }
        Command::Vault { command, keys } => vault_command(command, &keys),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "playbook",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Doc { module } => {
            let reg = registry();
            match module {
                None => {
                    for m in reg.iter() {
                        println!("{:<16} {}", m.name(), first_sentence(m.doc()));
                    }
                    println!("\n`playbook doc rhai`: the playbook language (phases, on, task options, handlers, custom tasks).");
                }
                Some(name) if name == "rhai" && reg.get(&name).is_none() => {
                    print!("{RHAI_DOC}");
                }
                Some(name) => {
                    let m = reg.get(&name).ok_or_else(|| {
                        let hint = engine::error::closest(&name, reg.names())
                            .map(|c| format!(" (did you mean '{c}'?)"))
                            .unwrap_or_default();
                        miette::miette!("no module named '{name}'{hint}; `playbook doc` lists them")
                    })?;
                    println!("{}", m.doc().trim_end());
                    println!("\nArguments: {}", m.fields().join(", "));
                }
            }
            Ok(0)
        }
    }
}

fn vault_command(cmd: VaultCommand, keys: &VaultArgs) -> Result<u8, Report> {
    use engine::vault::is_file;
    let vault = keys.open()?;
    let read =
        |file: &Path| std::fs::read(file).map_err(|e| miette::miette!("{}: {e}", file.display()));
    let decrypted = |file: &Path| -> Result<Vec<u8>, Report> {
        let data = read(file)?;
        if !is_file(&data) {
            return Err(miette::miette!(
                "{}: not encrypted with the vault (no {} line)",
                file.display(),
                engine::vault::FILE_HEADER
            ));
        }
        vault
            .decrypt(&data, &file.display().to_string())
            .map_err(|e| miette::miette!("{e}"))
    };
    let encrypt = |plain: &[u8]| {
        vault
            .encrypt_file(plain)
            .map_err(|e| miette::miette!("{e}"))
    };
    match cmd {
        VaultCommand::Encrypt { file } => {
            let data = read(&file)?;
            if is_file(&data) {
                return Err(miette::miette!(
                    "{}: already encrypted with the vault",
                    file.display()
                ));
            }
            write_atomically(&file, encrypt(&data)?.as_bytes())?;
            eprintln!("encrypted {}", file.display());
        }
        VaultCommand::Decrypt { file } => {
            write_atomically(&file, &decrypted(&file)?)?;
            eprintln!("decrypted {}", file.display());
        }
        VaultCommand::View { file } => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&decrypted(&file)?)
                .map_err(|e| miette::miette!("{e}"))?;
        }
        VaultCommand::Edit { file } => {
            let plain = if file.exists() {
                decrypted(&file)?
            } else {
                Vec::new()
            };
            // Plain text only in a directory of our own, removed with it.
            let dir = tempfile::tempdir().map_err(|e| miette::miette!("{e}"))?;
            let name = file.file_name().unwrap_or(std::ffi::OsStr::new("vault"));
            let tmp = dir.path().join(name);
            std::fs::write(&tmp, &plain).map_err(|e| miette::miette!("{e}"))?;
            let editor = std::env::var("VISUAL")
                .or_else(|_| std::env::var("EDITOR"))
                .unwrap_or_else(|_| "vi".into());
            // As git does: the editor may carry arguments (`code --wait`).
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{editor} \"$1\""))
                .arg("sh")
                .arg(&tmp)
                .status()
                .map_err(|e| miette::miette!("running the editor {editor}: {e}"))?;
            if !status.success() {
                return Err(miette::miette!(
                    "the editor {editor} failed ({status}); {} is unchanged",
                    file.display()
                ));
            }
            let edited = std::fs::read(&tmp).map_err(|e| miette::miette!("{e}"))?;
            if edited == plain && file.exists() {
                eprintln!("{} is unchanged", file.display());
                return Ok(0);
            }
            write_atomically(&file, encrypt(&edited)?.as_bytes())?;
            eprintln!("encrypted {}", file.display());
        }
        VaultCommand::EncryptString { name } => {
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .map_err(|e| miette::miette!("reading the value from stdin: {e}"))?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value);
            let enc = vault
                .encrypt_value(value)
                .map_err(|e| miette::miette!("{e}"))?;
            match name {
                Some(n) => println!("{n} = \"{enc}\""),
                None => println!("\"{enc}\""),
            }
        }
    }
    Ok(0)
}

/// Replaces `file` by `data`: a temporary file beside it (the same mode, or 0600 for a new
/// one), renamed over it, so a crash leaves the old or the new file, never half of one.
fn write_atomically(file: &Path, data: &[u8]) -> Result<(), Report> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let err = |e: std::io::Error| miette::miette!("writing {}: {e}", file.display());
    let mode = std::fs::metadata(file)
        .map(|m| m.permissions().mode())
        .unwrap_or(0o600);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(data).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(err)?;
    tmp.persist(file).map_err(|e| err(e.error))?;
    Ok(())
}

fn bad_input_event(report: &Report) -> engine::events::Event {
    let plan = report
        .downcast_ref::<engine::error::PlanError>()
        .filter(|e| e.pos.line > 0)
        .map(|e| (e.pos.file.clone(), Some(e.pos.line), Some(e.pos.column)));
    let inventory = report
        .downcast_ref::<engine::inventory::InventoryError>()
        .map(|e| (e.file().to_string(), e.line(), e.column()));
    let (file, line, column) = match plan.or(inventory) {
        Some((f, l, c)) => (Some(f), l, c),
        None => (None, None, None),
    };
    engine::events::Event::Error {
        kind: "bad_input".into(),
        message: report.to_string(),
        file,
        line,
        column,
    }
}

/// The playbook language's reference, `playbook doc rhai`.
const RHAI_DOC: &str = include_str!("../docs/RHAI.md");

/// The first sentence of a module's documentation (its first paragraph may run over lines).
fn first_sentence(doc: &str) -> String {
    let paragraph: Vec<&str> = doc
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty() || l.starts_with('#'))
        .take_while(|l| !l.is_empty())
        .collect();
    let text = paragraph.join(" ");
    match text.find(". ") {
        Some(end) => text[..=end].to_string(),
        None => text,
    }
}

/// Reads the sudo password from the terminal without echo, or the first line of stdin when there
/// is no terminal (for scripts).
fn ask_become_pass() -> Result<engine::secret::Secret, Report> {
    let pw = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        rpassword::prompt_password("BECOME password: ").map_err(|e| miette::miette!("{e}"))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| miette::miette!("reading the become password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    Ok(engine::secret::Secret::new(pw))
}

/// Ansible's `--list-hosts` / `--list-tasks`: per phase, the hosts its tasks run on and the tasks
/// with their tags.
/// The first task (not a handler) named `name`, for --start-at-task.
fn start_task(plan: &Plan, name: &str) -> Result<engine::plan::TaskId, Report> {
    let tasks = || plan.tasks.iter().filter(|t| !t.is_handler);
    if let Some(t) = tasks().find(|t| t.name == name) {
        return Ok(t.id);
    }
    let hint = engine::error::closest(name, tasks().map(|t| t.name.as_str()))
        .map(|c| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default();
    Err(miette::miette!(
        "--start-at-task: no task is named '{name}' in {}{hint}",
        plan.file
    ))
}

fn list_plan(plan: &Plan, hosts: bool, tasks: bool, tags: bool) -> String {
    let mut out = format!("playbook: {}\n", plan.file);
    for phase in &plan.phases {
        out.push_str(&format!("\n  phase {}\n", phase.name));
        if hosts {
            let mut seen: Vec<&str> = Vec::new();
            for &id in &phase.tasks {
                for h in &plan.task(id).hosts {
                    if !seen.contains(&h.as_str()) {
                        seen.push(h);
                    }
                }
            }
            out.push_str(&format!("    hosts ({}):\n", seen.len()));
            for h in seen {
                out.push_str(&format!("      {h}\n"));
            }
        }
        if tasks {
            out.push_str("    tasks:\n");
            for &id in &phase.tasks {
                let t = plan.task(id);
                out.push_str(&format!(
                    "      {}\tTAGS: [{}]\n",
                    t.name,
                    t.tags.join(", ")
                ));
            }
        }
        if tags {
            let all: BTreeSet<&str> = phase
                .tasks
                .iter()
                .flat_map(|&id| plan.task(id).tags.iter().map(String::as_str))
                .collect();
            let all: Vec<&str> = all.into_iter().collect();
            out.push_str(&format!("    TASK TAGS: [{}]\n", all.join(", ")));
        }
    }
    out
}

fn describe_plan(plan: &Plan) -> String {
    let mut out = String::new();
    for phase in &plan.phases {
        out.push_str(&format!("phase {}\n", phase.name));
        if let Some(r) = phase.rollout.describe() {
            out.push_str(&format!("  rollout: {r}\n"));
        }
        for (i, &id) in phase.tasks.iter().chain(&phase.handlers).enumerate() {
            if i < phase.tasks.len() && i > 0 && phase.flushes.contains(&i) {
                out.push_str("  flush_handlers(): the handlers notified above run here\n");
            }
            let t = plan.task(id);
            let hosts = if t.is_handler {
                "hosts that notify it".to_string()
            } else {
                t.hosts.join(", ")
            };
            let place = if t.pos.file == plan.file {
                format!("line {}", t.pos.line)
            } else {
                format!("{}:{}", t.pos.file, t.pos.line)
            };
            out.push_str(&format!(
                "  [{id}] {}{}  ({} at {place})\n      on: {}\n",
                t.name,
                if t.is_handler { " (handler)" } else { "" },
                t.module_name(),
                if hosts.is_empty() {
                    "no host (--limit)".into()
                } else {
                    hosts
                }
            ));
            if !t.needs.is_empty() {
                let names: Vec<String> = t
                    .needs
                    .iter()
                    .map(|d| format!("[{d}] {}", plan.task(*d).name))
                    .collect();
                out.push_str(&format!("      after: {}\n", names.join(", ")));
            }
            match &t.when {
                Some(engine::plan::Condition::Expr(e)) => {
                    out.push_str(&format!("      when: {e}\n"));
                }
                Some(engine::plan::Condition::Closure(_)) => {
                    out.push_str("      when: a Rhai closure, decided per host when it runs\n");
                }
                None => {}
            }
            if !t.tags.is_empty() {
                out.push_str(&format!("      tags: {}\n", t.tags.join(", ")));
            }
            if !t.notify.is_empty() {
                out.push_str(&format!("      notifies: {}\n", t.notify.join(", ")));
            }
            if let Some(b) = t.block {
                let role = match b.role {
                    engine::plan::BlockRole::Body => "body",
                    engine::plan::BlockRole::Rescue => "rescue (runs where the body failed)",
                    engine::plan::BlockRole::Always => "always",
                };
                out.push_str(&format!("      block {}: {role}\n", b.id + 1));
            }
            if t.ignore_unreachable {
                out.push_str("      ignores an unreachable host\n");
            }
            if let Some(n) = t.throttle {
                out.push_str(&format!("      throttle: {n} host(s) at a time\n"));
            }
            let c = &t.control;
            if c.attempts() > 1 || c.until.is_some() {
                let until = match &c.until {
                    Some(engine::plan::Condition::Expr(e)) => format!(" until {e}"),
                    Some(engine::plan::Condition::Closure(_)) => {
                        " until a Rhai closure holds".into()
                    }
                    None => String::new(),
                };
                out.push_str(&format!(
                    "      retries: at most {} attempt(s){until}, {} s apart\n",
                    c.attempts(),
                    c.delay().as_secs()
                ));
            }
            if c.run_once {
                out.push_str("      run once, on the first host; every host gets the result\n");
            }
            if let Some(s) = c.timeout {
                out.push_str(&format!("      timeout: {s} s\n"));
            }
            if !c.environment.is_empty() {
                let names: Vec<&str> = c.environment.keys().map(String::as_str).collect();
                out.push_str(&format!("      environment: {}\n", names.join(", ")));
            }
            match (c.become_, &c.become_user) {
                (Some(false), _) => out.push_str("      become: off\n"),
                (Some(true), None) => out.push_str("      become: on\n"),
                (b, Some(u)) => out.push_str(&format!(
                    "      become user: {u}{}\n",
                    if b == Some(true) {
                        ""
                    } else {
                        " (when the host becomes)"
                    }
                )),
                (None, None) => {}
            }
            if let Some(d) = &c.delegate_to {
                out.push_str(&format!("      delegated to: {d}\n"));
            }
        }
    }
    out
}

fn describe_inventory(
    inv: &Inventory,
    only: Option<&str>,
    extra: &ExtraVars,
) -> Result<String, Report> {
    let mut out = String::new();
    if only.is_none() {
        out.push_str("groups:\n");
        for (g, hosts) in inv.groups() {
            out.push_str(&format!("  {g}: {}\n", hosts.join(", ")));
        }
    }
    let empty = serde_json::Map::new();
    let mut found = false;
    for h in inv.hosts() {
        if only.is_some_and(|o| o != h.name) {
            continue;
        }
        found = true;
        out.push_str(&format!(
            "host {} ({}:{}, {})\n",
            h.name, h.address, h.port, h.connection
        ));
        for (name, value, source) in inv.host_vars_with_sources(&h.name, &empty, &extra.vars) {
            let secret = inv.secret_names().contains(&name) || extra.secret.contains(&name);
            let value = if secret {
                "[secret]".to_string()
            } else {
                value.to_string()
            };
            out.push_str(&format!("  {name} = {value}    # from {source}\n"));
        }
    }
    if let (Some(o), false) = (only, found) {
        return Err(miette::miette!("no host named '{o}' in the inventory"));
    }
    Ok(out)
}
