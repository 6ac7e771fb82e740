//! Model files: which ones a neuron may load, and finding them.
//!
//! A neuron loads only files under its models directories (and its hub
//! cache). A requested `source` is a relative path; `..`, absolute paths and
//! symlinks that lead outside a models directory are refused. This module
//! owns that rule and the scan behind `/status`'s `available` list.
//!
//! A model is a `.gguf` file (chat) or a model directory holding
//! `config.json`, `model.safetensors` and `tokenizer.json` (an embedding
//! model, see `engine::embed`), named by its path like a file.

use std::path::{Component, Path, PathBuf};

use cortex_core::model_id::model_id_from_file_name;

/// Why a source was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("model source {0:?} is not allowed: {1}")]
    Refused(String, &'static str),
    #[error("model file {0:?} was not found in the models directories")]
    NotFound(String),
}

/// Resolve `source` (relative to a models dir) to a file inside one of
/// `dirs`. The file's real path, after following symlinks, must lie inside
/// the real path of the directory it was found in.
pub fn resolve(dirs: &[PathBuf], source: &str) -> Result<PathBuf, PathError> {
    let refused = |why| PathError::Refused(source.to_string(), why);
    if source.is_empty() || source.contains('\0') {
        return Err(refused("empty or invalid path"));
    }
    let rel = Path::new(source);
    if rel.is_absolute() || source.starts_with('\\') {
        return Err(refused(
            "absolute paths are not allowed; name a file inside a models directory",
        ));
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(refused("'..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused("absolute paths are not allowed"))
            }
        }
    }
    for dir in dirs {
        let Ok(root) = dir.canonicalize() else {
            continue;
        };
        let candidate = root.join(rel);
        if !candidate.exists() {
            continue;
        }
        let real = candidate
            .canonicalize()
            .map_err(|_| PathError::NotFound(source.to_string()))?;
        if !real.starts_with(&root) {
            return Err(refused("it leads outside the models directory (symlink)"));
        }
        if !real.is_file() && !model_dir_inside(&real, &root) {
            return Err(refused(
                "not a regular file, nor a model directory (config.json, model.safetensors, tokenizer.json)",
            ));
        }
        return Ok(real);
    }
    Err(PathError::NotFound(source.to_string()))
}

/// Whether `dir` is a model directory whose files (after symlinks) all lie
/// inside `root`.
fn model_dir_inside(dir: &Path, root: &Path) -> bool {
    use crate::engine::embed::{is_model_dir, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
    is_model_dir(dir)
        && [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE].iter().all(|f| {
            dir.join(f)
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root))
        })
}

/// A `.gguf` file or a model directory found in a models directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModel {
    /// The id derived from its file name.
    pub id: String,
    /// Path relative to its models dir (what `source` names).
    pub source: String,
    pub path: PathBuf,
    pub size: u64,
}

/// All `.gguf` files and model directories in `dirs` (two levels deep),
/// first directory first; a model whose id was already seen is skipped.
/// Symlinks leading out of the directory are skipped too.
pub fn scan(dirs: &[PathBuf]) -> Vec<FoundModel> {
    let mut out: Vec<FoundModel> = Vec::new();
    for dir in dirs {
        let Ok(root) = dir.canonicalize() else {
            continue;
        };
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for p in entries {
                let Ok(real) = p.canonicalize() else { continue };
                if !real.starts_with(&root) {
                    continue;
                }
                let model_dir = real.is_dir() && model_dir_inside(&real, &root);
                if real.is_dir() && !model_dir {
                    if depth < 1 {
                        stack.push((p, depth + 1));
                    }
                    continue;
                }
                let is_gguf = p
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
                if !is_gguf && !model_dir {
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&root) else {
                    continue;
                };
                let source = rel.to_string_lossy().replace('\\', "/");
                let id = model_id_from_file_name(&source.replace('/', "-"));
                if out.iter().any(|m| m.id == id) {
                    continue;
                }
                let size = if model_dir {
                    real.join(crate::engine::embed::WEIGHTS_FILE)
                        .metadata()
                        .map_or(0, |m| m.len())
                } else {
                    real.metadata().map_or(0, |m| m.len())
                };
                out.push(FoundModel {
                    id,
                    source,
                    path: real,
                    size,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let models = t.path().join("models");
        std::fs::create_dir_all(models.join("sub")).unwrap();
        std::fs::write(models.join("a.gguf"), b"x").unwrap();
        std::fs::write(models.join("sub/B.Q4.gguf"), b"yy").unwrap();
        std::fs::write(models.join("notes.txt"), b"z").unwrap();
        std::fs::write(t.path().join("secret.gguf"), b"s").unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(t.path().join("secret.gguf"), models.join("escape.gguf"))
                .unwrap();
            std::os::unix::fs::symlink(models.join("a.gguf"), models.join("inside.gguf")).unwrap();
        }
        (t, models)
    }

    #[test]
    fn resolves_inside_and_refuses_tricks() {
        let (t, models) = setup();
        let dirs = vec![models.clone()];
        assert!(resolve(&dirs, "a.gguf").is_ok());
        assert!(resolve(&dirs, "./sub/B.Q4.gguf").is_ok());
        assert!(resolve(&dirs, "inside.gguf").is_ok());
        for bad in [
            "../secret.gguf",
            "sub/../../secret.gguf",
            "escape.gguf",
            "",
            "sub",
        ] {
            assert!(
                matches!(resolve(&dirs, bad), Err(PathError::Refused(..))),
                "{bad}"
            );
        }
        let abs = t.path().join("secret.gguf");
        assert!(matches!(
            resolve(&dirs, abs.to_str().unwrap()),
            Err(PathError::Refused(..))
        ));
        assert!(matches!(
            resolve(&dirs, "nope.gguf"),
            Err(PathError::NotFound(_))
        ));
    }

    #[test]
    fn scan_lists_gguf_inside_only() {
        let (_t, models) = setup();
        let found = scan(&[models]);
        let ids: Vec<_> = found.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "inside", "sub-b-q4"]);
        assert_eq!(found[2].source, "sub/B.Q4.gguf");
        assert_eq!(found[2].size, 2);
    }

    fn model_dir(at: &Path) {
        std::fs::create_dir_all(at).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(at.join(f), b"{}").unwrap();
        }
    }

    #[test]
    fn model_directories_are_models() {
        let (t, models) = setup();
        model_dir(&models.join("MiniLM-L6"));
        model_dir(&models.join("sub/e5.small"));
        // Half a model directory is a directory, not a model.
        std::fs::create_dir_all(models.join("half")).unwrap();
        std::fs::write(models.join("half/config.json"), b"{}").unwrap();
        // Weights that lead outside the models directory.
        model_dir(&models.join("leaky"));
        std::fs::remove_file(models.join("leaky/model.safetensors")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            t.path().join("secret.gguf"),
            models.join("leaky/model.safetensors"),
        )
        .unwrap();
        let dirs = vec![models.clone()];
        let found = scan(&dirs);
        let ids: Vec<_> = found.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["minilm-l6", "a", "inside", "sub-b-q4", "sub-e5-small"]
        );
        assert_eq!(found[0].source, "MiniLM-L6");
        assert_eq!(found[0].size, 2);
        assert!(resolve(&dirs, "MiniLM-L6").is_ok());
        assert!(resolve(&dirs, "sub/e5.small/").is_ok());
        for bad in ["half", "leaky", "sub"] {
            assert!(
                matches!(resolve(&dirs, bad), Err(PathError::Refused(..))),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_escapes(s in "[a-z./\\\\]{0,20}") {
            let (_t, models) = setup();
            let root = models.canonicalize().unwrap();
            if let Ok(p) = resolve(&[models], &s) {
                prop_assert!(p.starts_with(&root));
            }
        }
    }
}
