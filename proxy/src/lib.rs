//! Nexus Edge: the tenant router.
//!
//! The request path is a chain of small, pure decisions, each in its own module, and one
//! Pingora service that only orchestrates them:
//!
//! | module | decides |
//! |---|---|
//! | [`method`] | that the request does not ask for an echo of itself (`TRACE`), nor carries a body on a method its instance may not read |
//! | [`framing`] | that the request's body is framed one way, for router and instance alike |
//! | [`nominations`] | that its `Connection` names only fields the instance can go without |
//! | [`field_name`] | which header names an upstream reads as one (`X_User_Id`, `X-User-Id_`) |
//! | [`host`] | which tenant a request is addressed to |
//! | [`path`] | the one normalised path used for policy and upstream |
//! | [`auth`] | whether the token is genuine (JWKS, JWT rules, verified-token cache) |
//! | [`authz`] | whether the token's tenant/org claims match the addressed tenant |
//! | [`origin`] | whether a cookie came from another tenant's page |
//! | [`cors`] | which pages may read a response, and the router's answer to preflights |
//! | [`frames`] | which pages may frame a tenant's pages |
//! | [`policy`] | what the tenant's status allows |
//! | [`decision`] | all of the above, in order, for one request |
//! | [`route`] | which upstream and which headers |
//! | [`pooling`] | which requests may share an instance connection (one tenant's) |
//! | [`response`] | which of the instance's response header fields reach the client |
//! | [`tunnel`] | whether an open WebSocket's tenant is still routed where it goes |
//! | [`errors`] | status code, body and metric label of every rejection |
//! | [`service`] | the Pingora `ProxyHttp` glue |
//!
//! Around them: [`server`] assembles and runs Pingora on sockets [`listening`] bound up front,
//! [`signals`] turns SIGTERM and SIGINT into its shutdown, [`handover`] passes the listening
//! sockets to a successor (zero-downtime upgrade), [`systemd`] tells a `Type=notify` unit,
//! [`connections`] caps client connections and bounds how long a request header may take,
//! [`ops`] serves metrics and probes, [`admin_api`] binding changes over HTTP (with
//! [`admin_input`]'s checks, shared with the `tenant` commands), [`scale`] judges each
//! instance against the scale triggers, [`background`] runs binding sync and key reload,
//! [`cli`] is the command line, [`demo`] the newcomer's first five minutes.
#![warn(missing_docs)]

pub mod admin_api;
pub mod admin_input;
pub mod auth;
pub mod authz;
pub mod background;
pub mod cli;
pub mod connections;
pub mod cors;
pub mod decision;
pub mod demo;
pub mod errors;
pub mod field_name;
pub mod frames;
pub mod framing;
pub mod handover;
pub mod host;
pub mod https;
pub mod huge_pages;
pub mod invisible;
pub mod listening;
pub mod log_budget;
pub mod logging;
pub mod method;
pub mod metrics;
pub mod nominations;
pub mod ops;
pub mod origin;
pub mod panics;
pub mod path;
pub mod policy;
pub mod pooling;
pub mod resolve;
pub mod response;
pub mod revocation;
pub mod route;
pub mod scale;
pub mod server;
pub mod service;
pub mod signals;
pub mod state;
pub mod store;
pub mod systemd;
#[cfg(test)]
mod test_support;
pub mod tunnel;
