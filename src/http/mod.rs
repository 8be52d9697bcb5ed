//! The client-facing HTTP API (axum): the data endpoints ([`data`]), health, metrics, cluster
//! status, removal of dead members and fault injection.
//!
//! Every error is JSON `{"error": code, "message": ...}` as docs/api.md describes, including the
//! ones axum would otherwise answer in plain text (bad JSON, unknown routes).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

pub mod access;
pub mod changes;
pub mod data;
pub mod token;
pub mod typed;

use crate::auth::Users;
use token::ContextTokens;

use crate::coordinator::Coordinator;
use crate::coordinator::transfer::{Phase, TransferStatus};
use crate::node::{ClusterView, ControlError, MembershipControl};
use crate::transport::{FaultTable, Faults};

/// What the handlers need.
#[derive(Clone)]
pub struct ApiState {
    /// The latest membership and ring, for `/admin/status`, `/metrics` and checking fault targets.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// The node's injected faults, which `/admin/faults` reads and replaces.
    pub faults: FaultTable,
    /// `fault_injection` from the config; `/admin/faults` answers 403 without it.
    pub fault_injection: bool,
    /// Serves the data endpoints and reports the store, hints and transfer phase.
    pub coordinator: Coordinator,
    /// Operator actions on the membership (`DELETE /admin/members/{id}`).
    pub membership: MembershipControl,
    /// The client users; open when empty.
    pub users: Arc<Users>,
    /// Signs and checks `X-Context` tokens.
    pub tokens: ContextTokens,
}

/// How long a starting node waits to hear of the members of its cluster file before it
/// bootstraps and serves anyway (some of them may be down for good).
pub const JOIN_GRACE: Duration = Duration::from_secs(10);

/// An API error: status, code and a message that says what to fix.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// The machine-readable `error` field: `bad_request`, `not_found`, `quorum_unavailable`, ...
    pub code: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
    /// More fields for the JSON body (`needed` and `acks` of a 503).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    /// An error without extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// A 400 `bad_request`: the request itself is wrong, and retrying it unchanged will not help.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, body.as_object_mut())
        {
            obj.extend(extra);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// The router of one node.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(
            "/kv/{key}",
            get(data::kv_get).put(data::kv_put).delete(data::kv_delete),
        )
        .route(
            "/lww/{key}",
            get(typed::lww_get)
                .put(typed::lww_put)
                .delete(typed::lww_delete),
        )
        .route(
            "/counter/{key}",
            get(data::counter_get).post(data::counter_post),
        )
        .route(
            "/set/{key}",
            get(typed::set_get)
                .post(typed::set_post)
                .delete(typed::set_delete),
        )
        .route(
            "/hash/{key}",
            get(typed::hash_get)
                .post(typed::hash_post)
                .delete(typed::hash_delete),
        )
        .route("/kv/", any(data::empty_key))
        .route("/lww/", any(data::empty_key))
        .route("/counter/", any(data::empty_key))
        .route("/set/", any(data::empty_key))
        .route("/hash/", any(data::empty_key))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            data::check_context,
        ))
        .route("/admin/status", get(status))
        .route("/admin/members/{id}", delete(remove_member))
        .route("/health", get(health))
        .route("/changes", get(changes::changes))
        .route("/metrics", get(data::metrics))
        .route(
            "/admin/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.users.clone(),
            access::authorize,
        ))
        .with_state(state)
}

/// `200` once the node serves reads and writes; `503` while it joins (has not heard of the
/// members of its cluster file yet) or bootstraps (pulls its keys from the other replicas).
/// So a client (or `make cluster`) that waits for `/health` never meets a node that would
/// refuse its reads, or a cluster whose members still look dead to each other.
async fn health(State(state): State<ApiState>) -> Response {
    let status = state.coordinator.transfer_status();
    let message = match status.phase {
        Phase::Serving | Phase::Leaving => return "ok\n".into_response(),
        Phase::Joining => format!(
            "joining the cluster: not yet heard of {}; ready when they are known or {} s \
             after start",
            status.waiting_for.join(", "),
            JOIN_GRACE.as_secs()
        ),
        Phase::Bootstrap => format!(
            "bootstrapping: {} of {} keys received from the other replicas",
            status.keys_moved, status.keys_to_move
        ),
    };
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "bad_request",
        format!(
            "{method} is not allowed on {}; docs/api.md lists each route's methods",
            uri.path()
        ),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the routes are /kv, /lww, /counter, /set, /hash, /health, /metrics and /admin (docs/api.md)",
    )
}

#[derive(Serialize)]
struct StatusMember {
    id: String,
    zone: String,
    peer: String,
    http: String,
    resp: String,
    state: &'static str,
    ring_share: f64,
}

#[derive(Serialize)]
struct StatusBody {
    node: String,
    members: Vec<StatusMember>,
    /// Beyond the documented fields: what this node stores, so convergence can be watched from outside.
    store: StoreStatus,
    /// Beyond the documented fields: the node's bootstrap or hand-off, and its progress.
    transfer: TransferStatus,
}

/// This node's replica store at a glance: two replicas that hold the same keys have the same
/// `merkle_root` (with N equal to the cluster size, all converged nodes do).
#[derive(Serialize)]
struct StoreStatus {
    keys: usize,
    merkle_root: String,
    hints_pending: usize,
}

async fn status(State(state): State<ApiState>) -> axum::Json<StatusBody> {
    let view = Arc::clone(&state.view.borrow());
    let shares = view.ring.shares();
    let members = view
        .members
        .iter()
        .map(|m| StatusMember {
            id: m.info.id.clone(),
            zone: m.info.zone.clone(),
            peer: m.info.peer.to_string(),
            http: m.info.http.to_string(),
            resp: m.info.resp.to_string(),
            state: m.state.as_str(),
            ring_share: shares.get(m.info.id.as_str()).copied().unwrap_or(0.0),
        })
        .collect();
    let store = state.coordinator.store();
    let root: String = store
        .merkle()
        .root()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    axum::Json(StatusBody {
        node: view.me.clone(),
        members,
        store: StoreStatus {
            keys: store.len(),
            merkle_root: root,
            hints_pending: state.coordinator.pending_hints().0,
        },
        transfer: state.coordinator.transfer_status(),
    })
}

/// `DELETE /admin/members/{id}`: an operator removes a dead member, as Riak's `cluster
/// force-remove` or Cassandra's `nodetool removenode` (a dead member is never removed
/// automatically: it keeps its ring share, its keys going to fallbacks meanwhile). `204` once
/// removed: this node shows it `left` and owns its share out to the others at once, and every
/// other member within seconds, including those down at the time (see
/// `membership::removal`). Idempotent: `204` for a member that left or was removed already.
/// `404` for an id no member has; `400` for this node's own id, or a member this node does not
/// see dead (`alive` or `suspect`). Not gated by `fault_injection`: it is an operation, not a
/// fault.
async fn remove_member(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.membership.remove(&id).await {
        Ok(removed) => {
            tracing::warn!(member = %id, ?removed, "operator removed a dead member");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(ControlError::Refused(e)) => {
            let status = match e {
                crate::membership::RemoveError::Unknown { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            let code = if status == StatusCode::NOT_FOUND {
                "not_found"
            } else {
                "bad_request"
            };
            Err(ApiError::new(status, code, e.to_string()))
        }
        Err(e @ ControlError::Stopped) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    delay_ms: BTreeMap<String, u64>,
}

fn forbidden_unless_enabled(state: &ApiState) -> Result<(), ApiError> {
    if state.fault_injection {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "fault injection is off on this node; set fault_injection = true in [cluster] \
             and restart it",
        ))
    }
}

/// Longest injectable delay: more would only hang callers past any request timeout.
const MAX_DELAY_MS: u64 = 60_000;

async fn set_faults(State(state): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    forbidden_unless_enabled(&state)?;
    let body: FaultsBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be JSON like {{\"drop\": [\"n2\"], \"delay_ms\": {{\"n3\": 80}}}}: {e}"
        ))
    })?;
    let view = Arc::clone(&state.view.borrow());
    let check = |id: &str| -> Result<(), ApiError> {
        if id == view.me {
            return Err(ApiError::bad_request(format!(
                "{id:?} is this node itself; list other members"
            )));
        }
        if view.member(id).is_none() {
            let known: Vec<&str> = view.members.iter().map(|m| m.info.id.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "unknown node id {id:?}; known members are {known:?}"
            )));
        }
        Ok(())
    };
    let mut drop = BTreeSet::new();
    for id in &body.drop {
        check(id)?;
        drop.insert(id.clone());
    }
    let mut delay = BTreeMap::new();
    for (id, ms) in &body.delay_ms {
        check(id)?;
        if *ms > MAX_DELAY_MS {
            return Err(ApiError::bad_request(format!(
                "delay_ms for {id:?} is {ms}; use at most {MAX_DELAY_MS}"
            )));
        }
        delay.insert(id.clone(), Duration::from_millis(*ms));
    }
    tracing::warn!(?drop, ?delay, "fault injection: new faults");
    state.faults.set(Faults { drop, delay });
    Ok(StatusCode::NO_CONTENT)
}

async fn clear_faults(State(state): State<ApiState>) -> Result<StatusCode, ApiError> {
    forbidden_unless_enabled(&state)?;
    tracing::warn!("fault injection: healed");
    state.faults.set(Faults::default());
    Ok(StatusCode::NO_CONTENT)
}

async fn get_faults(
    State(state): State<ApiState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    forbidden_unless_enabled(&state)?;
    let f = state.faults.get();
    let delay: BTreeMap<String, u128> = f
        .delay
        .iter()
        .map(|(k, v)| (k.clone(), v.as_millis()))
        .collect();
    Ok(axum::Json(json!({"drop": f.drop, "delay_ms": delay})))
}
