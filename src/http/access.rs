//! Who may call which endpoint: HTTP Basic authentication against the cluster file's users,
//! and each request held to its role. `/health` is open (load balancers and `make cluster`
//! poll it), `/metrics` takes any user, `/admin/*` an admin, reads a reader and everything
//! else a writer. With no users every request passes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ApiError;
use crate::auth::{Role, Users};

/// The least role a request needs, or `None` for one anyone may make.
pub fn needed_role(method: &Method, path: &str) -> Option<Role> {
    if path == "/health" {
        return None;
    }
    if path == "/metrics" {
        return Some(Role::Read);
    }
    if path == "/admin" || path.starts_with("/admin/") {
        return Some(Role::Admin);
    }
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        Some(Role::Read)
    } else {
        Some(Role::Write)
    }
}

/// The user name and password of an `Authorization: Basic` header.
fn basic_credentials(req: &Request) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"quorumkv\", charset=\"UTF-8\""),
    );
    response
}

/// The middleware: 401 `unauthorized` without valid credentials, 403 `forbidden` for a role
/// too small, the request itself otherwise.
pub async fn authorize(State(users): State<Arc<Users>>, req: Request, next: Next) -> Response {
    if users.is_open() {
        return next.run(req).await;
    }
    let Some(needed) = needed_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some((name, password)) = basic_credentials(&req) else {
        return unauthorized(
            "this node needs a user name and password: send HTTP Basic authentication \
             (curl -u name:password)",
        );
    };
    // A hashed password costs argon2 the first time: off the request threads.
    let checking = Arc::clone(&users);
    let user = String::from_utf8_lossy(&name).into_owned();
    let role = match tokio::task::spawn_blocking(move || checking.check(&name, &password)).await {
        Ok(Ok(role)) => role,
        _ => return unauthorized("wrong user name or password"),
    };
    if !role.allows(needed) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "user {user} has the {} role; this request needs the {} role",
                role.name(),
                needed.name()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_role() {
        assert_eq!(needed_role(&Method::GET, "/health"), None);
        assert_eq!(needed_role(&Method::GET, "/metrics"), Some(Role::Read));
        assert_eq!(
            needed_role(&Method::GET, "/admin/status"),
            Some(Role::Admin)
        );
        assert_eq!(
            needed_role(&Method::DELETE, "/admin/members/n2"),
            Some(Role::Admin)
        );
        assert_eq!(needed_role(&Method::GET, "/kv/a"), Some(Role::Read));
        assert_eq!(needed_role(&Method::GET, "/changes"), Some(Role::Read));
        assert_eq!(needed_role(&Method::PUT, "/lww/a"), Some(Role::Write));
        assert_eq!(needed_role(&Method::POST, "/counter/a"), Some(Role::Write));
        assert_eq!(needed_role(&Method::DELETE, "/set/a"), Some(Role::Write));
        assert_eq!(
            needed_role(&Method::GET, "/administrator"),
            Some(Role::Read)
        );
    }
}
