//! A fleet repository turned into a validated model, or into every error it has.
//!
//! Reading goes `files → spanned TOML/YAML → checks → Fleet`, collecting all problems in
//! one pass (see [`diagnostics`]). Nothing here touches Docker or Git: files come through
//! the small [`RepoFiles`] trait, so the same validation runs on a working tree
//! (`gitfleet check`) and on a Git tree (the agent).

pub mod compose;
pub mod diagnostics;
pub mod fleet;
