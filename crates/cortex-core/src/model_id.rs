//! Model names are identifiers, never paths or URLs.
//!
//! Clients name models; the name is looked up in a table and never used to
//! build a file path or a URL. This module owns the rule for what a model
//! name may look like, and how an id is derived from a file name.

/// Longest accepted model name.
pub const MAX_MODEL_ID_LEN: usize = 128;

/// Is `name` an acceptable model identifier?
///
/// Letters, digits and `. _ - :` only, starting with a letter or digit, at
/// most [`MAX_MODEL_ID_LEN`] bytes, and no `..`. This rejects `../x`, `/etc`,
/// `http://host`, `a/b` and anything with spaces or control characters.
pub fn is_valid_model_id(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_ID_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
        && !name.contains("..")
}

/// The id a model file is served under when no profile names it:
/// the file name without `.gguf`, lower-cased, with every character other
/// than `a-z 0-9 _ -` turned into `-`.
/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct-q4_1`.
pub fn model_id_from_file_name(file_name: &str) -> String {
    let stem = file_name
        .rsplit('/')
        .next()
        .unwrap_or(file_name)
        .trim_end_matches(".gguf")
        .trim_end_matches(".GGUF");
    let id: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = id
        .trim_start_matches(['-', '_'])
        .trim_end_matches('-')
        .to_string();
    if id.is_empty() {
        "model".to_string()
    } else {
        id.chars().take(MAX_MODEL_ID_LEN).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_identifiers() {
        for ok in [
            "smollm2",
            "smollm2-135m-instruct-q4_1",
            "llama3.1:8b",
            "Qwen2.5-7B",
        ] {
            assert!(is_valid_model_id(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_paths_and_urls() {
        for bad in [
            "",
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            "http://evil",
            "..",
            "a..b",
            "-x",
            ".hidden",
            "with space",
            "nul\0",
            "x%2Fy",
            "C:\\x",
        ] {
            assert!(!is_valid_model_id(bad), "{bad:?}");
        }
        assert!(!is_valid_model_id(&"a".repeat(MAX_MODEL_ID_LEN + 1)));
    }

    #[test]
    fn id_from_file_name() {
        assert_eq!(
            model_id_from_file_name("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "smollm2-135m-instruct-q4_1"
        );
        assert_eq!(model_id_from_file_name("sub/dir/My Model.gguf"), "my-model");
    }

    proptest! {
        #[test]
        fn derived_ids_are_valid(name in "\\PC{1,200}") {
            let id = model_id_from_file_name(&name);
            prop_assert!(is_valid_model_id(&id), "{name:?} -> {id:?}");
        }
    }
}
