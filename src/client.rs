//! A Rust client for one node's HTTP API: the four key spaces of the HTTP API (docs/api.md) with per-request
//! consistency, and the API's errors as values. The CLI, `quorumkv bench` and the end-to-end
//! tests all talk to the cluster through it, so it is also the reference for how a client
//! should use the contract (contexts, 300 answers, 503 bodies).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::ops::Consistency;

/// The header that carries a `/kv` causal context.
const CONTEXT_HEADER: &str = "x-context";

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an API error (`{"error", "message"}`).
    #[error("{code} ({status}): {message}")]
    Api {
        /// The HTTP status of the answer.
        status: u16,
        /// `bad_request`, `not_found`, `too_large`, `forbidden`, `quorum_unavailable` or
        /// `unavailable` (a node that is joining or shutting down).
        code: String,
        /// What is wrong and how to fix it, as the node wrote it.
        message: String,
        /// For `quorum_unavailable`: the acks needed and the acks received.
        needed: Option<u32>,
        /// For `quorum_unavailable`: the acks received.
        acks: Option<u32>,
    },
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Connection {
        /// The URL of the request.
        url: String,
        /// The chain of causes of the transport error.
        message: String,
    },
    /// The request cannot be sent as asked (a malformed node address, a key no URL can carry).
    #[error("{0}")]
    Invalid(String),
    /// The node answered something the contract does not allow.
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL of the request.
        url: String,
        /// What the answer held and why it does not fit.
        message: String,
    },
}

impl ClientError {
    /// The API error code, when the node answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the node answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A `/kv` read: the live versions and the context that covers everything the read saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvRead {
    /// Empty when the key does not exist or is deleted; more than one: siblings.
    pub values: Vec<Bytes>,
    /// Send it back with the next write to supersede what this read saw. `None` only for a
    /// key no replica has ever seen.
    pub context: Option<String>,
}

/// A client of one node. Cheap to clone (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    user: Option<Credentials>,
}

/// A user name and password for a node that has users (HTTP Basic authentication).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name.
    pub user: String,
    /// The user's password.
    pub password: String,
}

/// Never prints the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a user name and a password, both given or neither (the CLI's
    /// `--user` and `--password`, or `QUORUMKV_USER` and `QUORUMKV_PASSWORD`).
    pub fn from_parts(
        user: Option<String>,
        password: Option<String>,
    ) -> Result<Option<Credentials>, ClientError> {
        match (user, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(Credentials { user, password })),
            (None, Some(password)) => Ok(Some(Credentials {
                user: "default".into(),
                password,
            })),
            (Some(_), None) => Err(ClientError::Invalid(
                "a user needs a password: give --password or QUORUMKV_PASSWORD".into(),
            )),
        }
    }
}

/// How a client reaches a node beyond its address: who it is, and which CA it trusts for
/// `https://` (the cluster's `ca.pem`).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The user to authenticate as, for a node that has users.
    pub user: Option<Credentials>,
    /// The CA certificate (PEM file) that signed the node's client certificate.
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
    needed: Option<u32>,
    acks: Option<u32>,
}

#[derive(Deserialize)]
struct SiblingsBody {
    siblings: Vec<String>,
}

#[derive(Deserialize)]
struct CounterBody {
    value: i128,
}

#[derive(Deserialize)]
struct MembersBody {
    members: Vec<String>,
}

impl Client {
    /// A client of the node at `node`: `http://host:port`, or just `host:port`. Requests give
    /// up after `timeout` (make it longer than the `timeout_ms` you ask the node for).
    pub fn new(node: &str, timeout: Duration) -> Result<Client, ClientError> {
        Client::connect(node, timeout, &Access::default())
    }

    /// A client of the node at `node` (`http://` or `https://`) that authenticates and
    /// checks the node's certificate as `access` says.
    pub fn connect(node: &str, timeout: Duration, access: &Access) -> Result<Client, ClientError> {
        let text = if node.contains("://") {
            node.to_string()
        } else {
            format!("http://{node}")
        };
        let bad = |why: String| {
            ClientError::Invalid(format!(
                "{node:?} is not a node address ({why}); give its HTTP address as http://HOST:PORT"
            ))
        };
        let base = Url::parse(&text).map_err(|e| bad(e.to_string()))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(bad("not an http URL".into()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(1024);
        if let Some(config) = https_config(access)? {
            builder = builder.use_preconfigured_tls(config);
        } else if base.scheme() == "https" {
            return Err(ClientError::Invalid(format!(
                "{node} is an https:// address: give the cluster's CA certificate (--cacert or \
                 QUORUMKV_CACERT, the ca.pem of the cluster's tls directory)"
            )));
        }
        let http = builder.build().map_err(|e| bad(e.to_string()))?;
        Ok(Client {
            http,
            base,
            user: access.user.clone(),
        })
    }

    /// The node's base URL.
    pub fn node(&self) -> &Url {
        &self.base
    }

    /// `GET /kv/{key}`.
    pub async fn kv_get(&self, key: &str, c: &Consistency) -> Result<KvRead, ClientError> {
        let resp = self
            .send(Method::GET, "kv", key, c, &[], None, None)
            .await?;
        let context = header(&resp, CONTEXT_HEADER);
        match resp.status {
            StatusCode::OK => Ok(KvRead {
                values: vec![resp.body],
                context,
            }),
            StatusCode::MULTIPLE_CHOICES => {
                let body: SiblingsBody = resp.json()?;
                let values = body
                    .siblings
                    .iter()
                    .map(|s| STANDARD.decode(s).map(Bytes::from))
                    .collect::<Result<_, _>>()
                    .map_err(|e| resp.protocol(format!("a sibling is not base64: {e}")))?;
                Ok(KvRead { values, context })
            }
            StatusCode::NOT_FOUND => Ok(KvRead {
                values: Vec::new(),
                context,
            }),
            _ => Err(resp.error()),
        }
    }

    /// `PUT /kv/{key}`: returns the context of the new version.
    pub async fn kv_put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        context: Option<&str>,
        ttl_s: Option<u64>,
        c: &Consistency,
    ) -> Result<Option<String>, ClientError> {
        let ttl = ttl_s.map(|t| t.to_string());
        let extra: Vec<(&str, &str)> = ttl.iter().map(|t| ("ttl", t.as_str())).collect();
        let resp = self
            .send(
                Method::PUT,
                "kv",
                key,
                c,
                &extra,
                context,
                Some(value.into()),
            )
            .await?;
        resp.no_content()?;
        Ok(header(&resp, CONTEXT_HEADER))
    }

    /// `DELETE /kv/{key}`: deletes what `context` covers, or what a read at `r` sees.
    pub async fn kv_delete(
        &self,
        key: &str,
        context: Option<&str>,
        c: &Consistency,
    ) -> Result<(), ClientError> {
        let resp = self
            .send(Method::DELETE, "kv", key, c, &[], context, None)
            .await?;
        resp.no_content()
    }

    /// `GET /lww/{key}`: `None` when absent, deleted or expired.
    pub async fn lww_get(&self, key: &str, c: &Consistency) -> Result<Option<Bytes>, ClientError> {
        let resp = self
            .send(Method::GET, "lww", key, c, &[], None, None)
            .await?;
        match resp.status {
            StatusCode::OK => Ok(Some(resp.body)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(resp.error()),
        }
    }

    /// `PUT /lww/{key}`.
    pub async fn lww_put(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        ttl_s: Option<u64>,
        c: &Consistency,
    ) -> Result<(), ClientError> {
        let ttl = ttl_s.map(|t| t.to_string());
        let extra: Vec<(&str, &str)> = ttl.iter().map(|t| ("ttl", t.as_str())).collect();
        let resp = self
            .send(Method::PUT, "lww", key, c, &extra, None, Some(value.into()))
            .await?;
        resp.no_content()
    }

    /// `DELETE /lww/{key}`.
    pub async fn lww_delete(&self, key: &str, c: &Consistency) -> Result<(), ClientError> {
        let resp = self
            .send(Method::DELETE, "lww", key, c, &[], None, None)
            .await?;
        resp.no_content()
    }

    /// `GET /counter/{key}` (0 for a key never written).
    pub async fn counter_get(&self, key: &str, c: &Consistency) -> Result<i128, ClientError> {
        let resp = self
            .send(Method::GET, "counter", key, c, &[], None, None)
            .await?;
        match resp.status {
            StatusCode::OK => Ok(resp.json::<CounterBody>()?.value),
            _ => Err(resp.error()),
        }
    }

    /// `POST /counter/{key}?delta=N`.
    pub async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        c: &Consistency,
    ) -> Result<(), ClientError> {
        let delta = delta.to_string();
        let resp = self
            .send(
                Method::POST,
                "counter",
                key,
                c,
                &[("delta", &delta)],
                None,
                None,
            )
            .await?;
        resp.no_content()
    }

    /// `GET /set/{key}`: the members, sorted.
    pub async fn set_get(&self, key: &str, c: &Consistency) -> Result<Vec<String>, ClientError> {
        let resp = self
            .send(Method::GET, "set", key, c, &[], None, None)
            .await?;
        match resp.status {
            StatusCode::OK => Ok(resp.json::<MembersBody>()?.members),
            _ => Err(resp.error()),
        }
    }

    /// `POST /set/{key}`: adds and removes members in one update.
    pub async fn set_update(
        &self,
        key: &str,
        add: &[&str],
        remove: &[&str],
        c: &Consistency,
    ) -> Result<(), ClientError> {
        let mut body = serde_json::Map::new();
        if !add.is_empty() {
            body.insert("add".into(), add.into());
        }
        if !remove.is_empty() {
            body.insert("remove".into(), remove.into());
        }
        let body = Bytes::from(serde_json::Value::Object(body).to_string());
        let resp = self
            .send(Method::POST, "set", key, c, &[], None, Some(body))
            .await?;
        resp.no_content()
    }

    /// `GET /admin/status` as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&["admin", "status"]);
        let resp = self.exchange(self.http.get(url.clone()), url).await?;
        match resp.status {
            StatusCode::OK => resp.json(),
            _ => Err(resp.error()),
        }
    }

    /// `DELETE /admin/members/{id}`: removes a dead member from the cluster (an operator's
    /// decision; docs/operations.md). `Ok` also when it had left or was removed already.
    pub async fn remove_member(&self, id: &str) -> Result<(), ClientError> {
        if matches!(id, "" | "." | "..") {
            return Err(ClientError::Invalid(format!(
                "{id:?} is not a member id; give the id of a dead member, as /admin/status lists it"
            )));
        }
        let url = self.url(&["admin", "members", id]);
        let resp = self.exchange(self.http.delete(url.clone()), url).await?;
        resp.no_content()
    }

    /// The URL of `segments` below the base, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One data request: `space`/`key` with the consistency parameters and `extra` ones.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        space: &str,
        key: &str,
        c: &Consistency,
        extra: &[(&str, &str)],
        context: Option<&str>,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        if matches!(key, "." | "..") {
            // URLs resolve these segments away (even percent-encoded), so no request can
            // name such a key.
            return Err(ClientError::Invalid(format!(
                "the key {key:?} cannot be sent in a URL; use another name"
            )));
        }
        let mut url = self.url(&[space, key]);
        {
            let mut q = url.query_pairs_mut();
            for (name, value) in query(c) {
                q.append_pair(name, &value);
            }
            for (name, value) in extra {
                q.append_pair(name, value);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut req = self.http.request(method, url.clone());
        if let Some(ctx) = context {
            req = req.header(CONTEXT_HEADER, ctx);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        self.exchange(req, url).await
    }

    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        url: Url,
    ) -> Result<Answer, ClientError> {
        let connection = |e: reqwest::Error| ClientError::Connection {
            url: url.to_string(),
            message: error_chain(&e),
        };
        let req = match &self.user {
            Some(c) => req.basic_auth(&c.user, Some(&c.password)),
            None => req,
        };
        let resp = req.send().await.map_err(connection)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(connection)?;
        Ok(Answer {
            url,
            status,
            headers,
            body,
        })
    }
}

/// The rustls configuration that trusts the CA of `access`, if it names one.
pub fn https_config(access: &Access) -> Result<Option<rustls::ClientConfig>, ClientError> {
    let Some(path) = &access.ca_file else {
        return Ok(None);
    };
    let ca = crate::tls::load_ca_cert(path)
        .map_err(|e| ClientError::Invalid(format!("the CA certificate: {e}")))?;
    crate::tls::clients::client_port_client_config(&ca, &[b"http/1.1"])
        .map(Some)
        .map_err(|e| ClientError::Invalid(format!("the CA certificate: {e}")))
}

/// The query pairs of a request's consistency settings (only those it sets).
pub fn query(c: &Consistency) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(n) = c.n {
        q.push(("n", n.to_string()));
    }
    if let Some(w) = c.w {
        q.push(("w", w.to_string()));
    }
    if let Some(r) = c.r {
        q.push(("r", r.to_string()));
    }
    if let Some(t) = c.timeout_ms {
        q.push(("timeout_ms", t.to_string()));
    }
    if let Some(s) = c.sloppy {
        q.push(("sloppy", s.to_string()));
    }
    q
}

/// A reqwest error's causes, which carry the useful part ("connection refused"); its own
/// message only repeats the URL.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    }
}

fn header(resp: &Answer, name: &str) -> Option<String> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A node's answer, read in full.
struct Answer {
    url: Url,
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn protocol(&self, message: String) -> ClientError {
        ClientError::Protocol {
            url: self.url.to_string(),
            message,
        }
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            self.protocol(format!(
                "{} with a body that is not the expected JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        })
    }

    fn no_content(&self) -> Result<(), ClientError> {
        if self.status.is_success() {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// The API error this answer carries.
    fn error(&self) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(e) => ClientError::Api {
                status: self.status.as_u16(),
                code: e.error,
                message: e.message,
                needed: e.needed,
                acks: e.acks,
            },
            Err(_) => self.protocol(format!(
                "{} without an API error body: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_one_percent_encoded_segment() {
        let c = Client::new("127.0.0.1:8101", Duration::from_secs(1)).expect("client");
        assert_eq!(
            c.url(&["kv", "a/b c?d#é"]).as_str(),
            "http://127.0.0.1:8101/kv/a%2Fb%20c%3Fd%23%C3%A9"
        );
        let c = Client::new("http://node:1/prefix/", Duration::from_secs(1)).expect("client");
        assert_eq!(c.url(&["set", "s"]).as_str(), "http://node:1/prefix/set/s");
    }

    #[test]
    fn consistency_becomes_query_pairs() {
        let c = Consistency {
            n: Some(3),
            w: Some(crate::config::Quorum::All),
            r: Some(crate::config::Quorum::Count(2)),
            timeout_ms: Some(500),
            sloppy: Some(false),
        };
        let q: Vec<String> = query(&c).iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(q, ["n=3", "w=all", "r=2", "timeout_ms=500", "sloppy=false"]);
        assert!(query(&Consistency::default()).is_empty());
    }

    #[test]
    fn bad_addresses_and_unsendable_keys_are_refused_before_any_request() {
        assert!(matches!(
            Client::new("ftp://x", Duration::from_secs(1)),
            Err(ClientError::Invalid(_))
        ));
        assert!(matches!(
            Client::new("http://[::1", Duration::from_secs(1)),
            Err(ClientError::Invalid(_))
        ));
        let c = Client::new("127.0.0.1:1", Duration::from_secs(1)).expect("client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let e = rt
            .block_on(c.lww_get("..", &Consistency::default()))
            .expect_err("refused");
        assert!(matches!(e, ClientError::Invalid(_)), "{e}");
    }
}
