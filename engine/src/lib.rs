//! The engine of playbook: inventory, planning from Rhai, the task graph, the runner, transports
//! and the module contract. It knows no module by name.

pub mod batch;
pub mod bridge;
pub mod connection;
pub mod diff;
pub mod error;
pub mod events;
pub mod facts;
pub mod fields;
pub mod host;
pub mod inventory;
pub mod module;
pub mod pattern;
pub mod plan;
pub mod quote;
pub mod remote;
pub mod report;
pub mod runner;
pub mod script;
pub mod secret;
pub mod template;
pub mod transport;

pub use module::{Applied, Change, Module, ModuleContext, ModuleError, Probe, Registry};
