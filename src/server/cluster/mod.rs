//! The cluster: several daemons sharing rooms through one Redis server
//! (`--redis`). Off unless configured; standalone code never enters here.

pub mod resp;
pub mod url;
