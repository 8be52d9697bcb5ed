//! What the HTTP API decodes from a request before it reaches the coordinator: the query string
//! (`http::data::params`: `n`, `w`, `r`, `timeout_ms`, `sloppy` and an endpoint's own, then
//! `ttl`, and `/counter`'s `delta`), the `X-Context` token (`ContextTokens::verify` with a fixed
//! cluster secret, `CausalContext::from_token` and `from_bytes`), and the key's limits.
//!
//! Input: the query string, a newline, the `X-Context` header's bytes, a newline, the key.
//! Besides never panicking: a context read back from its own token is the same context.

#![no_main]

use axum::extract::Query;
use axum::http::Uri;
use libfuzzer_sys::fuzz_target;
use quorumkv::causality::{CausalContext, MAX_TOKEN_LEN};
use quorumkv::http::data::{params, ttl};
use quorumkv::http::token::ContextTokens;
use quorumkv::ops::{MAX_TIMEOUT_MS, check_key};
use quorumkv::tls::secret::ClusterSecret;

/// The secret the seed tokens are signed with (`examples/seeds.rs`).
const SECRET: [u8; 32] = [7; 32];
/// The key the seed tokens were issued for.
const TOKEN_KEY: &str = "colour";

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let query = parts.next().unwrap_or_default();
    let header = parts.next().unwrap_or_default();
    let key = parts.next().unwrap_or_default();
    query_string(query);
    context(header, key);
    let _ = check_key(key);
});

/// `?query` as axum hands it to the handlers: a request whose URI does not parse never gets
/// that far.
fn query_string(query: &[u8]) {
    let mut uri = b"/kv/k?".to_vec();
    uri.extend_from_slice(query);
    let Ok(uri) = Uri::from_maybe_shared(uri) else {
        return;
    };
    let pairs = || Query::<Vec<(String, String)>>::try_from_uri(&uri);
    if let Ok((c, [])) = params(pairs(), []) {
        assert!(c.n.is_none_or(|n| n >= 1));
        assert!(
            c.timeout_ms
                .is_none_or(|t| (1..=MAX_TIMEOUT_MS).contains(&t))
        );
    }
    if let Ok((_, [t])) = params(pairs(), ["ttl"])
        && let Ok(Some(ms)) = ttl(t)
    {
        assert!(ms >= 1000);
    }
    if let Ok((_, [Some(delta)])) = params(pairs(), ["delta"]) {
        let _ = delta.parse::<i64>();
    }
    let _ = params(pairs(), ["ttl", "delta"]);
}

/// The `X-Context` header as `http::data::context` reads it.
fn context(header: &[u8], key: &[u8]) {
    // Whatever the token, its bytes are also what a token decodes to.
    if let Ok(ctx) = CausalContext::from_bytes(header) {
        assert_eq!(CausalContext::from_bytes(&ctx.to_bytes()), Ok(ctx));
    }
    // `HeaderValue::to_str`: visible ASCII (and tabs) only.
    if !header
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return;
    }
    let Ok(raw) = std::str::from_utf8(header) else {
        return;
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return;
    }
    if let Ok(ctx) = CausalContext::from_token(raw) {
        let again = ctx.to_token();
        if again.len() <= MAX_TOKEN_LEN {
            assert_eq!(CausalContext::from_token(&again), Ok(ctx));
        }
    }
    let tokens = ContextTokens::new(ClusterSecret::from_bytes(SECRET));
    let key = std::str::from_utf8(key).unwrap_or(TOKEN_KEY);
    for (space, key) in [("kv", TOKEN_KEY), ("kv", key), ("lww", key)] {
        if let Ok(ctx) = tokens.verify(space, key, raw) {
            let again = tokens.issue(space, key, &ctx);
            if again.len() <= MAX_TOKEN_LEN {
                assert_eq!(tokens.verify(space, key, &again), Ok(ctx));
            }
        }
    }
}
