//! policy.yaml: loading and validating pgward's one configuration file.
//!
//! Every error names the file, the YAML path of the offending node
//! (`protected[1].allow.worker[0]`) and, when it can be found, its line and
//! column — whether serde rejected it while reading or [`access::validate`]
//! found it afterwards.

pub mod access;
pub mod locate;
pub mod server;
pub mod tenant;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use access::{
    ActionName, CertificateIdentity, ClassConfig, FunctionsConfig, IdentitiesConfig, Mode,
    ProtectedRule, UpstreamLogin,
};
pub use locate::{Seg, Target, YamlPath};
pub use server::{Limits, ServerConfig, TlsFiles, UpstreamTls};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Global default: `enforce` or `monitor`.
    #[serde(default)]
    pub mode: Mode,
    /// Identity classes and who belongs to them.
    #[serde(default)]
    pub identities: IdentitiesConfig,
    /// Protected schemas and tables, and what each class may do to them.
    #[serde(default)]
    pub protected: Vec<ProtectedRule>,
    /// Per class: the approved function surface in protected schemas.
    #[serde(default, deserialize_with = "access::unique_map")]
    pub functions: BTreeMap<String, FunctionsConfig>,
    /// The run-time setting that carries the tenant.
    #[serde(default)]
    pub tenant: tenant::TenantSettings,
    /// The audit stream: sinks, queue, durability.
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
}

/// A configuration file that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A problem without a position in the file.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A problem at a node of the file: `policy.yaml: protected[0].allow.wrker:
    /// unknown identity class "wrker" (line 42, column 7)`.
    #[error("{path}: {}", describe(yaml_path, message, *line, *column))]
    At {
        path: PathBuf,
        /// Where in the document (empty path: the document as a whole).
        yaml_path: YamlPath,
        message: String,
        /// 1-based, when known.
        line: Option<usize>,
        column: Option<usize>,
    },
}

fn describe(
    yaml_path: &YamlPath,
    message: &str,
    line: Option<usize>,
    column: Option<usize>,
) -> String {
    let mut s = String::new();
    if !yaml_path.is_root() {
        let _ = write!(s, "{yaml_path}: ");
    }
    s.push_str(message);
    match (line, column) {
        (Some(l), Some(c)) => {
            let _ = write!(s, " (line {l}, column {c})");
        }
        (Some(l), None) => {
            let _ = write!(s, " (line {l})");
        }
        _ => {}
    }
    s
}

impl ConfigError {
    /// The 1-based line of the problem, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::At { line, .. } => *line,
            _ => None,
        }
    }
    /// The YAML path of the problem, when it has one.
    pub fn yaml_path(&self) -> Option<&YamlPath> {
        match self {
            ConfigError::At { yaml_path, .. } => Some(yaml_path),
            _ => None,
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_str(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in error messages.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let de = serde_norway::Deserializer::from_str(text);
        let config: Config = match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => return Err(deserialize_error(path, e)),
        };
        let checked = tenant::validate_settings(&config.tenant).and_then(|()| {
            access::validate(&config.identities, &config.protected, &config.functions)
        });
        if let Err(p) = checked {
            let (line, column) = match locate::locate(text, &p.path, p.target) {
                Some((l, c)) => (Some(l), Some(c)),
                None => (None, None),
            };
            return Err(ConfigError::At {
                path: path.to_path_buf(),
                yaml_path: p.path,
                message: p.message,
                line,
                column,
            });
        }
        Ok(config)
    }
}

/// Turns a serde_norway error (with serde_path_to_error's path) into
/// [`ConfigError::At`], stripping the position and path serde_norway already
/// wrote into its message so they are not printed twice.
fn deserialize_error(
    path: &Path,
    e: serde_path_to_error::Error<serde_norway::Error>,
) -> ConfigError {
    let mut yaml_path = YamlPath(
        e.path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect(),
    );
    let inner = e.into_inner();
    let location = inner.location();
    let mut message = inner.to_string();
    if let Some(loc) = &location {
        for suffix in [
            format!(" at line {} column {}", loc.line(), loc.column()),
            format!(" at position {}", loc.index()),
        ] {
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
                break;
            }
        }
    }
    // serde_norway prefixes its own path ("protected[0].allow: ..."); serde's
    // messages themselves ("unknown field `x`", "invalid type: ...") always
    // have a space before their first colon, a path never does.
    if let Some((head, tail)) = message.split_once(": ")
        && !head.is_empty()
        && !head.contains(' ')
        && !head.contains('`')
    {
        message = tail.to_owned();
    }
    // Unknown keys: point the path at the key itself.
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
        && yaml_path.0.last() != Some(&Seg::Key(field.to_owned()))
    {
        yaml_path.0.push(Seg::Key(field.to_owned()));
    }
    let (line, column) = match location {
        Some(l) => (Some(l.line()), Some(l.column())),
        None => (None, None),
    };
    // Syntax errors carry no path but do carry a position.
    ConfigError::At {
        path: path.to_path_buf(),
        yaml_path,
        message,
        line,
        column,
    }
}

#[cfg(test)]
mod tests;
