//! RESP2: encoding commands and parsing replies and pushes incrementally.
