//! Authentication of the people behind a session: second factors and their
//! recovery. Each submodule is pure logic over values passed in (secrets,
//! codes, `now`); storing state and counting failures for lockout happen
//! around them.

pub mod recovery;
pub mod totp;
