//! The typed namespace over HTTP: `/lww` (strings), `/set` and `/hash`, three views of one name
//! space that the Redis protocol shares. A name holds one type at a time: a write or read of
//! another type is `409 wrong_type`, and a `DELETE` through any of the three removes the name
//! whatever it holds.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::data::{body, key, measured, not_found, params, ttl};
use super::{ApiError, ApiState};
use crate::datatype::Write;
use crate::datatype::typed::{self, Amount, Condition, Ttl, TypedWrite};
use crate::storage::Kind;

/// The path's key, the consistency parameters, and nothing else.
type Plain = (
    Result<Path<String>, PathRejection>,
    Result<Query<Vec<(String, String)>>, QueryRejection>,
);

/// `DELETE /lww|/set|/hash/{key}`: removes the name whatever it holds.
async fn delete(state: &ApiState, op: &str, (path, query): Plain) -> Response {
    measured(state, op, async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let write = Write::Typed(TypedWrite::Delete { get: false });
        state.coordinator.write(&key, write, &c).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

// ---- /lww ----

/// `GET /lww/{key}`: the string, or 404 when it is missing, deleted or expired.
pub async fn lww_get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "lww_get", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let read = state.coordinator.read(Kind::Typed, &key, &c).await?;
        match typed::string(&read)? {
            Some(value) => Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                value,
            )
                .into_response()),
            None if read.value.is_some() => Err(not_found("key (deleted or expired)")),
            None => Err(not_found("key")),
        }
    })
    .await
}

/// `PUT /lww/{key}`: replaces the string; the latest write wins. A name holding a set or a
/// hash is a 409.
pub async fn lww_put(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    measured(&state, "lww_put", async {
        let key = key(path)?;
        let (c, [t]) = params(query, ["ttl"])?;
        let ttl = match ttl(t)? {
            Some(ms) => Ttl::AfterMs(ms),
            None => Ttl::Clear,
        };
        let write = Write::Typed(TypedWrite::SetString {
            value: body(&state.coordinator, &headers, raw).await?,
            ttl,
            condition: Condition::Always,
            any_type: false,
            get: false,
        });
        state.coordinator.write(&key, write, &c).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /lww/{key}`.
pub async fn lww_delete(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    delete(&state, "lww_delete", (path, query)).await
}

// ---- /set ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
}

/// `GET /set/{key}`: the members, sorted; none for a name never written.
pub async fn set_get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "set_get", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let read = state.coordinator.read(Kind::Typed, &key, &c).await?;
        let members: Vec<String> = typed::members(&read)?
            .into_iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect();
        Ok(axum::Json(json!({ "members": members })).into_response())
    })
    .await
}

/// `POST /set/{key}`: adds and removes members in one step; a remove drops only the adds it
/// has seen.
pub async fn set_post(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    measured(&state, "set_update", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let bytes = body(&state.coordinator, &headers, raw).await?;
        let parsed: SetBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "body must be JSON like {{\"add\": [\"a\"], \"remove\": [\"b\"]}} with string \
                 members: {e}"
            ))
        })?;
        if parsed.add.is_none() && parsed.remove.is_none() {
            return Err(ApiError::bad_request(
                "give \"add\", \"remove\" or both, each a list of string members",
            ));
        }
        let members = |list: Option<Vec<String>>| -> Vec<Bytes> {
            let mut list: Vec<Bytes> = list
                .unwrap_or_default()
                .into_iter()
                .map(Bytes::from)
                .collect();
            list.sort();
            list.dedup();
            list
        };
        let write = Write::Typed(TypedWrite::UpdateSet {
            add: members(parsed.add),
            remove: members(parsed.remove),
        });
        state.coordinator.write(&key, write, &c).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /set/{key}`.
pub async fn set_delete(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    delete(&state, "set_delete", (path, query)).await
}

// ---- /hash ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HashBody {
    set: Option<BTreeMap<String, String>>,
    incr: Option<BTreeMap<String, i64>>,
    remove: Option<Vec<String>>,
}

/// `GET /hash/{key}`: every field and its value (counters as decimal strings); none for a
/// name never written.
pub async fn hash_get(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    measured(&state, "hash_get", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let read = state.coordinator.read(Kind::Typed, &key, &c).await?;
        let fields: BTreeMap<String, String> = typed::fields(&read)?
            .into_iter()
            .map(|(f, v)| {
                (
                    String::from_utf8_lossy(f).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        Ok(axum::Json(json!({ "fields": fields })).into_response())
    })
    .await
}

/// `POST /hash/{key}`: sets, increments and removes fields in one step.
pub async fn hash_post(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    measured(&state, "hash_update", async {
        let key = key(path)?;
        let (c, []) = params(query, [])?;
        let bytes = body(&state.coordinator, &headers, raw).await?;
        let parsed: HashBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "body must be JSON like {{\"set\": {{\"f\": \"v\"}}, \"incr\": {{\"n\": 1}}, \
                 \"remove\": [\"g\"]}} with string fields and values and integer increments: {e}"
            ))
        })?;
        if parsed.set.is_none() && parsed.incr.is_none() && parsed.remove.is_none() {
            return Err(ApiError::bad_request(
                "give \"set\", \"incr\" or \"remove\" (any of them, at least one)",
            ));
        }
        let write = Write::Typed(TypedWrite::UpdateHash {
            set: parsed
                .set
                .unwrap_or_default()
                .into_iter()
                .map(|(f, v)| (Bytes::from(f), Bytes::from(v)))
                .collect(),
            incr: parsed
                .incr
                .unwrap_or_default()
                .into_iter()
                .map(|(f, n)| (Bytes::from(f), Amount::Int(n)))
                .collect(),
            remove: parsed
                .remove
                .unwrap_or_default()
                .into_iter()
                .map(Bytes::from)
                .collect(),
            only_new: false,
        });
        state.coordinator.write(&key, write, &c).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /hash/{key}`.
pub async fn hash_delete(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    delete(&state, "hash_delete", (path, query)).await
}
