//! Builds and caches the images a Reflow sandbox guest boots from.
//!
//! This crate builds the initramfs holding the guest agent as `/init`; the
//! Python and Node root filesystems are built by `build-python.sh` and
//! `build-node.sh` next to it. Every image is
//! content-addressed: its cache key is the hash of everything it is built
//! from, so an unchanged input never rebuilds and a changed one never reuses
//! a stale image.

#![warn(missing_docs)]

pub mod initramfs;

pub use initramfs::{build_initramfs, Built, InitramfsError};
