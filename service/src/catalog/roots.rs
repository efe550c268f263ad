//! Dataset locations are confined to folders (and remote prefixes) the
//! administrator configured. Local paths are canonicalised first, so `..` and
//! symlinks can't escape a root; remote keys with `.`, `..` or empty parts are
//! refused outright.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use super::object_stores::{RemoteLocation, parse_remote};
use crate::error::{Result, VeilError};
use crate::model::dataset::is_remote;

fn outside() -> VeilError {
    VeilError::PermissionDenied(
        "the dataset location is outside the configured dataset roots; ask an administrator to add a root (`roots` in the config file)".into(),
    )
}

#[derive(Debug, Clone, Default)]
pub struct LocationRoots {
    /// Canonical: what a location must resolve under.
    roots: Vec<PathBuf>,
    /// As configured (absolute, `.` and `..` resolved without the file
    /// system), beside the canonical forms: a location is first checked
    /// against both as written, before anything on disk is looked at.
    written: Vec<PathBuf>,
    remote: Vec<RemoteLocation>,
}

/// `path` made absolute and with `.` and `..` resolved as text, without
/// looking at the file system (a `..` above the top stays at the top).
fn lexical(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let absolute = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().ok()?.join(path),
    };
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
        }
    }
    Some(out)
}

impl LocationRoots {
    /// Canonicalise the configured roots; a local root that doesn't exist is
    /// an error. `scheme://bucket/prefix` roots are remote.
    pub fn new(roots: &[PathBuf]) -> Result<Self> {
        let mut out = Self::default();
        for r in roots {
            let text = r.to_string_lossy();
            if is_remote(&text) {
                out.remote.push(parse_remote(&text).map_err(|e| {
                    VeilError::FailedPrecondition(format!("dataset root: {}", e.message()))
                })?);
                continue;
            }
            let canonical = r.canonicalize().map_err(|e| {
                VeilError::FailedPrecondition(format!(
                    "dataset root {} is not usable: {e}",
                    r.display()
                ))
            })?;
            out.written.extend(lexical(r));
            out.written.push(canonical.clone());
            out.roots.push(canonical);
        }
        Ok(out)
    }

    /// The roots `cfg` declares, local ones resolved against its folder.
    pub fn from_config(cfg: &crate::config::Config) -> Result<Self> {
        Self::new(
            &cfg.roots
                .iter()
                .map(|r| PathBuf::from(cfg.resolve_location(r)))
                .collect::<Vec<_>>(),
        )
    }

    /// The stored form of `location` if it lies under a root: a canonical
    /// local path, or a remote URL under a remote root.
    pub fn confine_location(&self, location: &str) -> Result<String> {
        if !is_remote(location) {
            return Ok(self
                .confine(Path::new(location))?
                .to_string_lossy()
                .into_owned());
        }
        let loc = parse_remote(location)?;
        let under = |root: &RemoteLocation| {
            root.scheme == loc.scheme
                && root.bucket == loc.bucket
                && (root.key.as_ref().is_empty()
                    || loc.key.as_ref() == root.key.as_ref()
                    || loc
                        .key
                        .as_ref()
                        .starts_with(&format!("{}/", root.key.as_ref())))
        };
        if self.remote.iter().any(under) {
            Ok(loc.to_url())
        } else {
            Err(outside())
        }
    }

    /// The canonical form of `location` if it lies under a root. A
    /// location outside every root as written is refused before the file
    /// system is asked anything, so whether a path outside the roots
    /// exists can't be learned from the answer.
    pub fn confine(&self, location: &Path) -> Result<PathBuf> {
        let written = lexical(location).ok_or_else(outside)?;
        if !self.written.iter().any(|r| written.starts_with(r)) {
            return Err(outside());
        }
        let canonical = location
            .canonicalize()
            .map_err(|_| self.unresolved(location))?;
        if self.under_a_root(&canonical) {
            Ok(canonical)
        } else {
            Err(outside())
        }
    }

    fn under_a_root(&self, canonical: &Path) -> bool {
        self.roots.iter().any(|r| canonical.starts_with(r))
    }

    /// The answer for a location under a root as written that does not
    /// resolve: missing, unless the part of it that does resolve leads
    /// outside the roots ([`Self::leads_outside`]). There the answer is
    /// the same as for any path outside, or a symlink inside a root to a
    /// folder outside (`root/link -> /etc`) would tell which paths exist
    /// there.
    fn unresolved(&self, location: &Path) -> VeilError {
        match self.leads_outside(location, MAX_LINK_HOPS) {
            true => outside(),
            false => VeilError::InvalidArgument(
                "the dataset location does not exist or cannot be read".into(),
            ),
        }
    }

    /// Whether a path that does not resolve leads outside the roots: its
    /// deepest part that exists resolves outside, or a dangling symlink on
    /// its way points (through further links, each followed the same way,
    /// at most `hops` of them) somewhere outside. Too many links: outside.
    fn leads_outside(&self, path: &Path, hops: usize) -> bool {
        for part in path.ancestors() {
            if part.as_os_str().is_empty() {
                break;
            }
            if let Ok(canonical) = part.canonicalize() {
                return !self.under_a_root(&canonical);
            }
            if part.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
                if hops == 0 {
                    return true;
                }
                let target = std::fs::read_link(part)
                    .ok()
                    .and_then(|t| Some(part.parent()?.canonicalize().ok()?.join(t)));
                return match target {
                    Some(t) => self.leads_outside(&t, hops - 1),
                    None => true,
                };
            }
        }
        false
    }
}

/// How many symlinks a missing location's answer follows (Linux's own
/// limit is 40).
const MAX_LINK_HOPS: usize = 40;

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
            // Through a symlink to a folder outside (found by a hold-out
            // review), or a dangling one pointing outside: an existing
            // path and a missing one answer alike, as outside the roots.
            std::os::unix::fs::symlink(outside.join("x.csv"), root.join("to-x")).unwrap();
            std::os::unix::fs::symlink(outside.join("gone.csv"), root.join("to-gone")).unwrap();
            std::os::unix::fs::symlink("../secret/gone.csv", root.join("rel-gone")).unwrap();
            let answer = |p: &str| roots.confine(&root.join(p)).unwrap_err().to_string();
            let there = answer("link/x.csv");
            assert!(
                there.contains("outside the configured dataset roots"),
                "{there}"
            );
            for p in [
                "link/missing.csv",
                "link/missing/deeper.csv",
                "link/../missing.csv",
                "to-x",
                "to-gone",
                "rel-gone",
                "to-gone/x.csv",
            ] {
                assert_eq!(answer(p), there, "{p}");
            }
            // Chains of links: to a link to a folder outside, or through
            // a folder link inside the root that leads outside.
            std::os::unix::fs::symlink(root.join("to-gone"), root.join("chain")).unwrap();
            std::os::unix::fs::symlink(root.join("link/gone.csv"), root.join("via-link")).unwrap();
            std::os::unix::fs::symlink("to-x", root.join("chain-x")).unwrap();
            for p in ["chain", "via-link", "chain-x", "chain/deeper.csv"] {
                assert_eq!(answer(p), there, "{p}");
            }
            // Inside the roots, missing is said as missing, dangling links
            // included.
            std::os::unix::fs::symlink(root.join("none.csv"), root.join("in-gone")).unwrap();
            std::os::unix::fs::symlink("in-gone", root.join("in-chain")).unwrap();
            for p in ["missing.csv", "in-gone", "missing/x.csv", "in-chain"] {
                assert!(answer(p).contains("does not exist"), "{p}: {}", answer(p));
            }
        }
    }

    /// Outside the roots, a path that exists and one that doesn't answer
    /// alike (found by an outside review: the answers told them apart for
    /// any path on the server).
    #[test]
    fn outside_the_roots_existence_does_not_show() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("there.csv"), "a\n1\n").unwrap();
        let roots = LocationRoots::new(std::slice::from_ref(&root)).unwrap();
        let answer = |p: PathBuf| roots.confine(&p).unwrap_err().to_string();
        let there = answer(dir.path().join("there.csv"));
        assert_eq!(there, answer(dir.path().join("missing.csv")));
        assert_eq!(there, answer(root.join("../there.csv")));
        assert_eq!(there, answer(root.join("../../../../missing/x.csv")));
        assert!(
            there.contains("outside the configured dataset roots"),
            "{there}"
        );
        // Inside a root, a missing file is said to be missing.
        assert!(
            answer(root.join("missing.csv")).contains("does not exist"),
            "{}",
            answer(root.join("missing.csv"))
        );
        // A root reached through a symlink is still the root.
        #[cfg(unix)]
        {
            std::fs::write(root.join("ok.csv"), "a\n1\n").unwrap();
            let alias = dir.path().join("alias");
            std::os::unix::fs::symlink(&root, &alias).unwrap();
            let through = LocationRoots::new(std::slice::from_ref(&alias)).unwrap();
            assert!(through.confine(&alias.join("ok.csv")).is_ok());
            assert!(through.confine(&root.join("ok.csv")).is_ok());
        }
    }

    #[test]
    fn remote_locations_must_lie_under_a_remote_root() {
        let roots = LocationRoots::new(&[PathBuf::from("s3://data/clinical")]).unwrap();
        assert_eq!(
            roots
                .confine_location("s3://data/clinical/t.parquet")
                .unwrap(),
            "s3://data/clinical/t.parquet"
        );
        assert!(roots.confine_location("s3://data/clinical").is_ok());
        for outside in [
            "s3://data/clinical-secret/t.parquet",
            "s3://data/other",
            "s3://other/clinical/t.parquet",
            "gs://data/clinical/t.parquet",
        ] {
            assert!(
                matches!(
                    roots.confine_location(outside),
                    Err(VeilError::PermissionDenied(_))
                ),
                "{outside}"
            );
        }
        assert!(roots.confine_location("s3://data/clinical/../x").is_err());
        assert!(roots.confine_location("/etc/passwd").is_err());
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
