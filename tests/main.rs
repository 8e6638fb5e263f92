//! Integration tests: the real `playbook` binary, run against real files through the local
//! connection (and, in `ssh`, over real SSH against the lab when it is up).

mod support;

mod ansible;
mod bad_input;
mod cli;
mod el;
mod ha;
mod kubeadm;
mod packages;
mod perf;
mod pki;
mod runs;
mod secrets;
mod ssh;
mod system;
