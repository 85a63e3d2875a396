//! What a run with `--callbacks-listen` says of the deliveries it received.

/// What the callback receiver saw, on stderr: deliveries taken as hints, and those refused (not
/// validly signed: unsigned, forged or replayed; or to a token darkroom never gave).
pub fn say_counts(receiver: &darkroom_engine::callbacks::CallbackReceiver) {
    let counts = receiver.counts();
    eprintln!(
        "callbacks: {} received, {} refused as not validly signed (unsigned, forged or replayed), {} refused with an unknown token",
        counts.received, counts.unverified, counts.refused
    );
}
