//! medledger-core: the per-transaction cryptography of medledger, in pure Rust.
//!
//! Nothing here knows about Python, sockets, clocks or disks. The binding crate
//! (`rust/py`) converts arguments, releases the GIL and maps [`Error`] to Python
//! exceptions; everything else lives here and is tested with plain `cargo test`.

pub mod admission;
pub mod block;
pub mod channel;
pub mod domain;
pub mod ed25519;
pub mod error;
pub mod hash;
pub mod limits;
pub mod merkle;
pub mod parallel;
pub mod sha256x2;
pub mod wire;

pub use error::{Error, Result};
