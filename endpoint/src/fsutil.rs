//! Files that hold secrets (device credential, license token, the VES static key) are
//! written 0600 and atomically, in directories that are 0700, so that another local user
//! can neither read them nor catch one half-written.

use std::io::Write;
use std::path::Path;

use crate::error::EndpointError;

/// Creates `dir` (and parents) and restricts it to its owner.
pub fn ensure_private_dir(dir: &Path) -> Result<(), EndpointError> {
    std::fs::create_dir_all(dir).map_err(|e| EndpointError::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| EndpointError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `data` to `path` with mode 0600: to a temporary file beside it, synced, then
/// renamed over the target, so a crash leaves either the old or the new content.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), EndpointError> {
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| EndpointError::io(&tmp, e))?;
    #[cfg(unix)]
    {
        // An existing temporary file keeps its old mode through `open`: force it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| EndpointError::io(&tmp, e))?;
    }
    f.write_all(data).map_err(|e| EndpointError::io(&tmp, e))?;
    f.sync_all().map_err(|e| EndpointError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| EndpointError::io(path, e))
}

/// The permission bits of `path` (tests and `status` output).
#[cfg(unix)]
pub fn mode(path: &Path) -> Result<u32, EndpointError> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path).map_err(|e| EndpointError::io(path, e))?.permissions().mode() & 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("state");
        ensure_private_dir(&sub).expect("dir");
        let file = sub.join("secret.json");
        write_private(&file, b"one").expect("write");
        write_private(&file, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&file).expect("read"), b"two");
        #[cfg(unix)]
        {
            assert_eq!(mode(&file).expect("mode"), 0o600);
            assert_eq!(mode(&sub).expect("mode"), 0o700);
        }
        assert!(!file.with_extension("tmp").exists());
    }
}
