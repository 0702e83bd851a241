//! GitHub's webhook signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body
//! keyed with the webhook's secret>`, compared in constant time so the answer's timing tells
//! a forger nothing about how much of a guess was right.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a delivery's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the delivery carries no X-Hub-Signature-256 header")]
    Missing,
    #[error("X-Hub-Signature-256 is not `sha256=<64 hex digits>`")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match the body signed with the webhook's secret")]
    Mismatch,
}

/// The header value GitHub sends for `body` signed with `secret`.
#[cfg(test)]
fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).unwrap_or_default())
    )
}

/// `None` only if the key were refused, which HMAC never does (any length is a key).
fn mac(secret: &[u8], body: &[u8]) -> Option<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// Checks `header` (the X-Hub-Signature-256 value, if any) against `body`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let presented = hex::decode(hex_digest).map_err(|_| SignatureError::Malformed)?;
    if presented.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let expected = mac(secret, body).ok_or(SignatureError::Mismatch)?;
    if bool::from(expected.ct_eq(presented.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published example ("Validating webhook deliveries").
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const EXPECTED: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_example_vector_signs_and_verifies() {
        assert_eq!(sign(SECRET, PAYLOAD), EXPECTED);
        assert_eq!(verify(SECRET, PAYLOAD, Some(EXPECTED)), Ok(()));
    }

    #[test]
    fn a_changed_body_secret_or_digest_is_refused() {
        assert_eq!(
            verify(SECRET, b"Hello, World?", Some(EXPECTED)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret", PAYLOAD, Some(EXPECTED)),
            Err(SignatureError::Mismatch)
        );
        let flipped = EXPECTED.replace("757107", "757108");
        assert_eq!(
            verify(SECRET, PAYLOAD, Some(&flipped)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        assert_eq!(verify(SECRET, PAYLOAD, None), Err(SignatureError::Missing));
        for bad in ["", "sha1=abc", "sha256=zz", "sha256=757107", &EXPECTED[7..]] {
            assert_eq!(
                verify(SECRET, PAYLOAD, Some(bad)),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }
}
