//! SSH sessions to the hosts: commands, verified uploads and host locks.
//!
//! `Session` is one authenticated connection with host keys checked against known_hosts;
//! `Host` runs commands as root over it and moves files with an on-host digest check;
//! `HostLock` keeps two airlock runs off the same host.

mod file_state;
mod host;
mod known_hosts;
mod lock;
mod passphrase;
mod session;
pub mod stream;
mod target;

pub(crate) use file_state::file_states_script;
pub use file_state::{FileState, ModeMismatch, parse_file_states, split_owner};
pub use host::{Host, HostError, Placement, Upload};
pub(crate) use host::{parent_dir, set_owner_and_mode};
pub use known_hosts::{KnownHosts, KnownHostsError, Verdict, fingerprint, host_pattern_name};
pub use lock::{HostLock, LockError, LockOwner};
pub use passphrase::PASSPHRASE_ENV;
pub use session::{
    ConnectError, ConnectOptions, ExecError, HostKeyPolicy, JumpHosts, Output, Session, SshTarget,
};
pub use target::{SshConfigError, UserSshConfig};
