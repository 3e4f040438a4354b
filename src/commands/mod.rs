//! One module per subcommand; each returns the process exit code.

pub mod check;
pub mod diff;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Success: valid, healthy, or waiting by the rules.
    pub const OK: u8 = 0;
    /// The input is invalid (check), or the node failed / rolled back (agent).
    pub const FAILED: u8 = 1;
    /// Usage or configuration error (clap uses 2 as well).
    pub const USAGE: u8 = 2;
}
