//! SSH sessions to the hosts: commands, uploads and host locks.
