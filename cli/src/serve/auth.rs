//! Who may use a sandbox host: bearer tokens from a token file, one per
//! client. A request names its token as `Authorization: Bearer TOKEN`, or
//! as the password of HTTP Basic credentials (`http://NAME:TOKEN@host`, the
//! only way Reflow 0.2.1's `DynASBClient` can send one: it builds its HTTP
//! client without headers, and reqwest sends a URL's credentials as Basic).
//!
//! Only SHA-256 digests of the tokens are kept in memory, and a presented
//! token is compared against every client's digest without an early exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use hyper::header::{HeaderMap, AUTHORIZATION};
use sha2::{Digest, Sha256};

/// Shortest token accepted (`openssl rand -hex 32` makes 64 characters).
pub const MIN_TOKEN_LEN: usize = 32;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Other users may read the file.
    #[error(
        "the token file {} can be read by other users (mode {mode:o}): make it 0600",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    /// A line is not `NAME TOKEN` or `TOKEN`, or its token is too short.
    #[error("{}:{line}: {why}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    /// No token at all.
    #[error("the token file {} holds no token", path.display())]
    Empty { path: PathBuf },
}

/// Why a request is not authenticated (answered 401, never more detail
/// than this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this host needs a token: send `Authorization: Bearer TOKEN`, or put the token in the URL as http://client:TOKEN@host")]
    Missing,
    #[error("the Authorization header is not `Bearer TOKEN` or Basic credentials")]
    Malformed,
    #[error("the token is not valid on this host")]
    Wrong,
}

/// The clients of a host and their token digests.
#[derive(Clone)]
pub struct Tokens {
    clients: Vec<(Arc<str>, [u8; 32])>,
}

impl Tokens {
    /// The tokens in `path`: one client per line, `NAME TOKEN` or just
    /// `TOKEN` (named `client-N` by its line); blank lines and lines
    /// starting with `#` are skipped. The file must not be readable by
    /// group or others.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        Tokens::parse(&read_private(path)?, path)
    }

    /// The tokens in `text` (the contents of the file `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokenError> {
        let mut clients: Vec<(Arc<str>, [u8; 32])> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| TokenError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let (name, token) = match words.as_slice() {
                [token] => (format!("client-{}", i + 1), *token),
                [name, token] => (name.to_string(), *token),
                _ => return Err(bad("expected `NAME TOKEN` or `TOKEN`".into())),
            };
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || name.len() > 64
            {
                return Err(bad(format!(
                    "client name {name:?}: at most 64 of A-Z a-z 0-9 - _ ."
                )));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad(format!(
                    "the token has {} characters; at least {MIN_TOKEN_LEN} are needed (`openssl rand -hex 32` makes one)",
                    token.len()
                )));
            }
            if clients.iter().any(|(n, _)| **n == *name) {
                return Err(bad(format!("client name {name:?} is used twice")));
            }
            let digest = digest(token.as_bytes());
            if clients.iter().any(|(_, d)| *d == digest) {
                return Err(bad("this token is given to two clients".into()));
            }
            clients.push((name.into(), digest));
        }
        if clients.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { clients })
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there is none (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client whose token `headers` carry.
    pub fn check(&self, headers: &HeaderMap) -> Result<Arc<str>, AuthError> {
        let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = presented(value).ok_or(AuthError::Malformed)?;
        let given = digest(&token);
        let mut found = None;
        for (name, d) in &self.clients {
            if same(d, &given) {
                found = Some(name.clone());
            }
        }
        found.ok_or(AuthError::Wrong)
    }
}

/// A client's own token for sandbox hosts (`run --hosts`): the first line
/// of `path` that is not blank or a `#` comment, alone on it. The file must
/// not be readable by group or others.
pub fn client_token(path: &Path) -> Result<String, TokenError> {
    let text = read_private(path)?;
    let Some((i, line)) = text
        .lines()
        .map(str::trim)
        .enumerate()
        .find(|(_, l)| !l.is_empty() && !l.starts_with('#'))
    else {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    };
    if line.split_whitespace().count() != 1 {
        return Err(TokenError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            why: "a client's token file holds the token alone on its line".into(),
        });
    }
    Ok(line.to_string())
}

/// The text of `path`, a file group and others cannot read.
fn read_private(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TokenError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

/// The token in an `Authorization` value: a bearer token, or the password
/// of Basic credentials.
fn presented(value: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Compares two digests in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# fleet\nalice {A}\n\n{B}\n"), Path::new("t")).unwrap()
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_name_their_client() {
        let t = tokens();
        assert_eq!(t.len(), 2);
        assert_eq!(
            &*t.check(&headers(&format!("Bearer {A}"))).unwrap(),
            "alice"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{B}"));
        assert_eq!(
            &*t.check(&headers(&format!("Basic {basic}"))).unwrap(),
            "client-4"
        );
    }

    #[test]
    fn missing_malformed_and_wrong_tokens_are_refused() {
        let t = tokens();
        assert_eq!(t.check(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(t.check(&headers("Token x")), Err(AuthError::Malformed));
        assert_eq!(t.check(&headers("Basic !!!")), Err(AuthError::Malformed));
        assert_eq!(
            t.check(&headers(&format!("Bearer {A}x"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(t.check(&headers("Bearer ")), Err(AuthError::Malformed));
    }

    #[test]
    fn bad_files_say_which_line() {
        let p = Path::new("tokens");
        let e = Tokens::parse("short", p).err().unwrap().to_string();
        assert!(e.starts_with("tokens:1: the token has 5 characters"), "{e}");
        let e = Tokens::parse(&format!("a {A}\na {B}"), p)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("tokens:2: client name \"a\" is used twice"),
            "{e}"
        );
        let e = Tokens::parse(&format!("a {A}\nb {A}"), p)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("given to two clients"), "{e}");
        let e = Tokens::parse("a b c", p).err().unwrap().to_string();
        assert!(e.contains("expected `NAME TOKEN`"), "{e}");
        assert!(matches!(
            Tokens::parse("# none\n", p),
            Err(TokenError::Empty { .. })
        ));
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, A).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Tokens::load(&path),
            Err(TokenError::Exposed { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Tokens::load(&path).unwrap().len(), 1);
        assert_eq!(client_token(&path).unwrap(), A);
        std::fs::write(&path, format!("# mine\n\n  {B}  \n")).unwrap();
        assert_eq!(client_token(&path).unwrap(), B);
        std::fs::write(&path, format!("alice {A}\n")).unwrap();
        assert!(matches!(
            client_token(&path),
            Err(TokenError::Line { line: 1, .. })
        ));
    }
}
