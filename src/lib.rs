//! attnflow: exact training dynamics of a one-layer transformer on the word co-occurrence
//! task.
//!
//! Data flows one way: a [`config::Config`] gives the dataset ([`task`]) and the initial
//! state ([`model`], [`wishart`]); an [`engine`] turns the loss sensitivities of the shared
//! forward pass ([`forward`]) into the gradient field; the [`integrator`] and the [`run`]
//! loop advance it and record [`observables`]; [`output`] writes the run folder.

pub mod allocator;
pub mod cli;
pub mod config;
pub mod dopri5;
pub mod dynamics;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod forward;
pub mod integrator;
pub mod linalg;
pub mod model;
pub mod npz;
pub mod observables;
pub mod output;
pub mod plots;
pub mod run;
pub mod stdout;
pub mod sweep;
pub mod task;
pub mod theory;
pub mod wishart;

pub use error::Error;
