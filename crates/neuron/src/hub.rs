//! Hugging Face hub downloads for `hf:org/repo/file.gguf` sources.
//!
//! Files land in a cache laid out like the hub's own
//! (`models--org--repo/snapshots/REVISION/FILE`), which is treated as one
//! more models directory. The download itself is done by `curl` (proxies,
//! retries, resume and TLS come with it, and the daemon carries no TLS
//! stack); `HF_ENDPOINT` and `HF_TOKEN` are honoured as the hub's own tools
//! do. Machines without network keep working from files already on disk.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub source {0:?} is not valid: {1}")]
    Invalid(String, &'static str),
    #[error("cannot run curl to download from the hub: {0}")]
    NoCurl(#[source] std::io::Error),
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    #[error("hub cache {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the hub cache lives: the configured directory, else
/// `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir(configured: Option<&str>) -> PathBuf {
    if let Some(c) = configured {
        return PathBuf::from(c);
    }
    if let Ok(h) = std::env::var("HF_HOME") {
        return PathBuf::from(h).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/var/lib/cortex".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

fn safe_part(p: &str) -> bool {
    !p.is_empty()
        && p != "."
        && p != ".."
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The cache path of a hub file. Every part must be a plain name.
pub fn cache_path(
    cache: &Path,
    repo: &str,
    file: &str,
    revision: &str,
) -> Result<PathBuf, HubError> {
    let src = format!("hf:{repo}/{file}@{revision}");
    let (org, name) = repo
        .split_once('/')
        .ok_or(HubError::Invalid(src.clone(), "expected ORG/REPO"))?;
    if !safe_part(org) || !safe_part(name) || !safe_part(revision) {
        return Err(HubError::Invalid(
            src,
            "names may use letters, digits, '.', '_' and '-'",
        ));
    }
    let mut path = cache
        .join(format!("models--{org}--{name}"))
        .join("snapshots")
        .join(revision);
    for part in file.split('/') {
        if !safe_part(part) {
            return Err(HubError::Invalid(
                src,
                "file path parts may use letters, digits, '.', '_' and '-'",
            ));
        }
        path.push(part);
    }
    Ok(path)
}

/// Return the cached file, downloading it first when it is missing.
/// Blocking: call it from `spawn_blocking`.
pub fn fetch(
    cache: &Path,
    repo: &str,
    file: &str,
    revision: Option<&str>,
) -> Result<PathBuf, HubError> {
    let revision = revision.unwrap_or("main");
    let target = cache_path(cache, repo, file, revision)?;
    if target.is_file() {
        return Ok(target);
    }
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| HubError::Io { path, source }
    };
    let parent = target.parent().unwrap_or(cache);
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let url = format!(
        "{}/{repo}/resolve/{revision}/{file}",
        endpoint.trim_end_matches('/')
    );
    let part = target.with_extension("part");
    tracing::info!(%url, path = %target.display(), "downloading model from the hub");
    let mut cmd = Command::new("curl");
    cmd.args([
        "--fail",
        "--location",
        "--silent",
        "--show-error",
        "--retry",
        "3",
        "--continue-at",
        "-",
    ])
    .arg("--output")
    .arg(&part)
    .arg(&url);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        cmd.arg("--header")
            .arg(format!("Authorization: Bearer {token}"));
    }
    let out = cmd.output().map_err(HubError::NoCurl)?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&part);
        return Err(HubError::Download {
            url,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    std::fs::rename(&part, &target).map_err(io(&target))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_layout_and_refusals() {
        let c = Path::new("/cache");
        assert_eq!(
            cache_path(c, "HuggingFaceTB/SmolLM2-GGUF", "q/m.gguf", "main").unwrap(),
            PathBuf::from("/cache/models--HuggingFaceTB--SmolLM2-GGUF/snapshots/main/q/m.gguf")
        );
        assert!(cache_path(c, "a", "m.gguf", "main").is_err());
        assert!(cache_path(c, "a/b", "../m.gguf", "main").is_err());
        assert!(cache_path(c, "a/b", "m.gguf", "..").is_err());
        assert!(cache_path(c, "a/..", "m.gguf", "main").is_err());
    }

    #[test]
    fn cached_file_needs_no_network_and_failed_download_is_clean() {
        let t = tempfile::tempdir().unwrap();
        let p = cache_path(t.path(), "o/r", "m.gguf", "main").unwrap();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"gguf").unwrap();
        assert_eq!(fetch(t.path(), "o/r", "m.gguf", None).unwrap(), p);

        // Nothing listens on port 9 of loopback: the download fails with a
        // clear error and leaves no partial file behind.
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
        let e = fetch(t.path(), "o/r", "other.gguf", None).unwrap_err();
        std::env::remove_var("HF_ENDPOINT");
        match e {
            HubError::Download { url, .. } => {
                assert!(url.ends_with("/o/r/resolve/main/other.gguf"))
            }
            HubError::NoCurl(_) => {} // no curl on this machine: also a clean error
            other => panic!("unexpected {other:?}"),
        }
        assert!(!p.with_file_name("other.part").exists());
    }
}
