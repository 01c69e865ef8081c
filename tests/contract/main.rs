//! Contract tests: the real provider CLIs (from npm, put under `target/provider-clis` by
//! `.ci/install-provider-clis`) run with our command lines against a scripted model on
//! 127.0.0.1 (`mock_model`), their output read by our parsers — one module per CLI, `help`
//! for the CLIs checked against their `--help` only, and `fleet` and `failover` with the
//! real claude as a worker's provider through the whole fleet.

/// The parts of the tests' shared harness (`tests/common/`) used here: each binary declares
/// only the modules it uses whole, so a helper no test uses still warns.
#[path = "../common"]
mod common {
    pub mod databases;
    pub mod env;
}

mod mock_model;

mod claude;
mod codex;
mod failover;
mod fleet;
mod gemini;
mod help;
mod opencode;
