//! Harness for end-to-end tests of the real `nexus-edge` binary.
//!
//! - [`admin`]: the admin CLI against a store, as a separate process.
//! - [`clock`]: a process whose wall clock is set off from the host's.
//! - [`backend`]: real HTTP and HTTPS instances on `127.0.0.1:0` that answer with their own name and the
//!   headers they received (and can be slow, or speak WebSocket).
//! - [`edge`]: starts the real binary on a generated config and stops it on drop.
//! - [`http`]: a raw HTTP/1.1 client, so tests can send what a browser would not (two Host
//!   headers, absolute-form targets, spoofed identity headers).
//! - [`in_process`]: nexus-edge's service run inside the test, with names resolved as the
//!   test says.
//! - [`key_server`]: an identity provider's key set endpoint whose answer the test sets.
//! - [`keys`]: signing keys and their JWKS for tests.
//! - [`loopback`]: the thread-and-runtime TCP server every in-test server runs on.
//! - [`probe`]: which instance a tenant reaches, and steady traffic that counts failures.
//! - [`process`]: child processes run with a deadline, so a hang fails the test.
//! - [`raw_instance`]: an instance that answers scripted raw bytes and records what it got.
//! - [`redis_server`]: a real `redis-server` on a unix socket; [`redis_tcp`]: TCP nodes for
//!   TLS, replication and Sentinel.
//! - [`tls`]: a throwaway CA with server and client certificates.
//! - [`wait`]: polling with a deadline instead of sleeping.

// A harness for tests: a failed expectation here is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod backend;
pub mod clock;
pub mod edge;
pub mod http;
pub mod https_client;
pub mod in_process;
pub mod key_server;
pub mod keys;
pub mod loopback;
pub mod probe;
pub mod process;
pub mod raw_instance;
pub mod redis_server;
pub mod redis_tcp;
pub mod tls;
pub mod wait;
