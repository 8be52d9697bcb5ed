//! Client users and roles: who may talk to a node's HTTP and Redis ports, and what each may do.
//!
//! The users come from the cluster file's `[[user]]` entries. With none, the node is open (and
//! [`check_exposure`] keeps it on loopback unless the operator says otherwise, as Redis's
//! protected mode). A password is kept only as a digest: a plain password from the file as its
//! BLAKE3 hash, compared in constant time, and a `password_hash` as the argon2 string it is,
//! verified once and then remembered as the BLAKE3 hash of the password that matched, so that
//! HTTP Basic authentication on every request does not pay argon2 on every request.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only.
    Read,
    /// Reads and writes.
    Write,
    /// Everything: also `/admin/*`, `FLUSHALL` and `CONFIG`.
    Admin,
}

impl Role {
    /// Whether this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// The role's name as the file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One `[[user]]` entry of the cluster file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// The name clients authenticate with (case-sensitive, as Redis's).
    pub name: String,
    /// The password in the clear.
    pub password: Option<String>,
    /// A file whose content (without a trailing newline) is the password; relative to the
    /// cluster file's directory, read at start.
    pub password_file: Option<PathBuf>,
    /// The password's argon2 hash, as `quorumkv hash-password` prints it.
    pub password_hash: Option<String>,
    /// What the user may do.
    pub role: Role,
}

/// Never prints a password.
impl fmt::Debug for UserSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSettings")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// How a user's password is checked.
enum Secret {
    /// The BLAKE3 hash of the password.
    Digest(blake3::Hash),
    /// An argon2 hash, and the BLAKE3 hash of the password once one has matched it.
    Argon2 {
        phc: String,
        matched: Mutex<Option<blake3::Hash>>,
    },
}

struct User {
    role: Role,
    secret: Secret,
}

/// The users of a node; empty when the cluster file has none.
#[derive(Default)]
pub struct Users {
    users: HashMap<String, User>,
}

/// Never prints a secret.
impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.users.keys()).finish()
    }
}

/// Why credentials were refused; deliberately the same whether the user or the password is
/// wrong, so that a client cannot learn which names exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid username-password pair or user is disabled")]
pub struct WrongPassword;

impl Users {
    /// The users of the cluster file's `[[user]]` entries; `base_dir` is where relative
    /// `password_file` paths start. Fails with a message naming the entry.
    pub fn from_settings(settings: &[UserSettings], base_dir: &Path) -> Result<Users, String> {
        let mut users = HashMap::new();
        for s in settings {
            if s.name.is_empty() || s.name.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
                return Err(format!(
                    "[[user]] name {:?} must be 1 or more printable ASCII characters without spaces",
                    s.name
                ));
            }
            let secret = match (&s.password, &s.password_file, &s.password_hash) {
                (Some(p), None, None) => Secret::Digest(blake3::hash(p.as_bytes())),
                (None, Some(file), None) => {
                    let path = base_dir.join(file);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        format!(
                            "[[user]] {:?}: cannot read password_file {}: {e}",
                            s.name,
                            path.display()
                        )
                    })?;
                    let password = text.strip_suffix('\n').unwrap_or(&text);
                    let password = password.strip_suffix('\r').unwrap_or(password);
                    Secret::Digest(blake3::hash(password.as_bytes()))
                }
                (None, None, Some(phc)) => {
                    PasswordHash::new(phc).map_err(|e| {
                        format!(
                            "[[user]] {:?}: password_hash is not an argon2 hash ({e}); make one \
                             with `quorumkv hash-password`",
                            s.name
                        )
                    })?;
                    Secret::Argon2 {
                        phc: phc.clone(),
                        matched: Mutex::new(None),
                    }
                }
                _ => {
                    return Err(format!(
                        "[[user]] {:?} needs exactly one of password, password_file and \
                         password_hash",
                        s.name
                    ));
                }
            };
            if s.password.as_deref() == Some("") {
                return Err(format!("[[user]] {:?}: the password is empty", s.name));
            }
            let user = User {
                role: s.role,
                secret,
            };
            if users.insert(s.name.clone(), user).is_some() {
                return Err(format!("[[user]] {:?} appears twice", s.name));
            }
        }
        Ok(Users { users })
    }

    /// No users: every client may do everything without authenticating.
    pub fn is_open(&self) -> bool {
        self.users.is_empty()
    }

    /// The role of `name` if `password` is theirs.
    pub fn check(&self, name: &[u8], password: &[u8]) -> Result<Role, WrongPassword> {
        let user = std::str::from_utf8(name)
            .ok()
            .and_then(|name| self.users.get(name))
            .ok_or(WrongPassword)?;
        let given = blake3::hash(password);
        let ok = match &user.secret {
            // blake3::Hash compares in constant time.
            Secret::Digest(digest) => *digest == given,
            Secret::Argon2 { phc, matched } => {
                let known = *matched.lock().unwrap_or_else(|e| e.into_inner());
                match known {
                    Some(digest) => digest == given,
                    None => {
                        let ok = PasswordHash::new(phc).is_ok_and(|hash| {
                            argon2::Argon2::default()
                                .verify_password(password, &hash)
                                .is_ok()
                        });
                        if ok {
                            *matched.lock().unwrap_or_else(|e| e.into_inner()) = Some(given);
                        }
                        ok
                    }
                }
            }
        };
        if ok {
            Ok(user.role)
        } else {
            Err(WrongPassword)
        }
    }
}

/// The argon2 hash of `password` for a `password_hash` entry, with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Protected mode: a node without users must listen for clients on loopback addresses only,
/// unless the operator opened it on purpose (`insecure_open_access`).
pub fn check_exposure(
    users: &Users,
    insecure_open_access: bool,
    client_addrs: &[SocketAddr],
) -> Result<(), String> {
    if !users.is_open() || insecure_open_access {
        return Ok(());
    }
    match client_addrs.iter().find(|a| !a.ip().is_loopback()) {
        None => Ok(()),
        Some(addr) => Err(format!(
            "refusing to start: clients could reach {addr} without a password. Add a \
             [[user]] with a password and a role to the cluster file (docs/operations.md, \
             Security), listen on a loopback address, or set [cluster] insecure_open_access = \
             true to run open on purpose"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> UserSettings {
        UserSettings {
            name: name.into(),
            password: Some(format!("{name}-pw")),
            password_file: None,
            password_hash: None,
            role,
        }
    }

    #[test]
    fn passwords_and_roles_are_checked() {
        let users = Users::from_settings(
            &[user("ro", Role::Read), user("root", Role::Admin)],
            Path::new(""),
        )
        .unwrap();
        assert_eq!(users.check(b"ro", b"ro-pw"), Ok(Role::Read));
        assert_eq!(users.check(b"root", b"root-pw"), Ok(Role::Admin));
        assert_eq!(users.check(b"ro", b"root-pw"), Err(WrongPassword));
        assert_eq!(users.check(b"nobody", b"ro-pw"), Err(WrongPassword));
        assert!(Role::Admin.allows(Role::Write) && !Role::Read.allows(Role::Write));
    }

    #[test]
    fn a_hashed_password_and_a_password_file_work() {
        let dir = std::env::temp_dir().join(format!("qkv-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "from-file\n").unwrap();
        let mut file_user = user("f", Role::Write);
        file_user.password = None;
        file_user.password_file = Some("pw".into());
        let mut hashed = user("h", Role::Write);
        hashed.password = None;
        hashed.password_hash = Some(hash_password("s3cret").unwrap());
        let users = Users::from_settings(&[file_user, hashed], &dir).unwrap();
        assert_eq!(users.check(b"f", b"from-file"), Ok(Role::Write));
        assert_eq!(users.check(b"h", b"s3cret"), Ok(Role::Write));
        // The remembered digest answers the second time; a wrong password still fails.
        assert_eq!(users.check(b"h", b"s3cret"), Ok(Role::Write));
        assert_eq!(users.check(b"h", b"s3cret!"), Err(WrongPassword));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_entries_are_refused_with_a_message() {
        let mut both = user("x", Role::Read);
        both.password_hash = Some("y".into());
        let e = Users::from_settings(&[both], Path::new("")).unwrap_err();
        assert!(e.contains("exactly one of"), "{e}");
        let e = Users::from_settings(
            &[user("a", Role::Read), user("a", Role::Read)],
            Path::new(""),
        )
        .unwrap_err();
        assert!(e.contains("appears twice"), "{e}");
        let mut bad = user("x", Role::Read);
        bad.password = None;
        bad.password_hash = Some("plain".into());
        assert!(Users::from_settings(&[bad], Path::new("")).is_err());
        let secret = format!("{:?}", user("x", Role::Read));
        assert!(!secret.contains("x-pw"), "{secret}");
    }

    #[test]
    fn protected_mode_refuses_open_non_loopback_addresses() {
        let open = Users::default();
        let lo: SocketAddr = "127.0.0.5:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_exposure(&open, false, &[lo]).is_ok());
        let e = check_exposure(&open, false, &[lo, any]).unwrap_err();
        assert!(e.contains("insecure_open_access"), "{e}");
        assert!(check_exposure(&open, true, &[any]).is_ok());
        let users = Users::from_settings(&[user("a", Role::Read)], Path::new("")).unwrap();
        assert!(check_exposure(&users, false, &[any]).is_ok());
    }
}
