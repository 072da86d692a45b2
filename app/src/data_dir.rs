//! The node's data directory (`data_dir`): the embedded store, the generated certificate
//! and key. It holds secrets (password and token hashes, the TLS key), so it is made
//! readable by the relay's own user only (0700), whatever the umask, and made so again if
//! an earlier version or an operator left it open.

use std::path::Path;

/// Creates `path` (and missing parents) as 0700, or takes group and other access away
/// from an existing one.
pub fn ensure_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn data_directories_are_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let fresh = root.path().join("a/b");
        ensure_private_dir(&fresh).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), 0o700);
        let old = root.path().join("old");
        std::fs::create_dir(&old).expect("create");
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        ensure_private_dir(&old).expect("existing");
        assert_eq!(mode(&old), 0o700);
    }
}
