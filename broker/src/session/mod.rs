//! Per-client session state: packet identifiers, the inflight window, QoS 2
//! handshakes and topic aliases. Pure: the server feeds it events and acts on
//! what it returns.
