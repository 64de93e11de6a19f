//! Optional token authentication.
//!
//! The tokens file has one token per line: `TOKEN ACCESS NAMESPACES`, where
//! `ACCESS` is `rw` or `ro` and `NAMESPACES` is `*` or a comma-separated list.
//! Blank lines and lines starting with `#` are ignored.
//!
//! ```text
//! # token            access  namespaces
//! ci-writer-4f9a2    rw      *
//! laptop-reader      ro      default,android
//! ```
//!
//! Clients send `Authorization: Bearer TOKEN`, or Basic credentials whose
//! password (or, with an empty password, user name) is the token, encoded with
//! base64 or base64url (Bazel encodes `user:pass@` URLs with base64url).

use std::collections::{BTreeSet, HashMap};

use base64::Engine;

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Whether it may write.
    pub write: bool,
    /// Namespaces it may use; `None` means all.
    pub namespaces: Option<BTreeSet<String>>,
    /// A short, non-secret label for metrics (`token-<line>`).
    pub label: String,
}

/// The loaded tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    grants: HashMap<String, Grant>,
}

/// Why an access was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No or unknown credentials (401).
    Unauthenticated,
    /// Known token without the needed right (403).
    Forbidden,
}

/// A problem in the tokens file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tokens file line {line}: {message}")]
pub struct TokensError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Tokens {
    /// Parses a tokens file.
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut grants = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = l.split_whitespace().collect();
            let err = |message: String| TokensError { line, message };
            let [token, access, namespaces] = fields.as_slice() else {
                return Err(err(format!(
                    "expected `TOKEN ACCESS NAMESPACES`, found {} fields",
                    fields.len()
                )));
            };
            let write = match *access {
                "rw" => true,
                "ro" => false,
                other => return Err(err(format!("access must be rw or ro, found {other:?}"))),
            };
            let namespaces = if *namespaces == "*" {
                None
            } else {
                let set: BTreeSet<String> = namespaces
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if set.is_empty() {
                    return Err(err("no namespaces listed".into()));
                }
                Some(set)
            };
            let grant = Grant {
                write,
                namespaces,
                label: format!("token-{line}"),
            };
            if grants.insert((*token).to_owned(), grant).is_some() {
                return Err(err("duplicate token".into()));
            }
        }
        if grants.is_empty() {
            return Err(TokensError {
                line: 0,
                message: "no tokens defined (remove the setting to disable authentication)".into(),
            });
        }
        Ok(Self { grants })
    }

    /// Extracts the token from an `Authorization` header value.
    pub fn token_from_header(value: &str) -> Option<String> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.to_owned());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ]
            .iter()
            .find_map(|e| e.decode(rest).ok())?;
            let text = String::from_utf8(decoded).ok()?;
            let (user, pass) = text.split_once(':').unwrap_or((text.as_str(), ""));
            return Some(if pass.is_empty() { user } else { pass }.to_owned());
        }
        None
    }

    /// Checks an `Authorization` header for `namespace` and write access.
    pub fn check(
        &self,
        authorization: Option<&str>,
        namespace: &str,
        write: bool,
    ) -> Result<&Grant, Denied> {
        let token = authorization
            .and_then(Self::token_from_header)
            .ok_or(Denied::Unauthenticated)?;
        let grant = self.grants.get(&token).ok_or(Denied::Unauthenticated)?;
        if write && !grant.write {
            return Err(Denied::Forbidden);
        }
        if let Some(set) = &grant.namespaces {
            if !set.contains(namespace) {
                return Err(Denied::Forbidden);
            }
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\nwriter rw *\n\nreader ro default,android\n";

    #[test]
    fn parses_and_checks() {
        let t = Tokens::parse(FILE).unwrap();
        assert!(t.check(Some("Bearer writer"), "x", true).is_ok());
        assert_eq!(
            t.check(Some("Bearer reader"), "default", true),
            Err(Denied::Forbidden)
        );
        assert!(t.check(Some("Bearer reader"), "android", false).is_ok());
        assert_eq!(
            t.check(Some("Bearer reader"), "ios", false),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            t.check(Some("Bearer nope"), "x", false),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(t.check(None, "x", false), Err(Denied::Unauthenticated));
    }

    #[test]
    fn basic_in_base64_and_base64url() {
        // "u:writer" and a password whose base64 differs between alphabets.
        let t = Tokens::parse("a>b?c~ rw *\n").unwrap();
        let std = base64::engine::general_purpose::STANDARD.encode("user:a>b?c~");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("user:a>b?c~");
        assert_ne!(std.trim_end_matches('='), url);
        assert!(t.check(Some(&format!("Basic {std}")), "x", true).is_ok());
        assert!(t.check(Some(&format!("Basic {url}")), "x", true).is_ok());
        let user_only = base64::engine::general_purpose::STANDARD.encode("a>b?c~:");
        assert!(
            t.check(Some(&format!("basic {user_only}")), "x", true)
                .is_ok()
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        assert_eq!(Tokens::parse("x rw\n").unwrap_err().line, 1);
        assert_eq!(Tokens::parse("a rw *\nb rx *\n").unwrap_err().line, 2);
        assert_eq!(Tokens::parse("a rw *\na ro *\n").unwrap_err().line, 2);
        assert!(Tokens::parse("# empty\n").is_err());
    }
}
