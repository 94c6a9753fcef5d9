//! airlock installs a sovereign AI cluster on k0s from a signed offline bundle.
//!
//! The modules follow the data as it flows through an install: the cluster file (`config`), the
//! bundle that carries every artifact across the air gap (`bundle`), SSH sessions to the hosts
//! (`remote`), the ordered steps of apply and upgrade (`phase`), the add-on stacks (`stacks`), and
//! the record of what was installed (`blueprint`). `cli` turns command-line arguments into calls of
//! these modules and chooses the exit status.

pub mod blueprint;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod digest;
pub mod k0s;
pub mod media;
pub mod phase;
pub mod remote;
pub mod shell;
pub mod stacks;
pub mod ui;
