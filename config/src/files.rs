//! Reading manifest files from disk: the one piece of I/O in this crate, a thin layer in front of
//! [`crate::manifest`], kept here so the controller and the speaker read files alike.

use crate::manifest::Manifests;
use crate::ConfigError;
use std::path::{Path, PathBuf};

/// File name endings read from a directory, as `kubectl apply -f DIR` does.
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// The manifest files named by `path`: the file itself, or the manifest files of a directory
/// (with `recursive`, of its subdirectories too), in name order.
pub fn manifest_files(path: &Path, recursive: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let unreadable = |e: std::io::Error| {
        ConfigError::new(path.display().to_string(), "", format!("cannot read: {e}"))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(unreadable)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                files.extend(manifest_files(&entry, true)?);
            }
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Reads every manifest under `paths`; problems reading or parsing are returned, not fatal.
pub fn read_manifests(paths: &[PathBuf], recursive: bool) -> (Manifests, Vec<ConfigError>) {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    for path in paths {
        let files = match manifest_files(path, recursive) {
            Ok(files) => files,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            match std::fs::read(&file) {
                Ok(bytes) => errors.extend(manifests.add_bytes(&bytes, &name)),
                Err(e) => errors.push(ConfigError::new(name, "", format!("cannot read: {e}"))),
            }
        }
    }
    (manifests, errors)
}

/// Reads every manifest under `paths` and builds the configuration from them; `Err` carries
/// every problem (reading, parsing or validating), printed as `validate` prints them.
pub fn load_config(
    paths: &[PathBuf],
    recursive: bool,
) -> Result<(Manifests, crate::Config), Vec<ConfigError>> {
    let (manifests, mut errors) = read_manifests(paths, recursive);
    match crate::build(&manifests.resources) {
        Ok(config) if errors.is_empty() => Ok((manifests, config)),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Reads every manifest under `paths` into a MetalLB-to-FerroLB [`Migration`] into
/// `namespace`; the migrated objects, or every problem.
pub fn migrate_files(
    paths: &[PathBuf],
    recursive: bool,
    namespace: &str,
) -> Result<crate::migrate::Migrated, Vec<ConfigError>> {
    let mut migration = crate::migrate::Migration::new(namespace);
    let mut errors = Vec::new();
    for path in paths {
        match manifest_files(path, recursive) {
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    match std::fs::read_to_string(&file) {
                        Ok(text) => migration.add_yaml(&text, &name),
                        Err(e) => {
                            errors.push(ConfigError::new(name, "", format!("cannot read: {e}")))
                        }
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    match migration.finish() {
        Ok(m) if errors.is_empty() => Ok(m),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}
