//! Reading a zonesync configuration file and the zone's indicator catalog,
//! the same way in every binary.
//!
//! A file is TOML, and every key can be overridden by a `ZONESYNC_…`
//! environment variable (nesting with `__`, e.g. `ZONESYNC_MQTT__HOST`), so
//! secrets and per-host settings stay out of the file. What the keys mean is
//! each component's typed struct (unknown keys refused there); parsing the
//! catalog is `zonesync_proto::Catalog`'s, this module only reads its file.

use std::path::Path;
use zonesync_proto::{Catalog, CatalogError};

/// Why a configuration file or the catalog was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration {path}: {source}")]
    Load {
        path: String,
        source: Box<config::ConfigError>,
    },
    #[error("reading indicator catalog {path}: {source}")]
    CatalogFile { path: String, source: std::io::Error },
    #[error("indicator catalog {path}: {source}")]
    Catalog { path: String, source: CatalogError },
}

/// Loads a TOML configuration file into `T`, then applies `ZONESYNC_…`
/// environment overrides (nesting with `__`).
pub fn load_with_env<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("ZONESYNC")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|source| ConfigError::Load {
            path: path.display().to_string(),
            source: Box::new(source),
        })
}

/// The compiled-in indicator catalog, or the zone's own file when one is configured.
pub fn load_catalog(path: Option<&Path>) -> Result<Catalog, ConfigError> {
    let Some(path) = path else {
        return Catalog::builtin().map_err(|source| ConfigError::Catalog {
            path: "(built in)".into(),
            source,
        });
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::CatalogFile {
        path: path.display().to_string(),
        source,
    })?;
    Catalog::from_toml(&text).map_err(|source| ConfigError::Catalog {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_override_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_catalog(None).unwrap().get("electricity").is_some());
        let p = dir.path().join("catalog.toml");
        std::fs::write(
            &p,
            zonesync_proto::catalog::BUILTIN_CATALOG.replace("0.0001229", "0.0003"),
        )
        .unwrap();
        assert_eq!(load_catalog(Some(&p)).unwrap().tce("electricity", 1.0), Some(0.0003));
        std::fs::write(&p, "[[indicator]]\ncode = 1\n").unwrap();
        assert!(matches!(load_catalog(Some(&p)), Err(ConfigError::Catalog { .. })));
        assert!(matches!(
            load_catalog(Some(&dir.path().join("missing.toml"))),
            Err(ConfigError::CatalogFile { .. })
        ));
    }

    #[test]
    fn an_unreadable_file_names_its_path() {
        #[derive(Debug, serde::Deserialize)]
        struct Empty {}
        let e = load_with_env::<Empty>(Path::new("/nonexistent/zonesync.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/zonesync.toml"), "{e}");
    }
}
