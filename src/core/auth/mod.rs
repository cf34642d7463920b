//! Security, pure: identities and their tokens, crypto, SigV4, IAM-style policy evaluation and
//! which action/resource a request is. No HTTP here: the middleware that applies all this to
//! requests is `api::middleware`, the task credentials endpoint is `agent::credentials_endpoint`,
//! the safe defaults checked at apply are `apply::safety`; the audit trail is [`crate::audit`].
//!
//! - [`identity`]: identities, tokens (hashed), access keys, task credential bindings.
//! - [`crypto`]: hashing, HMAC, the server key and the secrets derived from it.
//! - [`sigv4`]: Signature Version 4 signing and verification.
//! - [`policy`]: statement evaluation (explicit Deny wins, default deny).
//! - [`actions`]: which action/resource an API request is.
//! - [`agent_join`]: agent join tokens and per-instance agent credentials (hashed).
//! - [`node_authz`]: what a joined agent may read and write, key by key.
//! - [`secrets_key`]: the data key of Secrets (a file outside the store) and AES-256-GCM sealing.
//! - [`secret_values`]: opening the Secrets a task definition references (for its agent).

pub mod actions;
pub mod agent_join;
pub mod crypto;
pub mod identity;
pub mod node_authz;
pub mod policy;
pub mod secret_values;
pub mod secrets_key;
pub mod sigv4;
