//! Stand-ins for external systems that cannot run on this machine, each speaking the real
//! service's wire format so that the real client library is exercised. Kept out of the
//! production crates: only the end-to-end tests and `aurora bench chat` use them.

pub mod providers;
pub mod scripted_llm;
