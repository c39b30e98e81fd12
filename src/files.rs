//! Files with secrets in them (keys, the token DB, an ACME account): their owner's only,
//! written whole.

use std::fs;
use std::io;
use std::path::Path;

/// Writes a private key readable by its owner only (0600), also over an existing file
/// that was not.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    // `mode` applies only when the file is created.
    #[cfg(unix)]
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

/// A folder for secrets, its owner's only (0700): made so, or, when it exists open to
/// others, closed (with a warning). Others must not even list it: a key file replaced
/// there by someone else would sign tokens.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            return fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir);
        }
        let mode = fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                "a folder for secrets was open to other users ({:o}); made it 0700",
                mode & 0o777
            );
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    fs::create_dir_all(dir)
}

/// As [`write_private`], through a new file beside `path` renamed over it: a reader (or a
/// crash) sees the old contents or the new, never half.
pub fn write_private_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.new"));
    write_private(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// Writes `path` whole through a file beside it renamed over it (the umask's permissions:
/// for public files, a certificate).
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.new"));
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}
