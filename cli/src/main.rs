//! The `reflow-sandbox` command (see the README).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use reflow_host_bridge::BridgeConfig;
use reflow_sandbox::setup::Sizes;
use reflow_sandbox::workspace::{self, Workspace};
use reflow_sandbox::{graph::GraphFile, run, setup, show, RunOptions};
use reflow_sandbox_core::{GuestImages, IsolationKind, Language};
use reflow_workspace::config::Config;

#[derive(Parser)]
#[command(
    name = "reflow-sandbox",
    version,
    about = "Runs Reflow graphs whose Python and JavaScript actors run in KVM microVMs"
)]
struct Cli {
    /// How log lines on stderr are written: `text`, or `json` (one JSON
    /// object per line, for log collectors). Which lines: RUST_LOG (default
    /// warnings; `reflow_sandbox::vm=info` adds VM lifecycle events,
    /// `reflow_sandbox::message=debug` one event per message).
    #[arg(
        long,
        global = true,
        env = LOG_FORMAT_ENV,
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the log format travels to the monitor processes (started again
/// from this binary, with this environment).
const LOG_FORMAT_ENV: &str = "REFLOW_LOG_FORMAT";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Log lines on stderr, filtered by RUST_LOG (warnings by default).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,reflow_sandbox::guest=info,reflow_network=error".into());
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a Reflow graph (JSON) until it has nothing left to do, printing
    /// the outputs of its sink nodes. Given a directory, run its workspace:
    /// reflow.yaml (if any), the script actors discovered in it, and its
    /// graph (reflow.yaml's `graph`, else graph.json).
    Run(Box<RunArgs>),
    /// List the script actors of a workspace directory (reflow.yaml's
    /// patterns, else the defaults), read without running them; problems
    /// go to stderr, each as file:line: message.
    Discover {
        dir: PathBuf,
        /// Print JSON (components and problems) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The host cache of guest kernels, initramfs, language images and
    /// golden snapshots ($REFLOW_CACHE_DIR, else ~/.cache/reflow-sandbox):
    /// list it, or remove what has not been used for a while (entries are
    /// keyed by their inputs' hash, so those of older builds are never
    /// used again).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// The root images VMs boot and their golden snapshots: list them,
    /// build a workspace's (its packages and goldens, ahead of `run`), or
    /// remove those not used for a while.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// Run a sandbox host: clients deploy scripts and run them here over
    /// the network (REST and JSON-RPC over WebSocket: the protocol of
    /// Reflow's DynASBClient and WebSocketScriptActor; see docs/serve.md).
    /// Needs a token file unless --insecure-no-auth on loopback.
    Serve(Box<ServeArgs>),
    /// List sandbox hosts with their health and load: those --hosts names,
    /// or those announced in a registry (--hosts redis://...). Exit status
    /// 2 when one is down or none is found.
    Hosts(HostsArgs),
}

#[derive(clap::Args)]
struct HostsArgs {
    /// The hosts: comma-separated http://HOST:PORT, or one
    /// redis://HOST:PORT/DB registry.
    #[arg(
        long,
        env = "REFLOW_SANDBOX_HOSTS",
        value_delimiter = ',',
        value_name = "URL",
        required = true
    )]
    hosts: Vec<String>,
    /// Also trust the certificates in this PEM file for https:// hosts.
    #[arg(long, env = "REFLOW_HOST_CA", value_name = "FILE")]
    host_ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ImageAction {
    /// List the cached root images (base and derived: what each derived
    /// image adds) and golden snapshots, with sizes and last use.
    Ls,
    /// Build what `run` on this workspace would build on first use: each
    /// language's image with the workspace's packages and its golden
    /// snapshot.
    Build(Box<BuildArgs>),
    /// Remove the images and golden snapshots not used for --unused-for.
    Prune(PruneArgs),
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The workspace directory (reflow.yaml, requirements.txt, package.json).
    dir: PathBuf,
    #[command(flatten)]
    images: ImageArgs,
    /// No progress spinner.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct PruneArgs {
    /// How long an entry must have gone unused: hours, days or weeks
    /// (36h, 7d, 2w), at least a day (access times are only kept to
    /// about a day).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    unused_for: String,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand)]
enum CacheAction {
    /// List every entry: kind, key, size on disk, when it was last used.
    List,
    /// Remove every entry not used for --unused-for.
    Prune(PruneArgs),
}

/// The images VMs boot: the kernel and initramfs every VM shares, and each
/// language's base root image.
#[derive(clap::Args, Clone)]
struct ImageArgs {
    /// Guest kernel (built by kernels/build.sh).
    #[arg(long, env = "REFLOW_KERNEL")]
    kernel: Option<PathBuf>,
    /// Initramfs with the guest agent (built by reflow-guest-image).
    #[arg(long, env = "REFLOW_INITRAMFS")]
    initramfs: Option<PathBuf>,
    /// Python root image (built by guest-image/build-python.sh; default:
    /// reflow.yaml's workspace.sandbox.python.image when it is a file).
    #[arg(long, env = "REFLOW_PYTHON_IMAGE")]
    python_image: Option<PathBuf>,
    /// Node root image, for JavaScript actors (built by
    /// guest-image/build-node.sh; default: reflow.yaml's
    /// workspace.sandbox.javascript.image when it is a file).
    #[arg(long, env = "REFLOW_NODE_IMAGE")]
    node_image: Option<PathBuf>,
}

/// Where state lives, the images VMs boot, and the pools' and messages'
/// limits (`run` and `serve`).
#[derive(clap::Args)]
struct SandboxArgs {
    /// Keep actor state in Redis at this URL instead of in this process
    /// (default: reflow.yaml's workspace.redis.url, else embedded).
    // hide_env_values: --help would otherwise print the URL, password and all.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "redis://HOST:PORT/DB"
    )]
    state: Option<String>,
    /// First part of every state key, {namespace}:{node}:{key} (default:
    /// reflow.yaml's workspace.redis.namespace, else "reflow").
    #[arg(long)]
    namespace: Option<String>,
    #[command(flatten)]
    images: ImageArgs,
    /// Seconds one message may run before its VM is killed [default:
    /// reflow.yaml's workspace.sandbox.limits.timeout, else 30]; a
    /// language's, an actor's or a graph node's own timeout goes over it.
    #[arg(long)]
    exec_timeout: Option<u64>,
    /// Ready VMs kept per runtime [default: reflow.yaml, else 5].
    #[arg(long)]
    preload: Option<usize>,
    /// Most VMs alive per runtime [default: reflow.yaml, else 20].
    #[arg(long)]
    max_vms: Option<usize>,
    /// Seconds a node may stay idle before its VM is given back [default:
    /// reflow.yaml, else 300].
    #[arg(long)]
    idle_timeout: Option<u64>,
}

impl SandboxArgs {
    /// The bridge's settings: reflow.yaml's (`config`), then these flags.
    fn bridge_config(&mut self, config: &Config) -> BridgeConfig {
        let mut bridge_config = BridgeConfig::default();
        bridge_config.apply_pool(config);
        if let Some(n) = self.preload {
            bridge_config.pool.preload_count = n;
        }
        if let Some(n) = self.max_vms {
            bridge_config.pool.max_size = n;
        }
        if let Some(s) = self.idle_timeout {
            bridge_config.idle_timeout = Duration::from_secs(s);
        }
        bridge_config.apply_limits(config);
        if let Some(s) = self.exec_timeout {
            bridge_config.limits.timeout = Duration::from_secs(s);
        }
        if let Some(ns) = self.namespace.take() {
            bridge_config.namespace = ns;
        }
        bridge_config
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The address to listen on, as 0.0.0.0:8080 (port 0 picks a free
    /// one; the address is printed on stderr once the host is ready).
    #[arg(long, value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// The clients' tokens, one client per line: `NAME TOKEN` or `TOKEN`
    /// (at least 32 characters; `#` starts a comment). The file must not be
    /// readable by group or others.
    #[arg(long, env = "REFLOW_SERVE_TOKENS", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve without authentication: anything that can reach the address
    /// can run code on this host. Refused unless the address is loopback.
    #[arg(long, conflicts_with = "token_file")]
    insecure_no_auth: bool,
    /// Serve HTTPS and wss:// with this certificate chain (PEM).
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Announce this host in the fleet's registry in this Redis (a key with
    /// its address, capacity and load, refreshed every 2 s, gone 6 s after
    /// the host stops): clients given `--hosts redis://...` find it there.
    #[arg(long, value_name = "redis://HOST:PORT/DB")]
    announce: Option<String>,
    /// The URL clients reach this host at, as announced (default
    /// http://ADDR of --listen; needed when that is 0.0.0.0 or [::]).
    #[arg(long, requires = "announce", value_name = "URL")]
    advertise: Option<String>,
    /// Functions one client may have deployed at once.
    #[arg(long, default_value_t = 64)]
    max_functions: usize,
    /// WebSocket sessions one client may have open at once (each may hold
    /// a VM).
    #[arg(long, default_value_t = 16)]
    max_sessions: usize,
    /// The longest `timeout_seconds` a deploy may ask for.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    max_timeout: u64,
    /// Where deployed functions run: `vm` (a microVM each) or `process` (a
    /// jailed host process each, for trusted code or a host without
    /// /dev/kvm: a script reaches the host kernel's system calls; see the
    /// README's "VM or process").
    #[arg(long, default_value = "vm", value_name = "vm|process", value_parser = isolation_kind)]
    isolation: IsolationKind,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// No progress spinner while the runtimes are prepared.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The graph file (Reflow's graph export JSON) or a workspace directory.
    graph: PathBuf,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Give up when the graph is still busy after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// No progress spinner.
    #[arg(long)]
    quiet: bool,
    /// Serve the sandbox's metrics (Prometheus text format) at
    /// http://ADDR/metrics while the graph runs, ADDR as in
    /// 127.0.0.1:9464 (port 0 picks a free one; the address is printed on
    /// stderr).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Watch the workspace's scripts while the graph runs: a changed one is
    /// read again and its nodes switch to it between messages (messages
    /// they took finish on the old version; a version that does not load
    /// is refused and the old one keeps running). Workspace directories
    /// only.
    #[arg(long)]
    watch: bool,
    /// Run the script nodes on these sandbox hosts (`reflow-sandbox
    /// serve`), comma-separated http://HOST:PORT, instead of in this
    /// machine's VMs (which then needs neither /dev/kvm nor images). Each
    /// node goes to the reachable host with the fewest nodes; a node whose
    /// host is lost answers its message in flight with an error naming the
    /// host and moves to another.
    #[arg(
        long,
        env = "REFLOW_SANDBOX_HOSTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    hosts: Vec<String>,
    /// The file holding this client's token for --hosts (its first line
    /// that is not a comment; mode 0600).
    #[arg(long, env = "REFLOW_HOST_TOKEN_FILE", value_name = "FILE")]
    host_token_file: Option<PathBuf>,
    /// With --hosts: also trust the certificates in this PEM file for
    /// https:// hosts (a fleet's own CA, or a host's self-signed
    /// certificate); the public roots are always trusted.
    #[arg(long, env = "REFLOW_HOST_CA", value_name = "FILE")]
    host_ca: Option<PathBuf>,
    /// Send Reflow's trace events to this tracing server (ws://HOST:PORT,
    /// Reflow's `reflow_tracing_protocol`): the network's events about
    /// native actors, and the sandbox's (message failures, VMs lent and
    /// discarded, printed lines). Off by default.
    #[arg(long, value_name = "URL")]
    trace_server: Option<String>,
}

fn main() -> ExitCode {
    // Each sandbox VM runs in a monitor process of its own: this binary,
    // started again with `__monitor` (so it always speaks its own
    // protocol version and needs no second binary installed).
    use reflow_vmm::monitor::{child, MonitorProgram, MONITOR_ARG};
    use reflow_vmm::worker_jail::{self, WORKER_ARG};
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(MONITOR_ARG)) {
        let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|f| f == "json");
        init_logs(if json {
            LogFormat::Json
        } else {
            LogFormat::Text
        });
        return ExitCode::from(child::serve_inherited().clamp(0, 255) as u8);
    }
    // A script worker run as a host process (`isolation: process`) is
    // jailed by this binary too, started again with `__worker`.
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(WORKER_ARG)) {
        let args: Vec<_> = std::env::args_os().skip(2).collect();
        return ExitCode::from(worker_jail::serve(&args).clamp(0, 255) as u8);
    }
    if let Ok(exe) = std::env::current_exe() {
        MonitorProgram::set(MonitorProgram::at(exe));
    }
    let cli = Cli::parse();
    init_logs(cli.log_format);
    if cli.log_format == LogFormat::Json {
        // Still one thread: nothing reads the environment concurrently.
        std::env::set_var(LOG_FORMAT_ENV, "json");
    }
    let result = match cli.command {
        Command::Discover { dir, json } => discover(&dir, json),
        Command::Cache { action } => cache(action),
        Command::Image { action } => image(action),
        Command::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run_graph(*args)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
        Command::Hosts(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(hosts(args)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
        Command::Serve(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(serve(*args)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "reflow-sandbox: {}",
                reflow_sandbox::error_text::describe(&e)
            );
            ExitCode::FAILURE
        }
    }
}

fn cache(action: CacheAction) -> anyhow::Result<ExitCode> {
    use reflow_sandbox::cache;
    let root = reflow_vmm::cache::cache_root();
    let all = cache::entries(&root)?;
    println!("cache: {}", root.display());
    match action {
        CacheAction::List => println!("{}", cache::table(&all, std::time::SystemTime::now())),
        CacheAction::Prune(args) => prune(all, &args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn prune(all: Vec<reflow_sandbox::cache::Entry>, args: &PruneArgs) -> anyhow::Result<()> {
    use reflow_sandbox::cache;
    let now = std::time::SystemTime::now();
    let unused_for = cache::parse_unused_for(&args.unused_for)?;
    let stale = cache::stale(&all, unused_for, now);
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let (mut freed, mut gone) = (0, 0);
    for entry in &stale {
        if !args.dry_run && !cache::remove(entry)? {
            println!(
                "kept {} (in use by a running process)",
                entry.path.display()
            );
            continue;
        }
        freed += entry.bytes;
        gone += 1;
        println!(
            "{verb} {} ({})",
            entry.path.display(),
            cache::human(entry.bytes)
        );
    }
    let kept: u64 = all.iter().map(|e| e.bytes).sum::<u64>() - freed;
    println!(
        "{verb} {} of {} entries, {}; {} kept",
        gone,
        all.len(),
        cache::human(freed),
        cache::human(kept)
    );
    Ok(())
}

fn image(action: ImageAction) -> anyhow::Result<ExitCode> {
    use reflow_sandbox::cache::{self, Kind};
    let root = reflow_vmm::cache::cache_root();
    let all: Vec<_> = cache::entries(&root)?
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::Image | Kind::Snapshot))
        .collect();
    match action {
        ImageAction::Ls => {
            println!("cache: {}", root.display());
            println!("{}", cache::table(&all, std::time::SystemTime::now()));
            for e in &all {
                if let Some(what) = reflow_sandbox::packages::describe(&e.path) {
                    println!("{}: {what}", e.key());
                }
            }
        }
        ImageAction::Prune(args) => {
            println!("cache: {}", root.display());
            prune(all, &args)?;
        }
        ImageAction::Build(args) => return build_images(*args),
    }
    Ok(ExitCode::SUCCESS)
}

/// The images of `args` (a language's image from reflow.yaml where the
/// command line does not give one), checked.
fn guest_images(args: ImageArgs, config: &Config) -> anyhow::Result<GuestImages> {
    let python = args
        .python_image
        .or_else(|| config.image(Language::Python).map(Into::into))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no Python image: set REFLOW_PYTHON_IMAGE or --python-image (./dev.sh setup builds one)"
            )
        })?;
    let node = args
        .node_image
        .or_else(|| config.image(Language::JavaScript).map(Into::into));
    // Without a kernel or initramfs only process workers run: a VM
    // runtime's golden snapshot says which is missing.
    let images = GuestImages {
        kernel: args.kernel,
        initramfs: args.initramfs,
        python,
        node,
    };
    images.check()?;
    Ok(images)
}

/// `--isolation`'s value: `vm` or `process`, as reflow.yaml's
/// `isolation` key.
fn isolation_kind(name: &str) -> Result<IsolationKind, String> {
    IsolationKind::named(name)
        .ok_or_else(|| format!("{name:?} is not an isolation (vm or process)"))
}

/// The VM sizes of `language`'s runtime as `config` sets them.
fn sizes(config: &Config, language: Language) -> Sizes {
    let mut sizes = Sizes::default_for(language).with(&config.runtime_shape(language));
    if let Some(mib) = config.region_mib() {
        sizes.shm_mib = mib;
    }
    sizes
}

fn build_images(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let ws = Workspace::load(&args.dir)?;
    for note in ws.config.notes() {
        eprintln!("reflow-sandbox: note: {note}");
    }
    let mut languages: Vec<Language> = ws
        .discovery
        .components
        .iter()
        .map(|c| c.metadata.runtime)
        .collect();
    for l in [Language::Python, Language::JavaScript] {
        let request = reflow_sandbox::packages::Request::of(&ws.root, &ws.config, l)?;
        if !request.specs.is_empty() {
            languages.push(l);
        }
    }
    languages.sort_by_key(|l| *l != Language::Python);
    languages.dedup();
    let mut images = guest_images(args.images, &ws.config)?;
    let cache = reflow_vmm::cache_root();
    let progress = setup::Progress::new(!args.quiet);
    reflow_sandbox::packages::prepare(
        &mut images,
        Some((&ws.root, &ws.config)),
        &languages,
        &[],
        &cache,
        &|m| progress.say(m),
    )?;
    for language in languages {
        let sizes = sizes(&ws.config, language);
        let mut runtime = reflow_sandbox_core::Runtime::for_language(
            &images,
            language,
            sizes.shape.mem_mib,
            sizes.shm_mib,
        )?;
        runtime.config.vcpus = sizes.shape.vcpus;
        runtime.cpu = sizes.shape.cpu;
        progress.report(&format!(
            "golden snapshot of the {language} runtime ({})",
            sizes.shape
        ));
        let spec = runtime.golden(&cache, &|m| progress.report(m))?;
        progress.say(&format!(
            "{language}: image {}, golden snapshot {}",
            runtime.config.disks[0].display(),
            spec.golden.display()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn discover(dir: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let ws = Workspace::load(dir)?;
    for note in ws.config.notes() {
        eprintln!("reflow-sandbox: note: {note}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&workspace::json(&ws.discovery))?
        );
    } else {
        println!("{}", workspace::table(&ws.discovery));
    }
    for p in &ws.discovery.problems {
        eprintln!("{p}");
    }
    Ok(if ws.discovery.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "reflow-sandbox: {} script(s) skipped (see above)",
            ws.discovery.problems.len()
        );
        ExitCode::from(2)
    })
}

async fn run_graph(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.watch && !args.graph.is_dir() {
        anyhow::bail!(
            "--watch needs a workspace directory (its scripts are what is watched), not a graph file"
        );
    }
    let (mut graph, config) = if args.graph.is_dir() {
        let ws = Workspace::load(&args.graph)?;
        for note in ws.config.notes() {
            eprintln!("reflow-sandbox: note: {note}");
        }
        for p in &ws.discovery.problems {
            eprintln!("reflow-sandbox: skipped {p}");
        }
        let graph = GraphFile::load_with(&ws.graph_path(), &ws.scripts()?)?;
        (graph, ws.config)
    } else {
        (
            GraphFile::load_with(&args.graph, &HashMap::new())?,
            Default::default(),
        )
    };
    if args.hosts.is_empty() && !config.workspace.sandbox.hosts.is_empty() {
        args.hosts = config.workspace.sandbox.hosts.clone();
        let in_workspace = |f: &Option<PathBuf>| f.as_ref().map(|f| args.graph.join(f));
        if args.host_token_file.is_none() {
            args.host_token_file = in_workspace(&config.workspace.sandbox.host_token_file);
        }
        if args.host_ca.is_none() {
            args.host_ca = in_workspace(&config.workspace.sandbox.host_ca_file);
        }
    }
    if !args.hosts.is_empty() {
        return run_remote(&args, &graph, &config).await;
    }
    let mut images = guest_images(args.sandbox.images.clone(), &config)?;
    let cache = reflow_vmm::cache_root();
    {
        let progress = setup::Progress::new(!args.quiet);
        reflow_sandbox::packages::prepare(
            &mut images,
            args.graph
                .is_dir()
                .then_some((args.graph.as_path(), &config)),
            &graph.languages(),
            &graph.dependencies,
            &cache,
            &|m| progress.say(m),
        )?;
    }
    let url = args.sandbox.state.as_deref().or(config.redis_url());
    let store = setup::state_store(url).await?;
    let bridge_config = args.sandbox.bridge_config(&config);
    for (component, script) in &mut graph.scripts {
        config.apply_actor(component, script);
    }
    let languages = setup::shapes(&graph, |language| sizes(&config, language));
    setup::refuse_vms_without_kvm(
        &graph,
        |language| sizes(&config, language),
        reflow_vmm::kvm_unusable().map(|e| e.to_string()),
    )?;
    if languages.iter().any(|(_, s)| s.shape.cpu.is_some()) {
        if let Some(why) = reflow_sandbox_core::sandbox::cpu_limit_unavailable() {
            eprintln!(
                "reflow-sandbox: note: the cpu keys of workspace.sandbox are not enforced on this host ({why}); \
                 VMs run without a CPU time limit"
            );
        }
    }
    let bridge = setup::bridge_for(
        &images,
        &languages,
        &cache,
        store,
        bridge_config,
        !args.quiet,
    )?;
    let metrics = match args.metrics {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics {addr}: cannot listen: {e}"))?;
            let at = listener.local_addr()?;
            eprintln!("reflow-sandbox: metrics at http://{at}/metrics");
            let bridge = bridge.clone();
            let render: reflow_sandbox::metrics_server::Render =
                std::sync::Arc::new(move || bridge.metrics().map_err(|e| e.to_string()));
            Some(tokio::spawn(reflow_sandbox::metrics_server::serve(
                listener, render,
            )))
        }
        None => None,
    };
    if let Some(url) = &args.trace_server {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            anyhow::bail!("--trace-server: {url:?} is not a ws:// or wss:// URL");
        }
    }
    let mut options = RunOptions {
        timeout: args.timeout.map(Duration::from_secs),
        trace_server: args.trace_server.clone(),
        ..RunOptions::default()
    };
    let _watch = if args.watch {
        let actors = config.clone();
        let (updates, watch) = reflow_sandbox::watch::start(
            args.graph.clone(),
            graph.scripts.clone(),
            Box::new(move |component, script| actors.apply_actor(component, script)),
        )
        .map_err(|e| anyhow::anyhow!("--watch: cannot start the watch: {e}"))?;
        options.updates = Some(updates);
        Some(watch)
    } else {
        None
    };
    let outcome = run(&graph, &bridge, &options, print_output).await;
    if let Some(server) = metrics {
        server.abort();
    }
    bridge.shutdown();
    Ok(exit_status(&outcome?))
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<ExitCode> {
    use reflow_host_bridge::remote::registry;
    use reflow_sandbox::serve::{self, ClientLimits, Tokens};
    let tokens = match (&args.token_file, args.insecure_no_auth) {
        (Some(path), _) => Some(Tokens::load(path)?),
        (None, true) if args.listen.ip().is_loopback() => {
            eprintln!(
                "reflow-sandbox: WARNING: serving WITHOUT authentication (--insecure-no-auth): \
                 any local process can run code on this host"
            );
            None
        }
        (None, true) => anyhow::bail!(
            "--insecure-no-auth is only allowed on a loopback address, not {}: give --token-file",
            args.listen
        ),
        (None, false) => anyhow::bail!(
            "a sandbox host needs its clients' tokens: --token-file FILE (one `NAME TOKEN` per line, \
             mode 0600; `openssl rand -hex 32` makes a token)"
        ),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {}: cannot listen: {e}", args.listen))?;
    let config = Config::default();
    let images = guest_images(args.sandbox.images.clone(), &config)?;
    let mut languages = vec![(Language::Python, sizes(&config, Language::Python))];
    if images.node.is_some() {
        languages.push((Language::JavaScript, sizes(&config, Language::JavaScript)));
    }
    for (_, sizes) in &mut languages {
        sizes.shape.isolation = args.isolation;
    }
    match (args.isolation, reflow_vmm::kvm_unusable()) {
        (IsolationKind::Vm, Some(why)) => anyhow::bail!(
            "this host cannot run VMs ({why}); `serve --isolation process` runs each function in \
             a jailed host process instead, which a hostile script can reach the host kernel \
             from: for trusted code only (see the README's \"VM or process\")"
        ),
        (IsolationKind::Process, _) => eprintln!(
            "reflow-sandbox: WARNING: --isolation process: functions run as jailed host \
             processes, not VMs; a script reaches this host's kernel (trusted code only)"
        ),
        (IsolationKind::Vm, None) => {}
    }
    let store = setup::state_store(args.sandbox.state.as_deref()).await?;
    let bridge_config = args.sandbox.bridge_config(&config);
    let cache = reflow_vmm::cache_root();
    let bridge = setup::bridge_for(
        &images,
        &languages,
        &cache,
        store,
        bridge_config,
        !args.quiet,
    )?;
    let limits = ClientLimits {
        functions: args.max_functions,
        sessions: args.max_sessions,
        max_timeout: Duration::from_secs(args.max_timeout.max(1)),
    };
    let clients = tokens.as_ref().map_or(0, Tokens::len);
    let server = serve::Server::new(bridge, tokens, limits);
    let at = listener.local_addr()?;
    let (http, ws) = if tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    eprintln!(
        "reflow-sandbox: serving on {http}://{at} ({clients} client token(s); API at /api/v1/functions, \
         sessions at {ws}://{at}/ws/FUNCTION_ID)"
    );
    let announced = match &args.announce {
        Some(redis) => {
            let url = match &args.advertise {
                Some(u) => u.clone(),
                None if !at.ip().is_unspecified() => format!("{http}://{at}"),
                None => anyhow::bail!(
                    "--announce: this host listens on {at}: say where clients reach it with --advertise http://HOST:PORT"
                ),
            };
            let s = server.clone();
            let u = url.clone();
            let task = registry::announce(redis, move || s.announcement(&u)).await?;
            eprintln!("reflow-sandbox: announced as {url} in the registry");
            Some((task, redis.clone(), url))
        }
        None => None,
    };
    let task = tokio::spawn(serve::serve(listener, server.clone(), tls));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("reflow-sandbox: stopping");
    task.abort();
    if let Some((heartbeat, redis, url)) = announced {
        heartbeat.abort();
        if let Err(e) = registry::withdraw(&redis, &url).await {
            eprintln!("reflow-sandbox: {e}");
        }
    }
    server.bridge().shutdown();
    Ok(ExitCode::SUCCESS)
}

/// `run --hosts`: the graph's script nodes on sandbox hosts.
async fn run_remote(
    args: &RunArgs,
    graph: &GraphFile,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    use reflow_host_bridge::remote::RemoteHosts;
    if args.watch || args.metrics.is_some() {
        anyhow::bail!("--watch and --metrics are for local sandboxes: not with --hosts");
    }
    let path = args.host_token_file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("--hosts needs this client's token: --host-token-file FILE")
    })?;
    let token = reflow_sandbox::serve::auth::client_token(path)?;
    let hosts = match args.hosts.as_slice() {
        [one] if one.starts_with("redis://") || one.starts_with("rediss://") => {
            RemoteHosts::from_registry(one, token, args.host_ca.as_deref()).await?
        }
        urls => RemoteHosts::new(urls, token, args.host_ca.as_deref())?,
    };
    let namespace = match &args.sandbox.namespace {
        Some(ns) => ns.clone(),
        None => {
            let mut defaults = BridgeConfig::default();
            defaults.apply_pool(config);
            defaults.namespace
        }
    };
    let options = RunOptions {
        timeout: args.timeout.map(Duration::from_secs),
        trace_server: args.trace_server.clone(),
        ..RunOptions::default()
    };
    let sandboxes = reflow_sandbox::run::Sandboxes::Remote {
        hosts: &hosts,
        namespace: &namespace,
    };
    let outcome = reflow_sandbox::run::run_on(graph, sandboxes, &options, print_output).await?;
    Ok(exit_status(&outcome))
}

/// A sink's output as `run` prints it.
fn print_output(o: &reflow_sandbox::Output) {
    println!("{}.{}: {}", o.node, o.port, show::message(&o.message));
}

/// `run`'s exit status: 2 when some message failed (said on stderr).
fn exit_status(outcome: &reflow_sandbox::Outcome) -> ExitCode {
    if outcome.failures > 0 {
        eprintln!(
            "reflow-sandbox: {} message(s) failed (see the errors above)",
            outcome.failures
        );
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

async fn hosts(args: HostsArgs) -> anyhow::Result<ExitCode> {
    use reflow_sandbox::hosts;
    let rows = hosts::survey(&args.hosts, args.host_ca.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&hosts::json(&rows))?);
    } else {
        print!("{}", hosts::table(&rows));
    }
    if rows.is_empty() {
        eprintln!("reflow-sandbox: no sandbox host found");
    }
    Ok(
        if rows.is_empty() || rows.iter().any(|r| r.health.is_err()) {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        },
    )
}
