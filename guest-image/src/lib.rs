//! Builds and caches the images a Reflow sandbox guest boots from.
//!
//! For now this is the initramfs holding the guest agent as `/init`; the
//! Python and Node root filesystems join it in later issues. Every image is
//! content-addressed: its cache key is the hash of everything it is built
//! from, so an unchanged input never rebuilds and a changed one never reuses
//! a stale image.

pub mod initramfs;

pub use initramfs::{build_initramfs, Built, InitramfsError};
