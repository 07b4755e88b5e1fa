//! Loading the kernel (ELF vmlinux first, bzImage as fallback), the initrd
//! and the command line into guest memory.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::bootparams::InitrdPlacement;
use crate::arch::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, MMIO_GAP_START};

/// Offset of the 64-bit entry point in a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Highest address the initrd may end at (the boot protocol's default
/// `initrd_addr_max` for kernels that do not say otherwise).
const INITRD_ADDR_MAX: u64 = 0x8000_0000;
const PAGE_SIZE: u64 = 4096;

/// Errors loading the boot images.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A boot image could not be opened, or the kernel's first bytes read.
    #[error("opening {what} {path}: {source}")]
    Open {
        /// Which image ("kernel" or "initrd").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither an x86_64 ELF vmlinux nor a bzImage.
    #[error("{path} is not a kernel: neither an x86_64 ELF vmlinux nor a bzImage")]
    NotAKernel {
        /// The file's path.
        path: PathBuf,
    },
    /// linux-loader refused the kernel image.
    #[error("loading kernel {path}: {reason}")]
    Kernel {
        /// The kernel's path.
        path: PathBuf,
        /// linux-loader's error, as text.
        reason: String,
    },
    /// The initrd file is empty.
    #[error("initrd {path} is empty")]
    EmptyInitrd {
        /// The initrd's path.
        path: PathBuf,
    },
    /// The initrd does not fit between the kernel's end and the end of low
    /// memory (guest memory is too small).
    #[error(
        "guest memory too small: the initrd ({initrd_size} bytes) does not fit between the \
         kernel end ({kernel_end:#x}) and the end of low memory ({low_end:#x}); give the VM more memory"
    )]
    InitrdDoesNotFit {
        /// Size of the initrd in bytes.
        initrd_size: u64,
        /// Guest address of the first byte after the kernel.
        kernel_end: u64,
        /// Where the initrd must end by: the end of RAM, of the space below the
        /// MMIO gap, or 2 GiB, whichever is lowest.
        low_end: u64,
    },
    /// The initrd's size could not be read.
    #[error("reading initrd {path}: {source}")]
    ReadInitrd {
        /// The initrd's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Copying the initrd into guest memory failed.
    #[error("writing initrd into guest memory: {0}")]
    WriteInitrd(vm_memory::GuestMemoryError),
    /// The kernel command line is longer than the boot protocol allows.
    #[error("kernel command line is {len} bytes, over the limit of {max}: {reason}")]
    CmdlineTooLong {
        /// Its length in bytes (with a separator per part).
        len: usize,
        /// The longest command line allowed, in bytes.
        max: usize,
        /// linux-loader's error, as text.
        reason: String,
    },
    /// The command line is invalid (linux-loader's reason), or writing it
    /// into guest memory failed.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
}

/// Kernel image formats we boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An uncompressed ELF `vmlinux`.
    Elf,
    /// A compressed `bzImage` with a setup header.
    BzImage,
}

/// Where the kernel went.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// The image's format.
    pub format: KernelFormat,
    /// 64-bit entry point.
    pub entry: u64,
    /// First byte after the kernel image in guest memory.
    pub end: u64,
    /// The bzImage setup header, to copy into the zero page.
    pub setup_header: Option<setup_header>,
}

fn open(what: &'static str, path: &Path) -> Result<File, LoaderError> {
    File::open(path).map_err(|source| LoaderError::Open {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Detects the kernel format from its first bytes.
pub fn detect_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        return Some(KernelFormat::Elf);
    }
    // bzImage: "HdrS" at 0x202.
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Some(KernelFormat::BzImage);
    }
    None
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let mut file = open("kernel", path)?;
    let mut head = vec![0u8; 0x206];
    let n = read_up_to(&mut file, &mut head).map_err(|source| LoaderError::Open {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    })?;
    head.truncate(n);
    let format = detect_format(&head).ok_or_else(|| LoaderError::NotAKernel {
        path: path.to_path_buf(),
    })?;
    let err = |e: linux_loader::loader::Error| LoaderError::Kernel {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    file.seek(SeekFrom::Start(0))
        .map_err(|source| LoaderError::Open {
            what: "kernel",
            path: path.to_path_buf(),
            source,
        })?;
    let himem = Some(GuestAddress(HIMEM_START));
    match format {
        KernelFormat::Elf => {
            let r = Elf::load(mem, None, &mut file, himem).map_err(err)?;
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        KernelFormat::BzImage => {
            let r = BzImage::load(mem, None, &mut file, himem).map_err(err)?;
            Ok(LoadedKernel {
                format,
                entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
                end: r.kernel_end,
                setup_header: r.setup_header,
            })
        }
    }
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read(&mut buf[done..])? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible
/// below the end of low memory, above the kernel.
pub fn place_initrd(
    size: u64,
    kernel_end: u64,
    mem_size: u64,
) -> Result<InitrdPlacement, LoaderError> {
    let low_end = mem_size.min(MMIO_GAP_START).min(INITRD_ADDR_MAX);
    let fits = |addr: u64| addr >= kernel_end;
    match low_end
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|a| fits(*a))
    {
        Some(addr) => Ok(InitrdPlacement { addr, size }),
        None => Err(LoaderError::InitrdDoesNotFit {
            initrd_size: size,
            kernel_end,
            low_end,
        }),
    }
}

/// Loads the initrd at `path` above the kernel.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
    mem_size: u64,
) -> Result<InitrdPlacement, LoaderError> {
    let mut file = open("initrd", path)?;
    let size = file
        .metadata()
        .map_err(|source| LoaderError::ReadInitrd {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if size == 0 {
        return Err(LoaderError::EmptyInitrd {
            path: path.to_path_buf(),
        });
    }
    let placement = place_initrd(size, kernel_end, mem_size)?;
    mem.read_exact_volatile_from(GuestAddress(placement.addr), &mut file, size as usize)
        .map_err(LoaderError::WriteInitrd)?;
    Ok(placement)
}

/// Builds the command line from space-separated parts, checking its length.
pub fn build_cmdline(parts: &[&str]) -> Result<Cmdline, LoaderError> {
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| LoaderError::Cmdline(e.to_string()))?;
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        cmdline.insert_str(part).map_err(|e| match e {
            linux_loader::cmdline::Error::TooLarge => LoaderError::CmdlineTooLong {
                len: parts.iter().map(|p| p.len() + 1).sum(),
                max: CMDLINE_MAX_SIZE - 1,
                reason: e.to_string(),
            },
            other => LoaderError::Cmdline(other.to_string()),
        })?;
    }
    Ok(cmdline)
}

/// Writes the command line at its fixed address; returns its length in bytes
/// (without the terminating NUL).
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> Result<usize, LoaderError> {
    let len = cmdline
        .as_cstring()
        .map_err(|e| LoaderError::Cmdline(e.to_string()))?
        .as_bytes()
        .len();
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| LoaderError::Cmdline(e.to_string()))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn detects_formats() {
        assert_eq!(detect_format(b"\x7fELF\x02\x01"), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x206];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
        assert_eq!(detect_format(b"#!/bin/sh\n"), None);
        assert_eq!(detect_format(b""), None);
    }

    #[test]
    fn initrd_goes_to_the_top_page_aligned() {
        let p = place_initrd(3 * MIB + 5, 40 * MIB, 128 * MIB).unwrap();
        assert_eq!(p.addr % PAGE_SIZE, 0);
        assert!(p.addr + p.size <= 128 * MIB);
        assert!(p.addr >= 124 * MIB);
    }

    #[test]
    fn initrd_that_overlaps_the_kernel_is_refused() {
        assert!(matches!(
            place_initrd(100 * MIB, 40 * MIB, 128 * MIB),
            Err(LoaderError::InitrdDoesNotFit { .. })
        ));
        assert!(matches!(
            place_initrd(200 * MIB, 0, 128 * MIB),
            Err(LoaderError::InitrdDoesNotFit { .. })
        ));
    }

    #[test]
    fn cmdline_length_is_checked() {
        let c = build_cmdline(&["console=ttyS0", "", " quiet "]).unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 quiet"
        );
        let long = "x".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            build_cmdline(&["console=ttyS0", &long]),
            Err(LoaderError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn loads_a_bzimage_and_keeps_its_setup_header() {
        use vm_memory::ByteValued;
        let header = setup_header {
            setup_sects: 1,
            boot_flag: 0xaa55,
            header: 0x5372_6448,
            version: 0x020f,
            loadflags: 1,
            code32_start: HIMEM_START as u32,
            ..Default::default()
        };
        let mut image = vec![0u8; 2 * 512 + 4096];
        image[0x1f1..0x1f1 + std::mem::size_of::<setup_header>()]
            .copy_from_slice(header.as_slice());
        image[2 * 512..].fill(0x90);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bzImage");
        std::fs::write(&p, &image).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let k = load_kernel(&mem, &p).unwrap();
        assert_eq!(k.format, KernelFormat::BzImage);
        assert_eq!(k.entry, HIMEM_START + BZIMAGE_64BIT_ENTRY_OFFSET);
        assert_eq!({ k.setup_header.unwrap().version }, 0x020f);
        let mut code = [0u8; 4];
        mem.read_slice(&mut code, GuestAddress(HIMEM_START))
            .unwrap();
        assert_eq!(code, [0x90; 4]);
    }

    #[test]
    fn non_kernel_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notes.txt");
        std::fs::write(&p, "hello").unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        assert!(matches!(
            load_kernel(&mem, &p),
            Err(LoaderError::NotAKernel { .. })
        ));
        assert!(matches!(
            load_kernel(&mem, &dir.path().join("missing")),
            Err(LoaderError::Open { .. })
        ));
    }
}
