//! The file system a jailed worker sees: the image's tree read-only, a
//! size-limited tmpfs on `/tmp` and `/run`, the host's run directory for
//! the worker's progress and ready files at `/run/reflow`, a fresh
//! `/proc` of its PID namespace, and a `/dev` holding only `null`, `zero`,
//! `random` and `urandom`. Then `pivot_root` into it, the old root
//! detached: no path leads back to the host's files.

use std::ffi::CString;
use std::path::Path;

use super::JailError;

/// Device nodes a worker may use, bound from the host's `/dev`.
const DEVICES: [&str; 4] = ["null", "zero", "random", "urandom"];

/// What [`enter_root`] mounts besides the image's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootPlan<'a> {
    /// The image's files (its `tmp`, `run`, `dev` and `proc` directories
    /// must exist: the mount points).
    pub tree: &'a Path,
    /// A host directory the worker may write, seen as `/run/reflow`.
    pub run_dir: &'a Path,
    /// Size of the `/tmp` tmpfs, MiB.
    pub tmp_mib: u32,
}

/// Size of the `/run` tmpfs, MiB (it holds the mount point of the run
/// directory and the worker's sockets, if any).
const RUN_MIB: u32 = 4;

fn cstr(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| JailError::Mount(format!("{} holds a NUL byte", path.display())))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), JailError> {
    let source = source.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype = fstype.map(|t| CString::new(t).expect("a literal file system type"));
    let data = data.map(|d| CString::new(d).expect("literal mount options"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that lives
    // across the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(JailError::Mount(format!(
            "mounting {} on {}: {}",
            source.as_ref().map_or_else(
                || fstype_name(&fstype),
                |s| s.to_string_lossy().into_owned()
            ),
            target.display(),
            std::io::Error::last_os_error()
        )))
    }
}

fn fstype_name(fstype: &Option<CString>) -> String {
    fstype
        .as_ref()
        .map_or("(none)".into(), |t| t.to_string_lossy().into_owned())
}

/// Binds `from` onto `to` and makes the bind read-only, keeping the flags
/// the kernel locked on the source (a user namespace may not clear them).
fn bind_read_only(from: &Path, to: &Path, recursive: bool) -> Result<(), JailError> {
    let rec = if recursive { libc::MS_REC } else { 0 };
    mount(Some(from), to, None, libc::MS_BIND | rec, None)?;
    let locked = statvfs_flags(to)?;
    mount(
        None,
        to,
        None,
        libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | locked,
        None,
    )
}

/// The mount flags of the file system at `path` that a remount must keep.
fn statvfs_flags(path: &Path) -> Result<libc::c_ulong, JailError> {
    let c = cstr(path)?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct that live across the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(JailError::Mount(format!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

fn tmpfs(target: &Path, options: &str) -> Result<(), JailError> {
    mount(
        None,
        target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(options),
    )
}

fn create(path: &Path, dir: bool) -> Result<(), JailError> {
    let made = if dir {
        std::fs::create_dir(path)
    } else {
        std::fs::File::create(path).map(drop)
    };
    made.map_err(|e| JailError::Mount(format!("creating {}: {e}", path.display())))
}

/// Mounts `plan`'s root (in this process's own mount namespace, which must
/// be private already) and makes it this process's root.
pub fn enter_root(plan: &RootPlan<'_>) -> Result<(), JailError> {
    let root = plan.tree;
    for dir in ["tmp", "run", "dev", "proc"] {
        if !root.join(dir).is_dir() {
            return Err(JailError::Mount(format!(
                "the image's tree {} has no /{dir} to mount on",
                root.display()
            )));
        }
    }
    // The tree's own bind is the new root's mount; what it holds is read-only.
    bind_read_only(root, root, true)?;
    tmpfs(
        &root.join("tmp"),
        &format!("mode=1777,size={}m", plan.tmp_mib.max(1)),
    )?;
    tmpfs(&root.join("run"), &format!("mode=0755,size={RUN_MIB}m"))?;
    let run = root.join("run/reflow");
    create(&run, true)?;
    mount(Some(plan.run_dir), &run, None, libc::MS_BIND, None)?;
    let dev = root.join("dev");
    mount(
        None,
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        create(&node, false)?;
        mount(
            Some(&Path::new("/dev").join(name)),
            &node,
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    mount(
        None,
        &root.join("proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    // /dev's tmpfs read-only now that its nodes are bound.
    mount(
        None,
        &dev,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?;
    pivot(root)
}

/// `pivot_root` into `root` and detach the old root: the host's tree is no
/// longer reachable by any path.
fn pivot(root: &Path) -> Result<(), JailError> {
    let c = cstr(root)?;
    let fail =
        |what: &str| JailError::Mount(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: plain system calls on NUL-terminated paths that live across
    // them. pivot_root(".", ".") stacks the old root on the new one, and
    // the detach takes it away.
    unsafe {
        if libc::chdir(c.as_ptr()) != 0 {
            return Err(fail("chdir into the new root"));
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            return Err(fail("pivot_root"));
        }
        if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(fail("detaching the old root"));
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(fail("chdir /"));
        }
    }
    Ok(())
}
