//! The integration tests, one crate so that they link once: each module was a test
//! binary of its own (`tests/NAME.rs`); `common` is what they share. Tests run in parallel
//! threads of one process, so nothing here may rely on a process of its own: no
//! environment variable is set, shared files (`/etc/hosts`) are guarded, and each test
//! keeps its daemons, ports and folders to itself.

mod common;

mod adversarial;
mod basic_jwks;
mod cli;
mod compose;
mod containerd;
mod docker_cli;
mod exact;
mod faults;
mod first_hour;
mod fuzz_corpora;
mod https;
mod ldap;
mod limits;
mod load;
mod oauth;
mod operations;
mod protocol;
mod reload;
mod skopeo;
mod streaming;
mod web;
