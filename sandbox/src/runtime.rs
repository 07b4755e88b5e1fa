//! Language runtimes: the VM each script language runs in (kernel,
//! initramfs, root image, memory, shared region), how its worker is started
//! in the guest, and the warm golden snapshot every actor VM is cloned from.

use std::path::{Path, PathBuf};

use reflow_vmm::snapshot::golden::{self, GoldenError, Warmup};
use reflow_vmm::{ControlChannel, VmConfig};

use reflow_agent_protocol::paths::{SHM_ADDR, WORKER_READY};

pub use crate::language::Language;
use crate::sandbox::VmSpec;
use crate::warmup::{self, Started, WarmupError, WarmupPolicy};

/// Why a runtime cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An environment variable naming a required image is not set.
    #[error("{var} is not set: run `./dev.sh setup`, which builds the guest images (cached) and prints their paths, or pass the path on the command line")]
    Unset {
        /// The variable's name.
        var: &'static str,
    },
    /// An image path does not name an existing file.
    #[error("{what} {} does not exist", path.display())]
    Missing {
        /// Which image (for example `"the guest kernel"`).
        what: &'static str,
        /// The path that was given.
        path: PathBuf,
    },
    /// A VM runtime was asked for its golden snapshot without a guest
    /// kernel or initramfs (process workers need neither).
    #[error("no {what}, which VMs boot: set {var} or pass its path on the command line (./dev.sh setup builds one and prints its path); only `isolation: process` actors run without one")]
    NoBoot {
        /// Which one (`"guest kernel"`, `"initramfs"`).
        what: &'static str,
        /// The environment variable that names it.
        var: &'static str,
    },
    /// A language's runtime was asked for without its root image.
    #[error("no {language} image: set {var} (./dev.sh setup builds one and prints its path)")]
    NoImage {
        /// The language whose image is missing.
        language: Language,
        /// The environment variable that names the image.
        var: &'static str,
    },
    /// Creating or loading the golden snapshot failed.
    #[error(transparent)]
    Golden(#[from] GoldenError),
    /// The warm-up policy is invalid or the worker did not start.
    #[error(transparent)]
    Warmup(#[from] WarmupError),
}

/// The boot images shared by every runtime, and each language's root.
#[derive(Debug, Clone)]
pub struct GuestImages {
    /// The guest kernel every VM boots (`None`: no VM can be made; process
    /// workers need none).
    pub kernel: Option<PathBuf>,
    /// The initramfs holding the guest agent (`None` as for `kernel`).
    pub initramfs: Option<PathBuf>,
    /// The Python root image (the guest's `/dev/vda` for Python actors).
    pub python: PathBuf,
    /// The Node image; without it JavaScript actors cannot run.
    pub node: Option<PathBuf>,
}

impl GuestImages {
    /// The images named by `REFLOW_KERNEL`, `REFLOW_INITRAMFS`,
    /// `REFLOW_PYTHON_IMAGE` and (optionally) `REFLOW_NODE_IMAGE` (what
    /// `./dev.sh` exports).
    pub fn from_env() -> Result<GuestImages, RuntimeError> {
        let var = |var: &'static str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .ok_or(RuntimeError::Unset { var })
        };
        let images = GuestImages {
            kernel: Some(var("REFLOW_KERNEL")?),
            initramfs: Some(var("REFLOW_INITRAMFS")?),
            python: var("REFLOW_PYTHON_IMAGE")?,
            node: std::env::var_os("REFLOW_NODE_IMAGE").map(PathBuf::from),
        };
        images.check()?;
        Ok(images)
    }

    /// Fails clearly when an image is missing.
    pub fn check(&self) -> Result<(), RuntimeError> {
        let images = [
            ("the guest kernel", self.kernel.as_ref()),
            ("the initramfs", self.initramfs.as_ref()),
            ("the Python image", Some(&self.python)),
            ("the Node image", self.node.as_ref()),
        ];
        for (what, path) in images.into_iter().filter_map(|(w, p)| Some((w, p?))) {
            if !path.is_file() {
                return Err(RuntimeError::Missing {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// One language's VM: what it boots and how big it is.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// The script language this runtime runs.
    pub language: Language,
    /// The VM's configuration (kernel, initramfs, root disk, memory, shared
    /// region).
    pub config: VmConfig,
    /// CPU time each VM may use, in CPUs; `None`: unlimited.
    pub cpu: Option<f64>,
    /// How long the golden guest's worker may go without progress while it
    /// starts; `None`: the default, or `REFLOW_GOLDEN_STALL_SECS` if set.
    pub warmup: Option<WarmupPolicy>,
    /// What the images lacked to boot a VM, and the variable that names
    /// it (its golden snapshot is then refused with
    /// [`RuntimeError::NoBoot`]); `config` then names no kernel or
    /// initramfs.
    no_boot: Option<(&'static str, &'static str)>,
}

impl Runtime {
    /// The Python runtime: the Python image as the guest's root, `mem_mib`
    /// of RAM and a `shm_mib` shared region for the rings.
    pub fn python(images: &GuestImages, mem_mib: u32, shm_mib: u32) -> Runtime {
        Runtime::with_root(images, Language::Python, &images.python, mem_mib, shm_mib)
    }

    /// The JavaScript runtime: the Node image as the guest's root (an
    /// error without one), `mem_mib` of RAM, a `shm_mib` shared region.
    pub fn javascript(
        images: &GuestImages,
        mem_mib: u32,
        shm_mib: u32,
    ) -> Result<Runtime, RuntimeError> {
        let node = images.node.as_ref().ok_or(RuntimeError::NoImage {
            language: Language::JavaScript,
            var: "REFLOW_NODE_IMAGE",
        })?;
        Ok(Runtime::with_root(
            images,
            Language::JavaScript,
            node,
            mem_mib,
            shm_mib,
        ))
    }

    /// The runtime of `language` (see [`Runtime::python`] and
    /// [`Runtime::javascript`]).
    pub fn for_language(
        images: &GuestImages,
        language: Language,
        mem_mib: u32,
        shm_mib: u32,
    ) -> Result<Runtime, RuntimeError> {
        match language {
            Language::Python => Ok(Runtime::python(images, mem_mib, shm_mib)),
            Language::JavaScript => Runtime::javascript(images, mem_mib, shm_mib),
        }
    }

    /// The language's root image (the VM's first disk; a process
    /// worker's files), if the config still has it.
    pub fn image(&self) -> Option<&Path> {
        self.config.disks.first().map(PathBuf::as_path)
    }

    fn with_root(
        images: &GuestImages,
        language: Language,
        root: &Path,
        mem_mib: u32,
        shm_mib: u32,
    ) -> Runtime {
        let no_boot = match (&images.kernel, &images.initramfs) {
            (None, _) => Some(("guest kernel", "REFLOW_KERNEL")),
            (_, None) => Some(("initramfs", "REFLOW_INITRAMFS")),
            _ => None,
        };
        let mut config = VmConfig::new(images.kernel.as_deref().unwrap_or(Path::new("")));
        config.initrd = images.initramfs.clone();
        config.disks = vec![root.to_path_buf()];
        config.mem_mib = mem_mib;
        config.shm_mib = shm_mib;
        config.timeout = None;
        config.extra_cmdline = "reflow.root=/dev/vda reflow.quiet=1".into();
        Runtime {
            language,
            config,
            cpu: None,
            warmup: None,
            no_boot,
        }
    }

    /// The golden snapshot of this runtime with its actor worker started
    /// and warm, created under `cache_root` on first use (minutes where the
    /// guest kernel is emulated; `progress` hears each step).
    pub fn golden(
        &self,
        cache_root: &Path,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<VmSpec, RuntimeError> {
        self.golden_running(self.language.worker(), WORKER_READY, cache_root, progress)
    }

    /// The golden snapshot of this runtime with `/opt/reflow/<script>`
    /// started (see [`start_script`]); [`Runtime::golden`] starts the
    /// actor worker.
    pub fn golden_running(
        &self,
        script: &str,
        ready: &str,
        cache_root: &Path,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<VmSpec, RuntimeError> {
        let shm_mib = self.config.shm_mib;
        let language = self.language;
        let flags = language.interpreter_flags().join(" ");
        let tag = format!("{language}:{flags}:{script}:{ready}");
        if let Some((what, var)) = self.no_boot {
            return Err(RuntimeError::NoBoot { what, var });
        }
        let policy = match self.warmup {
            Some(policy) => policy,
            None => WarmupPolicy::from_env()?,
        };
        let run = |c: &mut ControlChannel| {
            let started = start_script(c, language, script, shm_mib, ready, policy, progress)
                .map_err(|e| e.to_string())?;
            if !started.steps.is_empty() {
                progress(&format!(
                    "{script} ready after {:.1} s:{}",
                    started.took.as_secs_f64(),
                    warmup::describe_steps(&started.steps)
                ));
            }
            Ok(())
        };
        let warmup = Warmup {
            tag: &tag,
            run: &run,
        };
        let golden = golden::ensure_warm(&self.config, cache_root, Some(&warmup), progress)?;
        Ok(VmSpec {
            golden: golden.dir,
            config: self.config.clone(),
            cpu: self.cpu,
            isolation: crate::Isolation::Vm,
        })
    }
}

/// Starts `/opt/reflow/<script> <region address> <size>` with the image's
/// interpreter of `language` and watches it (see [`warmup::watch`]) until
/// its progress report says it is ready or, for a script that does not
/// report, it writes `/run/reflow/<ready>`. Fails when it reports a
/// failure, exits, or makes no progress for `policy.stall`.
pub fn start_script(
    c: &mut ControlChannel,
    language: Language,
    script: &str,
    shm_mib: u32,
    ready: &str,
    policy: WarmupPolicy,
    progress: &dyn Fn(&str),
) -> Result<Started, WarmupError> {
    let mut args: Vec<String> = language
        .interpreter_flags()
        .iter()
        .map(|f| f.to_string())
        .collect();
    args.extend([
        format!("/opt/reflow/{script}"),
        format!("{SHM_ADDR:#x}"),
        format!("{:#x}", u64::from(shm_mib) << 20),
    ]);
    warmup::spawn_and_watch(
        c,
        language.interpreter(),
        args,
        script,
        ready,
        policy,
        progress,
    )
}
