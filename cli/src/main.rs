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
use reflow_sandbox_core::{GuestImages, Language};

#[derive(Parser)]
#[command(
    name = "reflow-sandbox",
    version,
    about = "Runs Reflow graphs whose Python and JavaScript actors run in KVM microVMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

#[derive(Subcommand)]
enum CacheAction {
    /// List every entry: kind, key, size on disk, when it was last used.
    List,
    /// Remove every entry not used for --unused-for.
    Prune {
        /// How long an entry must have gone unused: hours, days or weeks
        /// (36h, 7d, 2w), at least a day (access times are only kept to
        /// about a day).
        #[arg(long, default_value = "7d", value_name = "DURATION")]
        unused_for: String,
        /// Say what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The graph file (Reflow's graph export JSON) or a workspace directory.
    graph: PathBuf,
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
    /// Guest kernel (built by kernels/build.sh).
    #[arg(long, env = "REFLOW_KERNEL")]
    kernel: PathBuf,
    /// Initramfs with the guest agent (built by reflow-guest-image).
    #[arg(long, env = "REFLOW_INITRAMFS")]
    initramfs: PathBuf,
    /// Python root image (built by guest-image/build-python.sh; default:
    /// reflow.yaml's workspace.sandbox.python.image when it is a file).
    #[arg(long, env = "REFLOW_PYTHON_IMAGE")]
    python_image: Option<PathBuf>,
    /// Node root image, for JavaScript actors (built by
    /// guest-image/build-node.sh; default: reflow.yaml's
    /// workspace.sandbox.javascript.image when it is a file).
    #[arg(long, env = "REFLOW_NODE_IMAGE")]
    node_image: Option<PathBuf>,
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
    /// Give up when the graph is still busy after this many seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// No progress spinner.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,reflow_network=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Each sandbox VM runs in a monitor process of its own: this binary,
    // started again with `__monitor` (so it always speaks its own
    // protocol version and needs no second binary installed).
    use reflow_vmm::monitor::{child, MonitorProgram, MONITOR_ARG};
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(MONITOR_ARG)) {
        return ExitCode::from(child::serve_inherited().clamp(0, 255) as u8);
    }
    if let Ok(exe) = std::env::current_exe() {
        MonitorProgram::set(MonitorProgram::at(exe));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Discover { dir, json } => discover(&dir, json),
        Command::Cache { action } => cache(action),
        Command::Run(args) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run_graph(*args)),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reflow-sandbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn cache(action: CacheAction) -> anyhow::Result<ExitCode> {
    use reflow_sandbox::cache;
    let root = reflow_vmm::cache::cache_root();
    let now = std::time::SystemTime::now();
    let all = cache::entries(&root)?;
    println!("cache: {}", root.display());
    match action {
        CacheAction::List => println!("{}", cache::table(&all, now)),
        CacheAction::Prune {
            unused_for,
            dry_run,
        } => {
            let unused_for = cache::parse_unused_for(&unused_for)?;
            let stale = cache::stale(&all, unused_for, now);
            let verb = if dry_run { "would remove" } else { "removed" };
            let (mut freed, mut gone) = (0, 0);
            for entry in &stale {
                if !dry_run && !cache::remove(entry)? {
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
        }
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

async fn run_graph(args: RunArgs) -> anyhow::Result<ExitCode> {
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
    let images = GuestImages {
        kernel: args.kernel,
        initramfs: args.initramfs,
        python,
        node,
    };
    images.check()?;
    let url = args.state.as_deref().or(config.redis_url());
    let store = setup::state_store(url).await?;
    let mut bridge_config = BridgeConfig::default();
    bridge_config.apply_pool(&config);
    if let Some(n) = args.preload {
        bridge_config.pool.preload_count = n;
    }
    if let Some(n) = args.max_vms {
        bridge_config.pool.max_size = n;
    }
    if let Some(s) = args.idle_timeout {
        bridge_config.idle_timeout = Duration::from_secs(s);
    }
    bridge_config.apply_limits(&config);
    if let Some(s) = args.exec_timeout {
        bridge_config.limits.timeout = Duration::from_secs(s);
    }
    for (component, script) in &mut graph.scripts {
        config.apply_actor(component, script);
    }
    if let Some(ns) = args.namespace {
        bridge_config.namespace = ns;
    }
    let languages = setup::shapes(&graph, |language| {
        let mut sizes = Sizes::default_for(language).with(&config.runtime_shape(language));
        if let Some(mib) = config.region_mib() {
            sizes.shm_mib = mib;
        }
        sizes
    });
    if languages.iter().any(|(_, s)| s.shape.cpu.is_some()) {
        if let Some(why) = reflow_sandbox_core::sandbox::cpu_limit_unavailable() {
            eprintln!(
                "reflow-sandbox: note: the cpu keys of workspace.sandbox are not enforced on this host ({why}); \
                 VMs run without a CPU time limit"
            );
        }
    }
    let cache = reflow_vmm::cache_root();
    let bridge = setup::bridge_for(
        &images,
        &languages,
        &cache,
        store,
        bridge_config,
        !args.quiet,
    )?;
    let options = RunOptions {
        timeout: args.timeout.map(Duration::from_secs),
        ..RunOptions::default()
    };
    let outcome = run(&graph, &bridge, &options, |o| {
        println!("{}.{}: {}", o.node, o.port, show::message(&o.message));
    })
    .await;
    bridge.shutdown();
    let outcome = outcome?;
    if outcome.failures > 0 {
        eprintln!(
            "reflow-sandbox: {} message(s) failed (see the errors above)",
            outcome.failures
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
