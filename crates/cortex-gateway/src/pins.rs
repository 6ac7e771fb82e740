//! Runtime pins that survive a restart. `cortex pin|unpin` decisions live
//! in a small JSON state file (`gateway.state_file`, next to `cortex.toml`
//! by default): read once at start-up — a file that cannot be read or
//! parsed stops the start with its path named, never silently dropped —
//! and rewritten whole on every change, atomically (a temporary file in the
//! same directory, synced, then renamed over the old one), so a crash
//! leaves either the old file or the new one.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinFile {
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PinFileError {
    #[error("cannot read the state file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is corrupt (fix or remove it; it holds the runtime pins)")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the state file {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The file's shape: `{"pins": {"model-id": true, "other": false}}`
/// (`false` is a runtime unpin of a model `models.toml` pins).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    pins: BTreeMap<String, bool>,
}

impl PinFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The pins kept, or none when the file does not exist yet.
    pub fn load(&self) -> Result<HashMap<String, bool>, PinFileError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(source) => {
                return Err(PinFileError::Read {
                    path: self.name(),
                    source,
                })
            }
        };
        let disk: OnDisk =
            serde_json::from_slice(&bytes).map_err(|source| PinFileError::Corrupt {
                path: self.name(),
                source,
            })?;
        Ok(disk.pins.into_iter().collect())
    }

    /// Replace the file with `pins`, atomically.
    pub fn save(&self, pins: &HashMap<String, bool>) -> Result<(), PinFileError> {
        let disk = OnDisk {
            pins: pins.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        };
        let write_err = |source| PinFileError::Write {
            path: self.name(),
            source,
        };
        let mut text =
            serde_json::to_vec_pretty(&disk).map_err(|e| write_err(std::io::Error::other(e)))?;
        text.push(b'\n');
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".cortex-state")
            .tempfile_in(dir)
            .map_err(write_err)?;
        tmp.write_all(&text).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&self.path).map_err(|e| write_err(e.error))?;
        // The rename itself is durable once the directory is synced; not
        // every file system lets a directory be opened for that.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_missing_file_is_no_pins_and_a_saved_one_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let f = PinFile::new(t.path().join("cortex-state.json"));
        assert!(f.load().unwrap().is_empty());
        let pins = HashMap::from([("a".to_string(), true), ("b".to_string(), false)]);
        f.save(&pins).unwrap();
        assert_eq!(f.load().unwrap(), pins);
        // Saving again replaces the file, and leaves no temporary behind.
        f.save(&HashMap::from([("a".to_string(), false)])).unwrap();
        assert_eq!(f.load().unwrap(), HashMap::from([("a".to_string(), false)]));
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("cortex-state.json");
        for bad in ["{", "[]", "{\"pins\": {\"a\": 1}}", "{\"pinz\": {}}", ""] {
            std::fs::write(&p, bad).unwrap();
            let e = PinFile::new(&p).load().unwrap_err();
            assert!(matches!(e, PinFileError::Corrupt { .. }), "{bad}: {e:?}");
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
    }

    #[test]
    fn an_unwritable_directory_is_a_write_error() {
        let f = PinFile::new("/proc/cortex-no-such-dir/cortex-state.json");
        let e = f.save(&HashMap::new()).unwrap_err();
        assert!(matches!(e, PinFileError::Write { .. }), "{e:?}");
    }

    proptest! {
        /// Whatever bytes the file holds, loading answers (pins or an
        /// error), never panics.
        #[test]
        fn loading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().join("s.json");
            std::fs::write(&p, &bytes).unwrap();
            let _ = PinFile::new(&p).load();
        }

        #[test]
        fn pins_round_trip(pins in proptest::collection::hash_map("[a-z0-9._:-]{1,20}", any::<bool>(), 0..8)) {
            let t = tempfile::tempdir().unwrap();
            let f = PinFile::new(t.path().join("s.json"));
            f.save(&pins).unwrap();
            prop_assert_eq!(f.load().unwrap(), pins);
        }
    }
}
