//! What an operator runs beside the gateway, apart from the request path: `check` (the
//! config and the files it names, plus the lints), `explain`, `cert init`, `probe`,
//! `revoke-refresh`. Each
//! asks the same code the gateway runs (the config loader, the login backends, the ACL),
//! so what they say is what `serve` does.

pub mod accounts;
pub mod certs;
pub mod check;
pub mod explain;
pub mod lint;
pub mod probe;
pub mod revoke;
