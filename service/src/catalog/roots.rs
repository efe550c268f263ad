//! Dataset locations are confined to folders the administrator configured.
//! Paths are canonicalised first, so `..` and symlinks can't escape a root.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::error::{Result, VeilError};

#[derive(Debug, Clone, Default)]
pub struct LocationRoots {
    roots: Vec<PathBuf>,
}

impl LocationRoots {
    /// Canonicalise the configured roots; a root that doesn't exist is an error.
    pub fn new(roots: &[PathBuf]) -> Result<Self> {
        let roots = roots
            .iter()
            .map(|r| {
                r.canonicalize().map_err(|e| {
                    VeilError::FailedPrecondition(format!(
                        "dataset root {} is not usable: {e}",
                        r.display()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { roots })
    }

    /// The canonical form of `location` if it lies under a root.
    pub fn confine(&self, location: &Path) -> Result<PathBuf> {
        let outside = || {
            VeilError::PermissionDenied(
                "the dataset location is outside the configured dataset roots; ask an administrator to add a root (`roots` in the config file)".into(),
            )
        };
        let canonical = location.canonicalize().map_err(|_| {
            VeilError::InvalidArgument(
                "the dataset location does not exist or cannot be read".into(),
            )
        })?;
        if self.roots.iter().any(|r| canonical.starts_with(r)) {
            Ok(canonical)
        } else {
            Err(outside())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_symlinks_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("secret");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.csv"), "a\n1\n").unwrap();
        std::fs::write(root.join("ok.csv"), "a\n1\n").unwrap();
        let roots = LocationRoots::new(std::slice::from_ref(&root)).unwrap();
        assert!(roots.confine(&root.join("ok.csv")).is_ok());
        assert!(matches!(
            roots.confine(&root.join("../secret/x.csv")),
            Err(VeilError::PermissionDenied(_))
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
            assert!(roots.confine(&root.join("link/x.csv")).is_err());
        }
    }
}

/// The roots in force, replaced whole when the config is reloaded.
#[derive(Debug, Default)]
pub struct SharedRoots(RwLock<LocationRoots>);

impl SharedRoots {
    pub fn new(roots: LocationRoots) -> Self {
        Self(RwLock::new(roots))
    }

    pub fn get(&self) -> LocationRoots {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set(&self, roots: LocationRoots) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = roots;
    }
}
