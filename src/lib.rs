//! chainwatch keeps a small EC2 fleet highly available with an ordered-ID
//! chain over an OpenVPN overlay: instance n watches n-1; when n-1 dies while
//! the overlay is healthy, n fences it through the EC2 API, takes over its ID
//! and VPN identity (so its overlay address), and announces the change.
//!
//! The crate is split the way the system is:
//!
//! * [`layout`] — the single source of truth for roles, IDs, common names,
//!   host names and overlay addresses.
//! * [`core`] — the watchdog as a pure state machine: inputs with `now` in,
//!   actions out. No tokio, no clock, no I/O.
//! * [`config`], [`userdata`], [`state`], [`identity`] — what a node reads at
//!   start: its config file, its EC2 user-data, its persisted state.
//! * [`shell`] — the async shell that performs the core's actions (ICMP
//!   probes, name resolution, the status socket).
//! * [`cmd`] — one module per subcommand.

pub mod announce;
pub mod cloudinit;
pub mod cmd;
pub mod config;
pub mod core;
pub mod ec2;
pub mod event;
pub mod iam;
pub mod identity;
pub mod layout;
pub mod outbox;
pub mod shell;
pub mod state;
pub mod takeover;
pub mod template;
pub mod userdata;
pub mod vpn;
pub mod worker;
