//! Authentication decisions: the dashboard's login as gatehouse watches it,
//! lockout, and the second factor (TOTP per RFC 6238, recovery codes).
//! Nothing here touches sockets or renders HTML.

pub mod lockout;
pub mod login;
pub mod password;
pub mod recovery;
pub mod service;
pub mod totp;
pub mod two_factor;
