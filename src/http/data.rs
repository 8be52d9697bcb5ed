//! The data endpoints: `/kv`, `/lww`, `/counter`, `/set`, and `/metrics`.
//!
//! Handlers only parse, validate, call the coordinator and format; every rule about replicas
//! lives in the coordinator. Every request is counted in the metrics by operation and outcome.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::{ApiError, ApiState};
use crate::causality::CausalContext;
use crate::coordinator::Coordinator;
use crate::datatype::{Write, counter, kv};
use crate::membership::MemberState;
use crate::ops::{Consistency, OpError};
use crate::storage::Kind;

/// The header that carries a `/kv` causal context.
pub const CONTEXT_HEADER: &str = "x-context";

/// A request's outcome as the metrics label it.
fn outcome(result: &Result<Response, ApiError>) -> &'static str {
    match result {
        Ok(r) if r.status() == StatusCode::NOT_FOUND => "not_found",
        Ok(_) => "ok",
        Err(e) => match e.code {
            "quorum_unavailable" => "unavailable",
            code => code,
        },
    }
}

/// Runs a handler body and records its outcome and latency under `op`.
pub(super) async fn measured(
    state: &ApiState,
    op: &str,
    body: impl Future<Output = Result<Response, ApiError>>,
) -> Response {
    let start = Instant::now();
    let result = body.await;
    state
        .coordinator
        .metrics()
        .request(op, outcome(&result), start.elapsed().as_secs_f64());
    result.unwrap_or_else(IntoResponse::into_response)
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let (status, extra) = match &e {
            OpError::BadRequest(_) => (StatusCode::BAD_REQUEST, None),
            OpError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, None),
            OpError::WrongType(_) => (StatusCode::CONFLICT, None),
            OpError::OutOfMemory(_) => (StatusCode::INSUFFICIENT_STORAGE, None),
            OpError::Unavailable { needed, acks, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(json!({"needed": needed, "acks": acks})),
            ),
        };
        let message = match &e {
            OpError::Unavailable { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ApiError {
            status,
            code: e.code(),
            message,
            extra,
        }
    }
}

/// The key from the path: one percent-decoded UTF-8 segment.
pub(super) fn key(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|e| {
        ApiError::bad_request(format!(
            "the key must be one percent-encoded UTF-8 path segment (send / as %2F): {e}"
        ))
    })?;
    crate::ops::check_key(key.as_bytes())?;
    Ok(key)
}

/// The query string: the consistency parameters, plus the ones an endpoint names in `extra`
/// (returned in that order, `None` when absent). Anything else is refused, so that a typo
/// never silently falls back to a default. Public for the fuzz targets (`tests/fuzz`).
pub fn params<const K: usize>(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    extra: [&str; K],
) -> Result<(Consistency, [Option<String>; K]), ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    let mut consistency = Consistency::default();
    let mut found: [Option<String>; K] = std::array::from_fn(|_| None);
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in pairs {
        if !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(format!(
                "parameter {name:?} is given twice; give it once"
            )));
        }
        if let Some(i) = extra.iter().position(|e| *e == name) {
            found[i] = Some(value);
        } else if ["n", "w", "r", "timeout_ms", "sloppy"].contains(&name.as_str()) {
            consistency.set(&name, &value)?;
        } else {
            let mut known = vec!["n", "w", "r", "timeout_ms", "sloppy"];
            known.extend(extra);
            return Err(ApiError::bad_request(format!(
                "unknown parameter {name:?}; this endpoint takes {}",
                known.join(", ")
            )));
        }
    }
    Ok((consistency, found))
}

/// `ttl` in whole seconds, at least 1; returned in milliseconds. Public for the fuzz targets
/// (`tests/fuzz`).
pub fn ttl(raw: Option<String>) -> Result<Option<u64>, ApiError> {
    raw.map(|t| match t.parse::<u64>() {
        Ok(s) if s >= 1 => Ok(s.saturating_mul(1000)),
        _ => Err(ApiError::bad_request(format!(
            "ttl={t:?} is not allowed; use whole seconds, 1 or more"
        ))),
    })
    .transpose()
}

/// The `X-Context` header sent for `key` of `space`, if any: only a token this cluster
/// issued for that key is taken.
pub(super) fn context(
    state: &ApiState,
    space: &str,
    key: &str,
    headers: &HeaderMap,
) -> Result<Option<CausalContext>, ApiError> {
    let Some(raw) = headers.get(CONTEXT_HEADER) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::bad_request("X-Context must be the ASCII token a read returned"))?
        .trim();
    if raw.is_empty() {
        return Ok(None);
    }
    state
        .tokens
        .verify(space, key, raw)
        .map(Some)
        .map_err(|e| ApiError::bad_request(format!("X-Context: {e}")))
}

/// How much of an oversized body is read (and thrown away) past the limit before the 413,
/// so that clients that send the whole body before reading the answer (most do, without
/// `Expect: 100-continue`) see the 413 rather than a broken pipe. Beyond this the connection
/// is closed instead.
const DRAIN_BEYOND_LIMIT: u64 = 8 * 1024 * 1024;

/// Reads the body, refusing more than the cluster's largest value with 413 without ever
/// buffering more than that.
pub(super) async fn body(
    coordinator: &Coordinator,
    headers: &HeaderMap,
    mut body: Body,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let max = coordinator.defaults().max_value_bytes;
    let drain_to = max as u64 + DRAIN_BEYOND_LIMIT;
    let too_large = |len: String| {
        ApiError::from(OpError::TooLarge(format!(
            "the body is {len} bytes; this cluster stores values of at most {max} bytes"
        )))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > max as u64) {
        if len <= drain_to {
            discard(&mut body, len).await;
        }
        return Err(too_large(len.to_string()));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > max {
            discard(&mut body, drain_to).await;
            return Err(too_large(format!("more than {max}")));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops up to `limit` more bytes of `body`.
async fn discard(body: &mut Body, limit: u64) {
    use http_body_util::BodyExt;
    let mut seen = 0u64;
    while seen < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => return,
        }
    }
}

/// `response` with the signed token of `ctx`, read from `/kv/{key}`.
fn with_context(
    state: &ApiState,
    key: &str,
    mut response: Response,
    ctx: Option<&CausalContext>,
) -> Response {
    if let Some(ctx) = ctx
        && let Ok(v) = HeaderValue::from_str(&state.tokens.issue("kv", key, ctx))
    {
        response.headers_mut().insert(CONTEXT_HEADER, v);
    }
    response
}

pub(super) fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} not found"),
    )
}

// ---- /kv ----

/// `GET /kv/{key}`: the value (200), its siblings (300) or 404, with the `X-Context` a later
/// write sends back to supersede what this read saw.
pub async fn kv_get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "kv_get", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let read = state.coordinator.read(Kind::Kv, &key, &c).await?;
        let kv::Shown::Known { context, live } = kv::show(&read) else {
            return Err(not_found("key"));
        };
        let response = match live.as_slice() {
            [] => not_found("key (deleted)").into_response(),
            [one] => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                Bytes::clone(one),
            )
                .into_response(),
            many => {
                let siblings: Vec<String> = many.iter().map(|v| STANDARD.encode(v)).collect();
                (
                    StatusCode::MULTIPLE_CHOICES,
                    axum::Json(json!({ "siblings": siblings })),
                )
                    .into_response()
            }
        };
        Ok(with_context(&state, &key, response, Some(context)))
    })
    .await
}

/// `PUT /kv/{key}`: writes a version that supersedes what the request's `X-Context` covers;
/// answers with the new version's context.
pub async fn kv_put(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    measured(&state, "kv_put", async {
        let key = key(path)?;
        let (c, [t]) = params(query, ["ttl"])?;
        let write = Write::KvPut(kv::Put {
            context: context(&state, "kv", &key, &headers)?,
            ttl_ms: ttl(t)?,
            value: body(&state.coordinator, &headers, raw).await?,
        });
        let done = state.coordinator.write(&key, write, &c).await?;
        Ok(with_context(
            &state,
            &key,
            StatusCode::NO_CONTENT.into_response(),
            done.context.as_ref(),
        ))
    })
    .await
}

/// `DELETE /kv/{key}`: deletes what the `X-Context` covers, or without one what a read at `r`
/// sees.
pub async fn kv_delete(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    measured(&state, "kv_delete", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let write = Write::KvDelete(kv::Delete {
            context: context(&state, "kv", &key, &headers)?,
        });
        state.coordinator.write(&key, write, &c).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

// ---- /counter ----

/// `GET /counter/{key}`: the counter's value, 0 for a key never written.
pub async fn counter_get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "counter_get", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let read = state.coordinator.read(Kind::Counter, &key, &c).await?;
        let value = counter::value(&read);
        Ok(axum::Json(json!({ "value": value })).into_response())
    })
    .await
}

/// `POST /counter/{key}?delta=N`: adds N (negative subtracts).
pub async fn counter_post(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "counter_add", async {
        let key = key(path)?;
        let (c, [delta]) = params(query, ["delta"])?;
        let delta = match delta {
            None => {
                return Err(ApiError::bad_request(
                    "delta is missing; send ?delta=N with N a signed 64-bit integer",
                ));
            }
            Some(d) => d.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "delta={d:?} is not a signed 64-bit integer; send ?delta=N, for example 5 or -3"
                ))
            })?,
        };
        state
            .coordinator
            .write(&key, Write::CounterAdd(counter::Add { delta }), &c)
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// A data route without a key (`/kv/`): keys are 1 to 1024 bytes.
pub async fn empty_key() -> ApiError {
    ApiError::bad_request("the key is empty; put 1 to 1024 bytes after the key space, as /kv/KEY")
}

// ---- /metrics ----

/// `GET /metrics`: the Prometheus text format, with gauges of members, keys, memory and hints
/// refreshed first.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let m = state.coordinator.metrics();
    let view = std::sync::Arc::clone(&state.view.borrow());
    for s in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Dead,
        MemberState::Left,
    ] {
        m.members
            .with_label_values(&[s.as_str()])
            .set(view.count(s) as i64);
    }
    m.keys.set(state.coordinator.store().len() as i64);
    m.memory_bytes.set(state.coordinator.memory_used() as i64);
    m.memory_limit_bytes
        .set(state.coordinator.defaults().max_memory_bytes as i64);
    m.resident_bytes
        .set(crate::metrics::resident_bytes() as i64);
    m.hints_pending
        .set(state.coordinator.pending_hints().0 as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// Refuses a malformed or foreign `X-Context` on any data request, before the handler runs,
/// so that even the endpoints that take no context never ignore a bad one silently.
pub async fn check_context(
    State(state): State<ApiState>,
    path: Option<Path<String>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let space = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let key = path.map(|Path(k)| k).unwrap_or_default();
    match context(&state, &space, &key, req.headers()) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
