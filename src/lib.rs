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
//! * [`config`], [`userdata`], [`state`] — what a node reads at start: its
//!   config file, its EC2 user-data, its persisted state.
//! * [`event`] — the transition event as it travels (schema, validation).
//! * [`fleet`] — the fleet as EC2's tags describe it, and its consistency
//!   checks (`chainwatch fleet --check`).
//! * [`shell`] — every adapter to the outside world, and the driver that
//!   performs the core's actions with them: ICMP, EC2 and CloudWatch,
//!   OpenVPN, IMDS, the outbox, RabbitMQ, the MySQL worker.
//! * [`cmd`] — one module per subcommand; `run` only wires.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod admission;
pub mod backoff;
pub mod clock;
pub mod cloudinit;
pub mod cmd;
pub mod config;
pub mod core;
pub mod crashpoint;
pub mod event;
pub mod fleet;
pub mod fsio;
pub mod gtid;
pub mod holders;
pub mod iam;
pub mod layout;
pub mod shell;
pub mod state;
pub mod template;
pub mod userdata;
