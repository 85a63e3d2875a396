//! The faults of a signed webhook delivery (Replicate's, fal's): sent unsigned, signed with
//! another key (forged), or replayed (validly signed, its timestamp ten minutes old). A tampered
//! delivery takes the place of the genuine one, so a receiver that refuses it must poll; each
//! try of it is tampered the same way.

use crate::config::Faults;
use crate::state::Account;

/// How far in the past a replayed delivery's timestamp is: beyond any receiver's tolerance.
pub(crate) const REPLAY_AGE_S: i64 = 600;

/// What happens to one delivery's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tamper {
    /// Signed as the provider signs, now.
    Genuine,
    /// No signature headers.
    Unsigned,
    /// Signed with a key the provider never published.
    Forged,
    /// Signed validly, with a timestamp [`REPLAY_AGE_S`] old.
    Replayed,
}

impl Tamper {
    /// Draws one delivery's fault from the account's fault rates, recording it.
    pub(crate) fn draw(account: &mut Account, faults: &Faults) -> Tamper {
        let drawn = [
            (faults.webhook_unsigned, Tamper::Unsigned, "webhook_unsigned"),
            (faults.webhook_forged, Tamper::Forged, "webhook_forged"),
            (faults.webhook_replayed, Tamper::Replayed, "webhook_replayed"),
        ]
        .into_iter()
        .find(|(p, _, _)| account.chance(*p));
        match drawn {
            Some((_, tamper, kind)) => {
                account.fault(kind);
                tamper
            }
            None => Tamper::Genuine,
        }
    }

    /// The timestamp (Unix seconds, as text) the delivery carries.
    pub(crate) fn timestamp(self) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        match self {
            Tamper::Replayed => (now - REPLAY_AGE_S).to_string(),
            _ => now.to_string(),
        }
    }

    /// What a delivery answered `status` counts as in the stats: `delivered`, `refused` (401: a
    /// receiver that checked the signature) or `failed`.
    pub(crate) fn outcome(status: Option<u16>) -> &'static str {
        match status {
            Some(s) if (200..300).contains(&s) => "delivered",
            Some(401) => "refused",
            _ => "failed",
        }
    }
}
