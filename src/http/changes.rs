//! `GET /changes`: the changes this node's replica store applied, as server-sent events read
//! from its durable log. Each event's id is the record's position in the log; a client that
//! reconnects with `Last-Event-ID` (or `?since=`) gets every change after it, in order.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{ApiError, ApiState};
use crate::crdt::typed::Type;
use crate::storage::journal::{self, Record};
use crate::storage::{Key, Kind, Value};
use crate::wal::Log;
use crate::wal::reader::{Cursor, ReadError};

/// Records read from the files at a time.
const READ_BATCH: usize = 512;

/// Query of `GET /changes`.
#[derive(Debug, Deserialize)]
pub struct ChangesQuery {
    since: Option<String>,
}

/// `GET /changes[?since=ID]` (or with `Last-Event-ID`).
pub async fn changes(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match open(&state, &headers, query) {
        Ok((cursor, log)) => stream(state, cursor, log).into_response(),
        Err(e) => e.into_response(),
    }
}

fn open(
    state: &ApiState,
    headers: &HeaderMap,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(Cursor, Arc<Log>), ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be a number (an event id)"))
        })
        .transpose()?;
    let since = match query.since.or(header) {
        None => None,
        Some(text) => Some(text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "since={text:?} is not an event id; use a number from an event's id, or 0 for the oldest change kept"
            ))
        })?),
    };
    let store = state.coordinator.store();
    let Some(journal) = store.journal() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_log",
            "this node keeps no history of changes (durability = \"memory\"); set durability to \
             \"everysec\" or \"always\" in its cluster file",
        ));
    };
    let log = journal.log().clone();
    let dir: PathBuf = log.dir().to_path_buf();
    // Without a position: only what comes from now on.
    let from = match since {
        None => log.next_position(),
        Some(0) => 0,
        Some(id) => id.saturating_add(1),
    };
    let cursor = Cursor::open(&dir, from).map_err(|e| match e {
        ReadError::Gone { gone, .. } => {
            let mut error = ApiError::new(
                StatusCode::GONE,
                "gone",
                format!(
                    "changes before {} are no longer kept (compacted into a snapshot); resume \
                     from since={} or later, or read the keys afresh",
                    gone.oldest,
                    gone.oldest.saturating_sub(1)
                ),
            );
            error.extra = Some(json!({ "oldest": gone.oldest }));
            error
        }
        ReadError::Io(message) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "log_unreadable", message)
        }
    })?;
    Ok((cursor, log))
}

fn stream(
    state: ApiState,
    cursor: Cursor,
    log: Arc<Log>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(follow(state, cursor, log, tx));
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Reads the log from the cursor on and sends each change, then follows the log as it grows,
/// until the client goes away.
async fn follow(
    state: ApiState,
    mut cursor: Cursor,
    log: Arc<Log>,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    let mut durable = log.subscribe();
    loop {
        let upto = log.durable_position();
        let batch = tokio::task::spawn_blocking(move || {
            let read = cursor.read(upto, READ_BATCH);
            (cursor, read)
        })
        .await;
        let Ok((back, read)) = batch else { return };
        cursor = back;
        let records = match read {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!("change feed: {e}");
                let _ = tx
                    .send(Event::default().event("error").data(e.to_string()))
                    .await;
                return;
            }
        };
        let caught_up = records.is_empty();
        if caught_up && cursor.next_position() < upto {
            // The record is not readable yet (a segment being started): look again shortly
            // rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for (position, payload) in records {
            let Some(data) = event_data(&state, &payload) else {
                continue;
            };
            let event = Event::default()
                .id(position.to_string())
                .data(data.to_string());
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if caught_up {
            let next = cursor.next_position();
            tokio::select! {
                changed = durable.wait_for(|done| *done > next) => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
        }
    }
}

/// The event of one record: `None` for records that change no key (hints, clock marks,
/// forgotten tombstones, flush cutoffs).
fn event_data(state: &ApiState, payload: &[u8]) -> Option<Json> {
    let (key, value, whole) = match journal::decode(payload).ok()? {
        Record::State { key, value } => (key, value, true),
        Record::Merge { key, value } => (key, value, false),
        _ => return None,
    };
    let now = state.coordinator.now_ms();
    // A change logged as a delta (a large set or hash) shows the key's value as it is now.
    let value = if whole {
        value
    } else {
        state.coordinator.store().get(&key, now)?
    };
    Some(render(&key, &value, now))
}

/// `{"space", "key", "deleted", "value"}`, the value as a `GET` of that space answers it.
pub fn render(key: &Key, value: &Value, now_ms: u64) -> Json {
    let name = key.display_name();
    let utf8 = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (space, deleted, shown) = match (key.kind, value) {
        (Kind::Kv, Value::Kv(reg)) => {
            let siblings: Vec<String> = reg
                .live(now_ms)
                .map(|(_, version)| STANDARD.encode(&version.value))
                .collect();
            let deleted = siblings.is_empty();
            ("kv", deleted, (!deleted).then(|| json!(siblings)))
        }
        (Kind::Counter, Value::Counter(c)) => ("counter", false, Some(json!(c.value()))),
        (Kind::Typed, Value::Typed(t)) => match t.kind_at(now_ms) {
            Some(Type::String) => (
                "lww",
                false,
                t.string(now_ms).map(|s| json!(STANDARD.encode(&s))),
            ),
            Some(Type::Set) => {
                let members: Vec<String> = t.members(now_ms).iter().map(|m| utf8(m)).collect();
                ("set", false, Some(json!(members)))
            }
            Some(Type::Hash) => {
                let fields: serde_json::Map<String, Json> = t
                    .fields(now_ms)
                    .into_iter()
                    .map(|(f, v)| (utf8(f), json!(utf8(&v))))
                    .collect();
                ("hash", false, Some(Json::Object(fields)))
            }
            None => ("lww", true, None),
        },
        _ => return json!({ "space": key.kind.name(), "key": name, "deleted": false }),
    };
    json!({
        "space": space,
        "key": name,
        "deleted": deleted,
        "value": shown.unwrap_or(Json::Null),
    })
}
