//! Who may do what: bearer tokens with roles, from an access file.

use std::path::Path;

use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use crate::error::{ApiError, Error};

/// A role a token (or anonymous access) has; each includes the ones before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Agents, health.
    Read,
    /// Queries and feedback, and what `read` may.
    Operator,
    /// Everything.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

/// Who may do what: bearer tokens with roles.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Each token's blake3 digest, its name (for logs) and role.
    tokens: Vec<(blake3::Hash, String, Role)>,
    /// The role of a request without a token (`None`: refused).
    anonymous: Option<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    anonymous: Option<Role>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    token: String,
    role: Role,
}

/// Largest access file read.
const MAX_ACCESS_FILE: u64 = 1 << 20;
/// Shortest token accepted.
const MIN_TOKEN_CHARS: usize = 16;

impl Access {
    /// Everyone may do everything: for a loopback service without an access
    /// file.
    pub fn open() -> Access {
        Access { tokens: Vec::new(), anonymous: Some(Role::Admin) }
    }

    /// Reads an access file: JSON `{"tokens": [{"name", "token", "role"}],
    /// "anonymous": role?}`. It must be a regular file readable by its
    /// owner only (0600), as it holds secrets; each token at least 16
    /// characters, names and tokens unique.
    pub fn from_file(path: &Path) -> Result<Access, Error> {
        let fail = |detail: String| Error::Access { path: path.display().to_string(), detail };
        let meta = std::fs::symlink_metadata(path).map_err(|e| fail(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(fail(String::from("not a regular file")));
        }
        if meta.len() > MAX_ACCESS_FILE {
            return Err(fail(format!("{} bytes; at most {MAX_ACCESS_FILE}", meta.len())));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!("permissions {mode:o}: others can read its tokens; chmod 600 it")));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let file: AccessFile = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let mut tokens = Vec::new();
        for t in file.tokens {
            if t.token.chars().count() < MIN_TOKEN_CHARS {
                return Err(fail(format!("token {:?} is shorter than {MIN_TOKEN_CHARS} characters", t.name)));
            }
            let digest = blake3::hash(t.token.as_bytes());
            if tokens.iter().any(|(d, n, _)| *d == digest || *n == t.name) {
                return Err(fail(format!("token {:?}: its name or token is used twice", t.name)));
            }
            tokens.push((digest, t.name, t.role));
        }
        Ok(Access { tokens, anonymous: file.anonymous })
    }

    /// The role of a request with these headers, or why it has none.
    pub(crate) fn role(&self, headers: &HeaderMap) -> Result<(Role, String), ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return self.anonymous.map(|r| (r, String::from("anonymous"))).ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a bearer token is needed")
            });
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization must be `Bearer <token>`")
        })?;
        // blake3::Hash compares in constant time.
        let digest = blake3::hash(token.trim().as_bytes());
        self.tokens
            .iter()
            .find(|(d, _, _)| *d == digest)
            .map(|(_, name, role)| (*role, name.clone()))
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token"))
    }

    /// Who a request is for rate limiting: its token's name when it has a
    /// valid one, else `None` (the caller uses the address).
    pub(crate) fn client(&self, headers: &HeaderMap) -> Option<String> {
        headers
            .contains_key(header::AUTHORIZATION)
            .then(|| self.role(headers).ok().map(|(_, who)| who))
            .flatten()
    }

    pub(crate) fn require(&self, headers: &HeaderMap, needed: Role) -> Result<String, ApiError> {
        let (role, who) = self.role(headers)?;
        if role < needed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this needs the {needed} role; {who} has {role}"),
            ));
        }
        Ok(who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn access_files_must_be_private_well_formed_and_tokens_strong() {
        let dir = std::env::temp_dir().join(format!("elex-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("access.json");
        let write = |text: &str, mode: u32| {
            std::fs::write(&file, text).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        };
        let good = r#"{"tokens": [{"name": "ops", "token": "0123456789abcdef-ops", "role": "operator"}], "anonymous": "read"}"#;
        write(good, 0o600);
        let access = Access::from_file(&file).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(access.role(&headers).unwrap().0, Role::Read);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer 0123456789abcdef-ops"));
        assert_eq!(access.role(&headers).unwrap(), (Role::Operator, String::from("ops")));
        assert!(access.require(&headers, Role::Admin).is_err());
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong-token-0123456789"));
        assert!(access.role(&headers).is_err());
        #[cfg(unix)]
        {
            write(good, 0o644);
            assert!(Access::from_file(&file).unwrap_err().to_string().contains("chmod 600"));
        }
        write(r#"{"tokens": [{"name": "a", "token": "short", "role": "read"}]}"#, 0o600);
        assert!(Access::from_file(&file).unwrap_err().to_string().contains("shorter"));
        write(r#"{"tokens": [], "extra": 1}"#, 0o600);
        assert!(Access::from_file(&file).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
