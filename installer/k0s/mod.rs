//! What airlock knows about k0s itself: versions, `k0s status`, join tokens.

pub mod config;
pub mod kubeconfig;
pub mod status;
pub mod token;
pub mod version;

pub use status::{K0sStatus, RunningRole};
pub use token::bootstrap_token_id;
pub use version::K0sVersion;
