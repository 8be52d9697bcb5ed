//! Signed context tokens: the `X-Context` a read hands out carries a code made with the
//! cluster secret over the key space, the key and the context, so a replica only ever
//! trusts a context the cluster issued for that very key. A hand-made context could
//! otherwise claim to have seen dots it never saw and make replicas drop an actor's later
//! writes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::causality::{CausalContext, MAX_TOKEN_LEN, TokenError};
use crate::tls::secret::{ClusterSecret, MAC_LEN};

/// Issues and checks the context tokens of one cluster.
#[derive(Debug, Clone)]
pub struct ContextTokens {
    secret: ClusterSecret,
}

impl ContextTokens {
    /// Tokens signed with `secret`.
    pub fn new(secret: ClusterSecret) -> Self {
        ContextTokens { secret }
    }

    /// The token of `ctx` read from `key` of `space`: base64url of the context's encoding
    /// followed by the code, so it stays one URL-safe word.
    pub fn issue(&self, space: &str, key: &str, ctx: &CausalContext) -> String {
        let mut bytes = ctx.to_bytes();
        let mac = self.secret.mac(&[space.as_bytes(), key.as_bytes(), &bytes]);
        bytes.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The context of a token sent back for `key` of `space`; an error for anything this
    /// cluster did not issue for that key.
    pub fn verify(&self, space: &str, key: &str, token: &str) -> Result<CausalContext, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| TokenError::NotBase64)?;
        let split = bytes.len().checked_sub(MAC_LEN).ok_or(TokenError::Forged)?;
        let (body, mac) = bytes.split_at(split);
        if !self
            .secret
            .verify(&[space.as_bytes(), key.as_bytes(), body], mac)
        {
            return Err(TokenError::Forged);
        }
        CausalContext::from_bytes(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::Dot;

    #[test]
    fn tokens_hold_only_for_their_key_and_cluster() {
        let tokens = ContextTokens::new(ClusterSecret::from_bytes([1; 32]));
        let mut ctx = CausalContext::new();
        ctx.insert(Dot::new("n1", 1));
        let token = tokens.issue("kv", "a", &ctx);
        assert_eq!(tokens.verify("kv", "a", &token), Ok(ctx.clone()));
        assert_eq!(tokens.verify("kv", "b", &token), Err(TokenError::Forged));
        assert_eq!(tokens.verify("lww", "a", &token), Err(TokenError::Forged));
        // The unsigned encoding, or a body changed under the old code, is refused.
        assert_eq!(
            tokens.verify("kv", "a", &ctx.to_token()),
            Err(TokenError::Forged)
        );
        let mut forged = CausalContext::new();
        forged.insert(Dot::new("n1", 1000));
        let signed = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let mut altered = forged.to_bytes();
        altered.extend_from_slice(&signed[signed.len() - MAC_LEN..]);
        let altered = URL_SAFE_NO_PAD.encode(altered);
        assert_eq!(tokens.verify("kv", "a", &altered), Err(TokenError::Forged));
        let other = ContextTokens::new(ClusterSecret::from_bytes([2; 32]));
        assert_eq!(other.verify("kv", "a", &token), Err(TokenError::Forged));
    }
}
