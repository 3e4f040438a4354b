pub mod docker;
pub mod spec;
