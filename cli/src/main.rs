//! The `reflow-sandbox` command (see the README).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use reflow_host_bridge::{BridgeConfig, GuestImages, PoolConfig};
use reflow_sandbox::{graph::GraphFile, run, setup, show, RunOptions};

#[derive(Parser)]
#[command(
    name = "reflow-sandbox",
    version,
    about = "Runs Reflow graphs whose Python actors run in KVM microVMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a Reflow graph (JSON) until it has nothing left to do, printing
    /// the outputs of its sink nodes.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The graph file (Reflow's graph export JSON).
    graph: PathBuf,
    /// Keep actor state in Redis at this URL instead of in this process.
    #[arg(long, env = "REDIS_URL", value_name = "redis://HOST:PORT/DB")]
    state: Option<String>,
    /// First part of every state key ({namespace}:{node}:{key}).
    #[arg(long, default_value = "reflow")]
    namespace: String,
    /// Guest kernel (built by kernels/build.sh).
    #[arg(long, env = "REFLOW_KERNEL")]
    kernel: PathBuf,
    /// Initramfs with the guest agent (built by reflow-guest-image).
    #[arg(long, env = "REFLOW_INITRAMFS")]
    initramfs: PathBuf,
    /// Python root image (built by guest-image/build-python.sh).
    #[arg(long, env = "REFLOW_PYTHON_IMAGE")]
    python_image: PathBuf,
    /// Seconds one message may run before its VM is killed.
    #[arg(long, default_value_t = 30)]
    exec_timeout: u64,
    /// Ready VMs kept per runtime.
    #[arg(long, default_value_t = 5)]
    preload: usize,
    /// Most VMs alive per runtime.
    #[arg(long, default_value_t = 20)]
    max_vms: usize,
    /// Seconds a node may stay idle before its VM is given back.
    #[arg(long, default_value_t = 300)]
    idle_timeout: u64,
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reflow-sandbox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Run(args) = cli.command;
    match runtime.block_on(run_graph(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reflow-sandbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_graph(args: RunArgs) -> anyhow::Result<ExitCode> {
    let graph = GraphFile::load(&args.graph)?;
    let images = GuestImages {
        kernel: args.kernel,
        initramfs: args.initramfs,
        python: args.python_image,
    };
    images.check()?;
    let store = setup::state_store(args.state.as_deref()).await?;
    let config = BridgeConfig {
        pool: PoolConfig {
            preload_count: args.preload,
            max_size: args.max_vms,
            ..PoolConfig::default()
        },
        idle_timeout: Duration::from_secs(args.idle_timeout),
        exec_timeout: Duration::from_secs(args.exec_timeout),
        namespace: args.namespace,
        ..BridgeConfig::default()
    };
    let cache = reflow_guest_image::cache_root();
    let bridge = setup::bridge(&images, &cache, store, config, !args.quiet)?;
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
