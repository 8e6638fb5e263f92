//! What several modules share; nothing here is a module of its own except `exec::Run`, the one
//! module `command` and `shell` both are.
//!
//! - `exec`: running commands, their guards (`creates`, `removes`) and their results;
//! - `inspect`: a path's state (kind, mode, owner, checksum, content) in one round trip;
//! - `perms`: modes (octal and symbolic), owners and groups, and the script that sets them;
//! - `content`: a file's wanted content and attributes: write it, fix its attributes, or nothing;
//!   where a controller file is found; making the directory a file goes into;
//! - `pkg`: what `apt` and `yum` share;
//! - `names`: names a playbook gives (environment variables, facts).

pub mod content;
pub mod exec;
pub mod inspect;
pub mod names;
pub mod perms;
pub mod pkg;
