//! The cluster file: k0sctl's `Cluster` format plus airlock's own section.
