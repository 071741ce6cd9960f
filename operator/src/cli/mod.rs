//! `kubectl-shortener`: a kubectl plugin to read and steer ShortenerReleases.
//!
//! Rendering and the checks made before a write are pure ([`render`], [`controls`]); only
//! [`commands`] talks to the API server, through the connection made in [`connect`].

pub mod args;
pub mod commands;
pub mod connect;
pub mod controls;
pub mod error;
pub mod render;
pub mod wait;

pub use args::Cli;
pub use error::{CliError, Result};
