//! Administration: the operations (shared by the console and the CLI).

pub mod console;
pub mod ops;

pub use ops::{Admin, AdminError, SessionView, UserView};
