//! What a directory client reads before it connects: the service account's password and
//! the roots that check the directory's certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LdapConfig, TlsMode};
use crate::auth::Secret;

/// Why a directory client could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read bind_password_file {path}: {source}")]
    BindPassword {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bind_password_file {0} is empty")]
    EmptyBindPassword(PathBuf),
    #[error("{0}")]
    Ca(#[from] crate::tls::CaError),
}

pub(super) fn read_bind_password(path: &Path) -> Result<Secret, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetupError::BindPassword {
        path: path.to_owned(),
        source,
    })?;
    // docker_auth trims the file (an editor's newline is not part of the password).
    let password = text.trim();
    if password.is_empty() {
        return Err(SetupError::EmptyBindPassword(path.to_owned()));
    }
    Ok(Secret::new(password))
}

/// The rustls client config for StartTLS and LDAPS: the `ca_certificate` roots, or the
/// system's. `None` without TLS, and with `insecure_tls_skip_verify` (ldap3's own
/// verifier that accepts any certificate is used then).
pub(super) fn client_tls(
    config: &LdapConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, SetupError> {
    if config.tls == TlsMode::None || config.insecure_tls_skip_verify {
        return Ok(None);
    }
    let config = crate::tls::client_config(config.ca_certificate.as_deref())?;
    Ok(Some(Arc::new(config)))
}
