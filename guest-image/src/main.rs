//! `reflow-guest-image`: builds (or finds in the cache) a guest image and
//! prints its path on stdout. Progress and sizes go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Build and cache Reflow sandbox guest images")]
struct Cli {
    /// Cache directory (`dev.sh` passes
    /// ${XDG_CACHE_HOME:-~/.cache}/reflow-sandbox, the monitor's default).
    #[arg(long, env = "REFLOW_CACHE_DIR")]
    cache_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the initramfs with the guest agent as /init.
    Initramfs {
        /// The statically linked guest agent binary.
        #[arg(long)]
        agent: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cache = cli.cache_dir;
    match cli.command {
        Command::Initramfs { agent } => match reflow_guest_image::build_initramfs(&agent, &cache) {
            Ok(built) => {
                eprintln!(
                    "[image] initramfs {} ({} KiB): {}",
                    if built.cached { "cached" } else { "built" },
                    built.size / 1024,
                    built.path.display()
                );
                println!("{}", built.path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("[image] error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
