//! The integration tests, one crate so that they link once: each module was a test
//! binary of its own (`tests/NAME.rs`); `common` is what they share. Tests run in parallel
//! threads of one process, so nothing here may rely on a process of its own: no test sets
//! an environment variable of this process (children get their own), the one shared file
//! (`/etc/hosts`) is edited under a lock, each test keeps its daemons and folders to itself,
//! and a port a daemon will bind is held (`common::ReservedPort`), never found free and let
//! go.

mod common;

mod acme;
mod adversarial;
mod basic_jwks;
mod cache;
mod cli;
mod compose;
mod compose_ha;
mod connections;
mod containerd;
mod docker_cli;
mod exact;
mod ext;
mod faults;
mod first_hour;
mod fuzz_corpora;
mod ha;
mod https;
mod idp;
mod ldap;
mod limits;
mod load;
mod oauth;
mod operations;
mod protocol;
mod reload;
mod scale;
mod skopeo;
mod sql;
mod streaming;
mod ui;
mod web;
