//! Codec tests that span decode and encode: round trips, byte-exact spec
//! examples, and one test per malformed-input rule.

mod corpus;
mod malformed;
mod mutation;
mod roundtrip;
mod samples;
