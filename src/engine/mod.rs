pub mod converge;
pub mod docker;
pub mod gate;
pub mod plan;
pub mod probe;
pub mod spec;
