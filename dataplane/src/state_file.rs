//! The last applied snapshot on disk, so a restarted dataplane serves at once even while the
//! controlplane is unreachable. Written atomically (temporary file, fsync, rename, fsync of the
//! directory): a crash leaves either the old file or the new one, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ringway_shared::wire::{self, Message};
use ringway_shared::{Snapshot, WireError};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("state file {path} is unreadable ({source}); it will be replaced by the next snapshot")]
    Corrupt { path: PathBuf, source: WireError },
    #[error("state file {path} holds a {kind} message, not a snapshot")]
    NotASnapshot { path: PathBuf, kind: &'static str },
}

/// Reads the saved snapshot; `Ok(None)` if there is none yet.
pub fn load(path: &Path) -> Result<Option<Snapshot>, StateFileError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.into(),
                source,
            });
        }
    };
    match wire::decode_frame(&bytes) {
        Ok(Message::Snapshot(snapshot)) => Ok(Some(*snapshot)),
        Ok(other) => Err(StateFileError::NotASnapshot {
            path: path.into(),
            kind: other.kind(),
        }),
        Err(source) => Err(StateFileError::Corrupt {
            path: path.into(),
            source,
        }),
    }
}

/// Replaces the saved snapshot atomically.
pub fn store(path: &Path, snapshot: &Snapshot) -> Result<(), StateFileError> {
    let io_err = |source| StateFileError::Io {
        path: path.into(),
        source,
    };
    let frame = wire::encode_frame(&Message::Snapshot(Box::new(snapshot.clone())))
        .map_err(|e| io_err(io::Error::other(e.to_string())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(&frame)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state");
        assert!(load(&path).unwrap().is_none());
        let snapshot = Snapshot::new(5, Vec::new(), Vec::new()).unwrap();
        store(&path, &snapshot).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), snapshot);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_damaged_file_is_reported_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        fs::write(&path, b"\x00\x00\x00\x05garbage").unwrap();
        assert!(matches!(load(&path), Err(StateFileError::Corrupt { .. })));
    }
}
