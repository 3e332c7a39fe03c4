//! The AF_XDP packet path of zcproxy's QUIC data plane.
//!
//! - [`insn`]: an eBPF instruction encoder and assembler, so the XDP program is built from
//!   Rust at run time (no clang, no bpf-linker, no object files).
//! - [`bpf`]: the bpf(2) commands: maps, program load with the verifier's log, test runs,
//!   BPF links, object info.
//! - [`program`]: the redirect program (UDP to the proxy's addresses and port → the RX
//!   queue's AF_XDP socket; everything else → the kernel) and its loader.
//! - [`maps`]: its XSKMAP and per-CPU verdict counters.
//! - [`attach`]: attaching through a BPF link (native, else generic), detached on drop
//!   and by the kernel when the process dies.
//! - [`netlink`]: which XDP program an interface has.

pub mod attach;
pub mod bpf;
pub mod error;
pub mod insn;
pub mod maps;
pub mod netlink;
pub mod program;

pub use attach::{attach, AttachMode, Interface, XdpLink, XdpMode};
pub use error::{Error, Result};
pub use maps::{Reason, Verdicts, XskMap};
pub use program::{Filter, RedirectProgram};
