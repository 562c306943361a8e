//! Token authentication.
