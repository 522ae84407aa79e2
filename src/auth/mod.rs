//! Authentication decisions: the dashboard's login as gatehouse watches it,
//! lockout, and (in their own modules) the second factor. Nothing here
//! touches sockets or renders HTML.

pub mod lockout;
pub mod login;
